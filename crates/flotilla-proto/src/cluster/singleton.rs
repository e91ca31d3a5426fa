//! The cluster singleton manager of one node, as a pure state machine: the singleton runs on
//! the oldest Up member (of a role), moves by a hand-over when that member leaves, and by a
//! take-over when it crashes; with a lease it runs only while the lease is held.
//!
//! ```text
//!  Younger ──this node becomes the oldest──▶ no previous oldest (a new cluster): Starting
//!     ▲          │ the previous oldest is still a member: BecomingOldest (HandOverToMe to it
//!     │          │   every hand-over-retry-interval, until HandOverDone)
//!     │          │ the previous oldest was removed (crashed): wait removal-margin, then Starting
//!     │          ▼
//!     │       Starting ── with a lease: AcquireLease (denied / unknown → again after
//!     │          │        lease-retry-interval); without: at once
//!     │          ▼
//!     │       Oldest (the singleton runs) ── lease lost → Stop, then Starting again
//!     │          │ no longer the oldest (this node leaves, or a new oldest asks)
//!     │          ▼
//!     └──── HandingOver: Stop → SingletonStopped → ReleaseLease (awaited) → HandOverDone to
//!                        the new oldest
//! ```
//!
//! "Oldest" is the member with the lowest up-number among the Up members that have the role;
//! a Leaving or Exiting member is no longer a candidate, so the next oldest starts asking for
//! the hand-over as soon as the oldest begins to leave. An unreachable oldest stays the oldest
//! until the split-brain resolver downs it: two singletons never run because of a failure
//! detector's opinion alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_core::{StableAfter, StateMachine, UniqueAddress};

use super::member::{Member, MemberStatus};
use super::protocol::LogLevel;

/// The member a singleton of `role` ("" for any) runs on: among the Up members with the role,
/// the one with the lowest up-number (ties, which gossip never produces, by address).
pub fn oldest<'a>(members: impl IntoIterator<Item = &'a Member>, role: &str) -> Option<&'a Member> {
    members
        .into_iter()
        .filter(|m| m.status == MemberStatus::Up)
        .filter(|m| role.is_empty() || m.roles.contains(role))
        .min_by(|a, b| {
            a.up_number
                .cmp(&b.up_number)
                .then_with(|| a.node.address.cmp(&b.node.address))
        })
}

/// How a singleton is placed and moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingletonSettings {
    /// Only members with this role run it ("" for all).
    pub role: String,
    /// How often the new oldest asks the previous one to hand over (default 1 s).
    pub hand_over_retry_interval: Duration,
    /// After a crashed oldest is removed, how long the new oldest waits before it starts the
    /// singleton, so that the old side has surely stopped (default: the resolver's automatic
    /// stable-after for the cluster's size before the removal, 7 s up to five members).
    pub removal_margin: StableAfter,
    /// Whether the singleton runs only while this node holds a lease.
    pub use_lease: bool,
    /// How long after a denied or unanswered acquisition the lease is tried again (default 5 s).
    pub lease_retry_interval: Duration,
}

impl Default for SingletonSettings {
    fn default() -> Self {
        Self {
            role: String::new(),
            hand_over_retry_interval: Duration::from_secs(1),
            removal_margin: StableAfter::Auto,
            use_lease: false,
            lease_retry_interval: Duration::from_secs(5),
        }
    }
}

/// A message between the managers of one singleton on different nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingletonMsg {
    /// From the new oldest to the previous one: stop it and tell me.
    HandOverToMe {
        /// The new oldest.
        from: UniqueAddress,
    },
    /// The hand-over has begun; the singleton is stopping.
    HandOverInProgress {
        /// The previous oldest.
        from: UniqueAddress,
    },
    /// The singleton has stopped on the previous oldest (and its lease is released): start it.
    HandOverDone {
        /// The previous oldest.
        from: UniqueAddress,
    },
}

/// Inputs of a [`SingletonManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingletonInput {
    /// The members as this node sees them now (after every cluster event).
    Members(Vec<Member>),
    /// A message from another node's manager.
    Received(SingletonMsg),
    /// The local singleton instance has stopped.
    SingletonStopped,
    /// The answer to [`SingletonOutput::AcquireLease`].
    LeaseAcquired(bool),
    /// The lease that was held is lost.
    LeaseLost,
    /// The release asked for by [`SingletonOutput::ReleaseLease`] finished (whatever its
    /// outcome; the driver logs a failed one).
    LeaseReleased,
    /// This node is shutting down: hand over now, whoever is the oldest.
    Leave,
}

