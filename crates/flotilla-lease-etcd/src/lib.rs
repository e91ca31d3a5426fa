//! A Flotilla lease backend on etcd (v3 API).
//!
//! One lease is one key, `<prefix><lease name>`, whose value records the owner and when it
//! acquired the lease:
//!
//! - **acquire** grants an etcd lease whose TTL is the heartbeat timeout, then runs a transaction
//!   that creates the key attached to it *only if the key is absent*. If the key exists and is
//!   this owner's (a restart of the same node, or an earlier acquisition), it is rewritten —
//!   only if unchanged since it was read — onto the new etcd lease: a new hold, with a new token;
//!   if it is another owner's, the answer is denied.
//! - **renew** checks that the key is still this hold (its mod revision is the token), then
//!   sends one keep-alive for its etcd lease. The client sends keep-alives itself, when the
//!   holder asks; nothing renews in the background.
//! - **release** deletes the key only if it is still the hold named (mod revision equal to the
//!   token), then revokes the etcd lease.
//! - The **fencing token** is the key's mod revision, which only an acquisition changes (a
//!   keep-alive writes nothing): etcd's revision counter only grows, so every grant gets a larger
//!   token, and a hold keeps its token across renewals. A renewal or release of an earlier hold
//!   compares an older revision and changes nothing.
//!
//! Two properties of etcd to know:
//!
//! - etcd's **minimum TTL is 2 s** (lower values are raised by the server), and TTLs are whole
//!   seconds: the heartbeat timeout is rounded up.
//! - After an **etcd restart every lease gets its full TTL back** (etcd does not persist the
//!   remaining time). A holder that crashed just before an etcd restart therefore keeps its lease
//!   for up to one extra TTL; the holder's own deadline (`check_lease`) is unaffected.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "testing")]
pub mod testing;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Error as EtcdClientError, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp,
};
use flotilla_lease::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};
use serde::{Deserialize, Serialize};

/// The etcd backend's settings (`[lease.etcd]` in TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdSettings {
    /// Client URLs of the etcd members. Default: `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix under which leases are stored. Default: `/flotilla/leases/`.
    pub prefix: String,
    /// Timeout of one backend call (it may make several etcd requests). Default: 2 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Timeout for establishing the connection. Default: 2 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// User name, when etcd authentication is on. Default: none.
    pub user: Option<String>,
    /// Password of `user`. Default: none.
    pub password: Option<String>,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/flotilla/leases/".into(),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            user: None,
            password: None,
        }
    }
}

impl EtcdSettings {
    /// Settings for these endpoints, the rest default.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// Why the etcd backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The settings are unusable.
    #[error("invalid etcd settings: {0}")]
    Config(String),
    /// The endpoints could not be reached or refused us (wrong credentials, for one).
    #[error("cannot use etcd at {endpoints:?}: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// What etcd or the transport said.
        source: EtcdClientError,
    },
}

impl EtcdError {
    /// Whether etcd could not be reached (or did not answer in time): worth trying again
    /// later, unlike unusable settings or refused credentials, which need an operator.
    pub fn is_unreachable(&self) -> bool {
        // gRPC status codes (they are fixed by the gRPC specification).
        const INVALID_ARGUMENT: i32 = 3;
        const PERMISSION_DENIED: i32 = 7;
        const UNAUTHENTICATED: i32 = 16;
        match self {
            Self::Config(_) => false,
            Self::Connect {
                source: EtcdClientError::GRpcStatus(status),
                ..
            } => !matches!(
                i32::from(status.code()),
                INVALID_ARGUMENT | PERMISSION_DENIED | UNAUTHENTICATED
            ),
            Self::Connect {
                source: EtcdClientError::InvalidArgs(_) | EtcdClientError::InvalidUri(_),
                ..
            } => false,
            Self::Connect { .. } => true,
        }
    }
}

/// What the key's value holds.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    owner: String,
    acquired_at_unix_ms: u64,
}

