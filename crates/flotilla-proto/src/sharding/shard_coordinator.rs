//! The shard coordinator of one entity type, as a pure state machine: it answers where shards
//! live, allocates new ones, and moves them — rebalancing, and emptying regions that shut down —
//! through the hand-off protocol. Its state is the [`CoordinatorState`] fold; every change is
//! also an output [`CoordinatorOutput::Event`], for a store or an observer.
//!
//! ```text
//!  region ──Register{its shards}──▶ coordinator ──RegisterAck──▶ region
//!  region ──GetShardHome(s)──▶ known: ShardHome(s, r)
//!                              unknown: allocate (only once every member's region has
//!                              registered) → HostShard(s) to r (again every host-retry until
//!                              ShardStarted) and ShardHome(s, r) to the asker
//!  every rebalance-interval, or GracefulShutdownReq from r (all of r's shards):
//!    BeginHandOff(s) ─▶ every region and proxy (they stop routing s and buffer)
//!    all BeginHandOffAck(s) ─▶ HandOff(s) ─▶ s's home (it stops s's entities, releases the lease)
//!    ShardStopped(s) from the home ─▶ ShardHomeDeallocated; asks that waited are answered anew
//!    no ShardStopped within handoff-timeout ─▶ the hand-off is abandoned, s stays where it is
//! ```
//!
//! A coordinator that takes over (the singleton moved) starts empty: every region registers
//! again with the shards it hosts, which rebuilds the allocations, and nothing is allocated
//! before every member's region has registered — so a shard that still runs somewhere is never
//! given a second home. A second region claiming a shard that already has a home is told to hand
//! it off. Messages that do not fit the state — a ShardStopped for a shard that is not being
//! handed off by that region, an ack for no hand-off — are stale and ignored (logged).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::{StateMachine, UniqueAddress};

use super::allocation::{Allocations, ShardAllocationStrategy};
use super::coordinator::{CoordinatorEvent, CoordinatorState};
use super::shard_id::ShardId;
use crate::cluster::LogLevel;

/// The coordinator's timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorSettings {
    /// How often a rebalance round may start (default 10 s).
    pub rebalance_interval: Duration,
    /// How long a hand-off may take before it is abandoned (default 60 s).
    pub handoff_timeout: Duration,
    /// How often an unacknowledged HostShard, BeginHandOff or HandOff is sent again (default
    /// 1 s).
    pub host_retry: Duration,
    /// Remember entities: every shard ever allocated (and every one the store names) is kept
    /// allocated — started again at once wherever it goes after a hand-off or the loss of its
    /// region, so that its remembered entities run without waiting for a message.
    pub remember_entities: bool,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            rebalance_interval: Duration::from_secs(10),
            handoff_timeout: Duration::from_secs(60),
            host_retry: Duration::from_secs(1),
            remember_entities: false,
        }
    }
}

/// From a region (or proxy) to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToCoordinator {
    /// A region that hosts shards, with the shards it hosts now (none when it is new).
    Register(BTreeSet<ShardId>),
    /// A region that only routes.
    RegisterProxy,
    /// Where does this shard live?
    GetShardHome(ShardId),
    /// The answer to HostShard: the shard runs.
    ShardStarted(ShardId),
    /// The answer to BeginHandOff: the sender routes nothing to the shard until told its new
    /// home.
    BeginHandOffAck(ShardId),
    /// The answer to HandOff: the shard stopped (its lease released).
    ShardStopped(ShardId),
    /// The region is shutting down: move all its shards away.
    GracefulShutdownReq,
}

/// From the coordinator to a region (or proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToRegion {
    /// Registration accepted.
    RegisterAck,
    /// The shard lives in `region`.
    ShardHome {
        /// The shard.
        shard: ShardId,
        /// Its home.
        region: UniqueAddress,
    },
    /// Start this shard here (answer ShardStarted).
    HostShard(ShardId),
    /// Stop routing to this shard and buffer for it (answer BeginHandOffAck).
    BeginHandOff(ShardId),
    /// Stop this shard (answer ShardStopped).
    HandOff(ShardId),
    /// This coordinator does not know the region (it has just started, say): register now,
    /// without waiting for the retry.
    RegisterAgain,
}