/// Outputs of a [`SingletonManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingletonOutput {
    /// Start the singleton instance here.
    Start,
    /// Stop the local singleton instance (answer with [`SingletonInput::SingletonStopped`]).
    Stop,
    /// The lease was lost: stop the instance at once, abandoning the message in hand (answer
    /// with [`SingletonInput::SingletonStopped`]).
    StopNow,
    /// Send to another node's manager.
    Send {
        /// The incarnation.
        to: UniqueAddress,
        /// The message.
        msg: SingletonMsg,
    },
    /// Acquire the lease (answer with [`SingletonInput::LeaseAcquired`]).
    AcquireLease,
    /// Release the lease and answer with [`SingletonInput::LeaseReleased`] once it is done.
    ReleaseLease,
    /// This node's part is over (after [`SingletonInput::Leave`]): the singleton is not running
    /// here and its lease is released; shutdown may go on.
    Done,
    /// A line for the log.
    Log {
        /// How loud.
        level: LogLevel,
        /// What happened and why.
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Another member is the oldest (or none is yet).
    Younger,
    /// Asking the previous oldest to hand over.
    BecomingOldest {
        previous: UniqueAddress,
        next_ask: Instant,
    },
    /// The previous oldest was removed without handing over: wait the margin.
    TakingOver { at: Instant },
    /// Getting the lease (or about to start without one).
    Starting {
        asked: bool,
        retry_at: Option<Instant>,
    },
    /// The singleton runs here.
    Oldest,
    /// The singleton is stopping (lease lost): start again once it has.
    Restarting,
    /// Stopping the singleton, then releasing the lease, then telling `to`.
    HandingOver {
        to: Option<UniqueAddress>,
        stopped: bool,
        releasing: bool,
    },
    /// Left: nothing runs here any more.
    Done,
}

/// One node's manager of one singleton. See the [module docs](self).
#[derive(Debug)]
pub struct SingletonManager {
    self_node: UniqueAddress,
    settings: SingletonSettings,
    state: State,
    /// The oldest candidate as last computed.
    oldest: Option<UniqueAddress>,
    /// Every member last seen, by incarnation.
    members: BTreeMap<UniqueAddress, MemberStatus>,
    /// The last member other than this one that was the oldest.
    last_oldest: Option<UniqueAddress>,
    leaving: bool,
    out: std::collections::VecDeque<SingletonOutput>,
}

impl SingletonManager {
    /// The manager on `self_node`.
    pub fn new(self_node: UniqueAddress, settings: SingletonSettings) -> Self {
        Self {
            self_node,
            settings,
            state: State::Younger,
            oldest: None,
            members: BTreeMap::new(),
            last_oldest: None,
            leaving: false,
            out: std::collections::VecDeque::new(),
        }
    }

    /// Whether the singleton runs here.
    pub fn is_running(&self) -> bool {
        self.state == State::Oldest
    }

    /// The member the singleton runs on, or will run on, as this node sees it.
    pub fn oldest(&self) -> Option<&UniqueAddress> {
        self.oldest.as_ref()
    }

