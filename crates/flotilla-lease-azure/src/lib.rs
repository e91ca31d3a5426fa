//! A Flotilla lease backend on Azure Blob Storage.
//!
//! # Why a record blob, not native blob leases
//!
//! Native blob leases last 15 to 60 seconds or forever; they cannot express a TTL outside that
//! range (Akka's default is 120 s) or one that is not whole seconds, and an infinite lease of a
//! crashed node would never expire. So, as Akka.NET's
//! Azure lease does, each lease is one small JSON **record blob** `<container>/<lease name>`:
//!
//! ```json
//! {"owner":"flotilla://orders@10.0.0.7:2552","token":42,"ttl_ms":120000,"acquired_at_unix_ms":1795000000000}
//! ```
//!
//! Every change is a conditional write: `If-None-Match: *` to create the record, `If-Match:
//! <ETag>` to change it. A write that lost a race answers 412 (or 409) and the backend reads the
//! record again and decides anew, so two owners can never both succeed.
//!
//! - **acquire**: the record is absent, released (`owner` empty), expired or this owner's →
//!   write it with this owner and `token + 1` (a new hold: an earlier one of this owner is
//!   replaced); else denied.
//! - **renew**: still this owner's with the same token → rewrite it (which refreshes its
//!   `Last-Modified`); else denied.
//! - **release**: still this owner's → write it back with an empty owner. The record is never
//!   deleted, so the token counter survives and **fencing tokens strictly increase** per lease.
//!
//! # Clocks
//!
//! Expiry is judged **on the storage service's clock only**: a record is expired when the
//! `Date` of the response that read it is past its `Last-Modified` plus its `ttl_ms` plus one
//! second (both headers have one-second resolution). No node's clock is compared with another's,
//! so clock skew between nodes does not matter; what matters is that the service's clock runs at
//! a sane rate, which Azure guarantees. The holder's own deadline (`check_lease`) counts from when
//! it sent its last confirmed write, on its own monotonic clock, minus a safety margin.
//!
//! # Timeouts
//!
//! One backend call (several HTTP requests at most) is bounded by `request-timeout`, 6 s by
//! default. When `lease-operation-timeout` is not configured, a lease client on this backend uses
//! 15 s ([`DEFAULT_OPERATION_TIMEOUT`]), so that a retried request still fits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_lease::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

pub mod auth;
mod redact;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{ConnectionString, Credentials, CredentialsError};

/// The storage service version requests are made against.
pub const API_VERSION: &str = "2023-11-03";

/// The lease operation timeout recommended with this backend.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

pub use flotilla_core::AzureSettings;

/// Why the Azure backend could not be set up. No variant carries the connection string, an
/// account key or a SAS token: endpoints are shown without query strings or user names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// The connection string is unusable.
    #[error("invalid Azure connection string: {0}")]
    Credentials(#[from] CredentialsError),
    /// Other settings are unusable.
    #[error("invalid Azure lease settings: {0}")]
    Config(String),
    /// The service could not be reached.
    #[error("cannot reach Azure Blob Storage at {endpoint}: {reason}")]
    Unreachable {
        /// The blob endpoint.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// The service refused the credentials.
    #[error(
        "Azure Blob Storage at {endpoint} refused the credentials ({status}): check the account \
         name and key or the SAS token"
    )]
    Unauthorized {
        /// The blob endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
    },
}

impl AzureError {
    /// Whether the service could not be reached (or answered with a server-side failure):
    /// worth trying again later, unlike unusable settings or refused credentials.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    owner: String,
    token: u64,
    ttl_ms: u64,
    acquired_at_unix_ms: u64,
}

/// A record as read, with what the service said about it.
#[derive(Debug)]
struct Read {
    record: Record,
    etag: String,
    /// Time left before it expires, on the service's clock (zero when expired).
    left: Duration,
}

impl Read {
    fn live(&self) -> bool {
        !self.record.owner.is_empty() && !self.left.is_zero()
    }
}

enum Write {
    Done,
    Conflict,
}

/// A failed HTTP exchange, in words.
struct Failure(String);

impl From<Failure> for BackendReply {
    fn from(f: Failure) -> Self {
        Self::Unknown { reason: f.0 }
    }
}

/// The Azure Blob lease backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AzureBackend {
    http: reqwest::Client,
    endpoint: Url,
    credentials: Credentials,
    settings: AzureSettings,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header_time(headers: &reqwest::header::HeaderMap, name: &str) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// How many conditional writes a call tries before giving up on a lease that keeps changing.
const CAS_ATTEMPTS: usize = 5;

