//! Cluster settings (`[cluster]`), with Akka's defaults where Akka has the same setting.
//!
//! ```toml
//! [cluster]
//! # Contact points, in order. The first seed may form a new cluster on its own when no other
//! # seed answers within seed-node-timeout; every other node only ever joins an existing one.
//! seed-nodes = ["flotilla://app@10.0.0.1:2552", "flotilla://app@10.0.0.2:2552"]
//! seed-node-timeout = "5s"
//! # A join that got no welcome is tried again (from the seeds) after this long.
//! retry-unsuccessful-join-after = "10s"
//! # How often a member gossips its view to one other member, and how often the leader acts.
//! gossip-interval = "1s"
//! leader-actions-interval = "1s"
//! # The leader moves nobody Joining → Up before this many members are there.
//! min-nr-of-members = 1
//! # A Joining member becomes WeaklyUp after this long without convergence (an unreachable
//! # member blocks it); "0s" turns WeaklyUp off.
//! allow-weakly-up-members = "7s"
//! roles = []
//! app-version = "0.0.0"
//! # How many members heartbeat each member (chosen on a ring over the members).
//! monitored-by-nr-of-members = 9
//! # Removed members are remembered this long, so an old gossip cannot bring them back.
//! prune-gossip-tombstones-after = "24h"
//! # A member removed after a graceful leave is quarantined this long after its removal (it
//! # first learns of the removal and finishes its hand-overs); a downed member at once.
//! quarantine-removed-node-after = "5s"
//!
//! [cluster.failure-detector]
//! heartbeat-interval = "1s"
//! threshold = 8.0
//! max-sample-size = 1000
//! min-std-deviation = "100ms"
//! acceptable-heartbeat-pause = "3s"
//! first-heartbeat-estimate = "1s"
//!
//! [cluster.split-brain-resolver]
//! # keep-majority | static-quorum | keep-oldest | down-all | lease-majority
//! active-strategy = "keep-majority"
//! # How long the set of unreachable members must stay the same before the resolver decides:
//! # "auto" (by the number of members, 7 s up to 5 of them, 20 s at 100; see below) or a
//! # duration.
//! stable-after = "auto"
//! # Down every member when the view does not stabilize within this long after stable-after:
//! # "on" (3/4 of stable-after, at least 4 s), "off", or a duration.
//! down-all-when-unstable = "on"
//!
//! [cluster.split-brain-resolver.keep-majority]
//! role = ""                 # count only members with this role ("" = all)
//! [cluster.split-brain-resolver.static-quorum]
//! quorum-size = 0           # required with static-quorum
//! role = ""
//! [cluster.split-brain-resolver.keep-oldest]
//! down-if-alone = true
//! role = ""
//! [cluster.split-brain-resolver.lease-majority]
//! lease-name = ""           # defaults to "<system>-sbr"
//! acquire-lease-delay-for-minority = "2s"
//! release-after = "40s"
//! role = ""
//!
//! [cluster.singleton]
//! # Only members with this role run singletons ("" = every member).
//! role = ""
//! # How often the new oldest asks the previous one to hand a singleton over.
//! hand-over-retry-interval = "1s"
//! # After a crashed oldest is removed, the new oldest waits this long before starting the
//! # singleton, so that the old instance has surely stopped (default: stable-after).
//! # removal-margin = "7s"
//! # How long after a denied or unanswered lease acquisition it is tried again.
//! lease-retry-interval = "5s"
//! # Messages a proxy holds while it does not know where the singleton runs; beyond, the
//! # oldest are dropped (logged and counted).
//! buffer-size = 1000
//! # How often a proxy asks the oldest member whether the singleton runs there, until it does.
//! identification-interval = "1s"
//!
//! [cluster.discovery]
//! # How a node finds its contact points instead of seed-nodes: "none" (use seed-nodes),
//! # "static" (endpoints below), "dns" (A/AAAA records, or SRV with port-name and protocol) or
//! # "kubernetes" (the pods matching pod-label-selector).
//! method = "none"
//! service-name = ""         # DNS: the name to look up; Kubernetes: fills %s in the selector
//! port-name = ""            # DNS: SRV's _<port-name>._<protocol>.<service-name>; Kubernetes: the container port's name
//! protocol = "tcp"
//! # The remoting port of a contact point found without one (default: this node's port).
//! # port = 2552
//! # Join once at least this many contact points are seen, unchanged for stable-margin; the
//! # lowest address is the first seed (the only one that may form a new cluster).
//! required-contact-point-nr = 2
//! stable-margin = "5s"
//! interval = "1s"           # how often discovery is asked until then
//! resolve-timeout = "3s"    # how long one lookup may take
//! endpoints = []            # static: "host:port" or "host"
//! nameservers = []          # dns: "ip:port"; empty = the system's resolver configuration
//! # kubernetes: the API server URL (default: the in-cluster configuration), the namespace
//! # (default: the pod's own), and the selector of the cluster's pods.
//! # api-server = "https://kubernetes.default.svc"
//! # namespace = "default"
//! pod-label-selector = "app=%s"
//! ```
//!
//! # Choosing `stable-after`
//! Failover takes about: failure detection (acceptable-heartbeat-pause + a few heartbeats,
//! ≈ 5 s at the defaults) + `stable-after` + removal (one or two gossip rounds). Shorter is
//! faster but decides on a view that may still be changing: the time a change of reachability
//! needs to reach every member grows with the cluster. `"auto"`, the default, follows Akka's
//! recommendation for the cluster's current size (the members that are neither Down nor
//! Removed), interpolated linearly between these points and held flat beyond them:
//!
//! | members | stable-after |
//! |---|---|
//! | 5 or fewer | 7 s |
//! | 10 | 10 s |
//! | 20 | 13 s |
//! | 50 | 17 s |
//! | 100 | 20 s |
//! | 1000 or more | 30 s |
//!
//! Every member of a partitioned cluster counts the same members (the unreachable ones are still
//! members until they are downed), so both sides wait equally long. Akka's own default is a fixed
//! 20 s whatever the size; set `stable-after = "20s"` to get that.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Address;
use crate::config::{ConfigError, FailureDetectorSettings};

