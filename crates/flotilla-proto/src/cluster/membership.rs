//! One node's cluster membership, as a pure state machine: joining through seeds, gossip,
//! leader actions, failure detection and the split-brain resolver, composed.
//!
//! ```text
//!  Idle ──JoinSeeds──▶ Seeking (InitJoin to the seeds every second)
//!                        │ InitJoinAck from a member          │ first seed, nobody answered
//!                        ▼                                    │ within seed-node-timeout
//!                      Joining (Join sent; no Welcome within  ▼
//!                        retry-unsuccessful-join-after →    Member (forms a new cluster)
//!                        Seeking again)
//!                        │ Welcome
//!                        ▼
//!                      Member ── gossip every gossip-interval to one member (preferring those
//!                        │       that have not seen this version); heartbeats on the ring;
//!                        │       leader actions at convergence; the resolver when members are
//!                        │       unreachable and the view is stable
//!                        ▼ this node Down / removed
//!                      SelfDowned / SelfRemoved: the driver shuts the node down
//! ```
//!
//! The leader (the first reachable Up member by address) acts only at convergence — every Up and
//! Leaving member has seen the current gossip and every unreachable member is Down or Exiting:
//! Joining/WeaklyUp → Up (once `min-nr-of-members` are there), Leaving → Exiting, and Exiting or
//! Down → Removed (remoting then quarantines that incarnation). Without convergence it only
//! moves members that have waited `allow-weakly-up-members` to WeaklyUp.
//!
//! A node that joins at an address where an earlier incarnation is still listed makes the
//! member it asked down that incarnation; once the leader has removed it, the join (retried)
//! goes through.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::{Address, ClusterSettings, StateMachine, UniqueAddress};

use super::events::{ClusterEvent, CurrentClusterState, diff};
use super::gossip::Gossip;
use super::heartbeat::Heartbeats;
use super::member::{Member, MemberStatus};
use super::protocol::{ClusterInput, ClusterMsg, ClusterOutput, LogLevel};
use super::reachability::ReachabilityStatus;
use super::sbr::{Stability, View};
use super::vclock::Causality;

/// How often InitJoin is resent to the seeds while seeking a contact.
const INIT_JOIN_INTERVAL: Duration = Duration::from_secs(1);

/// Where this node is in joining.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinState {
    /// Not asked to join.
    Idle,
    /// Asking the seeds who is in a cluster.
    Seeking {
        seeds: Vec<Address>,
        next_try: Instant,
        /// Set on the first seed: form a cluster alone when nobody answered by then.
        form_at: Option<Instant>,
        /// Seeds that answered they are in no cluster: not asked again once the first seed
        /// has formed its cluster.
        nacked: BTreeSet<Address>,
    },
    /// Join sent to `contact`; waiting for its Welcome.
    Joining {
        contact: Address,
        seeds: Vec<Address>,
        retry_at: Instant,
    },
    /// A member.
    Member,
    /// Removed (or downed and removed): nothing more to do.
    Removed,
}

/// The lease of the lease-majority strategy, as the resolver uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseStep {
    Idle,
    /// Ask for the lease at this instant.
    Waiting(Instant),
    /// Asked; waiting for the answer.
    Asked,
    /// Acquired; release it at this instant.
    Held(Instant),
}

/// Counters of what the machine dropped, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Messages for another incarnation of this node, or from a removed one.
    pub misaddressed: u64,
    /// Gossip from a cluster this node is not a member of.
    pub foreign_gossip: u64,
}

