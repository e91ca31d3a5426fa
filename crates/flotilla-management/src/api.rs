//! The management API's JSON bodies, shared by the server and [`crate::client`].

use serde::{Deserialize, Serialize};

/// `GET /cluster/members`: the cluster as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Members {
    /// The answering node's unique address (`flotilla://system@host:port#uid`).
    #[serde(rename = "self")]
    pub self_node: String,
    /// The leader's address, when there is one.
    pub leader: Option<String>,
    /// Whether every member has seen the current gossip.
    pub converged: bool,
    /// Every member, in address order.
    pub members: Vec<MemberInfo>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberInfo {
    /// Its address (`flotilla://system@host:port`).
    pub address: String,
    /// Its incarnation, in decimal: a string, since UIDs are 64-bit and JavaScript's numbers
    /// hold only 53 bits exactly.
    pub uid: String,
    /// Joining, WeaklyUp, Up, Leaving, Exiting, Down or Removed.
    pub status: String,
    /// Whether no member finds it unreachable.
    pub reachable: bool,
    /// Its roles.
    pub roles: Vec<String>,
    /// The order in which it became Up (the lower, the older); none until Up.
    pub up_number: Option<u64>,
    /// The failure detector's phi for it on the answering node, if that node monitors it.
    pub phi: Option<f64>,
}

/// `PUT /cluster/members/{address}`: what to do with a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberOperation {
    /// `leave` (graceful) or `down` (declared dead).
    pub operation: Operation,
}

/// A member operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Leave gracefully: hand over, then be removed.
    Leave,
    /// Declare it down: the leader removes it without waiting for it.
    Down,
}

/// The answer to an accepted request that acts later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Accepted {
    /// What will happen.
    pub message: String,
}

/// Every error body: what went wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// `GET /cluster/shards`: this node's regions, and the shard distribution over the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Shards {
    /// One entry per entity type started on this node.
    pub regions: Vec<RegionInfo>,
}

/// One entity type's region on the answering node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegionInfo {
    /// The entity type.
    pub type_name: String,
    /// Whether the coordinator has acknowledged the region.
    pub registered: bool,
    /// The coordinator the region follows.
    pub coordinator: Option<String>,
    /// Messages waiting for a shard's home.
    pub held_messages: usize,
    /// Shards hosted here, with their running entity counts.
    pub shards: Vec<ShardInfo>,
    /// Shards and entities per member (every Up member's region that answered in time).
    pub cluster: Vec<NodeShards>,
}

/// One shard hosted on the answering node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShardInfo {
    /// The shard id.
    pub id: String,
    /// Its running entities.
    pub entities: usize,
}

/// One member's share of an entity type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeShards {
    /// The member's address.
    pub address: String,
    /// Shards it hosts.
    pub shards: usize,
    /// Entities running there.
    pub entities: usize,
}

/// `GET /remote/associations`: the answering node's link to each remote node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Associations {
    /// One per remote address ever contacted.
    pub associations: Vec<AssociationInfo>,
}

/// One association.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssociationInfo {
    /// The remote address.
    pub remote: String,
    /// Idle, Active, Gated or Quarantined.
    pub state: String,
    /// The remote incarnation, when known, in decimal (a string, as [`MemberInfo::uid`]).
    pub uid: Option<String>,
    /// How long ago the state was entered, in milliseconds.
    pub since_ms: u64,
    /// Why it was entered.
    pub cause: Option<String>,
    /// Every quarantined incarnation of the address, in decimal.
    pub quarantined: Vec<String>,
}

/// `GET /leases`: the leases the node's lease backend holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Leases {
    /// The backend (`memory`, `etcd`, `azure`, `kubernetes`), or none when the node has no
    /// lease backend.
    pub backend: Option<String>,
    /// The leases.
    pub leases: Vec<LeaseInfo>,
    /// How many are zombies.
    pub zombies: usize,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseInfo {
    /// The lease name.
    pub name: String,
    /// Its holder (or last holder).
    pub owner: String,
    /// The fencing token of the current (or last) hold.
    pub token: u64,
    /// Milliseconds since it was acquired, where the backend knows.
    pub age_ms: Option<u64>,
    /// Milliseconds until it expires unless renewed (0 once expired).
    pub expires_in_ms: Option<u64>,
    /// Held (not expired) by an owner that is not a current cluster member.
    pub zombie: bool,
}

/// `GET /health/alive` and `GET /health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    /// Whether the check passes.
    pub ok: bool,
    /// Why, in words.
    pub reason: String,
}

/// `GET /events`: the recent event log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Events {
    /// The events after the asked-for sequence number.
    pub events: Vec<Event>,
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// Increasing per node, from 1.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `member`, `reachability`, `leader`, `association` or `shards`.
    pub kind: String,
    /// What happened.
    pub text: String,
}

/// `GET /status`: a one-call overview (what `flotilla status` prints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    /// The answering node's unique address.
    #[serde(rename = "self")]
    pub self_node: String,
    /// Its member status, once it has joined.
    pub status: Option<String>,
    /// The leader.
    pub leader: Option<String>,
    /// Members by status.
    pub members_by_status: std::collections::BTreeMap<String, usize>,
    /// Members some node finds unreachable.
    pub unreachable: usize,
    /// Shards hosted here, over all entity types.
    pub shards: usize,
    /// Entities running here, over all entity types.
    pub entities: usize,
    /// Associations by state.
    pub associations_by_state: std::collections::BTreeMap<String, usize>,
    /// Whether the node is ready (see `GET /health/ready`).
    pub ready: bool,
}

/// The JSON Schemas (draft 2020-12) of every body above, by type name, with references of the
/// form `#/components/schemas/<Type>`: what `components.schemas` of the OpenAPI description
/// (`crates/flotilla-management/openapi.json`) holds. A test keeps the two the same.
pub fn schemas() -> serde_json::Map<String, serde_json::Value> {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let _ = generator.subschema_for::<Status>();
    let _ = generator.subschema_for::<Members>();
    let _ = generator.subschema_for::<MemberOperation>();
    let _ = generator.subschema_for::<Accepted>();
    let _ = generator.subschema_for::<ApiError>();
    let _ = generator.subschema_for::<Shards>();
    let _ = generator.subschema_for::<Associations>();
    let _ = generator.subschema_for::<Leases>();
    let _ = generator.subschema_for::<Health>();
    let _ = generator.subschema_for::<Events>();
    generator.take_definitions(true)
}
