//! What a lease backend implements.
//!
//! A backend answers four questions about one lease for one owner. It never decides anything
//! about timing: the [`LeaseHolder`](flotilla_proto::lease::LeaseHolder) does, and a backend only
//! maps its client's results to a [`BackendReply`]:
//!
//! | call | certain success | certainly someone else's | anything else |
//! | --- | --- | --- | --- |
//! | `acquire` | `Granted { token }` (also when this owner already holds it: a new hold) | `Denied { holder }` | `Unknown { reason }` |
//! | `renew` | `Renewed` (also when a retried write turns out to have been applied) | `Denied { holder }` | `Unknown { reason }` |
//! | `release` | `Released { was_held }` (`false` when not this owner's, or another hold than `token`) | — | `Unknown { reason }` |
//! | `inspect` | `Inspected { token }` (this owner's live hold, if any) | — | `Unknown { reason }` |
//!
//! Every `acquire` that is granted makes a **new hold with a new, higher token** — also when this
//! owner already holds the lease (the earlier hold is replaced). `renew` and `release` name the
//! hold they mean by its token and touch no other: a request applied late, after its caller gave
//! up on it, can then never change a later hold of the same owner.
//!
//! A backend that could not send a request at all (no connection yet, as with a
//! [`DeferredBackend`](crate::DeferredBackend)) answers `NotSent { reason }` to any call: nothing
//! changed at the backend.
//!
//! Timeouts are the caller's: the driver bounds every call by the backend's request timeout and
//! turns an overrun into `Unknown`. A backend must never panic on what a server sends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub use flotilla_proto::lease::{BackendReply, FencingToken};

/// A boxed future, so backends can be chosen at run time (`Arc<dyn LeaseBackend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a lease or owner name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, too long, or with characters a backend cannot store.
    #[error(
        "invalid lease name {0:?}: use 1 to 253 lowercase ASCII letters, digits, '-' or '.', \
         starting and ending with a letter or digit (it must be valid as an etcd key, a blob \
         name and a Kubernetes object name)"
    )]
    Lease(String),
    /// Empty or too long.
    #[error("invalid lease owner {0:?}: use 1 to 256 printable characters")]
    Owner(String),
}

/// The name of a lease, valid for every backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseName(String);

impl LeaseName {
    /// Validates a lease name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok = (1..=253).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && edge_ok(name.chars().next())
            && edge_ok(name.chars().last());
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::Lease(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who holds a lease: stable across restarts of the same node (by default its address without
/// the incarnation UID), so a restarted node re-acquires its own unexpired leases at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerId(String);

impl OwnerId {
    /// Validates an owner identity.
    pub fn new(owner: &str) -> Result<Self, NameError> {
        let ok = (1..=256).contains(&owner.len()) && !owner.chars().any(char::is_control);
        if ok {
            Ok(Self(owner.to_owned()))
        } else {
            Err(NameError::Owner(owner.to_owned()))
        }
    }

    /// The identity.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The configured `lease.owner`, or else the node's address without its incarnation UID:
    /// the same before and after a restart of the node.
    pub fn for_node(
        settings: &flotilla_core::LeaseSettings,
        node: &flotilla_core::Address,
    ) -> Result<Self, NameError> {
        match &settings.owner {
            Some(owner) => Self::new(owner),
            None => Self::new(&node.to_string()),
        }
    }
}

/// The leases held by owners that are not among `members` (the owner ids of the cluster's
/// current members): zombie leases. A lease that is still held but whose owner has left the
/// cluster blocks its resource until it expires — typically a node that went away without
/// releasing. Records with nothing left to their hold (`expires_in` zero) are not held.
pub fn zombies<'a>(
    records: &'a [LeaseRecord],
    members: &std::collections::BTreeSet<String>,
) -> Vec<&'a LeaseRecord> {
    records
        .iter()
        .filter(|r| !members.contains(&r.owner))
        .filter(|r| r.expires_in.is_none_or(|d| !d.is_zero()))
        .collect()
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease as the backend stores it, for listings and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease.
    pub name: LeaseName,
    /// Its holder.
    pub owner: String,
    /// The hold's fencing token.
    pub token: FencingToken,
    /// When the holder acquired it (wall clock, as the backend reports it).
    pub acquired_at: Option<SystemTime>,
    /// Time left until it expires without renewal, as the backend sees it.
    pub expires_in: Option<Duration>,
}

/// A lease backend. See the [module docs](self) for the contract.
pub trait LeaseBackend: Send + Sync + 'static {
    /// The backend's kind, for logs: "memory", "etcd", "azure", "kubernetes".
    fn kind(&self) -> &'static str;

