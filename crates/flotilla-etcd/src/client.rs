//! The client: one gRPC channel over every endpoint, an authentication token renewed when etcd
//! says it is no longer valid, and a timeout on every request.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::EtcdSettings;
use crate::api::etcdserverpb as pb;
use pb::auth_client::AuthClient;

/// Why etcd could not be used. Never carries a password or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The settings are unusable (an operator must change them).
    #[error("invalid etcd settings: {0}")]
    Config(String),
    /// A request failed on the way (connection refused or lost, TLS handshake failed).
    #[error("cannot reach etcd at {endpoints:?}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// What failed.
        reason: String,
    },
    /// etcd did not answer within the request timeout.
    #[error("etcd at {endpoints:?} did not answer within {after:?}")]
    Timeout {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// The request timeout.
        after: Duration,
    },
    /// etcd answered with an error.
    #[error("etcd refused the request ({code:?}): {message}")]
    Refused {
        /// The gRPC status code.
        code: Code,
        /// etcd's message, such as `etcdserver: authentication failed, invalid user ID or
        /// password`.
        message: String,
    },
}

impl EtcdError {
    /// Whether etcd could not be reached or did not answer — worth trying again later, unlike
    /// unusable settings or refused credentials or permissions, which need an operator.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Config(_) => false,
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Refused { code, .. } => !matches!(
                code,
                Code::InvalidArgument
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::FailedPrecondition
                    | Code::Unimplemented
            ),
        }
    }
}

/// An etcd client. Cheap to clone: clones share one channel and one token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    channel: Channel,
    endpoints: Vec<String>,
    request_timeout: Duration,
    credentials: Option<(String, String)>,
    token: Mutex<Option<MetadataValue<Ascii>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .field("authenticated", &self.inner.credentials.is_some())
            .finish_non_exhaustive()
    }
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path)
        .map_err(|e| EtcdError::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

fn tls_config(settings: &EtcdSettings) -> Result<Option<ClientTlsConfig>, EtcdError> {
    let https = settings.endpoints.iter().any(|e| e.starts_with("https://"));
    if !https {
        return Ok(None);
    }
    let tls = settings.tls.clone().unwrap_or_default();
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_file {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem("CA file", ca)?)),
        None => config.with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let identity = Identity::from_pem(
            read_pem("client certificate", cert)?,
            read_pem("client key", key)?,
        );
        config = config.identity(identity);
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(Some(config))
}

/// Connects to every endpoint once, so that a connection or handshake failure is reported with
/// its cause (the balanced channel would only time out): an error if none answers.
async fn probe(endpoints: &[Endpoint], settings: &EtcdSettings) -> Result<(), EtcdError> {
    let mut reasons = Vec::new();
    for (endpoint, url) in endpoints.iter().zip(&settings.endpoints) {
        match tokio::time::timeout(settings.connect_timeout, endpoint.connect()).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => reasons.push(format!("{url}: {}", flotilla_core::error_chain(&e))),
            Err(_) => reasons.push(format!(
                "{url}: no connection within {:?}",
                settings.connect_timeout
            )),
        }
    }
    Err(EtcdError::Unreachable {
        endpoints: settings.endpoints.clone(),
        reason: reasons.join("; "),
    })
}