/// The etcd lease backend. Cheap to clone (one shared gRPC channel).
#[derive(Clone)]
pub struct EtcdBackend {
    client: Client,
    settings: EtcdSettings,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

/// etcd's smallest TTL, in seconds.
pub const MIN_TTL_SECS: i64 = 2;

fn ttl_secs(ttl: Duration) -> i64 {
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let secs = if ttl.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    };
    secs.max(MIN_TTL_SECS)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The grant a successful transaction made: its one write's revision is the token.
fn granted(response: &etcd_client::TxnResponse) -> BackendReply {
    let revision = response.header().map_or(0, |h| h.revision());
    BackendReply::Granted {
        token: FencingToken(u64::try_from(revision).unwrap_or(0)),
    }
}

fn unknown(what: &str, e: &EtcdClientError) -> BackendReply {
    BackendReply::Unknown {
        reason: format!("etcd {what} failed: {e}"),
    }
}

/// The owner recorded in a key's value; values not written by Flotilla count as a foreign owner
/// named after the raw value, so they are never taken or deleted.
fn owner_of(kv: &KeyValue) -> String {
    serde_json::from_slice::<Value>(kv.value())
        .map(|v| v.owner)
        .unwrap_or_else(|_| String::from_utf8_lossy(kv.value()).into_owned())
}

fn token_of(kv: &KeyValue) -> FencingToken {
    FencingToken(u64::try_from(kv.mod_revision()).unwrap_or(0))
}

/// An etcd client for `settings` (endpoints, timeouts, credentials; the prefix must end with
/// `/`), checked with one read under the prefix: a malformed endpoint, an unreachable cluster or
/// wrong credentials are reported here. Other Flotilla stores on etcd share this.
pub async fn connect_client(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    if settings.endpoints.is_empty() {
        return Err(EtcdError::Config("no endpoints given".into()));
    }
    for e in &settings.endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(EtcdError::Config(format!(
                "endpoint {e:?} must be a URL such as http://127.0.0.1:2379"
            )));
        }
    }
    if settings.prefix.is_empty() || !settings.prefix.ends_with('/') {
        return Err(EtcdError::Config(format!(
            "prefix {:?} must be non-empty and end with '/'",
            settings.prefix
        )));
    }
    if settings.request_timeout.is_zero() {
        return Err(EtcdError::Config("request-timeout must be positive".into()));
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_timeout(settings.request_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    match (&settings.user, &settings.password) {
        (Some(user), Some(password)) => {
            options = options.with_user(user.clone(), password.clone());
        }
        (None, None) => {}
        _ => {
            return Err(EtcdError::Config(
                "user and password must be given together".into(),
            ));
        }
    }
    let connect_error = |source| EtcdError::Connect {
        endpoints: settings.endpoints.clone(),
        source,
    };
    let connect = Client::connect(&settings.endpoints, Some(options));
    let mut client = tokio::time::timeout(settings.connect_timeout * 2, connect)
        .await
        .map_err(|_| {
            connect_error(EtcdClientError::Internal(format!(
                "no connection within {:?}",
                settings.connect_timeout * 2
            )))
        })?
        .map_err(connect_error)?;
    // One cheap read proves the endpoint answers and the credentials are accepted.
    client
        .get(
            settings.prefix.as_bytes(),
            Some(GetOptions::new().with_count_only()),
        )
        .await
        .map_err(connect_error)?;
    Ok(client)
}

impl EtcdBackend {
    /// The backend's kind, as [`LeaseBackend::kind`] names it in logs and metrics.
    pub const KIND: &'static str = "etcd";

    /// Connects to etcd. A malformed endpoint, an unreachable cluster or wrong credentials are
    /// reported here, not at the first acquire.
    pub async fn connect(settings: EtcdSettings) -> Result<Self, EtcdError> {
        let client = connect_client(&settings).await?;
        Ok(Self { client, settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    fn key(&self, lease: &LeaseName) -> String {
        format!("{}{}", self.settings.prefix, lease.as_str())
    }

    async fn get(&self, lease: &LeaseName) -> Result<Option<KeyValue>, EtcdClientError> {
        let mut response = self.client.clone().get(self.key(lease), None).await?;
        Ok(response.take_kvs().into_iter().next())
    }

    async fn try_acquire(&self, lease: &LeaseName, owner: &OwnerId, ttl: Duration) -> BackendReply {
        let mut client = self.client.clone();
        let key = self.key(lease);
        // A key can vanish between a failed create and the read that follows (its lease
        // expired or was released): then try again, a bounded number of times.
        for _ in 0..3 {
            let grant = match client.lease_grant(ttl_secs(ttl), None).await {
                Ok(grant) => grant.id(),
                Err(e) => return unknown("lease grant", &e),
            };
            let value = Value {
                owner: owner.as_str().to_owned(),
                acquired_at_unix_ms: unix_ms(SystemTime::now()),
            };
            let value = match serde_json::to_vec(&value) {
                Ok(v) => v,
                Err(e) => {
                    return BackendReply::Unknown {
                        reason: format!("cannot encode the lease record: {e}"),
                    };
                }
            };
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(grant)),
                )]);
            let created = match client.txn(txn).await {
                Ok(r) => r,
                // The grant expires by itself if this was never applied.
                Err(e) => return unknown("create transaction", &e),
            };
            if created.succeeded() {
                // The put is the transaction's only write: its revision is the key's mod
                // revision.
                return granted(&created);
            }
            let existing = match self.get(lease).await {
                Ok(kv) => kv,
                Err(e) => {
                    let _ = client.lease_revoke(grant).await;
                    return unknown("read", &e);
                }
            };
            let Some(kv) = existing else {
                let _ = client.lease_revoke(grant).await;
                continue;
            };
            let holder = owner_of(&kv);
            if holder != owner.as_str() {
                // Not created: the grant is unused. Revoking it is a courtesy; it expires anyway.
                let _ = client.lease_revoke(grant).await;
                return BackendReply::Denied {
                    holder: Some(holder),
                };
            }
            // Ours already (a restarted node, or an earlier acquisition that was applied): a new
            // hold replaces it, on the new etcd lease, if nothing changed it since the read.
            let replace = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(
                    key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(grant)),
                )]);
            match client.txn(replace).await {
                Ok(r) if r.succeeded() => {
                    // The earlier hold's etcd lease holds nothing any more.
                    let _ = client.lease_revoke(kv.lease()).await;
                    return granted(&r);
                }
                Ok(_) => {
                    let _ = client.lease_revoke(grant).await;
                }
                Err(e) => return unknown("replace transaction", &e),
            }
        }
        BackendReply::Unknown {
            reason: "the lease key kept changing while it was being acquired".into(),
        }
    }

    async fn try_renew(
        &self,
        lease: &LeaseName,
        owner: &OwnerId,
        token: FencingToken,
    ) -> BackendReply {
        let kv = match self.get(lease).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return BackendReply::Denied { holder: None },
            Err(e) => return unknown("read", &e),
        };
        let holder = owner_of(&kv);
        if holder != owner.as_str() || token_of(&kv) != token {
            // Another owner's, or a later hold of this owner: not the hold being renewed.
            return BackendReply::Denied {
                holder: Some(holder),
            };
        }
        match self.client.clone().lease_keep_alive(kv.lease()).await {
            Ok(_) => BackendReply::Renewed,
            // "lease not found": it expired between the read and the keep-alive.
            Err(EtcdClientError::LeaseKeepAliveError(_)) => BackendReply::Denied { holder: None },
            Err(e) => unknown("keep-alive", &e),
        }
    }

    async fn try_release(
        &self,
        lease: &LeaseName,
        owner: &OwnerId,
        token: Option<FencingToken>,
    ) -> BackendReply {
        let kv = match self.get(lease).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return BackendReply::Released { was_held: false },
            Err(e) => return unknown("read", &e),
        };
        let ours = owner_of(&kv) == owner.as_str() && token.is_none_or(|t| t == token_of(&kv));
        if !ours {
            return BackendReply::Released { was_held: false };
        }
        // Deleted only if still the hold read (the one named, when a token is given).
        let key = self.key(lease);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(key, None)]);
        let mut client = self.client.clone();
        let deleted = match client.txn(txn).await {
            Ok(r) => r.succeeded(),
            Err(e) => return unknown("delete transaction", &e),
        };
        // The key is gone (or changed hands): revoking its etcd lease frees the server's state.
        if let Err(e) = client.lease_revoke(kv.lease()).await {
            tracing::debug!(lease = %lease, error = %e, "revoking the etcd lease after release");
        }
        BackendReply::Released { was_held: deleted }
    }

    async fn record(&self, kv: &KeyValue) -> Result<Option<LeaseRecord>, String> {
        let name = kv
            .key_str()
            .ok()
            .and_then(|k| k.strip_prefix(self.settings.prefix.as_str()))
            .and_then(|n| LeaseName::new(n).ok());
        let Some(name) = name else { return Ok(None) };
        let value = serde_json::from_slice::<Value>(kv.value()).ok();
        let ttl = self
            .client
            .clone()
            .lease_time_to_live(kv.lease(), None)
            .await
            .map_err(|e| format!("etcd time-to-live failed: {e}"))?
            .ttl();
        if ttl <= 0 {
            return Ok(None);
        }
        Ok(Some(LeaseRecord {
            name,
            owner: owner_of(kv),
            token: token_of(kv),
            acquired_at: value.map(|v| UNIX_EPOCH + Duration::from_millis(v.acquired_at_unix_ms)),
            expires_in: u64::try_from(ttl).ok().map(Duration::from_secs),
        }))
    }
}

