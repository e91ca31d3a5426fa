//! What a node proves itself with and checks its peers against: the cluster secret (inline, or
//! from a file that is re-read when it changes) and the rule that binds a TLS peer's certificate
//! to the host it claims.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use flotilla_core::RemoteSettings;
use flotilla_proto::handshake::Secrets;
use rustls::pki_types::{CertificateDer, ServerName};

/// Why the secret could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("cannot read the secret file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The secret (inline or in the file) is not usable.
    #[error("{origin}: {source}")]
    Invalid {
        /// `remote.secret` or the file's path.
        origin: String,
        /// What is wrong.
        source: flotilla_proto::handshake::SecretsError,
    },
}

/// The cluster secret, as configured.
#[derive(Debug)]
pub(crate) enum SecretSource {
    /// No secret: TLS alone, or insecure.
    None,
    /// `remote.secret`.
    Inline(Secrets),
    /// `remote.secret-file`, re-read when its modification time or length changes.
    File {
        path: PathBuf,
        state: Mutex<(Stamp, Secrets)>,
    },
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(path: &Path) -> Result<Secrets, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    warn_if_readable_by_others(path);
    Secrets::parse(&text).map_err(|source| SecretError::Invalid {
        origin: path.display().to_string(),
        source,
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the secret file {} can be read by other users (mode {:o}); `chmod 600` it",
            path.display(),
            m.permissions().mode() & 0o777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

impl SecretSource {
    /// The secret of `settings`, read once now so that a missing or bad file stops the start.
    pub(crate) fn new(settings: &RemoteSettings) -> Result<Self, SecretError> {
        if let Some(path) = &settings.secret_file {
            let stamp = stamp(path);
            let secrets = read(path)?;
            return Ok(Self::File {
                path: path.clone(),
                state: Mutex::new((stamp, secrets)),
            });
        }
        match &settings.secret {
            Some(s) => Secrets::new([s.as_bytes()])
                .map(Self::Inline)
                .map_err(|source| SecretError::Invalid {
                    origin: "remote.secret".into(),
                    source,
                }),
            None => Ok(Self::None),
        }
    }

    /// Whether there is a secret at all.
    pub(crate) fn is_set(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The secrets for the next handshake. A changed file is read again; if it cannot be, the
    /// previous secrets stay in use and the failure is logged.
    pub(crate) fn current(&self) -> Option<Secrets> {
        match self {
            Self::None => None,
            Self::Inline(s) => Some(s.clone()),
            Self::File { path, state } => {
                let now = stamp(path);
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                if now != state.0 {
                    state.0 = now;
                    match read(path) {
                        Ok(s) => {
                            tracing::info!(path = %path.display(), "cluster secret reloaded from {} ({} secret(s))", path.display(), s.len());
                            state.1 = s;
                        }
                        Err(e) => tracing::warn!(
                            path = %path.display(),
                            "the secret file changed but cannot be used ({e}); the previous secret stays in use"
                        ),
                    }
                }
                Some(state.1.clone())
            }
        }
    }
}

/// Whether `cert` (a peer's end-entity certificate) is valid for `host`, by the same rule a TLS
/// client applies to a server: a DNS name or IP address in its subject alternative names.
pub(crate) fn certificate_valid_for(cert: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let name = ServerName::try_from(host)
        .map_err(|_| "the claimed host is neither a DNS name nor an IP address".to_owned())?;
    let cert = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("the peer's certificate cannot be parsed ({e})"))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| "its TLS certificate is not valid for that host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .der()
            .clone()
    }

    #[test]
    fn a_certificate_is_valid_only_for_its_own_names_and_addresses() {
        let c = cert(&["node-1.orders.svc", "10.0.0.7"]);
        assert_eq!(certificate_valid_for(&c, "node-1.orders.svc"), Ok(()));
        assert_eq!(certificate_valid_for(&c, "10.0.0.7"), Ok(()));
        for other in ["node-2.orders.svc", "10.0.0.8", "127.0.0.1", "not a host"] {
            assert!(certificate_valid_for(&c, other).is_err(), "{other}");
        }
    }

    #[test]
    fn a_secret_file_is_reread_when_it_changes_and_a_bad_change_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("cluster.secret");
        std::fs::write(&path, "first-secret-0123456789\n").unwrap_or_else(|e| panic!("{e}"));
        let settings = RemoteSettings {
            secret_file: Some(path.clone()),
            ..RemoteSettings::default()
        };
        let source = SecretSource::new(&settings).unwrap_or_else(|e| panic!("{e}"));
        let first = source.current();
        assert_eq!(first.as_ref().map(Secrets::len), Some(1));
        std::fs::write(&path, "second-secret-0123456789\nfirst-secret-0123456789\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(source.current().as_ref().map(Secrets::len), Some(2));
        std::fs::write(&path, "short\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(source.current().as_ref().map(Secrets::len), Some(2));
        // A missing file stops the start, with the path and never a secret.
        let missing = RemoteSettings {
            secret_file: Some(dir.path().join("nope")),
            ..RemoteSettings::default()
        };
        let err = SecretSource::new(&missing).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