/// Inputs of a [`ShardCoordinator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorInput {
    /// The nodes that must have registered a region before shards are allocated (the Up
    /// members with the type's role), after every membership change.
    Members(BTreeSet<UniqueAddress>),
    /// A message from a region or proxy.
    Received {
        /// The sender.
        from: UniqueAddress,
        /// The message.
        msg: ToCoordinator,
    },
    /// A region or proxy is gone (its node was removed, or it stopped).
    Terminated(UniqueAddress),
    /// Remember entities: shards that have remembered entities (read from the store when the
    /// coordinator starts), to keep allocated.
    RememberedShards(BTreeSet<ShardId>),
}

/// Outputs of a [`ShardCoordinator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorOutput {
    /// Send to a region or proxy.
    Send {
        /// To whom.
        to: UniqueAddress,
        /// What.
        msg: ToRegion,
    },
    /// The state changed by this event.
    Event(CoordinatorEvent),
    /// A line for the log.
    Log {
        /// How loud.
        level: LogLevel,
        /// What happened and why.
        text: String,
    },
}

/// One shard being handed off.
#[derive(Debug, Clone)]
struct HandOff {
    from: UniqueAddress,
    /// Regions and proxies that have not acknowledged BeginHandOff yet.
    unacked: BTreeSet<UniqueAddress>,
    /// HandOff was sent to `from`.
    stopping: bool,
    deadline: Instant,
    /// When to send again what has not been answered: BeginHandOff to the regions that have
    /// not acknowledged it, or HandOff to `from` (ordinary messages may be lost; both are
    /// idempotent at the region).
    resend_at: Instant,
}

/// The coordinator of one entity type. See the [module docs](self).
pub struct ShardCoordinator {
    settings: CoordinatorSettings,
    strategy: Box<dyn ShardAllocationStrategy>,
    state: CoordinatorState,
    /// The members whose regions must register before anything is allocated (`None` until
    /// the driver has said).
    members: Option<BTreeSet<UniqueAddress>>,
    handoffs: BTreeMap<ShardId, HandOff>,
    /// Askers waiting for a shard's home (until allocation is possible, or its hand-off ends).
    waiting: BTreeMap<ShardId, BTreeSet<UniqueAddress>>,
    /// HostShard sent and not acknowledged: the region and when to send it again.
    unacked_host: BTreeMap<ShardId, (UniqueAddress, Instant)>,
    /// Second copies: (shard, region) told to hand off a shard that lives elsewhere, until
    /// that region says it stopped (or is gone), with when to tell it again.
    strays: BTreeMap<(ShardId, UniqueAddress), Instant>,
    shutting_down: BTreeSet<UniqueAddress>,
    /// Regions and proxies reported terminated (their member was removed): an incarnation never
    /// comes back, so a late registration from one is refused.
    terminated: BTreeSet<UniqueAddress>,
    /// Remember entities: the shards kept allocated.
    remembered: BTreeSet<ShardId>,
    next_rebalance: Instant,
    out: VecDeque<CoordinatorOutput>,
}