    /// The state's name, for logs and tests.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Younger => "younger",
            State::BecomingOldest { .. } => "becoming-oldest",
            State::TakingOver { .. } => "taking-over",
            State::Starting { .. } => "starting",
            State::Oldest => "oldest",
            State::Restarting => "restarting",
            State::HandingOver { .. } => "handing-over",
            State::Done => "done",
        }
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.out.push_back(SingletonOutput::Log { level, text });
    }

    fn send(&mut self, to: &UniqueAddress, msg: SingletonMsg) {
        self.out.push_back(SingletonOutput::Send {
            to: to.clone(),
            msg,
        });
    }

    fn on_members(&mut self, now: Instant, members: &[Member]) {
        let oldest = oldest(members, &self.settings.role).map(|m| m.node.clone());
        self.members = members.iter().map(|m| (m.node.clone(), m.status)).collect();
        self.oldest.clone_from(&oldest);
        let me = self.self_node.clone();
        let i_am_oldest = oldest.as_ref() == Some(&me) && !self.leaving;
        match &self.state {
            State::Younger if i_am_oldest => match self.last_oldest.clone() {
                Some(p) if self.members.contains_key(&p) => {
                    self.log(
                            LogLevel::Info,
                            format!("this node is now the oldest; asking the previous oldest {p} to hand the singleton over"),
                        );
                    self.send(&p, SingletonMsg::HandOverToMe { from: me.clone() });
                    self.state = State::BecomingOldest {
                        previous: p,
                        next_ask: now + self.settings.hand_over_retry_interval,
                    };
                }
                Some(p) => self.take_over(now, &p),
                None => {
                    self.log(
                        LogLevel::Info,
                        "this node is the oldest of a new cluster: starting the singleton".into(),
                    );
                    self.start();
                }
            },
            State::Younger => {}
            State::BecomingOldest { previous, .. } if !self.members.contains_key(previous) => {
                let p = previous.clone();
                self.take_over(now, &p);
            }
            State::BecomingOldest { .. } | State::TakingOver { .. } | State::Starting { .. }
                if !i_am_oldest =>
            {
                self.log(
                    LogLevel::Info,
                    "another member is the oldest again before the singleton started here".into(),
                );
                if matches!(self.state, State::Starting { asked: true, .. }) {
                    self.out.push_back(SingletonOutput::ReleaseLease);
                }
                self.state = State::Younger;
            }
            State::Oldest | State::Restarting if !i_am_oldest => {
                let to = oldest.clone().filter(|o| *o != me);
                self.hand_over(to);
            }
            _ => {}
        }
        if let Some(o) = oldest.filter(|o| *o != me) {
            self.last_oldest = Some(o);
        }
    }

    fn take_over(&mut self, now: Instant, previous: &UniqueAddress) {
        // The cluster as it was before the removal: the live members and the removed one.
        let members = 1 + self
            .members
            .values()
            .filter(|s| !matches!(s, MemberStatus::Down | MemberStatus::Removed))
            .count();
        let margin = self.settings.removal_margin.for_members(members);
        self.log(
            LogLevel::Warn,
            format!(
                "the previous oldest {previous} was removed without handing the singleton over; it starts here after removal-margin ({margin:?}), when the old one has surely stopped"
            ),
        );
        self.state = State::TakingOver { at: now + margin };
    }

    /// Acquires the lease first when one is used; starts the singleton at once otherwise.
    fn start(&mut self) {
        if self.settings.use_lease {
            self.out.push_back(SingletonOutput::AcquireLease);
            self.state = State::Starting {
                asked: true,
                retry_at: None,
            };
        } else {
            self.run();
        }
    }

    fn run(&mut self) {
        self.state = State::Oldest;
        self.out.push_back(SingletonOutput::Start);
        self.log(LogLevel::Info, "the singleton runs on this node".into());
    }

    fn hand_over(&mut self, to: Option<UniqueAddress>) {
        match &to {
            Some(t) => self.log(
                LogLevel::Info,
                format!("handing the singleton over to {t}: stopping it here"),
            ),
            None => self.log(
                LogLevel::Info,
                "this node leaves: stopping the singleton (no other member to hand it to yet)"
                    .into(),
            ),
        }
        let stopped = self.state == State::Restarting;
        if !stopped {
            self.out.push_back(SingletonOutput::Stop);
        }
        self.state = State::HandingOver {
            to,
            stopped,
            releasing: false,
        };
        self.hand_over_step();
    }

    /// Releases the lease once the singleton has stopped, and tells the new oldest once the
    /// lease is released.
    fn hand_over_step(&mut self) {
        let State::HandingOver {
            to,
            stopped,
            releasing,
        } = &mut self.state
        else {
            return;
        };
        if !*stopped || *releasing {
            return;
        }
        if self.settings.use_lease {
            *releasing = true;
            self.out.push_back(SingletonOutput::ReleaseLease);
        } else {
            let to = to.clone();
            self.finish_hand_over(to);
        }
    }

    fn finish_hand_over(&mut self, to: Option<UniqueAddress>) {
        if let Some(t) = &to {
            let me = self.self_node.clone();
            self.send(t, SingletonMsg::HandOverDone { from: me });
            self.log(
                LogLevel::Info,
                format!("the singleton is handed over to {t}"),
            );
        }
        if self.leaving {
            self.state = State::Done;
            self.out.push_back(SingletonOutput::Done);
        } else {
            self.state = State::Younger;
        }
    }

    fn on_message(&mut self, msg: SingletonMsg) {
        let me = self.self_node.clone();
        match msg {
            SingletonMsg::HandOverToMe { from } => match &mut self.state {
                State::Oldest | State::Restarting => self.hand_over(Some(from)),
                State::HandingOver { to, .. } => {
                    *to = Some(from.clone());
                    self.send(&from, SingletonMsg::HandOverInProgress { from: me });
                }
                State::Starting { asked, .. } => {
                    // It is the oldest in its view and this node has not started yet: yield.
                    if *asked {
                        self.out.push_back(SingletonOutput::ReleaseLease);
                    }
                    self.state = State::Younger;
                    self.send(&from, SingletonMsg::HandOverDone { from: me });
                }
                State::BecomingOldest { .. } | State::TakingOver { .. } => {
                    self.state = State::Younger;
                    self.send(&from, SingletonMsg::HandOverDone { from: me });
                }
                // Nothing runs here (an earlier Done may have been lost): say so again.
                State::Younger | State::Done => {
                    self.send(&from, SingletonMsg::HandOverDone { from: me });
                }
            },
            SingletonMsg::HandOverInProgress { .. } => {}
            SingletonMsg::HandOverDone { from } => {
                if matches!(&self.state, State::BecomingOldest { previous, .. } if *previous == from)
                    || matches!(self.state, State::TakingOver { .. })
                {
                    self.log(LogLevel::Info, format!("{from} handed the singleton over"));
                    self.start();
                }
            }
        }
    }
}