/// Cluster membership settings (`[cluster]`). See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSettings {
    /// Contact points, in order; the first may form a new cluster (default: none — join by API).
    pub seed_nodes: Vec<String>,
    /// How long the first seed waits for another seed before it forms a cluster (default 5 s).
    #[serde(with = "humantime_serde")]
    pub seed_node_timeout: Duration,
    /// How long a join may go unanswered before it is tried again (default 10 s).
    #[serde(with = "humantime_serde")]
    pub retry_unsuccessful_join_after: Duration,
    /// How often a member gossips (default 1 s).
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// How often the leader looks for work (default 1 s).
    #[serde(with = "humantime_serde")]
    pub leader_actions_interval: Duration,
    /// Members needed before the leader moves anyone Joining → Up (default 1).
    pub min_nr_of_members: usize,
    /// Joining → WeaklyUp after this long without convergence; zero turns it off (default 7 s).
    #[serde(with = "humantime_serde")]
    pub allow_weakly_up_members: Duration,
    /// This node's roles (default none).
    pub roles: Vec<String>,
    /// The application version this node runs, for rolling updates (default "0.0.0").
    pub app_version: String,
    /// How many members monitor each member with heartbeats (default 9).
    pub monitored_by_nr_of_members: usize,
    /// How long removed members are remembered (default 24 h).
    #[serde(with = "humantime_serde")]
    pub prune_gossip_tombstones_after: Duration,
    /// How long after its removal a member that left gracefully is quarantined (default 5 s);
    /// a downed member is quarantined at once.
    #[serde(with = "humantime_serde")]
    pub quarantine_removed_node_after: Duration,
    /// The failure detector between members (Akka's cluster defaults: threshold 8, 1000
    /// samples, min std-deviation 100 ms, acceptable pause 3 s, heartbeat 1 s). A partial
    /// table keeps these defaults for the keys it leaves out.
    #[serde(deserialize_with = "crate::config::cluster_failure_detector")]
    pub failure_detector: FailureDetectorSettings,
    /// The split-brain resolver.
    pub split_brain_resolver: SplitBrainResolverSettings,
    /// `[cluster.singleton]`.
    pub singleton: SingletonConfig,
    /// `[cluster.discovery]`.
    pub discovery: DiscoverySettings,
}

