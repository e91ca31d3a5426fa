//! Mutual TLS: each node presents its certificate and accepts only peers that chain to the
//! trusted CA — on both the accepting and the connecting side.
//!
//! The certificate, key and CA files are checked every `reload-interval`; when one changed, all
//! three are loaded again and new connections use them (established ones keep theirs). A reload
//! that fails is logged and the previous material stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use flotilla_core::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The configurations new connections use.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For accepted connections.
    pub server: Arc<ServerConfig>,
    /// For outbound connections.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfigs")
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// Loads the three files and builds both configurations.
pub fn load(settings: &TlsSettings) -> Result<TlsConfigs, TlsError> {
    let chain = certificates(&settings.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&settings.private_key)
        .map_err(|e| file_error(&settings.private_key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(&settings.trusted_ca)? {
        roots
            .add(ca)
            .map_err(|e| file_error(&settings.trusted_ca, e))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(Arc::clone(&roots))
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsConfigs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// The TLS material in use, reloaded when its files change.
#[derive(Debug)]
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<(TlsConfigs, [Option<SystemTime>; 3])>,
}

fn modified(settings: &TlsSettings) -> [Option<SystemTime>; 3] {
    [
        &settings.certificate,
        &settings.private_key,
        &settings.trusted_ca,
    ]
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

impl Tls {
    /// Loads the material; fails with the file and the reason if it cannot.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let stamps = modified(&settings);
        let configs = load(&settings)?;
        Ok(Self {
            settings,
            current: RwLock::new((configs, stamps)),
        })
    }

    /// The configurations for the next connection.
    pub fn configs(&self) -> TlsConfigs {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Reloads if a file changed since the last load. True if new material is in use.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = modified(&self.settings);
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            == stamps;
        if unchanged {
            return false;
        }
        match load(&self.settings) {
            Ok(configs) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (configs, stamps);
                tracing::info!(
                    "TLS certificates reloaded from {}",
                    self.settings.certificate.display()
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    "TLS certificates changed but cannot be loaded ({e}); the previous ones stay in use"
                );
                false
            }
        }
    }

    /// How often files are checked.
    pub fn reload_interval(&self) -> std::time::Duration {
        self.settings.reload_interval
    }
}
