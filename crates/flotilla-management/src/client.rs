//! A typed client of the management API, behind the `flotilla status|members|…` commands.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::{
    Accepted, ApiError, Associations, Events, Health, Leases, MemberOperation, Members, Operation,
    Shards, Status,
};

/// Why a request did not give an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint could not be reached at all.
    #[error(
        "cannot reach the management endpoint at {url}: {reason} (is the node running, with [management] enabled on that port?)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The endpoint answered with an error.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error the endpoint gave.
        message: String,
    },
    /// The answer was not what the API describes.
    #[error("{url} gave an answer that is not the management API's: {reason}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The client could not be set up (a CA file that does not load, say).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// A client of one node's management endpoint. `Debug` never prints the token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the endpoint at `base` (`http://127.0.0.1:8558`; a bare `host:port` means
    /// HTTP), sending `token` as a bearer token when given, trusting `ca_pem` for HTTPS when
    /// given, and waiting at most `timeout` for each answer.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = if base.contains("://") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::Setup(format!("the CA certificate: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self { base, token, http })
    }

    /// The endpoint's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        url: String,
        request: reqwest::RequestBuilder,
        ok_statuses: &[u16],
    ) -> Result<T, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: without_url(&e),
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: without_url(&e),
            })?;
        if !(200..300).contains(&status) && !ok_statuses.contains(&status) {
            let message = serde_json::from_slice::<ApiError>(&bytes).map_or_else(
                |_| String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                |e| e.error,
            );
            return Err(ClientError::Refused {
                url,
                status,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url,
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, ok: &[u16]) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self.http.get(&url);
        self.answer(url, request, ok).await
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/status", &[]).await
    }

    /// `GET /cluster/members`.
    pub async fn members(&self) -> Result<Members, ClientError> {
        self.get("/cluster/members", &[]).await
    }

    /// `GET /cluster/shards`.
    pub async fn shards(&self) -> Result<Shards, ClientError> {
        self.get("/cluster/shards", &[]).await
    }

    /// `GET /remote/associations`.
    pub async fn associations(&self) -> Result<Associations, ClientError> {
        self.get("/remote/associations", &[]).await
    }

    /// `GET /leases`.
    pub async fn leases(&self) -> Result<Leases, ClientError> {
        self.get("/leases", &[]).await
    }

    /// `GET /events?after=…`.
    pub async fn events(&self, after: u64) -> Result<Events, ClientError> {
        self.get(&format!("/events?after={after}"), &[]).await
    }

    /// `GET /health/ready` (a not-ready node answers too: `ok` is false).
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.get("/health/ready", &[503]).await
    }

    /// `PUT /cluster/members/{address}`: asks the member at `address` to leave, or downs it.
    pub async fn member_operation(
        &self,
        address: &str,
        operation: Operation,
    ) -> Result<Accepted, ClientError> {
        let url = format!("{}/cluster/members/{}", self.base, percent_encode(address));
        let mut request = self.http.put(&url).json(&MemberOperation { operation });
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        self.answer(url, request, &[]).await
    }
}

/// reqwest's errors repeat the URL; the caller's message names it once.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_token() {
        let client = Client::new(
            "127.0.0.1:8558",
            Some("hunter2-client".into()),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        for printed in [format!("{client:?}"), format!("{client:#?}")] {
            assert!(!printed.contains("hunter2-client"), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
            assert!(printed.contains("http://127.0.0.1:8558"), "{printed}");
        }
    }

    #[test]
    fn addresses_are_percent_encoded_whole() {
        assert_eq!(
            percent_encode("flotilla://sys@127.0.0.1:2552"),
            "flotilla%3A%2F%2Fsys%40127.0.0.1%3A2552"
        );
    }
}