/// How a node finds its contact points (`[cluster.discovery]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryMethod {
    /// No discovery: the node joins through `seed-nodes`.
    #[default]
    None,
    /// A fixed list of endpoints.
    Static,
    /// DNS: A/AAAA records of `service-name`, or its SRV records with `port-name`.
    Dns,
    /// The Kubernetes API: the pods that match `pod-label-selector`.
    Kubernetes,
}

/// Service discovery and cluster bootstrap settings (`[cluster.discovery]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiscoverySettings {
    /// Which discovery (default none: seed-nodes).
    pub method: DiscoveryMethod,
    /// The service to look up (DNS name; `%s` in the Kubernetes selector).
    pub service_name: String,
    /// The port's name: SRV lookups with DNS, the container port with Kubernetes ("" = none).
    pub port_name: String,
    /// The protocol of SRV lookups (default "tcp").
    pub protocol: String,
    /// The remoting port of a contact point found without one (default: this node's port).
    pub port: Option<u16>,
    /// How many contact points must be seen before joining (default 2).
    pub required_contact_point_nr: usize,
    /// How long the contact points must stay the same before joining (default 5 s).
    #[serde(with = "humantime_serde")]
    pub stable_margin: Duration,
    /// How often discovery is asked until the node joins (default 1 s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one lookup may take (default 3 s).
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// Static endpoints, `host:port` or `host`.
    pub endpoints: Vec<String>,
    /// DNS name servers, `ip:port` ("" = the system's resolver configuration).
    pub nameservers: Vec<String>,
    /// The Kubernetes API server (default: the in-cluster configuration).
    pub api_server: Option<String>,
    /// The pods' namespace (default: the configuration's, the pod's own in a cluster).
    pub namespace: Option<String>,
    /// The label selector of the cluster's pods; `%s` is replaced by `service-name`
    /// (default `app=%s`).
    pub pod_label_selector: String,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            method: DiscoveryMethod::None,
            service_name: String::new(),
            port_name: String::new(),
            protocol: "tcp".to_owned(),
            port: None,
            required_contact_point_nr: 2,
            stable_margin: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            resolve_timeout: Duration::from_secs(3),
            endpoints: Vec::new(),
            nameservers: Vec::new(),
            api_server: None,
            namespace: None,
            pod_label_selector: "app=%s".to_owned(),
        }
    }
}

impl DiscoverySettings {
    /// Checks the values for the chosen method.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: format!("cluster.discovery.{key}"),
                reason: reason.to_owned(),
            })
        };
        if self.method == DiscoveryMethod::None {
            return Ok(());
        }
        if self.required_contact_point_nr == 0 {
            return bad("required-contact-point-nr", "must be at least 1");
        }
        for (key, d) in [
            ("interval", self.interval),
            ("resolve-timeout", self.resolve_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        match self.method {
            DiscoveryMethod::Static if self.endpoints.is_empty() => {
                bad("endpoints", "static discovery needs at least one endpoint")
            }
            DiscoveryMethod::Dns if self.service_name.is_empty() => {
                bad("service-name", "DNS discovery needs the name to look up")
            }
            DiscoveryMethod::Kubernetes if self.pod_label_selector.is_empty() => bad(
                "pod-label-selector",
                "Kubernetes discovery needs a label selector",
            ),
            _ => Ok(()),
        }
    }
}

/// How cluster singletons and their proxies behave (`[cluster.singleton]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SingletonConfig {
    /// Only members with this role run singletons ("" = every member).
    pub role: String,
    /// How often the new oldest asks the previous one to hand over (default 1 s).
    #[serde(with = "humantime_serde")]
    pub hand_over_retry_interval: Duration,
    /// How long the new oldest waits after a crashed oldest's removal before starting the
    /// singleton (default: `split-brain-resolver.stable-after` for the cluster's size then).
    #[serde(with = "humantime_serde")]
    pub removal_margin: Option<Duration>,
    /// How long after a denied or unanswered lease acquisition it is tried again (default 5 s).
    #[serde(with = "humantime_serde")]
    pub lease_retry_interval: Duration,
    /// Messages a proxy buffers while the singleton's location is unknown (default 1000).
    pub buffer_size: usize,
    /// How often a proxy asks the oldest member for the singleton until it finds it
    /// (default 1 s).
    #[serde(with = "humantime_serde")]
    pub identification_interval: Duration,
}