impl Client {
    /// Connects to etcd and checks the connection with one read under the settings' prefix: a
    /// malformed endpoint, an unreachable cluster, a failed TLS handshake or wrong credentials
    /// are reported here, not at the first request.
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, EtcdError> {
        settings.check().map_err(EtcdError::Config)?;
        let tls = tls_config(settings)?;
        let mut endpoints = Vec::with_capacity(settings.endpoints.len());
        for url in &settings.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| EtcdError::Config(format!("endpoint {url:?}: {e}")))?
                .connect_timeout(settings.connect_timeout)
                .timeout(settings.request_timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            if let Some(tls) = &tls
                && url.starts_with("https://")
            {
                endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                    EtcdError::Config(format!(
                        "TLS for {url:?}: {}",
                        flotilla_core::error_chain(&e)
                    ))
                })?;
            }
            endpoints.push(endpoint);
        }
        probe(&endpoints, settings).await?;
        let client = Self {
            inner: Arc::new(Inner {
                channel: Channel::balance_list(endpoints.into_iter()),
                endpoints: settings.endpoints.clone(),
                request_timeout: settings.request_timeout,
                credentials: settings.user.clone().zip(settings.password.clone()),
                token: Mutex::new(None),
            }),
        };
        if client.inner.credentials.is_some() {
            client.authenticate().await?;
        }
        client.count(settings.prefix.as_bytes()).await?;
        Ok(client)
    }

    /// The endpoints this client uses.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    fn failed(&self, status: Status) -> EtcdError {
        match status.code() {
            // A transport failure surfaces as Unavailable or Unknown with the cause as source;
            // tonic's request timeout as Cancelled.
            Code::Unavailable | Code::Unknown => EtcdError::Unreachable {
                endpoints: self.inner.endpoints.clone(),
                reason: flotilla_core::error_chain(&status),
            },
            Code::Cancelled | Code::DeadlineExceeded => EtcdError::Timeout {
                endpoints: self.inner.endpoints.clone(),
                after: self.inner.request_timeout,
            },
            code => EtcdError::Refused {
                code,
                message: status.message().to_owned(),
            },
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.inner.request_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.failed(status)),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.inner.endpoints.clone(),
                after: self.inner.request_timeout,
            }),
        }
    }

    pub(crate) fn inner_channel(&self) -> Channel {
        self.inner.channel.clone()
    }

    /// The next message of a stream, within the request timeout.
    pub(crate) async fn bounded_message<T>(
        &self,
        next: impl Future<Output = Result<Option<T>, Status>>,
    ) -> Result<Option<T>, EtcdError> {
        match tokio::time::timeout(self.inner.request_timeout, next).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(status)) => Err(self.failed(status)),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.inner.endpoints.clone(),
                after: self.inner.request_timeout,
            }),
        }
    }

    async fn authenticate(&self) -> Result<(), EtcdError> {
        let Some((name, password)) = self.inner.credentials.clone() else {
            return Ok(());
        };
        let mut auth = AuthClient::new(self.inner.channel.clone());
        let response = self
            .bounded(auth.authenticate(pb::AuthenticateRequest { name, password }))
            .await?;
        let token =
            MetadataValue::try_from(response.token.as_str()).map_err(|_| EtcdError::Refused {
                code: Code::Internal,
                message: "etcd sent an authentication token that is not ASCII".into(),
            })?;
        *self.lock_token() = Some(token);
        Ok(())
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, Option<MetadataValue<Ascii>>> {
        // A panic while the token was being replaced leaves a usable value either way.
        self.inner
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.inner.request_timeout);
        if let Some(token) = self.lock_token().clone() {
            request.metadata_mut().insert("token", token);
        }
        request
    }

    /// Runs `call` with the current token; if etcd says the token is no longer valid (it
    /// expires when unused for a while), authenticates again and runs it once more.
    pub(crate) async fn call<M, T, F, Fut>(&self, msg: M, call: F) -> Result<T, EtcdError>
    where
        M: Clone,
        F: Fn(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let first = self
            .bounded(call(self.inner.channel.clone(), self.request(msg.clone())))
            .await;
        match first {
            Err(EtcdError::Refused {
                code: Code::Unauthenticated,
                ref message,
            }) if self.inner.credentials.is_some() && message.contains("invalid auth token") => {
                tracing::debug!("etcd authentication token expired; authenticating again");
                self.authenticate().await?;
                self.bounded(call(self.inner.channel.clone(), self.request(msg)))
                    .await
            }
            other => other,
        }
    }
}
