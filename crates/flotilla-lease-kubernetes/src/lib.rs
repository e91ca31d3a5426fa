//! A Flotilla lease backend on Kubernetes `coordination.k8s.io/v1` Lease objects.
//!
//! One Flotilla lease is one Lease object of the same name in the configured namespace,
//! labelled `app.kubernetes.io/managed-by=flotilla`:
//!
//! | Lease field | meaning |
//! | --- | --- |
//! | `spec.holderIdentity` | the owner; empty when released |
//! | `spec.leaseDurationSeconds` | the holder's TTL (heartbeat timeout, whole seconds, at least 1) |
//! | `spec.acquireTime` | when the current holder took it |
//! | `spec.renewTime` | the holder's last renewal |
//! | `spec.leaseTransitions` | the **fencing token**: incremented with every grant (also when the holder acquires it again) |
//!
//! Every change is a `PUT` carrying the `resourceVersion` that was read (or a `POST` that fails if
//! the object exists): the API server refuses a stale write with 409 Conflict, and the backend
//! reads the object again and decides anew. Another owner's lease is taken only after its
//! `renewTime + leaseDurationSeconds` has passed.
//!
//! # Clocks
//!
//! As with every Kubernetes Lease user (client-go's leader election included), expiry compares
//! the holder's `renewTime` — written from the holder's wall clock — with the reader's wall clock.
//! Node clocks must therefore agree to well within the holder's safety margin (NTP does this);
//! the holder itself never relies on the API server to refuse a late renewal.
//!
//! # Configuration
//!
//! By default the client configuration is inferred as `kubectl` does: `$KUBECONFIG` or
//! `~/.kube/config`, else the in-cluster service account. `api-server` overrides it with a plain
//! URL and no credentials (for tests and `kubectl proxy`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use flotilla_lease::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};

#[cfg(feature = "testing")]
pub mod testing;

/// The label every Lease object Flotilla creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "flotilla");

pub use flotilla_core::KubernetesSettings;

/// Why the Kubernetes backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubernetesError {
    /// The settings are unusable.
    #[error("invalid Kubernetes lease settings: {0}")]
    Config(String),
    /// No client configuration could be found or built.
    #[error("no Kubernetes client configuration: {0}")]
    NoConfig(String),
    /// The API server did not accept a first read of the Lease resource.
    #[error("cannot use Lease objects in namespace {namespace:?}: {reason}")]
    Unusable {
        /// The namespace.
        namespace: String,
        /// What failed.
        reason: String,
    },
}

impl KubernetesError {
    /// Whether the API server could not be used for now (unreachable, or refusing the first
    /// read — permissions can be granted while the node runs): worth trying again later,
    /// unlike unusable settings or a missing client configuration.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unusable { .. })
    }
}

/// The Kubernetes lease backend. Cheap to clone.
#[derive(Clone)]
pub struct KubernetesBackend {
    api: Api<Lease>,
    namespace: String,
    settings: KubernetesSettings,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// How many conditional writes a call tries before giving up on a lease that keeps changing.
const CAS_ATTEMPTS: usize = 5;

fn micro(t: SystemTime) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .ok()
        .map(MicroTime)
}