impl StateMachine for SingletonManager {
    type Input = SingletonInput;
    type Output = SingletonOutput;

    fn handle(&mut self, now: Instant, input: SingletonInput) {
        match input {
            SingletonInput::Members(members) => self.on_members(now, &members),
            SingletonInput::Received(msg) => self.on_message(msg),
            SingletonInput::SingletonStopped => match &mut self.state {
                State::HandingOver { stopped, .. } => {
                    *stopped = true;
                    self.hand_over_step();
                }
                State::Restarting => {
                    self.state = State::Starting {
                        asked: false,
                        retry_at: Some(now + self.settings.lease_retry_interval),
                    };
                }
                State::Oldest => {
                    self.log(
                        LogLevel::Warn,
                        "the singleton stopped by itself; it is not started again until it moves"
                            .into(),
                    );
                    self.state = State::Restarting;
                }
                _ => {}
            },
            SingletonInput::LeaseAcquired(granted) => {
                if let State::Starting { asked: true, .. } = self.state {
                    if granted {
                        self.run();
                    } else {
                        self.log(
                            LogLevel::Warn,
                            format!(
                                "the singleton's lease was not granted; trying again in {:?}",
                                self.settings.lease_retry_interval
                            ),
                        );
                        self.state = State::Starting {
                            asked: false,
                            retry_at: Some(now + self.settings.lease_retry_interval),
                        };
                    }
                }
            }
            SingletonInput::LeaseLost => {
                if self.state == State::Oldest {
                    self.log(
                        LogLevel::Warn,
                        "the singleton's lease was lost: stopping the singleton at once; it starts again when the lease is re-acquired".into(),
                    );
                    self.out.push_back(SingletonOutput::StopNow);
                    self.state = State::Restarting;
                }
            }
            SingletonInput::LeaseReleased => {
                if let State::HandingOver {
                    to,
                    releasing: true,
                    ..
                } = &self.state
                {
                    let to = to.clone();
                    self.finish_hand_over(to);
                }
            }
            SingletonInput::Leave => {
                self.leaving = true;
                match &self.state {
                    State::Oldest | State::Restarting => {
                        let to = self.oldest.clone().filter(|o| *o != self.self_node);
                        self.hand_over(to);
                    }
                    State::HandingOver { .. } => {}
                    State::Starting { asked: true, .. } => {
                        self.state = State::HandingOver {
                            to: None,
                            stopped: true,
                            releasing: false,
                        };
                        self.hand_over_step();
                    }
                    _ => {
                        self.state = State::Done;
                        self.out.push_back(SingletonOutput::Done);
                    }
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.state.clone() {
            State::BecomingOldest { previous, next_ask } if next_ask <= now => {
                let me = self.self_node.clone();
                self.send(&previous, SingletonMsg::HandOverToMe { from: me });
                self.state = State::BecomingOldest {
                    previous,
                    next_ask: now + self.settings.hand_over_retry_interval,
                };
            }
            State::TakingOver { at } if at <= now => self.start(),
            State::Starting {
                asked: false,
                retry_at: Some(t),
            } if t <= now => self.start(),
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::BecomingOldest { next_ask, .. } => Some(next_ask),
            State::TakingOver { at } => Some(at),
            State::Starting {
                asked: false,
                retry_at,
            } => retry_at,
            _ => None,
        }
    }

    fn poll_output(&mut self) -> Option<SingletonOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests;