/// One node's membership machine. See the [module docs](self).
#[derive(Debug)]
pub struct Membership {
    settings: ClusterSettings,
    self_node: UniqueAddress,
    roles: BTreeSet<String>,
    join: JoinState,
    gossip: Gossip,
    published: CurrentClusterState,
    heartbeats: Heartbeats,
    stability: Stability,
    lease: LeaseStep,
    rng: u64,
    next_gossip: Option<Instant>,
    next_leader: Option<Instant>,
    next_heartbeat: Option<Instant>,
    joining_since: BTreeMap<UniqueAddress, Instant>,
    tombstones_seen: BTreeMap<UniqueAddress, Instant>,
    /// Gracefully removed members, quarantined at these instants.
    quarantine_at: BTreeMap<UniqueAddress, (Instant, String)>,
    down_reason: Option<String>,
    self_downed: bool,
    /// On a first seed that formed its cluster because some seeds stayed silent: those seeds,
    /// asked again every seed-node-timeout until each is found in this cluster or says it is
    /// in none, with when each first answered that it is a member (of a cluster this one
    /// does not know: then this one gives way).
    silent_seeds: BTreeMap<Address, Option<Instant>>,
    next_probe: Option<Instant>,
    stats: MembershipStats,
    /// The last sender whose gossip was ignored as foreign (logged once per sender).
    last_foreign: Option<UniqueAddress>,
    out: VecDeque<ClusterOutput>,
}

impl Membership {
    /// A node that is not in a cluster yet. `seed` makes the gossip target choice reproducible.
    pub fn new(
        self_node: UniqueAddress,
        settings: ClusterSettings,
        seed: u64,
        now: Instant,
    ) -> Self {
        Self {
            roles: settings.roles.iter().cloned().collect(),
            heartbeats: Heartbeats::new(
                settings.failure_detector.clone(),
                settings.monitored_by_nr_of_members,
            ),
            settings,
            self_node,
            join: JoinState::Idle,
            gossip: Gossip::new(),
            published: CurrentClusterState::default(),
            stability: Stability::new(now),
            lease: LeaseStep::Idle,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            next_gossip: None,
            next_leader: None,
            next_heartbeat: None,
            joining_since: BTreeMap::new(),
            tombstones_seen: BTreeMap::new(),
            quarantine_at: BTreeMap::new(),
            down_reason: None,
            self_downed: false,
            silent_seeds: BTreeMap::new(),
            next_probe: None,
            stats: MembershipStats::default(),
            last_foreign: None,
            out: VecDeque::new(),
        }
    }

    /// This node's incarnation.
    pub fn self_node(&self) -> &UniqueAddress {
        &self.self_node
    }

    /// The current gossip.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// The cluster as this node sees it (what subscribers get first).
    pub fn state(&self) -> &CurrentClusterState {
        &self.published
    }

    /// The phi of each member this node monitors, at `now`.
    pub fn phis(&self, now: Instant) -> Vec<(UniqueAddress, f64)> {
        self.heartbeats.phis(now)
    }

    /// Whether this node is a member (joined and not removed).
    pub fn is_member(&self) -> bool {
        self.join == JoinState::Member
    }

    /// Whether this node was removed from the cluster.
    pub fn is_removed(&self) -> bool {
        self.join == JoinState::Removed
    }

    /// What was dropped.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// This node's own member entry, if it is listed.
    pub fn self_member(&self) -> Option<&Member> {
        self.gossip.member(&self.self_node)
    }

    fn random(&mut self) -> u64 {
        // splitmix64: deterministic per seed
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.out.push_back(ClusterOutput::Log { level, text });
    }

    fn send(&mut self, to: &Address, msg: ClusterMsg) {
        self.out.push_back(ClusterOutput::Send {
            to: to.clone(),
            msg,
        });
    }

    pub(super) fn send_gossip(&mut self, to: &UniqueAddress) {
        let msg = ClusterMsg::Gossip {
            from: self.self_node.clone(),
            to: to.clone(),
            gossip: Box::new(self.gossip.clone()),
        };
        self.send(&to.address, msg);
    }

    fn send_status(&mut self, to: &UniqueAddress) {
        let msg = ClusterMsg::GossipStatus {
            from: self.self_node.clone(),
            to: to.clone(),
            version: self.gossip.version().clone(),
            seen: self.gossip.seen_bits(),
        };
        self.send(&to.address, msg);
    }