fn system_time(t: &MicroTime) -> SystemTime {
    SystemTime::from(t.0)
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn failure(what: &str, e: &kube::Error) -> String {
    let hint = match status_code(e) {
        Some(401 | 403) => {
            " (not allowed: the service account needs get, list, create and update on \
             leases.coordination.k8s.io)"
        }
        _ => "",
    };
    format!("Kubernetes {what} failed: {e}{hint}")
}

/// What a Lease object says.
struct View {
    holder: String,
    transitions: i32,
    /// Time left before expiry on this node's clock; zero when expired or released.
    left: Duration,
    acquired_at: Option<SystemTime>,
}

fn view(lease: &Lease, now: SystemTime) -> View {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    let left = match &spec.renew_time {
        Some(renewed) if !holder.is_empty() => (system_time(renewed) + duration)
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
        _ => Duration::ZERO,
    };
    View {
        holder,
        transitions: spec.lease_transitions.unwrap_or(0),
        left,
        acquired_at: spec.acquire_time.as_ref().map(system_time),
    }
}

fn token(transitions: i32) -> FencingToken {
    FencingToken(u64::try_from(transitions).unwrap_or(0))
}

fn duration_secs(ttl: Duration) -> i32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

impl KubernetesBackend {
    /// The backend's kind, as [`LeaseBackend::kind`] names it in logs and metrics.
    pub const KIND: &'static str = "kubernetes";

    /// Builds the client and checks that Lease objects can be read in the namespace. Missing
    /// configuration, a malformed `api-server` URL, an unreachable server or refused credentials
    /// are reported here.
    pub async fn connect(settings: KubernetesSettings) -> Result<Self, KubernetesError> {
        if settings.request_timeout.is_zero() {
            return Err(KubernetesError::Config(
                "request-timeout must be positive".into(),
            ));
        }
        let mut config = match &settings.api_server {
            Some(url) => {
                let uri = url.parse().map_err(|e| {
                    KubernetesError::Config(format!("api-server {url:?} is not a URL: {e}"))
                })?;
                Config::new(uri)
            }
            None => Config::infer()
                .await
                .map_err(|e| KubernetesError::NoConfig(e.to_string()))?,
        };
        config.connect_timeout = Some(settings.request_timeout);
        config.read_timeout = Some(settings.request_timeout);
        config.write_timeout = Some(settings.request_timeout);
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| KubernetesError::NoConfig(format!("cannot build the client: {e}")))?;
        let api: Api<Lease> = Api::namespaced(client, &namespace);
        let params = ListParams::default().limit(1);
        let probe = api.list(&params);
        match tokio::time::timeout(settings.request_timeout * 2, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(KubernetesError::Unusable {
                    namespace,
                    reason: failure("list", &e),
                });
            }
            Err(_) => {
                return Err(KubernetesError::Unusable {
                    namespace,
                    reason: format!("no answer within {:?}", settings.request_timeout * 2),
                });
            }
        }
        Ok(Self {
            api,
            namespace,
            settings,
        })
    }

    /// The namespace the Lease objects live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn new_object(name: &LeaseName, spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.as_str().to_owned()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    /// Writes `lease` back: a conflict means somebody else wrote since it was read.
    async fn replace(&self, name: &LeaseName, lease: &Lease) -> Result<bool, String> {
        match self
            .api
            .replace(name.as_str(), &PostParams::default(), lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(failure("update", &e)),
        }
    }

    async fn get(&self, name: &LeaseName) -> Result<Option<Lease>, String> {
        self.api
            .get_opt(name.as_str())
            .await
            .map_err(|e| failure("read", &e))
    }

    async fn try_acquire(
        &self,
        name: &LeaseName,
        owner: &OwnerId,
        ttl: Duration,
    ) -> Result<BackendReply, String> {
        for _ in 0..CAS_ATTEMPTS {
            let now = SystemTime::now();
            let Some(mut lease) = self.get(name).await? else {
                let object = Self::new_object(
                    name,
                    LeaseSpec {
                        holder_identity: Some(owner.as_str().to_owned()),
                        lease_duration_seconds: Some(duration_secs(ttl)),
                        acquire_time: micro(now),
                        renew_time: micro(now),
                        lease_transitions: Some(1),
                        ..LeaseSpec::default()
                    },
                );
                match self.api.create(&PostParams::default(), &object).await {
                    Ok(_) => return Ok(BackendReply::Granted { token: token(1) }),
                    Err(e) if status_code(&e) == Some(409) => continue, // created meanwhile
                    Err(e) => return Err(failure("create", &e)),
                }
            };
            let v = view(&lease, now);
            let live = !v.left.is_zero();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            let granted = if live && v.holder != owner.as_str() {
                return Ok(BackendReply::Denied {
                    holder: Some(v.holder),
                });
            } else {
                // Free, expired, or this owner's (a restart of this node, an applied retry): a
                // new hold with the next token, so that nothing sent for an earlier hold of
                // this owner can touch it.
                let next = v.transitions.saturating_add(1);
                spec.holder_identity = Some(owner.as_str().to_owned());
                spec.lease_duration_seconds = Some(duration_secs(ttl));
                spec.acquire_time = micro(now);
                spec.renew_time = micro(now);
                spec.lease_transitions = Some(next);
                next
            };
            if self.replace(name, &lease).await? {
                return Ok(BackendReply::Granted {
                    token: token(granted),
                });
            }
        }
        Err("the Lease object kept changing while it was being acquired".into())
    }

    async fn try_renew(
        &self,
        name: &LeaseName,
        owner: &OwnerId,
        ttl: Duration,
        t: FencingToken,
    ) -> Result<BackendReply, String> {
        for _ in 0..CAS_ATTEMPTS {
            let now = SystemTime::now();
            let Some(mut lease) = self.get(name).await? else {
                return Ok(BackendReply::Denied { holder: None });
            };
            let v = view(&lease, now);
            if v.holder != owner.as_str() || token(v.transitions) != t {
                let holder = (!v.holder.is_empty()).then_some(v.holder);
                return Ok(BackendReply::Denied { holder });
            }
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = micro(now);
            spec.lease_duration_seconds = Some(duration_secs(ttl));
            if self.replace(name, &lease).await? {
                return Ok(BackendReply::Renewed);
            }
        }
        Err("the Lease object kept changing while it was being renewed".into())
    }

    async fn try_release(
        &self,
        name: &LeaseName,
        owner: &OwnerId,
        t: Option<FencingToken>,
    ) -> Result<BackendReply, String> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut lease) = self.get(name).await? else {
                return Ok(BackendReply::Released { was_held: false });
            };
            let v = view(&lease, SystemTime::now());
            let ours = v.holder == owner.as_str() && t.is_none_or(|t| t == token(v.transitions));
            if !ours {
                return Ok(BackendReply::Released { was_held: false });
            }
            // Keep the object (and its transition count): only the holder goes.
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            if self.replace(name, &lease).await? {
                return Ok(BackendReply::Released {
                    was_held: !v.left.is_zero(),
                });
            }
        }
        Err("the Lease object kept changing while it was being released".into())
    }

    fn record(name: LeaseName, lease: &Lease) -> Option<LeaseRecord> {
        let v = view(lease, SystemTime::now());
        (!v.left.is_zero()).then(|| LeaseRecord {
            name,
            owner: v.holder,
            token: token(v.transitions),
            acquired_at: v.acquired_at,
            expires_in: Some(v.left),
        })
    }
}