impl AzureBackend {
    /// The backend's kind, as [`LeaseBackend::kind`] names it in logs and metrics.
    pub const KIND: &'static str = "azure";

    /// Connects: parses the connection string, creates the container if missing. A malformed
    /// connection string, an unreachable endpoint or refused credentials are reported here.
    pub async fn connect(settings: AzureSettings) -> Result<Self, AzureError> {
        let cs = ConnectionString::parse(&settings.connection_string)?;
        let valid_container = (3..=63).contains(&settings.container.len())
            && settings
                .container
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_container {
            return Err(AzureError::Config(format!(
                "container {:?} must be 3 to 63 lowercase letters, digits or '-'",
                settings.container
            )));
        }
        if settings.request_timeout.is_zero() {
            return Err(AzureError::Config(
                "request-timeout must be positive".into(),
            ));
        }
        // The endpoint's own text is not repeated in these errors: a SAS URL pasted as the
        // endpoint would carry its signature into them.
        let endpoint = Url::parse(&format!("{}/", cs.blob_endpoint))
            .map_err(|e| AzureError::Config(format!("the blob endpoint is not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(AzureError::Config(format!(
                "the blob endpoint {} must be an http or https URL",
                redact::url(&endpoint)
            )));
        }
        if endpoint.query().is_some() || !endpoint.username().is_empty() {
            return Err(AzureError::Config(format!(
                "the blob endpoint {} must carry no query string or user name: give a SAS token \
                 as SharedAccessSignature",
                redact::url(&endpoint)
            )));
        }
        // The process-wide TLS provider, if none was chosen yet.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .build()
            .map_err(|e| {
                AzureError::Config(format!("HTTP client: {}", redact::reqwest_error(e)))
            })?;
        let backend = Self {
            http,
            endpoint,
            credentials: cs.credentials,
            settings,
        };
        backend.create_container().await?;
        Ok(backend)
    }

    /// The settings in use.
    pub fn settings(&self) -> &AzureSettings {
        &self.settings
    }

    fn url(&self, blob: Option<&str>, query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(&self.settings.container);
            if let Some(blob) = blob {
                segments.push(blob);
            }
        }
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        if let Credentials::Sas(sas) = &self.credentials {
            let q = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{sas}"),
                _ => sas.clone(),
            };
            url.set_query(Some(&q));
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Sends a request, signed when the credentials are a shared key.
    async fn send(
        &self,
        method: Method,
        blob: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, Failure> {
        let url = self.url(blob, query);
        let date = httpdate::fmt_http_date(SystemTime::now());
        let length = body.as_ref().map_or(0, Vec::len).to_string();
        let blob_type = [("x-ms-blob-type", "BlockBlob")];
        let ms_base = [("x-ms-date", date.as_str()), ("x-ms-version", API_VERSION)];
        let ms: Vec<(&str, &str)> = if body.is_some() {
            ms_base.iter().chain(blob_type.iter()).copied().collect()
        } else {
            ms_base.to_vec()
        };
        let mut std_headers: Vec<(&str, &str)> = headers.to_vec();
        if body.is_some() {
            std_headers.push(("content-length", &length));
        }
        let mut request = self.http.request(method.clone(), url.clone());
        for (name, value) in ms.iter().chain(std_headers.iter()) {
            request = request.header(*name, *value);
        }
        if let Credentials::SharedKey { account, key } = &self.credentials {
            let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let query: Vec<(&str, &str)> = query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let auth = auth::authorization(
                account,
                key,
                &auth::ToSign {
                    verb: method.as_str(),
                    path: url.path(),
                    query: &query,
                    headers: &std_headers,
                    ms_headers: &ms,
                },
            );
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request
            .send()
            .await
            .map_err(|e| self.failed("Azure request failed", e))
    }

    /// A failed exchange in words: the request's URL (which carries a SAS token) left out, and
    /// the SAS token scrubbed from the causes' texts too.
    fn failed(&self, what: &str, e: reqwest::Error) -> Failure {
        let sas = match &self.credentials {
            Credentials::Sas(sas) => sas.as_str(),
            Credentials::SharedKey { .. } => "",
        };
        Failure(redact::scrub(
            &format!("{what}: {}", redact::reqwest_error(e)),
            &[sas],
        ))
    }

    async fn create_container(&self) -> Result<(), AzureError> {
        let endpoint = redact::url(&self.endpoint);
        let response = self
            .send(Method::PUT, None, &[("restype", "container")], &[], None)
            .await
            .map_err(|Failure(reason)| AzureError::Unreachable {
                endpoint: endpoint.clone(),
                reason,
            })?;
        match response.status() {
            StatusCode::CREATED | StatusCode::CONFLICT => Ok(()),
            s @ (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) => {
                Err(AzureError::Unauthorized {
                    endpoint,
                    status: s.as_u16(),
                })
            }
            s => Err(AzureError::Unreachable {
                endpoint,
                reason: format!("creating the container answered {s}"),
            }),
        }
    }

    fn unexpected(what: &str, status: StatusCode) -> Failure {
        let hint = match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                " (credentials refused: check the account key or SAS token)"
            }
            _ => "",
        };
        Failure(format!("Azure {what} answered {status}{hint}"))
    }

    async fn read(&self, lease: &LeaseName) -> Result<Option<Read>, Failure> {
        let response = self
            .send(Method::GET, Some(lease.as_str()), &[], &[], None)
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(Self::unexpected("read", s)),
        }
        let headers = response.headers().clone();
        let etag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Failure("Azure read answered without an ETag".into()))?;
        let (Some(modified), Some(date)) = (
            header_time(&headers, "last-modified"),
            header_time(&headers, "date"),
        ) else {
            return Err(Failure(
                "Azure read answered without Last-Modified or Date".into(),
            ));
        };
        let body = response
            .bytes()
            .await
            .map_err(|e| self.failed("Azure read body", e))?;
        let record: Record = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                // Not a Flotilla record: treat as held by an unknown owner, never overwrite.
                tracing::warn!(lease = %lease, error = %e, "lease blob is not a Flotilla lease record");
                Record {
                    owner: format!("(not a lease record: {e})"),
                    token: 0,
                    ttl_ms: u64::MAX,
                    acquired_at_unix_ms: 0,
                }
            }
        };
        let expires = modified
            + Duration::from_millis(record.ttl_ms.min(u64::MAX / 2))
            + Duration::from_secs(1);
        let left = expires.duration_since(date).unwrap_or(Duration::ZERO);
        Ok(Some(Read { record, etag, left }))
    }

    /// Writes `record`: created only if absent (`etag` none) or only if unchanged.
    async fn write(
        &self,
        lease: &LeaseName,
        record: &Record,
        etag: Option<&str>,
    ) -> Result<Write, Failure> {
        let body = serde_json::to_vec(record)
            .map_err(|e| Failure(format!("cannot encode the lease record: {e}")))?;
        let condition = match etag {
            Some(etag) => ("if-match", etag),
            None => ("if-none-match", "*"),
        };
        let response = self
            .send(
                Method::PUT,
                Some(lease.as_str()),
                &[],
                &[condition, ("content-type", "application/json")],
                Some(body),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::OK => Ok(Write::Done),
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Ok(Write::Conflict),
            s => Err(Self::unexpected("write", s)),
        }
    }

    async fn try_acquire(
        &self,
        lease: &LeaseName,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<BackendReply, Failure> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(lease).await?;
            let (record, etag) = match &current {
                None => (
                    Record {
                        owner: owner.as_str().to_owned(),
                        token: 1,
                        ttl_ms,
                        acquired_at_unix_ms: unix_ms(SystemTime::now()),
                    },
                    None,
                ),
                Some(r) if r.live() && r.record.owner != owner.as_str() => {
                    return Ok(BackendReply::Denied {
                        holder: Some(r.record.owner.clone()),
                    });
                }
                // Free, expired, or this owner's: a new hold with the next token (an earlier hold
                // of this owner is replaced, so that nothing sent for it can touch this one).
                Some(r) => (
                    Record {
                        owner: owner.as_str().to_owned(),
                        token: r.record.token.saturating_add(1),
                        ttl_ms,
                        acquired_at_unix_ms: unix_ms(SystemTime::now()),
                    },
                    Some(r.etag.as_str()),
                ),
            };
            if let Write::Done = self.write(lease, &record, etag).await? {
                return Ok(BackendReply::Granted {
                    token: FencingToken(record.token),
                });
            }
        }
        Err(Failure(
            "the lease record kept changing while it was being acquired".into(),
        ))
    }

    async fn try_renew(
        &self,
        lease: &LeaseName,
        owner: &OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> Result<BackendReply, Failure> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(r) = self.read(lease).await? else {
                return Ok(BackendReply::Denied { holder: None });
            };
            if r.record.owner != owner.as_str() || r.record.token != token.0 {
                let holder = (!r.record.owner.is_empty()).then(|| r.record.owner.clone());
                return Ok(BackendReply::Denied { holder });
            }
            // Still ours — also after a write of ours that timed out but was applied.
            let record = Record {
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                ..r.record
            };
            if let Write::Done = self.write(lease, &record, Some(&r.etag)).await? {
                return Ok(BackendReply::Renewed);
            }
        }
        Err(Failure(
            "the lease record kept changing while it was being renewed".into(),
        ))
    }

    async fn try_release(
        &self,
        lease: &LeaseName,
        owner: &OwnerId,
        token: Option<FencingToken>,
    ) -> Result<BackendReply, Failure> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(r) = self.read(lease).await? else {
                return Ok(BackendReply::Released { was_held: false });
            };
            let ours =
                r.record.owner == owner.as_str() && token.is_none_or(|t| t.0 == r.record.token);
            if !ours {
                return Ok(BackendReply::Released { was_held: false });
            }
            let was_held = r.live();
            let record = Record {
                owner: String::new(),
                ..r.record
            };
            if let Write::Done = self.write(lease, &record, Some(&r.etag)).await? {
                return Ok(BackendReply::Released { was_held });
            }
        }
        Err(Failure(
            "the lease record kept changing while it was being released".into(),
        ))
    }

    fn record_of(lease: &LeaseName, r: &Read) -> Option<LeaseRecord> {
        r.live().then(|| LeaseRecord {
            name: lease.clone(),
            owner: r.record.owner.clone(),
            token: FencingToken(r.record.token),
            acquired_at: Some(UNIX_EPOCH + Duration::from_millis(r.record.acquired_at_unix_ms)),
            expires_in: Some(r.left),
        })
    }

    async fn blob_names(&self) -> Result<Vec<String>, Failure> {
        let mut names = Vec::new();
        let mut marker = String::new();
        // Bounded: 5000 blobs a page, at most 100 pages.
        for _ in 0..100 {
            let mut query = vec![("restype", "container"), ("comp", "list")];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let response = self.send(Method::GET, None, &query, &[], None).await?;
            if response.status() != StatusCode::OK {
                return Err(Self::unexpected("list", response.status()));
            }
            let xml = response
                .text()
                .await
                .map_err(|e| self.failed("Azure list body", e))?;
            names.extend(xml_values(&xml, "Name"));
            marker = xml_values(&xml, "NextMarker").pop().unwrap_or_default();
            if marker.is_empty() {
                break;
            }
        }
        Ok(names)
    }
}