impl Default for SingletonConfig {
    fn default() -> Self {
        Self {
            role: String::new(),
            hand_over_retry_interval: Duration::from_secs(1),
            removal_margin: None,
            lease_retry_interval: Duration::from_secs(5),
            buffer_size: 1000,
            identification_interval: Duration::from_secs(1),
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            seed_nodes: Vec::new(),
            seed_node_timeout: Duration::from_secs(5),
            retry_unsuccessful_join_after: Duration::from_secs(10),
            gossip_interval: Duration::from_secs(1),
            leader_actions_interval: Duration::from_secs(1),
            min_nr_of_members: 1,
            allow_weakly_up_members: Duration::from_secs(7),
            roles: Vec::new(),
            app_version: "0.0.0".to_owned(),
            monitored_by_nr_of_members: 9,
            prune_gossip_tombstones_after: Duration::from_secs(24 * 3600),
            quarantine_removed_node_after: Duration::from_secs(5),
            failure_detector: FailureDetectorSettings::cluster(),
            split_brain_resolver: SplitBrainResolverSettings::default(),
            singleton: SingletonConfig::default(),
            discovery: DiscoverySettings::default(),
        }
    }
}

impl ClusterSettings {
    /// The seed nodes, parsed.
    pub fn seeds(&self) -> Result<Vec<Address>, ConfigError> {
        self.seed_nodes
            .iter()
            .map(|s| {
                Address::from_str(s).map_err(|e| ConfigError::Value {
                    key: "cluster.seed-nodes".into(),
                    reason: format!("{s:?} is not a node address: {e}"),
                })
            })
            .collect()
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: format!("cluster.{key}"),
                reason: reason.to_owned(),
            })
        };
        self.seeds()?;
        for (key, d) in [
            ("seed-node-timeout", self.seed_node_timeout),
            (
                "retry-unsuccessful-join-after",
                self.retry_unsuccessful_join_after,
            ),
            ("gossip-interval", self.gossip_interval),
            ("leader-actions-interval", self.leader_actions_interval),
            (
                "singleton.hand-over-retry-interval",
                self.singleton.hand_over_retry_interval,
            ),
            (
                "singleton.lease-retry-interval",
                self.singleton.lease_retry_interval,
            ),
            (
                "singleton.identification-interval",
                self.singleton.identification_interval,
            ),
            (
                "prune-gossip-tombstones-after",
                self.prune_gossip_tombstones_after,
            ),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        if self.min_nr_of_members == 0 {
            return bad("min-nr-of-members", "must be at least 1");
        }
        if self.monitored_by_nr_of_members == 0 {
            return bad("monitored-by-nr-of-members", "must be at least 1");
        }
        if self.singleton.buffer_size == 0 {
            return bad("singleton.buffer-size", "must be at least 1");
        }
        self.failure_detector.validate("cluster.failure-detector")?;
        self.discovery.validate()?;
        self.split_brain_resolver.validate()
    }
}

/// Which split-brain resolver strategy decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The side with more members survives; on a tie, the side with the lowest address.
    #[default]
    KeepMajority,
    /// A side survives when it has at least `quorum-size` members.
    StaticQuorum,
    /// The side with the oldest member survives (unless it is alone, with `down-if-alone`).
    KeepOldest,
    /// Every member is downed.
    DownAll,
    /// The side that acquires the lease survives; the minority tries later.
    LeaseMajority,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeepMajority => "keep-majority",
            Self::StaticQuorum => "static-quorum",
            Self::KeepOldest => "keep-oldest",
            Self::DownAll => "down-all",
            Self::LeaseMajority => "lease-majority",
        })
    }
}

/// `down-all-when-unstable`: "on", "off" or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownAllWhenUnstable {
    /// 3/4 of `stable-after`, at least 4 s.
    #[default]
    On,
    /// Never.
    Off,
    /// After this long.
    After(Duration),
}

impl Serialize for DownAllWhenUnstable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::On => s.serialize_str("on"),
            Self::Off => s.serialize_str("off"),
            Self::After(d) => {
                s.serialize_str(&humantime_serde::re::humantime::format_duration(*d).to_string())
            }
        }
    }
}