impl LeaseBackend for EtcdBackend {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn request_timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.try_acquire(lease, owner, ttl))
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        _ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.try_renew(lease, owner, token))
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.try_release(lease, owner, token))
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        Box::pin(async move {
            match self.get(lease).await {
                Ok(Some(kv)) => self.record(&kv).await,
                Ok(None) => Ok(None),
                Err(e) => Err(format!("etcd read failed: {e}")),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        Box::pin(async move {
            let kvs = self
                .client
                .clone()
                .get(
                    self.settings.prefix.as_bytes(),
                    Some(GetOptions::new().with_prefix()),
                )
                .await
                .map_err(|e| format!("etcd read failed: {e}"))?
                .take_kvs();
            let mut records = Vec::with_capacity(kvs.len());
            for kv in &kvs {
                if let Some(r) = self.record(kv).await? {
                    records.push(r);
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
    fn ttls_are_whole_seconds_of_at_least_two() {
        assert_eq!(ttl_secs(Duration::from_millis(500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ttl_secs(Duration::from_secs(120)), 120);
    }

    #[test]
    fn settings_have_documented_defaults_and_parse_from_toml() {
        let s: EtcdSettings = toml::from_str(
            r#"
            endpoints = ["http://10.0.0.1:2379"]
            request-timeout = "3s"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(s.request_timeout, Duration::from_secs(3));
        assert_eq!(s.prefix, "/flotilla/leases/");
        assert!(toml::from_str::<EtcdSettings>("endpoint = 1").is_err());
    }
}
