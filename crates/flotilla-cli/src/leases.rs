//! Listing the leases a backend holds: `flotilla leases`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use flotilla_core::{LeaseBackendKind, LeaseSettings};
use flotilla_lease::{LeaseBackend, LeaseRecord};
use flotilla_lease_azure::AzureSettings;
use flotilla_lease_etcd::EtcdSettings;
use flotilla_lease_kubernetes::KubernetesSettings;

/// A backend to connect to, with its settings.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    /// etcd.
    Etcd(EtcdSettings),
    /// Azure Blob Storage.
    Azure(AzureSettings),
    /// Kubernetes Lease objects.
    Kubernetes(KubernetesSettings),
}

impl BackendChoice {
    /// The `[lease]` settings that name this backend.
    fn settings(&self) -> LeaseSettings {
        let mut settings = LeaseSettings::default();
        match self {
            Self::Etcd(s) => {
                settings.backend = LeaseBackendKind::Etcd;
                settings.etcd = s.clone();
            }
            Self::Azure(s) => {
                settings.backend = LeaseBackendKind::Azure;
                settings.azure = s.clone();
            }
            Self::Kubernetes(s) => {
                settings.backend = LeaseBackendKind::Kubernetes;
                settings.kubernetes = s.clone();
            }
        }
        settings
    }
}

/// Connects to the chosen backend now; errors say which backend and why.
pub async fn connect(choice: BackendChoice) -> anyhow::Result<Arc<dyn LeaseBackend>> {
    Ok(flotilla::connect_lease_backend_now(&choice.settings()).await?)
}

/// Connects a node to the chosen backend, as a node configured with it would
/// ([`flotilla::connect_lease_backend`]): unusable settings or refused credentials fail here; a
/// backend that cannot be reached yet is connected to in the background.
pub async fn connect_for_node(choice: BackendChoice) -> anyhow::Result<Arc<dyn LeaseBackend>> {
    Ok(flotilla::connect_lease_backend(&choice.settings()).await?)
}

/// The environment variables an Azure connection string is read from, first found first: the
/// one that sets `[lease.azure] connection-string` for `flotilla node`, then the Azure tools' own.
pub const AZURE_CONNECTION_STRING_VARS: [&str; 2] = [
    "FLOTILLA__LEASE__AZURE__CONNECTION_STRING",
    "AZURE_STORAGE_CONNECTION_STRING",
];

/// A secret kept in a file (a connection string, a password): the file's text without the
/// whitespace around it. Errors name the file, never its text.
pub fn read_secret_file(what: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} from {}", path.display()))?;
    let secret = text.trim();
    anyhow::ensure!(!secret.is_empty(), "{} holds no {what}", path.display());
    Ok(secret.to_owned())
}

/// The Azure connection string of `flotilla leases --backend azure`: from `file` when one is
/// named, else from the first of [`AZURE_CONNECTION_STRING_VARS`] that `var` finds, else
/// Azurite's (`UseDevelopmentStorage=true`). Never from the command line: every user of the
/// machine can read a process's arguments.
pub fn azure_connection_string(
    file: Option<&Path>,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    if let Some(path) = file {
        return read_secret_file("Azure connection string", path);
    }
    Ok(AZURE_CONNECTION_STRING_VARS
        .iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| AzureSettings::default().connection_string))
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// The leases as a table: name, owner, fencing token, age (since acquired) and time to expiry.
pub fn table(records: &[LeaseRecord], now: SystemTime) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "NAME".into(),
        "OWNER".into(),
        "TOKEN".into(),
        "AGE".into(),
        "EXPIRES IN".into(),
    ]];
    let mut sorted: Vec<&LeaseRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for r in sorted {
        let age = r
            .acquired_at
            .and_then(|at| now.duration_since(at).ok())
            .map_or_else(|| "-".into(), human);
        let expires = r.expires_in.map_or_else(|| "-".into(), human);
        rows.push([
            r.name.to_string(),
            r.owner.clone(),
            r.token.to_string(),
            age,
            expires,
        ]);
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if records.is_empty() {
        out.push_str("(no lease is held)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_lease::{FencingToken, LeaseName};

    #[test]
    fn the_azure_connection_string_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("azure");
        std::fs::write(&file, "AccountName=a;AccountKey=Zm9v\n").unwrap_or_else(|e| panic!("{e}"));
        let none = |_: &str| None;
        let from_file = azure_connection_string(Some(&file), none);
        assert_eq!(
            from_file.ok().as_deref(),
            Some("AccountName=a;AccountKey=Zm9v")
        );
        let both = |name: &str| Some(format!("from {name}"));
        assert_eq!(
            azure_connection_string(None, both).ok().as_deref(),
            Some("from FLOTILLA__LEASE__AZURE__CONNECTION_STRING")
        );
        let azure_only = |name: &str| {
            (name == "AZURE_STORAGE_CONNECTION_STRING").then(|| "AccountName=b".to_owned())
        };
        assert_eq!(
            azure_connection_string(None, azure_only).ok().as_deref(),
            Some("AccountName=b")
        );
        assert_eq!(
            azure_connection_string(None, none).ok().as_deref(),
            Some("UseDevelopmentStorage=true")
        );
        // An empty or missing file is an error that names the file, not its text.
        std::fs::write(&file, " \n").unwrap_or_else(|e| panic!("{e}"));
        let err = format!("{:#}", read_secret_file("secret", &file).unwrap_err());
        assert!(err.contains("holds no secret"), "{err}");
        let err = format!(
            "{:#}",
            read_secret_file("secret", &dir.path().join("missing")).unwrap_err()
        );
        assert!(err.contains("cannot read the secret from"), "{err}");
    }

    #[test]
    fn the_table_aligns_columns_and_says_when_nothing_is_held() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let records = [
            LeaseRecord {
                name: LeaseName::new("shard-2").unwrap_or_else(|e| panic!("{e}")),
                owner: "flotilla://orders@10.0.0.2:2552".into(),
                token: FencingToken(17),
                acquired_at: Some(now - Duration::from_secs(125)),
                expires_in: Some(Duration::from_millis(118_500)),
            },
            LeaseRecord {
                name: LeaseName::new("shard-10").unwrap_or_else(|e| panic!("{e}")),
                owner: "b".into(),
                token: FencingToken(3),
                acquired_at: None,
                expires_in: Some(Duration::from_secs(7200)),
            },
        ];
        assert_eq!(
            table(&records, now),
            "NAME      OWNER                            TOKEN  AGE    EXPIRES IN\n\
             shard-10  b                                3      -      2h00m\n\
             shard-2   flotilla://orders@10.0.0.2:2552  17     2m05s  1m58s\n"
        );
        assert_eq!(
            table(&[], now),
            "NAME  OWNER  TOKEN  AGE  EXPIRES IN\n(no lease is held)\n"
        );
    }
}