impl<'de> Deserialize<'de> for DownAllWhenUnstable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => humantime_serde::re::humantime::parse_duration(other)
                .map(Self::After)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "expected \"on\", \"off\" or a duration such as \"15s\", got {other:?}: {e}"
                    ))
                }),
        }
    }
}

/// `stable-after`: "auto" (by cluster size) or a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StableAfter {
    /// Akka's recommendation for the number of members (see [the table](self#choosing-stable-after)).
    #[default]
    Auto,
    /// This long, whatever the cluster's size.
    After(Duration),
}

impl StableAfter {
    /// Akka's recommended stable-after per cluster size: (members, seconds).
    const RECOMMENDED: [(usize, u64); 6] =
        [(5, 7), (10, 10), (20, 13), (50, 17), (100, 20), (1000, 30)];

    /// The duration in force for a cluster of `members` members.
    pub fn for_members(self, members: usize) -> Duration {
        match self {
            Self::After(d) => d,
            Self::Auto => {
                let table = Self::RECOMMENDED;
                let (first_n, first_s) = table[0];
                if members <= first_n {
                    return Duration::from_secs(first_s);
                }
                for pair in table.windows(2) {
                    let ((n0, s0), (n1, s1)) = (pair[0], pair[1]);
                    if members <= n1 {
                        let (n0, s0, n1, s1) = (n0 as u64, s0, n1 as u64, s1);
                        let step_ms = (s1 - s0) * 1000 * (members as u64 - n0) / (n1 - n0);
                        return Duration::from_millis(s0 * 1000 + step_ms);
                    }
                }
                Duration::from_secs(table[table.len() - 1].1)
            }
        }
    }
}

impl From<Duration> for StableAfter {
    fn from(d: Duration) -> Self {
        Self::After(d)
    }
}

impl Serialize for StableAfter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::After(d) => {
                s.serialize_str(&humantime_serde::re::humantime::format_duration(*d).to_string())
            }
        }
    }
}

impl<'de> Deserialize<'de> for StableAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "auto" => Ok(Self::Auto),
            other => humantime_serde::re::humantime::parse_duration(other)
                .map(Self::After)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "expected \"auto\" or a duration such as \"20s\", got {other:?}: {e}"
                    ))
                }),
        }
    }
}

/// The split-brain resolver (`[cluster.split-brain-resolver]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SplitBrainResolverSettings {
    /// The strategy (default keep-majority).
    pub active_strategy: Strategy,
    /// How long the unreachable set must stay the same before deciding (default "auto": by the
    /// cluster's size, 7 s up to five members).
    pub stable_after: StableAfter,
    /// Down everyone when the view stays unstable this long after `stable-after` (default on).
    pub down_all_when_unstable: DownAllWhenUnstable,
    /// keep-majority's settings.
    pub keep_majority: RoleOnly,
    /// static-quorum's settings.
    pub static_quorum: StaticQuorumSettings,
    /// keep-oldest's settings.
    pub keep_oldest: KeepOldestSettings,
    /// lease-majority's settings.
    pub lease_majority: LeaseMajoritySettings,
}

impl Default for SplitBrainResolverSettings {
    fn default() -> Self {
        Self {
            active_strategy: Strategy::KeepMajority,
            stable_after: StableAfter::Auto,
            down_all_when_unstable: DownAllWhenUnstable::On,
            keep_majority: RoleOnly::default(),
            static_quorum: StaticQuorumSettings::default(),
            keep_oldest: KeepOldestSettings::default(),
            lease_majority: LeaseMajoritySettings::default(),
        }
    }
}

impl SplitBrainResolverSettings {
    /// `stable-after` for a cluster of `members` members (neither Down nor Removed).
    pub fn stable_after_for(&self, members: usize) -> Duration {
        self.stable_after.for_members(members)
    }

    /// How long after `stable-after` an unstable view makes the resolver down everyone, if ever,
    /// in a cluster of `members` members.
    pub fn down_all_after(&self, members: usize) -> Option<Duration> {
        match self.down_all_when_unstable {
            DownAllWhenUnstable::Off => None,
            DownAllWhenUnstable::After(d) => Some(d),
            DownAllWhenUnstable::On => {
                Some((self.stable_after_for(members) * 3 / 4).max(Duration::from_secs(4)))
            }
        }
    }