/// The text of every `<tag>…</tag>` in `xml`. Lease names need no unescaping (they are
/// restricted to `[a-z0-9.-]`); anything else is skipped by the caller's validation.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut values = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        values.push(rest[..end].to_owned());
        rest = &rest[end + close.len()..];
    }
    values
}

impl LeaseBackend for AzureBackend {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn request_timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    fn default_operation_timeout(&self) -> Duration {
        DEFAULT_OPERATION_TIMEOUT
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            self.try_acquire(lease, owner, ttl)
                .await
                .unwrap_or_else(Into::into)
        })
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            self.try_renew(lease, owner, ttl, token)
                .await
                .unwrap_or_else(Into::into)
        })
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            self.try_release(lease, owner, token)
                .await
                .unwrap_or_else(Into::into)
        })
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        Box::pin(async move {
            let read = self.read(lease).await.map_err(|Failure(e)| e)?;
            Ok(read.as_ref().and_then(|r| Self::record_of(lease, r)))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        Box::pin(async move {
            let names = self.blob_names().await.map_err(|Failure(e)| e)?;
            let mut records = Vec::new();
            for name in names.iter().filter_map(|n| LeaseName::new(n).ok()) {
                if let Some(r) = self.read(&name).await.map_err(|Failure(e)| e)? {
                    records.extend(Self::record_of(&name, &r));
                }
            }
            Ok(records)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_pulled_out_of_a_listing() {
        let xml = "<EnumerationResults><Blobs><Blob><Name>shard-1</Name></Blob>\
                   <Blob><Name>shard-2</Name></Blob></Blobs><NextMarker /></EnumerationResults>";
        assert_eq!(xml_values(xml, "Name"), ["shard-1", "shard-2"]);
        assert!(xml_values(xml, "NextMarker").is_empty());
    }

    #[test]
    fn settings_have_documented_defaults_and_parse_from_toml() {
        let s: AzureSettings = toml::from_str("container = \"leases\"\nrequest-timeout = \"2s\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.container, "leases");
        assert_eq!(s.request_timeout, Duration::from_secs(2));
        assert_eq!(s.connection_string, "UseDevelopmentStorage=true");
        assert_eq!(
            AzureSettings::default().request_timeout,
            Duration::from_secs(6)
        );
    }
}
