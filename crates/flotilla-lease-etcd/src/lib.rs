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

use flotilla_etcd::{Client, Compare, CompareOp, KeyValue, Txn, TxnOp, ttl_secs};
use flotilla_lease::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};
use serde::{Deserialize, Serialize};

pub use flotilla_etcd::{EtcdError, EtcdSettings, EtcdTls, MIN_TTL_SECS};

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

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The grant a successful transaction made: its one write's revision is the token.
fn granted(response: &flotilla_etcd::api::etcdserverpb::TxnResponse) -> BackendReply {
    let revision = response.header.as_ref().map_or(0, |h| h.revision);
    BackendReply::Granted {
        token: FencingToken(u64::try_from(revision).unwrap_or(0)),
    }
}

fn unknown(what: &str, e: &EtcdError) -> BackendReply {
    BackendReply::Unknown {
        reason: format!("etcd {what} failed: {e}"),
    }
}

/// The owner recorded in a key's value; values not written by Flotilla count as a foreign owner
/// named after the raw value, so they are never taken or deleted.
fn owner_of(kv: &KeyValue) -> String {
    serde_json::from_slice::<Value>(&kv.value)
        .map(|v| v.owner)
        .unwrap_or_else(|_| String::from_utf8_lossy(&kv.value).into_owned())
}

fn token_of(kv: &KeyValue) -> FencingToken {
    FencingToken(u64::try_from(kv.mod_revision).unwrap_or(0))
}

impl EtcdBackend {
    /// The backend's kind, as [`LeaseBackend::kind`] names it in logs and metrics.
    pub const KIND: &'static str = "etcd";

    /// Connects to etcd. A malformed endpoint, an unreachable cluster or wrong credentials are
    /// reported here, not at the first acquire.
    pub async fn connect(settings: EtcdSettings) -> Result<Self, EtcdError> {
        let client = Client::connect(&settings).await?;
        Ok(Self { client, settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    fn key(&self, lease: &LeaseName) -> String {
        format!("{}{}", self.settings.prefix, lease.as_str())
    }

    async fn get(&self, lease: &LeaseName) -> Result<Option<KeyValue>, EtcdError> {
        self.client.get(self.key(lease)).await
    }

    async fn try_acquire(&self, lease: &LeaseName, owner: &OwnerId, ttl: Duration) -> BackendReply {
        let client = &self.client;
        let key = self.key(lease);
        // A key can vanish between a failed create and the read that follows (its lease
        // expired or was released): then try again, a bounded number of times.
        for _ in 0..3 {
            let grant = match client.lease_grant(ttl_secs(ttl)).await {
                Ok(grant) => grant,
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
                .and_then([TxnOp::put(key.clone(), value.clone(), Some(grant))]);
            let created = match client.txn(txn).await {
                Ok(r) => r,
                // The grant expires by itself if this was never applied.
                Err(e) => return unknown("create transaction", &e),
            };
            if created.succeeded {
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
                    kv.mod_revision,
                )])
                .and_then([TxnOp::put(key.clone(), value, Some(grant))]);
            match client.txn(replace).await {
                Ok(r) if r.succeeded => {
                    // The earlier hold's etcd lease holds nothing any more.
                    let _ = client.lease_revoke(kv.lease).await;
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
        match self.client.lease_keep_alive(kv.lease).await {
            Ok(Some(_)) => BackendReply::Renewed,
            // It expired between the read and the keep-alive.
            Ok(None) => BackendReply::Denied { holder: None },
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
                kv.mod_revision,
            )])
            .and_then([TxnOp::delete(key)]);
        let client = &self.client;
        let deleted = match client.txn(txn).await {
            Ok(r) => r.succeeded,
            Err(e) => return unknown("delete transaction", &e),
        };
        // The key is gone (or changed hands): revoking its etcd lease frees the server's state.
        if let Err(e) = client.lease_revoke(kv.lease).await {
            tracing::debug!(lease = %lease, error = %e, "revoking the etcd lease after release");
        }
        BackendReply::Released { was_held: deleted }
    }

    async fn record(&self, kv: &KeyValue) -> Result<Option<LeaseRecord>, String> {
        let name = std::str::from_utf8(&kv.key)
            .ok()
            .and_then(|k| k.strip_prefix(self.settings.prefix.as_str()))
            .and_then(|n| LeaseName::new(n).ok());
        let Some(name) = name else { return Ok(None) };
        let value = serde_json::from_slice::<Value>(&kv.value).ok();
        let Some(ttl) = self
            .client
            .lease_time_to_live(kv.lease)
            .await
            .map_err(|e| format!("etcd time-to-live failed: {e}"))?
        else {
            return Ok(None);
        };
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
                .get_prefix(self.settings.prefix.as_bytes(), false)
                .await
                .map_err(|e| format!("etcd read failed: {e}"))?;
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
