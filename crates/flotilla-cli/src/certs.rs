//! `flotilla certs`: the credentials of a cluster — a CA, a certificate per node host whose
//! subject alternative name is that host, and a cluster secret — written into one directory.
//!
//! ```text
//! <out>/ca.crt             the CA certificate every node trusts       (remote.tls.trusted-ca)
//! <out>/ca.key             the CA's key: keep it off the nodes; needed to add hosts later
//! <out>/<host>.crt, .key   a node certificate valid for <host>         (remote.tls.certificate, private-key)
//! <out>/cluster.secret     32 random bytes, hex                        (remote.secret-file)
//! ```
//!
//! Run again with more hosts to add them: an existing CA and secret are reused, so the new
//! certificates join the same cluster. An existing host certificate is kept unless `force`.
//! Keys and the secret are written with mode 0600. A node certificate serves both directions
//! of a link (server and client authentication), as every node both accepts and connects.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// What to create.
#[derive(Debug, Clone)]
pub struct CertsOptions {
    /// The directory the files go to (created if missing).
    pub out: PathBuf,
    /// The hosts (DNS names or IP addresses) nodes are reached at: one certificate each.
    pub hosts: Vec<String>,
    /// How long node certificates are valid, in days.
    pub days: u32,
    /// Replace existing host certificates.
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct CertsReport {
    /// Files created, in order.
    pub created: Vec<PathBuf>,
    /// Files that existed and were kept.
    pub kept: Vec<PathBuf>,
}

const CA_NAME: &str = "Flotilla cluster CA";
const CA_DAYS: i64 = 3650;

/// The CA's parameters: always the same name, so that a CA key read back from `ca.key` signs
/// certificates that chain to the `ca.crt` written with it.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    Ok(params)
}

/// Writes `contents` to `path` (mode 0600 when `private`), creating it; fails if it exists.
fn write_new(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates what is missing of the CA, the host certificates and the secret in `options.out`.
pub fn create(options: &CertsOptions) -> anyhow::Result<CertsReport> {
    if options.hosts.is_empty() {
        bail!("name at least one host (a DNS name or IP address nodes are reached at)");
    }
    if options.days == 0 {
        bail!("--days must be at least 1");
    }
    for host in &options.hosts {
        rustls_pki_types_name(host)?;
    }
    let out = &options.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut report = CertsReport::default();
    let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
    let ca_key_pair = match (ca_crt.exists(), ca_key.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&ca_key)
                .with_context(|| format!("cannot read {}", ca_key.display()))?;
            report.kept.extend([ca_crt.clone(), ca_key.clone()]);
            KeyPair::from_pem(&pem).with_context(|| format!("{} is not a key", ca_key.display()))?
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_new(&ca_key, key.serialize_pem().as_bytes(), true)?;
            write_new(&ca_crt, cert.pem().as_bytes(), false)?;
            report.created.extend([ca_crt.clone(), ca_key.clone()]);
            key
        }
        _ => bail!(
            "{} has one of ca.crt and ca.key but not the other; restore it or use another directory",
            out.display()
        ),
    };
    let issuer = Issuer::new(ca_params()?, ca_key_pair);
    for host in &options.hosts {
        let (crt, key) = (
            out.join(format!("{host}.crt")),
            out.join(format!("{host}.key")),
        );
        if crt.exists() && !options.force {
            report.kept.push(crt);
            continue;
        }
        let mut params = CertificateParams::new(vec![host.clone()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(i64::from(options.days));
        let key_pair = KeyPair::generate()?;
        let cert = params.signed_by(&key_pair, &issuer)?;
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&crt);
        write_new(&key, key_pair.serialize_pem().as_bytes(), true)?;
        write_new(&crt, cert.pem().as_bytes(), false)?;
        report.created.extend([crt, key]);
    }
    let secret = out.join("cluster.secret");
    if secret.exists() {
        report.kept.push(secret);
    } else {
        let line = format!("{}\n", flotilla_remote::testing::random_secret());
        write_new(&secret, line.as_bytes(), true)?;
        report.created.push(secret);
    }
    Ok(report)
}

/// Checks that `host` can be a certificate's name: a DNS name or an IP address.
fn rustls_pki_types_name(host: &str) -> anyhow::Result<()> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        bail!("{host:?} is neither a DNS name nor an IP address")
    }
}

/// The `[remote]` configuration for a node reached at `host`, with the files of `out`.
pub fn config_snippet(out: &Path, host: &str) -> String {
    let p = |name: &str| out.join(name).display().to_string();
    format!(
        "[remote]\nsecret-file = {:?}\n\n[remote.tls]\ncertificate = {:?}\nprivate-key = {:?}\ntrusted-ca = {:?}\n",
        p("cluster.secret"),
        p(&format!("{host}.crt")),
        p(&format!("{host}.key")),
        p("ca.crt"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_adds_hosts_under_the_same_ca_and_secret_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let options = |hosts: &[&str]| CertsOptions {
            out: dir.path().join("certs"),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            days: 30,
            force: false,
        };
        let first = create(&options(&["127.0.0.1"])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.created.len(), 5, "{first:?}");
        let ca = std::fs::read(dir.path().join("certs/ca.crt")).unwrap_or_default();
        let secret = std::fs::read(dir.path().join("certs/cluster.secret")).unwrap_or_default();
        let second =
            create(&options(&["127.0.0.1", "node-2.example"])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.created.len(), 2, "{second:?}");
        assert_eq!(
            std::fs::read(dir.path().join("certs/ca.crt")).unwrap_or_default(),
            ca
        );
        assert_eq!(
            std::fs::read(dir.path().join("certs/cluster.secret")).unwrap_or_default(),
            secret
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in ["ca.key", "127.0.0.1.key", "cluster.secret"] {
                let mode = std::fs::metadata(dir.path().join("certs").join(f))
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or_default();
                assert_eq!(mode, 0o600, "{f}");
            }
        }
        assert!(create(&options(&["not a host"])).is_err());
        assert!(create(&options(&[])).is_err());
    }
}