impl LeaseBackend for KubernetesBackend {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn request_timeout(&self) -> Duration {
        self.settings.call_timeout()
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
                .unwrap_or_else(|reason| BackendReply::Unknown { reason })
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
                .unwrap_or_else(|reason| BackendReply::Unknown { reason })
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
                .unwrap_or_else(|reason| BackendReply::Unknown { reason })
        })
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        Box::pin(async move {
            Ok(self
                .get(lease)
                .await?
                .and_then(|l| Self::record(lease.clone(), &l)))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        Box::pin(async move {
            let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
            let list = self
                .api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| failure("list", &e))?;
            Ok(list
                .items
                .iter()
                .filter_map(|l| {
                    let name = LeaseName::new(l.metadata.name.as_deref()?).ok()?;
                    Self::record(name, l)
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_or_lapsed_lease_has_no_time_left() {
        let now = SystemTime::now();
        let spec = |holder: Option<&str>, renewed_ago: u64| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(10),
                renew_time: micro(now - Duration::from_secs(renewed_ago)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let live = view(&spec(Some("a"), 4), now);
        assert_eq!(live.left.as_secs(), 6);
        assert_eq!(token(live.transitions), FencingToken(3));
        assert!(view(&spec(Some("a"), 11), now).left.is_zero());
        assert!(view(&spec(None, 1), now).left.is_zero());
        assert!(view(&Lease::default(), now).left.is_zero());
    }

    #[test]
    fn durations_are_whole_seconds_of_at_least_one() {
        assert_eq!(duration_secs(Duration::from_millis(200)), 1);
        assert_eq!(duration_secs(Duration::from_millis(4001)), 5);
        assert_eq!(duration_secs(Duration::from_secs(120)), 120);
    }

    #[test]
    fn settings_have_documented_defaults_and_parse_from_toml() {
        let s: KubernetesSettings =
            toml::from_str("namespace = \"orders\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.namespace.as_deref(), Some("orders"));
        assert_eq!(s.request_timeout, Duration::from_secs(2));
        assert!(toml::from_str::<KubernetesSettings>("nope = 1").is_err());
    }
}