    fn self_as_joining(&self) -> Member {
        Member::joining(
            self.self_node.clone(),
            self.roles.clone(),
            &self.settings.app_version,
        )
    }

    // ---- gossip --------------------------------------------------------------------------

    fn gossip_tick(&mut self) {
        let me = self.self_node.clone();
        let candidates: Vec<UniqueAddress> = self
            .gossip
            .members()
            .map(|m| &m.node)
            .filter(|n| **n != me)
            .filter(|n| {
                self.gossip.reachability().observed(&me, n) == ReachabilityStatus::Reachable
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let unseen: Vec<UniqueAddress> = candidates
            .iter()
            .filter(|n| !self.gossip.seen_by().contains(*n))
            .cloned()
            .collect();
        // Prefer members that have not seen this version (80 %, less in large clusters so the
        // seen-sets still spread).
        let prefer = if candidates.len() > 400 { 40 } else { 80 };
        let pool = if !unseen.is_empty() && self.random() % 100 < prefer {
            unseen
        } else {
            candidates
        };
        let i = (self.random() % pool.len() as u64) as usize;
        let target = pool[i].clone();
        if self.gossip.seen_by().contains(&target) {
            self.send_status(&target);
        } else {
            self.send_gossip(&target);
        }
    }

    fn accept_gossip_from(&mut self, from: &UniqueAddress, to: &UniqueAddress) -> bool {
        if self.join != JoinState::Member {
            return false;
        }
        if *to != self.self_node || self.gossip.tombstones().contains_key(from) {
            self.stats.misaddressed += 1;
            return false;
        }
        true
    }

    fn on_gossip(&mut self, now: Instant, from: UniqueAddress, to: UniqueAddress, remote: Gossip) {
        if !self.accept_gossip_from(&from, &to) {
            return;
        }
        if remote.tombstones().contains_key(&self.self_node) {
            self.gossip = self.gossip.merge(&remote);
            self.changed(now);
            return;
        }
        if remote.member(&self.self_node).is_none() {
            // Gossip of a cluster that does not have this node as a member: another cluster.
            self.stats.foreign_gossip += 1;
            if self.last_foreign.as_ref() != Some(&from) {
                self.log(
                    LogLevel::Info,
                    format!("ignoring gossip from {from}: its cluster does not have this node as a member (logged once per sender)"),
                );
                self.last_foreign = Some(from);
            }
            return;
        }
        let theirs = remote.seen_by().clone();
        // A member's entry leaves the version when the member is removed, so a change it made
        // that had not spread by then no longer shows in the version: two gossips can then
        // differ under versions that say one contains the other (a joiner welcomed by a member
        // that was removed a moment later). Such a gossip is merged, never dropped or adopted
        // whole, and the merge gets a version of its own.
        let lost_here = Self::lost(&remote, &self.gossip);
        let lost_there = Self::lost(&self.gossip, &remote);
        match remote.version().compare(self.gossip.version()) {
            Causality::Same if !lost_here && !lost_there && same_members(&remote, &self.gossip) => {
                self.gossip.see_all(remote.seen_by());
            }
            Causality::After if !lost_there => {
                self.gossip = remote;
                self.gossip.see(&self.self_node);
            }
            Causality::Before if !lost_here => {}
            _ => self.merge_gossip(&remote),
        }
        self.changed(now);
        if !self.gossip.seen_by().contains(&from) {
            self.send_gossip(&from);
        } else if !self.gossip.seen_by().is_subset(&theirs) {
            // Same version, and this node knows of more members that have seen it.
            self.send_status(&from);
        }
    }

    /// Members of `from` that `into` lacks without having removed them: a change lost to
    /// `into` (see [`Self::merge_gossip`]).
    fn lost(from: &Gossip, into: &Gossip) -> bool {
        from.members()
            .any(|m| into.member(&m.node).is_none() && !into.tombstones().contains_key(&m.node))
    }

    /// Merges `remote` into this node's gossip. When the merged version equals one of the two
    /// while the members differ from that one's — possible only when a change was recorded
    /// under the entry of a member since removed — the merge is marked with this node's entry,
    /// so that one version never stands for two states.
    fn merge_gossip(&mut self, remote: &Gossip) {
        let mut merged = self.gossip.merge(remote);
        let hides = |g: &Gossip| merged.version() == g.version() && !same_members(&merged, g);
        if hides(&self.gossip) || hides(remote) {
            merged.bump(&self.self_node);
        }
        self.gossip = merged;
        self.gossip.see(&self.self_node);
    }

    fn on_gossip_status(
        &mut self,
        now: Instant,
        from: UniqueAddress,
        to: UniqueAddress,
        version: &super::vclock::VectorClock,
        seen: &[u8],
    ) {
        if !self.accept_gossip_from(&from, &to) || self.gossip.member(&from).is_none() {
            return;
        }
        match version.compare(self.gossip.version()) {
            Causality::Same => {
                self.gossip.see_bits(seen);
                self.changed(now);
                if !self.gossip.seen_within(seen) {
                    self.send_status(&from);
                }
            }
            Causality::After => self.send_status(&from),
            Causality::Before | Causality::Concurrent => self.send_gossip(&from),
        }
    }

    // ---- publishing ------------------------------------------------------------------------

    /// The gossip may have changed: publish the difference, update monitoring and the
    /// resolver's view, prune old tombstones.
    fn changed(&mut self, now: Instant) {
        let me = self.self_node.clone();
        if self.join == JoinState::Member && self.gossip.tombstones().contains_key(&me) {
            self.join = JoinState::Removed;
            self.log(
                LogLevel::Info,
                "this node was removed from the cluster".into(),
            );
            if let Some(m) = self.published.members.iter().find(|m| m.node == me) {
                let event = ClusterEvent::MemberRemoved {
                    member: Member {
                        status: MemberStatus::Removed,
                        ..m.clone()
                    },
                    previous: m.status,
                };
                self.out.push_back(ClusterOutput::Event(event));
            }
            self.out.push_back(ClusterOutput::SelfRemoved);
            return;
        }
        let state = CurrentClusterState::of(&self.gossip, &me);
        if state != self.published {
            self.publish(now, state);
        }
        for m in self.gossip.members() {
            if m.status == MemberStatus::Joining {
                self.joining_since.entry(m.node.clone()).or_insert(now);
            }
        }
        self.joining_since.retain(|n, _| {
            self.gossip
                .member(n)
                .is_some_and(|m| m.status == MemberStatus::Joining)
        });
        let watched: BTreeSet<UniqueAddress> = self
            .gossip
            .members()
            .filter(|m| m.status != MemberStatus::Down)
            .map(|m| m.node.clone())
            .collect();
        let unreachable: BTreeSet<UniqueAddress> = watched
            .iter()
            .filter(|n| {
                self.gossip.reachability().observed(&me, n) != ReachabilityStatus::Reachable
            })
            .cloned()
            .collect();
        self.heartbeats
            .set_members(&me, &watched, &unreachable, now);
        self.stability
            .observe(now, &View::of(&self.gossip, &me).unreachable);
        for n in self.gossip.tombstones().keys() {
            self.tombstones_seen.entry(n.clone()).or_insert(now);
        }
        let expired: Vec<UniqueAddress> = self
            .tombstones_seen
            .iter()
            .filter(|(_, t)| **t + self.settings.prune_gossip_tombstones_after <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in expired {
            self.gossip.drop_tombstone(&n);
            self.tombstones_seen.remove(&n);
        }
        if !self.self_downed
            && self
                .self_member()
                .is_some_and(|m| m.status == MemberStatus::Down)
        {
            self.self_downed = true;
            let reason = self
                .down_reason
                .take()
                .unwrap_or_else(|| "another member declared this node down".to_owned());
            self.out.push_back(ClusterOutput::SelfDowned { reason });
        }
    }

    fn publish(&mut self, now: Instant, state: CurrentClusterState) {
        for event in diff(&self.published, &state) {
            if let ClusterEvent::MemberRemoved { member, previous } = &event
                && member.node != self.self_node
            {
                let reason = format!(
                    "it was removed from the cluster (it was {previous}); a removed incarnation never comes back, the node must restart with a new uid to rejoin"
                );
                if *previous == MemberStatus::Exiting {
                    // It left gracefully: it first learns of its removal (and finishes its
                    // hand-overs) over the association a quarantine would close.
                    let at = now + self.settings.quarantine_removed_node_after;
                    self.quarantine_at.insert(member.node.clone(), (at, reason));
                } else {
                    self.out.push_back(ClusterOutput::Quarantine {
                        node: member.node.clone(),
                        reason,
                    });
                }
            }
            self.out.push_back(ClusterOutput::Event(event));
        }
        self.published = state;
    }

    fn quarantine_due(&mut self, now: Instant) {
        let due: Vec<UniqueAddress> = self
            .quarantine_at
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            if let Some((_, reason)) = self.quarantine_at.remove(&node) {
                self.out
                    .push_back(ClusterOutput::Quarantine { node, reason });
            }
        }
    }

    fn on_message(&mut self, now: Instant, msg: ClusterMsg) {
        if self.join == JoinState::Removed {
            return;
        }
        match msg {
            ClusterMsg::InitJoin { from } => self.on_init_join(from),
            ClusterMsg::InitJoinAck { from } => self.on_init_join_ack(now, from),
            ClusterMsg::InitJoinNack { from } => self.on_init_join_nack(from),
            ClusterMsg::Join { member } => self.on_join(now, member),
            ClusterMsg::Welcome { from, to, gossip } => self.on_welcome(now, from, to, *gossip),
            ClusterMsg::Gossip { from, to, gossip } => self.on_gossip(now, from, to, *gossip),
            ClusterMsg::GossipStatus {
                from,
                to,
                version,
                seen,
            } => {
                self.on_gossip_status(now, from, to, &version, &seen);
            }
            ClusterMsg::Heartbeat { from, to, seq } => {
                if to == self.self_node {
                    let msg = ClusterMsg::HeartbeatRsp {
                        from: self.self_node.clone(),
                        to: from.clone(),
                        seq,
                    };
                    self.send(&from.address, msg);
                } else {
                    self.stats.misaddressed += 1;
                }
            }
            ClusterMsg::HeartbeatRsp { from, to, .. } => {
                if to == self.self_node {
                    self.heartbeats.reply(&from, now);
                } else {
                    self.stats.misaddressed += 1;
                }
            }
        }
    }

    fn status_change(&mut self, now: Instant, address: &Address, to: MemberStatus) {
        let Some(m) = self.gossip.member_at(address).cloned() else {
            self.log(
                LogLevel::Warn,
                format!("{to:?} ignored: {address} is not a member"),
            );
            return;
        };
        if to == MemberStatus::Down {
            self.mark_down(now, &m.node, "an operator asked for it");
            return;
        }
        match m.become_(to) {
            Ok(moved) if moved != m => {
                self.log(
                    LogLevel::Info,
                    format!("{} asked to leave the cluster", m.node),
                );
                self.gossip.put_member(moved);
                self.gossip.bump(&self.self_node);
                self.changed(now);
            }
            Ok(_) => {}
            Err(e) => self.log(LogLevel::Warn, format!("leave ignored: {e}")),
        }
    }
}

impl StateMachine for Membership {
    type Input = ClusterInput;
    type Output = ClusterOutput;

    fn handle(&mut self, now: Instant, input: ClusterInput) {
        match input {
            ClusterInput::JoinSeeds(seeds) => self.join_seeds(now, seeds),
            ClusterInput::Join(contact) => {
                if self.join == JoinState::Idle {
                    self.join_contact(now, contact, Vec::new());
                }
            }
            ClusterInput::Leave(address) if self.join == JoinState::Member => {
                self.status_change(now, &address, MemberStatus::Leaving);
            }
            ClusterInput::Down(address) if self.join == JoinState::Member => {
                self.status_change(now, &address, MemberStatus::Down);
            }
            ClusterInput::Leave(_) | ClusterInput::Down(_) => {
                self.log(
                    LogLevel::Warn,
                    "leave/down ignored: this node is not a member".into(),
                );
            }
            ClusterInput::Received(msg) => self.on_message(now, msg),
            ClusterInput::QuarantinedBy(by) => {
                let exiting = self
                    .self_member()
                    .is_some_and(|m| m.status == MemberStatus::Exiting);
                if self.join == JoinState::Member && exiting {
                    // Only a member that removed this node quarantines an Exiting one: the
                    // gossip saying so was lost, the quarantine says the same.
                    let me = self.self_node.clone();
                    self.log(
                        LogLevel::Info,
                        format!("{by} quarantined this node after its exit: it was removed"),
                    );
                    self.gossip.remove_member(&me, 0);
                    self.changed(now);
                } else if self.join == JoinState::Member && self.gossip.member(&by).is_some() {
                    let me = self.self_node.clone();
                    self.mark_down(
                        now,
                        &me,
                        &format!("member {by} quarantined this node, so the two can never talk again; this node downs itself"),
                    );
                } else if matches!(self.join, JoinState::Joining { .. }) {
                    // The node this one asks to join will never talk to this incarnation: it
                    // was removed while its welcome was lost. Only a new incarnation can join.
                    self.log(
                        LogLevel::Warn,
                        format!("{by} quarantined this node while it was joining: this incarnation was removed from the cluster before it heard its welcome; it stops, and started again it joins as a new incarnation"),
                    );
                    self.join = JoinState::Removed;
                    self.out.push_back(ClusterOutput::SelfRemoved);
                }
            }
            ClusterInput::LeaseAcquired(acquired) => self.on_lease(now, acquired),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.join_timeouts(now);
        self.quarantine_due(now);
        if self.join != JoinState::Member {
            return;
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            self.next_heartbeat = Some(now + self.settings.failure_detector.heartbeat_interval);
            self.heartbeat_tick(now);
        }
        if self.next_gossip.is_some_and(|t| t <= now) {
            self.next_gossip = Some(now + self.settings.gossip_interval);
            self.gossip_tick();
        }
        if self.next_leader.is_some_and(|t| t <= now) {
            self.next_leader = Some(now + self.settings.leader_actions_interval);
            self.leader_actions(now);
            self.resolver(now);
        }
        if self.next_probe.is_some_and(|t| t <= now) {
            self.probe_silent_seeds(now);
        }
        self.lease_step(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let join = match &self.join {
            JoinState::Seeking {
                next_try, form_at, ..
            } => Some(form_at.map_or(*next_try, |f| f.min(*next_try))),
            JoinState::Joining { retry_at, .. } => Some(*retry_at),
            JoinState::Member => self.next_probe,
            JoinState::Idle | JoinState::Removed => None,
        };
        let lease = match self.lease {
            LeaseStep::Waiting(t) | LeaseStep::Held(t) => Some(t),
            LeaseStep::Idle | LeaseStep::Asked => None,
        };
        let quarantine = self.quarantine_at.values().map(|(at, _)| *at).min();
        let running = [
            join,
            self.next_gossip,
            self.next_leader,
            self.next_heartbeat,
            lease,
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|_| self.join != JoinState::Removed);
        running.into_iter().chain(quarantine).min()
    }

    fn poll_output(&mut self) -> Option<ClusterOutput> {
        self.out.pop_front()
    }
}

/// Whether two gossips list the same members with the same statuses.
fn same_members(a: &Gossip, b: &Gossip) -> bool {
    a.members()
        .map(|m| (&m.node, m.status))
        .eq(b.members().map(|m| (&m.node, m.status)))
}

mod join;
mod leader;
#[cfg(test)]
mod strangers_tests;
#[cfg(test)]
mod tests;