    /// The role the active strategy counts ("" for every member).
    pub fn role(&self) -> &str {
        match self.active_strategy {
            Strategy::KeepMajority => &self.keep_majority.role,
            Strategy::StaticQuorum => &self.static_quorum.role,
            Strategy::KeepOldest => &self.keep_oldest.role,
            Strategy::DownAll => "",
            Strategy::LeaseMajority => &self.lease_majority.role,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: format!("cluster.split-brain-resolver.{key}"),
                reason: reason.to_owned(),
            })
        };
        if self.stable_after == StableAfter::After(Duration::ZERO) {
            return bad("stable-after", "must be greater than zero");
        }
        if self.down_all_when_unstable == DownAllWhenUnstable::After(Duration::ZERO) {
            return bad("down-all-when-unstable", "use \"off\" rather than zero");
        }
        if self.active_strategy == Strategy::StaticQuorum && self.static_quorum.quorum_size == 0 {
            return bad(
                "static-quorum.quorum-size",
                "static-quorum needs a quorum size: more than half of the cluster's planned size",
            );
        }
        Ok(())
    }
}

/// A strategy setting that only restricts the counted members to a role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoleOnly {
    /// Count only members with this role ("" = every member).
    pub role: String,
}

/// static-quorum's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticQuorumSettings {
    /// The least number of members a side needs to survive (required; no default).
    pub quorum_size: usize,
    /// Count only members with this role ("" = every member).
    pub role: String,
}

/// keep-oldest's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepOldestSettings {
    /// When the oldest member is alone on its side, that side is downed instead (default true).
    pub down_if_alone: bool,
    /// Count only members with this role ("" = every member).
    pub role: String,
}

impl Default for KeepOldestSettings {
    fn default() -> Self {
        Self {
            down_if_alone: true,
            role: String::new(),
        }
    }
}

/// lease-majority's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LeaseMajoritySettings {
    /// The lease's name (`""` = `"<system>-sbr"`).
    pub lease_name: String,
    /// How long the minority side waits before it tries the lease (default 2 s).
    #[serde(with = "humantime_serde")]
    pub acquire_lease_delay_for_minority: Duration,
    /// How long the winner keeps the lease before releasing it (default 40 s).
    #[serde(with = "humantime_serde")]
    pub release_after: Duration,
    /// Count only members with this role ("" = every member).
    pub role: String,
}