impl std::fmt::Debug for ShardCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCoordinator")
            .field("state", &self.state)
            .field("handoffs", &self.handoffs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ShardCoordinator {
    /// A new coordinator with no state: regions register with it.
    pub fn new(
        settings: CoordinatorSettings,
        strategy: Box<dyn ShardAllocationStrategy>,
        now: Instant,
    ) -> Self {
        let next_rebalance = now + settings.rebalance_interval;
        Self {
            settings,
            strategy,
            state: CoordinatorState::default(),
            members: None,
            handoffs: BTreeMap::new(),
            waiting: BTreeMap::new(),
            unacked_host: BTreeMap::new(),
            strays: BTreeMap::new(),
            shutting_down: BTreeSet::new(),
            terminated: BTreeSet::new(),
            remembered: BTreeSet::new(),
            next_rebalance,
            out: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> &CoordinatorState {
        &self.state
    }

    /// The shards being handed off now.
    pub fn handoffs(&self) -> BTreeSet<ShardId> {
        self.handoffs.keys().cloned().collect()
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.out.push_back(CoordinatorOutput::Log { level, text });
    }

    fn send(&mut self, to: &UniqueAddress, msg: ToRegion) {
        self.out.push_back(CoordinatorOutput::Send {
            to: to.clone(),
            msg,
        });
    }

    /// Applies an event that the machine has made sure is valid; one that is not is a bug in
    /// this machine, reported loudly and not applied.
    fn event(&mut self, e: CoordinatorEvent) -> bool {
        match self.state.apply(&e) {
            Ok(()) => {
                self.out.push_back(CoordinatorOutput::Event(e));
                true
            }
            Err(v) => {
                debug_assert!(false, "the coordinator produced an invalid event: {v}");
                self.log(
                    LogLevel::Warn,
                    format!("internal error, event refused: {v}"),
                );
                false
            }
        }
    }

    /// Every registered region and proxy.
    fn everyone(&self) -> BTreeSet<UniqueAddress> {
        self.state
            .regions()
            .keys()
            .chain(self.state.proxies())
            .cloned()
            .collect()
    }

    /// Whether every member's region has registered (nothing is allocated before, nor before
    /// the members are known).
    fn all_registered(&self) -> bool {
        let Some(members) = &self.members else {
            return false;
        };
        members
            .iter()
            .all(|m| self.state.regions().contains_key(m) || self.state.proxies().contains(m))
            && !self.state.regions().is_empty()
    }

    /// The regions new shards may go to: registered, and not shutting down.
    fn candidates(&self) -> Allocations {
        self.state
            .regions()
            .iter()
            .filter(|(r, _)| !self.shutting_down.contains(*r))
            .map(|(r, s)| (r.clone(), s.clone()))
            .collect()
    }

    fn on_register(&mut self, now: Instant, from: UniqueAddress, shards: BTreeSet<ShardId>) {
        if self.refuse_terminated(&from) {
            return;
        }
        if let Some(members) = &self.members
            && !members.contains(&from)
        {
            // As Akka's coordinator does: only a region of an Up member registers. A region
            // whose member this node never saw Up would get no Terminated when it goes (that
            // comes from the member's removal), so its shards would stay allocated to it for
            // good. It registers again at its retry, once its member is Up here.
            self.log(
                LogLevel::Info,
                format!("ignored the registration of {from}: it is not an Up member here (yet)"),
            );
            return;
        }
        if self.state.proxies().contains(&from) {
            self.event(CoordinatorEvent::ProxyTerminated(from.clone()));
        }
        if !self.state.regions().contains_key(&from) {
            self.event(CoordinatorEvent::RegionRegistered(from.clone()));
            self.log(
                LogLevel::Info,
                format!("region {from} registered with {} shard(s)", shards.len()),
            );
        }
        for shard in shards {
            match self.state.home(&shard).cloned() {
                None => {
                    self.event(CoordinatorEvent::ShardHomeAllocated {
                        shard,
                        region: from.clone(),
                    });
                }
                Some(home) if home == from => {}
                Some(home) => {
                    self.log(
                        LogLevel::Warn,
                        format!("region {from} says it hosts shard {shard}, which lives in {home}: telling {from} to hand it off"),
                    );
                    self.send(&from, ToRegion::HandOff(shard.clone()));
                    // Told again until it says it stopped: lost, the second copy would run on
                    // (holding the lease the home waits for) for good.
                    self.strays
                        .insert((shard, from.clone()), now + self.settings.host_retry);
                }
            }
        }
        self.send(&from, ToRegion::RegisterAck);
        self.answer_waiting(now);
    }

    fn on_get_home(&mut self, now: Instant, from: UniqueAddress, shard: ShardId) {
        if self.handoffs.contains_key(&shard) {
            self.waiting.entry(shard).or_default().insert(from);
            return;
        }
        if let Some(home) = self.state.home(&shard).cloned() {
            self.send(
                &from,
                ToRegion::ShardHome {
                    shard,
                    region: home,
                },
            );
            return;
        }
        if !self.all_registered() {
            self.waiting.entry(shard).or_default().insert(from);
            return;
        }
        let Some(region) = self.strategy.allocate(&from, &shard, &self.candidates()) else {
            self.waiting.entry(shard).or_default().insert(from);
            return;
        };
        self.host(now, &shard, &region, "allocated");
        self.send(&from, ToRegion::ShardHome { shard, region });
    }

    /// Allocates `shard` to `region` and tells the region to start it.
    fn host(&mut self, now: Instant, shard: &ShardId, region: &UniqueAddress, what: &str) {
        self.event(CoordinatorEvent::ShardHomeAllocated {
            shard: shard.clone(),
            region: region.clone(),
        });
        self.log(LogLevel::Info, format!("shard {shard} {what} to {region}"));
        self.send(region, ToRegion::HostShard(shard.clone()));
        self.unacked_host.insert(
            shard.clone(),
            (region.clone(), now + self.settings.host_retry),
        );
        if self.settings.remember_entities {
            self.remembered.insert(shard.clone());
        }
    }

    /// Remember entities: every remembered shard without a home (and not moving) gets one now,
    /// once allocation is possible.
    fn allocate_remembered(&mut self, now: Instant) {
        if !self.settings.remember_entities || !self.all_registered() {
            return;
        }
        let homeless: Vec<ShardId> = self
            .remembered
            .iter()
            .filter(|s| self.state.home(s).is_none() && !self.handoffs.contains_key(*s))
            .cloned()
            .collect();
        for shard in homeless {
            let candidates = self.candidates();
            let Some(first) = candidates.keys().next().cloned() else {
                return;
            };
            if let Some(region) = self.strategy.allocate(&first, &shard, &candidates) {
                self.host(
                    now,
                    &shard,
                    &region,
                    "(with remembered entities) started again",
                );
            }
        }
    }

    /// Answers the askers that can be answered now.
    fn answer_waiting(&mut self, now: Instant) {
        let ready: Vec<ShardId> = self
            .waiting
            .keys()
            .filter(|s| !self.handoffs.contains_key(*s))
            .cloned()
            .collect();
        for shard in ready {
            if self.state.home(&shard).is_none() && !self.all_registered() {
                continue;
            }
            for asker in self.waiting.remove(&shard).unwrap_or_default() {
                self.on_get_home(now, asker, shard.clone());
            }
        }
        self.allocate_remembered(now);
    }

    /// Starts handing off `shard` from its home.
    fn begin_handoff(&mut self, now: Instant, shard: ShardId, why: &str) {
        if self.handoffs.contains_key(&shard) {
            return;
        }
        let Some(from) = self.state.home(&shard).cloned() else {
            return;
        };
        let everyone = self.everyone();
        self.log(
            LogLevel::Info,
            format!("handing off shard {shard} from {from} ({why})"),
        );
        for r in &everyone {
            self.send(r, ToRegion::BeginHandOff(shard.clone()));
        }
        self.handoffs.insert(
            shard,
            HandOff {
                from,
                unacked: everyone,
                stopping: false,
                deadline: now + self.settings.handoff_timeout,
                resend_at: now + self.settings.host_retry,
            },
        );
    }

    fn on_begin_ack(&mut self, from: &UniqueAddress, shard: &ShardId) {
        let Some(h) = self.handoffs.get_mut(shard) else {
            self.log(
                LogLevel::Info,
                format!("ignored a stale BeginHandOffAck for shard {shard} from {from}"),
            );
            return;
        };
        h.unacked.remove(from);
        if h.unacked.is_empty() && !h.stopping {
            h.stopping = true;
            let home = h.from.clone();
            self.send(&home, ToRegion::HandOff(shard.clone()));
        }
    }

    fn on_shard_stopped(&mut self, now: Instant, from: &UniqueAddress, shard: ShardId) {
        if self.strays.remove(&(shard.clone(), from.clone())).is_some() {
            self.log(
                LogLevel::Info,
                format!("the second copy of shard {shard} in {from} has stopped"),
            );
            return;
        }
        let expected = self
            .handoffs
            .get(&shard)
            .is_some_and(|h| h.from == *from && h.stopping);
        if !expected {
            self.log(
                LogLevel::Info,
                format!("ignored a stale ShardStopped for shard {shard} from {from}: it is not handing that shard off"),
            );
            return;
        }
        self.handoffs.remove(&shard);
        self.unacked_host.remove(&shard);
        if self.state.home(&shard) == Some(from) {
            self.event(CoordinatorEvent::ShardHomeDeallocated(shard.clone()));
        }
        self.log(
            LogLevel::Info,
            format!("shard {shard} stopped in {from}: it will start where it is asked for next"),
        );
        self.finish_shutdown_of(from);
        self.answer_waiting(now);
    }

    /// A region that is shutting down and has no shard left is told nothing more: it may stop.
    fn finish_shutdown_of(&mut self, region: &UniqueAddress) {
        if self.shutting_down.contains(region)
            && self
                .state
                .regions()
                .get(region)
                .is_some_and(BTreeSet::is_empty)
        {
            self.log(
                LogLevel::Info,
                format!("region {region} has handed off all its shards"),
            );
        }
    }

    /// Whether `from` is a region (or proxy) of a removed member: its registration is refused.
    /// A region whose member was removed may still run for a moment (it leaves, or has not yet
    /// learned it was downed) and register again; taken in, it would be awaited by every later
    /// hand-off until the hand-off timeout, and no Terminated would ever come for it again.
    fn refuse_terminated(&mut self, from: &UniqueAddress) -> bool {
        if !self.terminated.contains(from) {
            return false;
        }
        self.log(
            LogLevel::Info,
            format!("ignored the registration of {from}: its member was removed from the cluster"),
        );
        true
    }

    fn on_terminated(&mut self, now: Instant, who: &UniqueAddress) {
        self.terminated.insert(who.clone());
        if self.state.proxies().contains(who) {
            self.event(CoordinatorEvent::ProxyTerminated(who.clone()));
        }
        if self.state.regions().contains_key(who) {
            let shards = self.state.regions()[who].len();
            self.event(CoordinatorEvent::RegionTerminated(who.clone()));
            self.log(
                LogLevel::Info,
                format!("region {who} is gone; its {shards} shard(s) will start where they are asked for next"),
            );
        }
        self.shutting_down.remove(who);
        // Hand-offs from it are over; acks from it are no longer awaited.
        let shards: Vec<ShardId> = self.handoffs.keys().cloned().collect();
        for shard in shards {
            let done = match self.handoffs.get_mut(&shard) {
                Some(h) if h.from == *who => true,
                Some(h) => {
                    h.unacked.remove(who);
                    false
                }
                None => false,
            };
            if done {
                self.handoffs.remove(&shard);
            } else {
                self.on_ack_progress(&shard);
            }
        }
        self.unacked_host.retain(|_, (r, _)| r != who);
        self.strays.retain(|(_, r), _| r != who);
        for askers in self.waiting.values_mut() {
            askers.remove(who);
        }
        self.waiting.retain(|_, a| !a.is_empty());
        self.answer_waiting(now);
    }

    fn on_ack_progress(&mut self, shard: &ShardId) {
        let send = match self.handoffs.get_mut(shard) {
            Some(h) if h.unacked.is_empty() && !h.stopping => {
                h.stopping = true;
                Some(h.from.clone())
            }
            _ => None,
        };
        if let Some(home) = send {
            self.send(&home, ToRegion::HandOff(shard.clone()));
        }
    }

    fn rebalance(&mut self, now: Instant) {
        self.next_rebalance = now + self.settings.rebalance_interval;
        if !self.all_registered() {
            return;
        }
        let in_progress = self.handoffs();
        let moving = self.strategy.rebalance(&self.candidates(), &in_progress);
        for shard in moving {
            self.begin_handoff(now, shard, "rebalance");
        }
    }
}

impl StateMachine for ShardCoordinator {
    type Input = CoordinatorInput;
    type Output = CoordinatorOutput;

    fn handle(&mut self, now: Instant, input: CoordinatorInput) {
        match input {
            CoordinatorInput::Members(members) => {
                // A new incarnation Up at a region's address means that region's incarnation
                // is dead, whether or not its removal was seen here.
                let replaced: Vec<UniqueAddress> = self
                    .everyone()
                    .into_iter()
                    .filter(|r| {
                        members
                            .iter()
                            .any(|m| m.address == r.address && m.uid != r.uid)
                    })
                    .collect();
                self.members = Some(members);
                for old in replaced {
                    self.on_terminated(now, &old);
                }
                self.answer_waiting(now);
            }
            CoordinatorInput::Terminated(who) => self.on_terminated(now, &who),
            CoordinatorInput::RememberedShards(shards) => {
                if self.settings.remember_entities {
                    self.remembered.extend(shards);
                    self.allocate_remembered(now);
                }
            }
            CoordinatorInput::Received { from, msg } => match msg {
                ToCoordinator::Register(shards) => self.on_register(now, from, shards),
                ToCoordinator::RegisterProxy => {
                    if self.refuse_terminated(&from) {
                        return;
                    }
                    if !self.state.proxies().contains(&from)
                        && !self.state.regions().contains_key(&from)
                    {
                        self.event(CoordinatorEvent::ProxyRegistered(from.clone()));
                    }
                    self.send(&from, ToRegion::RegisterAck);
                    self.answer_waiting(now);
                }
                ToCoordinator::GetShardHome(shard) => {
                    if self.state.regions().contains_key(&from)
                        || self.state.proxies().contains(&from)
                    {
                        self.on_get_home(now, from, shard);
                    } else if !self.terminated.contains(&from) {
                        self.log(
                            LogLevel::Info,
                            format!("ignored GetShardHome({shard}) from {from}, which has not registered: asking it to register"),
                        );
                        self.send(&from, ToRegion::RegisterAgain);
                    }
                }
                ToCoordinator::ShardStarted(shard) => {
                    if self
                        .unacked_host
                        .get(&shard)
                        .is_some_and(|(r, _)| *r == from)
                    {
                        self.unacked_host.remove(&shard);
                    }
                }
                ToCoordinator::BeginHandOffAck(shard) => self.on_begin_ack(&from, &shard),
                ToCoordinator::ShardStopped(shard) => self.on_shard_stopped(now, &from, shard),
                ToCoordinator::GracefulShutdownReq => {
                    if self.state.regions().contains_key(&from)
                        && self.shutting_down.insert(from.clone())
                    {
                        let shards: Vec<ShardId> =
                            self.state.regions()[&from].iter().cloned().collect();
                        self.log(
                            LogLevel::Info,
                            format!(
                                "region {from} is shutting down: handing off its {} shard(s)",
                                shards.len()
                            ),
                        );
                        for shard in shards {
                            self.begin_handoff(now, shard, "its region is shutting down");
                        }
                        self.finish_shutdown_of(&from);
                    }
                }
            },
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<ShardId> = self
            .handoffs
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for shard in expired {
            if let Some(h) = self.handoffs.remove(&shard) {
                let waiting_for = if h.stopping {
                    format!("the shard to stop in {}", h.from)
                } else {
                    let regions: Vec<String> = h.unacked.iter().map(ToString::to_string).collect();
                    format!("BeginHandOffAck from {}", regions.join(", "))
                };
                self.log(
                    LogLevel::Warn,
                    format!(
                        "hand-off of shard {shard} from {} did not finish within {:?} (still waiting for {waiting_for}): abandoned, the shard stays there",
                        h.from, self.settings.handoff_timeout
                    ),
                );
                // Whoever stopped routing to it may route again.
                for r in self.everyone() {
                    self.send(
                        &r,
                        ToRegion::ShardHome {
                            shard: shard.clone(),
                            region: h.from.clone(),
                        },
                    );
                }
            }
        }
        let mut resend = Vec::new();
        for (shard, h) in &mut self.handoffs {
            if h.resend_at > now {
                continue;
            }
            h.resend_at = now + self.settings.host_retry;
            if h.stopping {
                resend.push((h.from.clone(), ToRegion::HandOff(shard.clone())));
            } else {
                for r in &h.unacked {
                    resend.push((r.clone(), ToRegion::BeginHandOff(shard.clone())));
                }
            }
        }
        for (to, msg) in resend {
            self.send(&to, msg);
        }
        let retries: Vec<(ShardId, UniqueAddress)> = self
            .unacked_host
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(s, (r, _))| (s.clone(), r.clone()))
            .collect();
        for (shard, region) in retries {
            self.send(&region, ToRegion::HostShard(shard.clone()));
            self.unacked_host
                .insert(shard, (region, now + self.settings.host_retry));
        }
        let strays: Vec<(ShardId, UniqueAddress)> = self
            .strays
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for (shard, region) in strays {
            self.send(&region, ToRegion::HandOff(shard.clone()));
            self.strays
                .insert((shard, region), now + self.settings.host_retry);
        }
        if self.next_rebalance <= now {
            self.rebalance(now);
        }
        self.answer_waiting(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.handoffs
            .values()
            .flat_map(|h| [h.deadline, h.resend_at])
            .chain(self.unacked_host.values().map(|(_, at)| *at))
            .chain(self.strays.values().copied())
            .chain(std::iter::once(self.next_rebalance))
            .min()
    }

    fn poll_output(&mut self) -> Option<CoordinatorOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests;