    /// The timeout the driver puts on each call.
    fn request_timeout(&self) -> Duration;

    /// The `lease-operation-timeout` this backend recommends, used when none is configured.
    fn default_operation_timeout(&self) -> Duration {
        flotilla_core::LeaseSettings::DEFAULT_OPERATION_TIMEOUT
    }

    /// Takes `lease` for `owner` for `ttl`, or reports who holds it.
    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply>;

    /// Extends `owner`'s hold of `lease` by `ttl`.
    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply>;

    /// Gives `lease` up if `owner` holds it.
    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply>;

    /// The token of `owner`'s live hold of `lease`, as `Inspected` (`None` when the lease is
    /// free, expired or another owner's). The holder asks it to clean up after an acquisition
    /// without a certain answer: it then releases exactly the hold this names. By default it
    /// is read from [`describe`](Self::describe).
    fn inspect<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            match self.describe(lease).await {
                Ok(Some(r))
                    if r.owner == owner.as_str() && r.expires_in.is_none_or(|d| !d.is_zero()) =>
                {
                    BackendReply::Inspected {
                        token: Some(r.token),
                    }
                }
                Ok(_) => BackendReply::Inspected { token: None },
                Err(reason) => BackendReply::Unknown { reason },
            }
        })
    }

    /// What the backend stores for `lease`, if anything (expired holds excluded).
    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>>;

    /// Every live lease this backend stores (under its configured prefix or container), by name.
    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_are_held_leases_of_owners_outside_the_cluster() {
        let record = |name: &str, owner: &str, left: u64| LeaseRecord {
            name: LeaseName::new(name).unwrap_or_else(|e| panic!("{e}")),
            owner: owner.into(),
            token: FencingToken(1),
            acquired_at: None,
            expires_in: Some(Duration::from_secs(left)),
        };
        let records = [
            record("shard-1", "a", 10),
            record("shard-2", "gone", 10),
            record("shard-3", "gone", 0),
        ];
        let members = ["a".to_owned()].into();
        let z: Vec<&str> = zombies(&records, &members)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(z, ["shard-2"]);
    }

    #[test]
    fn names_are_valid_for_every_backend() {
        for ok in ["shard-12", "a", "sharding.orders.7", "x1"] {
            assert!(LeaseName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Upper", "a/b", "a b", "é", &"a".repeat(254)] {
            assert!(LeaseName::new(bad).is_err(), "{bad}");
        }
        assert!(OwnerId::new("flotilla://demo@10.0.0.1:2552").is_ok());
        assert!(OwnerId::new("").is_err());
        assert!(OwnerId::new("a\nb").is_err());
    }

    #[test]
    fn the_owner_is_configured_or_the_node_address_without_its_uid() {
        let node = flotilla_core::Address::remote("orders", "10.0.0.7", 2552)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut settings = flotilla_core::LeaseSettings::default();
        assert_eq!(
            OwnerId::for_node(&settings, &node).map(|o| o.0),
            Ok("flotilla://orders@10.0.0.7:2552".to_owned())
        );
        settings.owner = Some("orders-7".into());
        assert_eq!(
            OwnerId::for_node(&settings, &node).map(|o| o.0),
            Ok("orders-7".to_owned())
        );
        settings.owner = Some(String::new());
        assert!(OwnerId::for_node(&settings, &node).is_err());
    }
}