impl Default for LeaseMajoritySettings {
    fn default() -> Self {
        Self {
            lease_name: String::new(),
            acquire_lease_delay_for_minority: Duration::from_secs(2),
            release_after: Duration::from_secs(40),
            role: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlotillaConfig;

    #[test]
    fn defaults_are_akkas() {
        let c = ClusterSettings::default();
        assert_eq!(c.seed_node_timeout, Duration::from_secs(5));
        assert_eq!(c.retry_unsuccessful_join_after, Duration::from_secs(10));
        assert_eq!(c.gossip_interval, Duration::from_secs(1));
        assert_eq!(c.allow_weakly_up_members, Duration::from_secs(7));
        assert_eq!(c.monitored_by_nr_of_members, 9);
        assert_eq!(c.failure_detector.threshold, 8.0);
        assert_eq!(c.failure_detector.max_sample_size, 1000);
        assert_eq!(
            c.failure_detector.acceptable_heartbeat_pause,
            Duration::from_secs(3)
        );
        let sbr = &c.split_brain_resolver;
        assert_eq!(sbr.active_strategy, Strategy::KeepMajority);
        assert_eq!(sbr.stable_after, StableAfter::Auto);
        assert_eq!(sbr.stable_after_for(3), Duration::from_secs(7));
        assert_eq!(sbr.down_all_after(3), Some(Duration::from_millis(5250)));
        assert_eq!(sbr.stable_after_for(100), Duration::from_secs(20));
        assert_eq!(sbr.down_all_after(100), Some(Duration::from_secs(15)));
        assert_eq!(
            sbr.lease_majority.acquire_lease_delay_for_minority,
            Duration::from_secs(2)
        );
        c.validate().unwrap();
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = crate::documented_toml(include_str!("cluster_config.rs"));
        let c = FlotillaConfig::from_toml_str(&doc).unwrap();
        assert_eq!(c.cluster.seeds().unwrap().len(), 2);
        assert_eq!(
            c.cluster,
            ClusterSettings {
                seed_nodes: c.cluster.seed_nodes.clone(),
                ..ClusterSettings::default()
            }
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |text: &str| FlotillaConfig::from_toml_str(text).unwrap_err().to_string();
        assert!(err("[cluster]\nseed-nodes = [\"10.0.0.1:2552\"]").contains("cluster.seed-nodes"));
        assert!(err("[cluster]\nmin-nr-of-members = 0").contains("min-nr-of-members"));
        assert!(err("[cluster.singleton]\nbuffer-size = 0").contains("singleton.buffer-size"));
        assert!(
            err("[cluster.discovery]\nmethod = \"static\"").contains("cluster.discovery.endpoints")
        );
        assert!(err("[cluster.discovery]\nmethod = \"dns\"").contains("service-name"));
        assert!(
            err("[cluster.discovery]\nmethod = \"carrier-pigeon\"").contains("unknown variant")
        );
        assert!(
            err("[cluster.singleton]\nhand-over-retry-interval = \"0s\"")
                .contains("singleton.hand-over-retry-interval")
        );
        assert!(
            err("[cluster.split-brain-resolver]\nactive-strategy = \"static-quorum\"")
                .contains("quorum-size")
        );
        assert!(
            err("[cluster.split-brain-resolver]\ndown-all-when-unstable = \"sometimes\"")
                .contains("expected \"on\"")
        );
        let c = FlotillaConfig::from_toml_str(
            "[cluster.split-brain-resolver]\ndown-all-when-unstable = \"off\"\nactive-strategy = \"keep-oldest\"",
        )
        .unwrap();
        assert_eq!(c.cluster.split_brain_resolver.down_all_after(3), None);
        let c = FlotillaConfig::from_toml_str(
            "[cluster.split-brain-resolver]\ndown-all-when-unstable = \"9s\"",
        )
        .unwrap();
        assert_eq!(
            c.cluster.split_brain_resolver.down_all_after(3),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn auto_stable_after_follows_the_recommendation_by_cluster_size() {
        let auto = StableAfter::Auto;
        let secs = |n| auto.for_members(n).as_millis() as f64 / 1000.0;
        assert_eq!(secs(0), 7.0);
        assert_eq!(secs(1), 7.0);
        assert_eq!(secs(5), 7.0);
        assert_eq!(secs(6), 7.6);
        assert_eq!(secs(10), 10.0);
        assert_eq!(secs(15), 11.5);
        assert_eq!(secs(20), 13.0);
        assert_eq!(secs(50), 17.0);
        assert_eq!(secs(100), 20.0);
        assert_eq!(secs(550), 25.0);
        assert_eq!(secs(1000), 30.0);
        assert_eq!(secs(100_000), 30.0);
        // Never shorter for a larger cluster.
        for n in 0..2000 {
            assert!(auto.for_members(n) <= auto.for_members(n + 1), "at {n}");
        }
        let fixed = StableAfter::After(Duration::from_secs(20));
        assert_eq!(fixed.for_members(3), Duration::from_secs(20));
        assert_eq!(fixed.for_members(1000), Duration::from_secs(20));
    }

    #[test]
    fn stable_after_parses_auto_or_a_duration() {
        let parse = |v: &str| {
            FlotillaConfig::from_toml_str(&format!(
                "[cluster.split-brain-resolver]\nstable-after = \"{v}\""
            ))
            .map(|c| c.cluster.split_brain_resolver.stable_after)
        };
        assert_eq!(parse("auto").unwrap(), StableAfter::Auto);
        assert_eq!(
            parse("20s").unwrap(),
            StableAfter::After(Duration::from_secs(20))
        );
        let e = parse("soon").unwrap_err().to_string();
        assert!(e.contains("expected \"auto\""), "{e}");
        let e = parse("0s").unwrap_err().to_string();
        assert!(e.contains("stable-after"), "{e}");
        // It writes back as it reads.
        let c = FlotillaConfig::default();
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("stable-after = \"auto\""), "{text}");
    }
}
