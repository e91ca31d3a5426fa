//! The association with one remote address: its lifecycle as a pure state machine.
//!
//! ```text
//!                 first outbound message (Connect)                  handshake done (uid)
//!   ┌──────┐ ───────────────────────────────────▶ ┌────────────────────────┐ ───────────▶ ┌──────────────┐
//!   │ Idle │                                      │ Active: connecting     │              │ Active: uid  │
//!   └──────┘ ◀──── gate expired ─────┐            └────────────────────────┘              └──────────────┘
//!      │                             │        connect failed / handshake timeout │   connection lost │
//!      │ inbound handshake (uid)     │                                           ▼                   ▼
//!      └──────────▶ Active: uid      └──────────────────────────────── ┌──────────────────────────────────┐
//!                                                                      │ Gated until now + retry gate     │
//!                       inbound handshake (uid) ◀───────────────────── │ (outbound → dead letters)        │
//!                       → Active at once                               └──────────────────────────────────┘
//!
//!   any state ── quarantine(uid of the current, or last reached, incarnation) ──▶ Quarantined(uid)
//!   Quarantined(uid) ── handshake from a *new* uid (either direction) ──▶ Active: new uid
//! ```
//!
//! Quarantine is per incarnation: the machine keeps the quarantined UIDs of its remote address
//! (the latest [`MAX_QUARANTINED_INCARNATIONS`]; UIDs are random 64-bit numbers, so one
//! forgotten after that many restarts of the same address will not come back).
//! Messages to a quarantined incarnation go to dead letters; frames from one are dropped and
//! counted, and it is told (on the control lane) that it is quarantined. While quarantined, an
//! outbound message triggers at most one connection attempt per `retry-gate-closed-for`, to find
//! out whether the remote has restarted with a new UID.
//!
//! Inputs ([`AssociationInput`]): ordinary outbound messages, the transport's connection events
//! (outbound handshake done or failed, inbound handshake accepted, connection lost), frames heard
//! from the remote, and quarantine requests (system-message delivery failed, deathwatch's failure
//! detector, the cluster removed the member, an explicit call). Timers: the handshake deadline,
//! the end of the gate, and `quarantine-after-silence`.
//!
//! Outputs ([`AssociationOutput`]): connect, transmit, dead-letter, disconnect, send a quarantine
//! notice, drop an inbound frame, and events: every state change once, with its cause.
//!
//! The payload type `M` is opaque here: the machine decides *what* happens to a message, the
//! driver moves the bytes.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use flotilla_core::{Address, RemoteSettings, StateMachine};

#[cfg(test)]
mod tests;

/// The four states operators know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateName {
    /// No traffic yet.
    Idle,
    /// Traffic, no failure (connecting, or connected to an incarnation).
    Active,
    /// A recoverable failure: no outbound connection attempt until the gate opens.
    Gated,
    /// The current incarnation is quarantined for good.
    Quarantined,
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "Idle",
            Self::Active => "Active",
            Self::Gated => "Gated",
            Self::Quarantined => "Quarantined",
        })
    }
}

/// Quarantined incarnations remembered per address.
pub const MAX_QUARANTINED_INCARNATIONS: usize = 256;

/// Why an incarnation was quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineReason {
    /// Reliable system-message delivery to it failed.
    SystemMessageDeliveryFailed(String),
    /// Remote deathwatch's failure detector declared it dead.
    FailureDetector,
    /// The cluster removed it.
    RemovedFromCluster,
    /// Somebody asked for it.
    Explicit(String),
    /// Nothing was heard from it for this long.
    Silent(Duration),
    /// A new incarnation of the same address connected.
    ReplacedByNewIncarnation {
        /// The new incarnation's UID.
        new_uid: u64,
    },
}

impl fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemMessageDeliveryFailed(why) => {
                write!(f, "system message delivery failed ({why})")
            }
            Self::FailureDetector => f.write_str("the failure detector declared it dead"),
            Self::RemovedFromCluster => f.write_str("it was removed from the cluster"),
            Self::Explicit(why) => write!(f, "quarantined on request ({why})"),
            Self::Silent(d) => write!(f, "silent for too long ({}s)", d.as_secs()),
            Self::ReplacedByNewIncarnation { new_uid } => {
                write!(f, "replaced by a new incarnation (uid {new_uid})")
            }
        }
    }
}

/// Why the association changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The first outbound message started a connection.
    FirstOutboundMessage,
    /// An inbound handshake from this incarnation was accepted.
    InboundAccepted {
        /// Its UID.
        uid: u64,
    },
    /// An outbound connection could not be made or its handshake was refused.
    ConnectFailed(String),
    /// The handshake did not complete in time.
    HandshakeTimeout(Duration),
    /// The connection broke.
    ConnectionLost(String),
    /// The gate's time ran out.
    GateOpened,
    /// An incarnation was quarantined.
    Quarantined {
        /// Its UID.
        uid: u64,
        /// Why.
        reason: QuarantineReason,
    },
    /// A connection reached an incarnation that was not quarantined.
    NewIncarnation {
        /// Its UID.
        uid: u64,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FirstOutboundMessage => f.write_str("first outbound message"),
            Self::InboundAccepted { uid } => {
                write!(f, "accepted an inbound connection from uid {uid}")
            }
            Self::ConnectFailed(why) => write!(f, "connect failed: {why}"),
            Self::HandshakeTimeout(d) => write!(f, "no handshake within {d:?}"),
            Self::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Self::GateOpened => f.write_str("the gate opened"),
            Self::Quarantined { uid, reason } => write!(f, "uid {uid} quarantined: {reason}"),
            Self::NewIncarnation { uid } => write!(f, "reached a new incarnation, uid {uid}"),
        }
    }
}

/// A state change, published once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationEvent {
    /// The remote address.
    pub remote: Address,
    /// The state before.
    pub from: StateName,
    /// The state after.
    pub to: StateName,
    /// Why.
    pub cause: Cause,
}

/// Why an outbound message went to dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The association is gated for this much longer.
    Gated {
        /// Time left before the gate opens.
        remaining: Duration,
        /// Why it was gated.
        cause: Cause,
    },
    /// The remote incarnation is quarantined.
    Quarantined {
        /// Its UID.
        uid: u64,
    },
    /// Too many messages were waiting for the connection.
    QueueFull {
        /// The queue's size.
        capacity: usize,
    },
    /// The connection failed before the message could be sent.
    ConnectionFailed(Cause),
}

/// Inputs of an [`Association`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationInput<M> {
    /// An ordinary message to send to the remote.
    Send(M),
    /// Something else needs the connection (a system message): connect if Idle.
    Open,
    /// Our outbound connection completed its handshake with incarnation `uid`.
    Connected {
        /// The remote's UID.
        uid: u64,
    },
    /// Our outbound connection failed (refused, reset, handshake refused).
    ConnectFailed {
        /// What happened.
        reason: String,
    },
    /// An inbound connection from incarnation `uid` completed its handshake.
    Accepted {
        /// The remote's UID.
        uid: u64,
    },
    /// The connection to the remote broke.
    ConnectionLost {
        /// What happened.
        reason: String,
    },
    /// A frame arrived from incarnation `uid`.
    Heard {
        /// The sender's UID.
        uid: u64,
    },
    /// Quarantine incarnation `uid`.
    Quarantine {
        /// The UID.
        uid: u64,
        /// Why.
        reason: QuarantineReason,
    },
}

/// Outputs of an [`Association`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationOutput<M> {
    /// Open an outbound connection and handshake.
    Connect,
    /// Write this message on the connection to incarnation `uid`.
    Transmit {
        /// The incarnation.
        uid: u64,
        /// The message.
        msg: M,
    },
    /// The message cannot be sent: hand it to dead letters.
    DeadLetter {
        /// The message.
        msg: M,
        /// Why.
        reason: DeadLetterReason,
    },
    /// Close every connection to incarnation `uid` (or the pending one when `None`).
    Disconnect {
        /// The incarnation, when known.
        uid: Option<u64>,
    },
    /// Tell incarnation `uid`, on the control lane, that this node quarantined it.
    SendQuarantineNotice {
        /// The incarnation.
        uid: u64,
        /// Why.
        reason: QuarantineReason,
    },
    /// A frame from a quarantined incarnation was dropped.
    DroppedInbound {
        /// The incarnation.
        uid: u64,
    },
    /// The state changed.
    Event(AssociationEvent),
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Connecting { deadline: Instant },
    Active { uid: u64 },
    Gated { until: Instant },
    Quarantined { uid: u64, probe: Probe },
}

/// While quarantined: whether a connection attempt is finding out if the remote restarted.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// None running; the next may start at this instant.
    Idle { next: Instant },
    /// One is running until this deadline.
    Running { deadline: Instant },
}

/// What [`Association::snapshot`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationSnapshot {
    /// The remote address.
    pub remote: Address,
    /// The state.
    pub state: StateName,
    /// The incarnation, when known.
    pub uid: Option<u64>,
    /// When the state was entered.
    pub since: Instant,
    /// Why it was entered (none for the initial Idle).
    pub last_cause: Option<Cause>,
    /// Every quarantined incarnation of the address, by UID.
    pub quarantined: Vec<u64>,
}

/// The association with one remote address. See the [module docs](self).
#[derive(Debug)]
pub struct Association<M> {
    remote: Address,
    settings: RemoteSettings,
    state: State,
    since: Instant,
    last_cause: Option<Cause>,
    queue: VecDeque<M>,
    quarantined: BTreeMap<u64, QuarantineReason>,
    /// The keys of `quarantined`, oldest first.
    quarantine_order: VecDeque<u64>,
    /// The incarnation last reached (Active with it), kept through Gated and Idle: quarantining
    /// it then still quarantines the association — a removed member that went away first.
    last_uid: Option<u64>,
    last_heard: Option<Instant>,
    outputs: VecDeque<AssociationOutput<M>>,
}

impl<M> Association<M> {
    /// An Idle association with `remote`, created at `now`.
    pub fn new(remote: Address, settings: RemoteSettings, now: Instant) -> Self {
        Self {
            remote,
            settings,
            state: State::Idle,
            since: now,
            last_cause: None,
            queue: VecDeque::new(),
            quarantined: BTreeMap::new(),
            quarantine_order: VecDeque::new(),
            last_uid: None,
            last_heard: None,
            outputs: VecDeque::new(),
        }
    }

    /// The state's name.
    pub fn state(&self) -> StateName {
        match self.state {
            State::Idle => StateName::Idle,
            State::Connecting { .. } | State::Active { .. } => StateName::Active,
            State::Gated { .. } => StateName::Gated,
            State::Quarantined { .. } => StateName::Quarantined,
        }
    }

    /// The incarnation connected to (or quarantined), if any.
    pub fn uid(&self) -> Option<u64> {
        match self.state {
            State::Active { uid } | State::Quarantined { uid, .. } => Some(uid),
            _ => None,
        }
    }

    /// Whether incarnation `uid` is quarantined.
    pub fn is_quarantined(&self, uid: u64) -> bool {
        self.quarantined.contains_key(&uid)
    }

    /// State, UID, since-when, last cause and quarantined UIDs, for queries.
    pub fn snapshot(&self) -> AssociationSnapshot {
        AssociationSnapshot {
            remote: self.remote.clone(),
            state: self.state(),
            uid: self.uid(),
            since: self.since,
            last_cause: self.last_cause.clone(),
            quarantined: self.quarantined.keys().copied().collect(),
        }
    }

    fn go(&mut self, now: Instant, state: State, cause: Cause) {
        let from = self.state();
        self.state = state;
        let to = self.state();
        if from != to {
            self.since = now;
            self.last_cause = Some(cause.clone());
            self.outputs
                .push_back(AssociationOutput::Event(AssociationEvent {
                    remote: self.remote.clone(),
                    from,
                    to,
                    cause,
                }));
        } else {
            // Same state name, new facts (connecting → connected): keep the cause for queries.
            self.last_cause = Some(cause);
        }
    }

    /// Quarantined, with the next probe for a restarted remote one gate period away.
    fn quarantined_waiting(&self, now: Instant, uid: u64) -> State {
        State::Quarantined {
            uid,
            probe: Probe::Idle {
                next: now + self.settings.retry_gate_closed_for,
            },
        }
    }

    fn connect(&mut self, now: Instant) -> State {
        self.outputs.push_back(AssociationOutput::Connect);
        State::Connecting {
            deadline: now + self.settings.handshake_timeout,
        }
    }

    fn enqueue(&mut self, msg: M) {
        if self.queue.len() >= self.settings.outbound_message_queue_size {
            self.outputs.push_back(AssociationOutput::DeadLetter {
                msg,
                reason: DeadLetterReason::QueueFull {
                    capacity: self.settings.outbound_message_queue_size,
                },
            });
        } else {
            self.queue.push_back(msg);
        }
    }

    fn flush(&mut self, uid: u64) {
        for msg in self.queue.drain(..) {
            self.outputs
                .push_back(AssociationOutput::Transmit { uid, msg });
        }
    }

    fn dead_letter_queue(&mut self, reason: &DeadLetterReason) {
        for msg in self.queue.drain(..) {
            self.outputs.push_back(AssociationOutput::DeadLetter {
                msg,
                reason: reason.clone(),
            });
        }
    }

    fn gate(&mut self, now: Instant, cause: Cause) {
        let until = now + self.settings.retry_gate_closed_for;
        let reason = DeadLetterReason::ConnectionFailed(cause.clone());
        self.dead_letter_queue(&reason);
        self.go(now, State::Gated { until }, cause);
    }

    /// An incarnation completed a handshake, in either direction.
    fn reached(&mut self, now: Instant, uid: u64, cause: Cause) {
        if let Some(reason) = self.quarantined.get(&uid).cloned() {
            // Still the quarantined incarnation: refuse it and remind it.
            self.outputs
                .push_back(AssociationOutput::SendQuarantineNotice {
                    uid,
                    reason: reason.clone(),
                });
            self.outputs
                .push_back(AssociationOutput::Disconnect { uid: Some(uid) });
            self.dead_letter_queue(&DeadLetterReason::Quarantined { uid });
            let quarantined = self.quarantined_waiting(now, uid);
            self.go(now, quarantined, Cause::Quarantined { uid, reason });
            return;
        }
        if let State::Active { uid: old } = self.state
            && old != uid
        {
            // The remote restarted: its old incarnation is gone for good.
            self.remember_quarantined(
                old,
                QuarantineReason::ReplacedByNewIncarnation { new_uid: uid },
            );
        }
        self.last_heard = Some(now);
        self.last_uid = Some(uid);
        self.go(now, State::Active { uid }, cause);
        self.flush(uid);
    }

    /// Records a quarantined incarnation, forgetting the oldest beyond the limit.
    fn remember_quarantined(&mut self, uid: u64, reason: QuarantineReason) {
        if self.quarantined.insert(uid, reason).is_none() {
            self.quarantine_order.push_back(uid);
        }
        while self.quarantine_order.len() > MAX_QUARANTINED_INCARNATIONS {
            if let Some(oldest) = self.quarantine_order.pop_front() {
                self.quarantined.remove(&oldest);
            }
        }
    }

    fn quarantine(&mut self, now: Instant, uid: u64, reason: QuarantineReason) {
        if self.quarantined.contains_key(&uid) {
            return; // once is enough; the first reason stands
        }
        self.remember_quarantined(uid, reason.clone());
        if self.uid() == Some(uid) && self.state() == StateName::Active {
            self.outputs
                .push_back(AssociationOutput::SendQuarantineNotice {
                    uid,
                    reason: reason.clone(),
                });
            self.outputs
                .push_back(AssociationOutput::Disconnect { uid: Some(uid) });
            let quarantined = self.quarantined_waiting(now, uid);
            self.go(now, quarantined, Cause::Quarantined { uid, reason });
        } else if self.last_uid == Some(uid) {
            // The incarnation last reached, while no connection to it is up (it went away
            // first): nothing more is tried for it; a new incarnation is probed for as usual.
            let probe = match self.state {
                // A connection attempt in flight finds out whether the remote restarted.
                State::Connecting { deadline } => Probe::Running { deadline },
                State::Idle | State::Gated { .. } => Probe::Idle {
                    next: now + self.settings.retry_gate_closed_for,
                },
                State::Active { .. } | State::Quarantined { .. } => return,
            };
            self.dead_letter_queue(&DeadLetterReason::Quarantined { uid });
            self.go(
                now,
                State::Quarantined { uid, probe },
                Cause::Quarantined { uid, reason },
            );
        }
    }

    fn on_send(&mut self, now: Instant, msg: M) {
        match self.state {
            State::Idle => {
                self.queue.push_back(msg);
                let connecting = self.connect(now);
                self.go(now, connecting, Cause::FirstOutboundMessage);
            }
            State::Connecting { .. } => self.enqueue(msg),
            State::Active { uid } => self
                .outputs
                .push_back(AssociationOutput::Transmit { uid, msg }),
            State::Gated { until } => {
                let cause = self.last_cause.clone().unwrap_or(Cause::GateOpened);
                self.outputs.push_back(AssociationOutput::DeadLetter {
                    msg,
                    reason: DeadLetterReason::Gated {
                        remaining: until.saturating_duration_since(now),
                        cause,
                    },
                });
            }
            State::Quarantined { uid, probe } => {
                self.outputs.push_back(AssociationOutput::DeadLetter {
                    msg,
                    reason: DeadLetterReason::Quarantined { uid },
                });
                // Has the remote restarted with a new UID? Ask at most once per gate period.
                if let Probe::Idle { next } = probe
                    && now >= next
                {
                    self.outputs.push_back(AssociationOutput::Connect);
                    self.state = State::Quarantined {
                        uid,
                        probe: Probe::Running {
                            deadline: now + self.settings.handshake_timeout,
                        },
                    };
                }
            }
        }
    }

    fn on_connect_failed(&mut self, now: Instant, cause: Cause) {
        match self.state {
            State::Connecting { .. } | State::Active { .. } => self.gate(now, cause),
            State::Quarantined { uid, .. } => {
                self.state = self.quarantined_waiting(now, uid);
            }
            State::Idle | State::Gated { .. } => {}
        }
    }
}

impl<M> StateMachine for Association<M> {
    type Input = AssociationInput<M>;
    type Output = AssociationOutput<M>;

    fn handle(&mut self, now: Instant, input: AssociationInput<M>) {
        match input {
            AssociationInput::Send(msg) => self.on_send(now, msg),
            AssociationInput::Open => {
                if let State::Idle = self.state {
                    let connecting = self.connect(now);
                    self.go(now, connecting, Cause::FirstOutboundMessage);
                }
            }
            AssociationInput::Connected { uid } => match self.state {
                State::Connecting { .. } | State::Quarantined { .. } | State::Gated { .. } => {
                    self.reached(now, uid, Cause::NewIncarnation { uid });
                }
                State::Idle => self.reached(now, uid, Cause::NewIncarnation { uid }),
                State::Active { uid: current } if current != uid => {
                    self.reached(now, uid, Cause::NewIncarnation { uid });
                }
                State::Active { .. } => {}
            },
            AssociationInput::Accepted { uid } => {
                if self.uid() != Some(uid) || self.state() != StateName::Active {
                    self.reached(now, uid, Cause::InboundAccepted { uid });
                } else {
                    self.last_heard = Some(now);
                }
            }
            AssociationInput::ConnectFailed { reason } => {
                self.on_connect_failed(now, Cause::ConnectFailed(reason));
            }
            AssociationInput::ConnectionLost { reason } => match self.state {
                State::Active { .. } => self.gate(now, Cause::ConnectionLost(reason)),
                // Lost before the handshake finished: the connect failed.
                State::Connecting { .. } => self.gate(now, Cause::ConnectFailed(reason)),
                _ => {}
            },
            AssociationInput::Heard { uid } => {
                if self.quarantined.contains_key(&uid) {
                    self.outputs
                        .push_back(AssociationOutput::DroppedInbound { uid });
                } else if self.uid() == Some(uid) {
                    self.last_heard = Some(now);
                }
            }
            AssociationInput::Quarantine { uid, reason } => self.quarantine(now, uid, reason),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Connecting { deadline } if now >= deadline => {
                self.outputs
                    .push_back(AssociationOutput::Disconnect { uid: None });
                self.gate(
                    now,
                    Cause::HandshakeTimeout(self.settings.handshake_timeout),
                );
            }
            State::Gated { until } if now >= until => self.go(now, State::Idle, Cause::GateOpened),
            State::Active { uid } => {
                let silent = self
                    .last_heard
                    .map_or(Duration::ZERO, |h| now.saturating_duration_since(h));
                if silent >= self.settings.quarantine_after_silence {
                    self.quarantine(now, uid, QuarantineReason::Silent(silent));
                }
            }
            State::Quarantined {
                uid,
                probe: Probe::Running { deadline },
            } if now >= deadline => {
                self.outputs
                    .push_back(AssociationOutput::Disconnect { uid: None });
                self.state = self.quarantined_waiting(now, uid);
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Idle => None,
            State::Connecting { deadline } => Some(deadline),
            State::Gated { until } => Some(until),
            State::Active { .. } => self
                .last_heard
                .map(|h| h + self.settings.quarantine_after_silence),
            State::Quarantined { probe, .. } => match probe {
                Probe::Running { deadline } => Some(deadline),
                Probe::Idle { .. } => None,
            },
        }
    }

    fn poll_output(&mut self) -> Option<AssociationOutput<M>> {
        self.outputs.pop_front()
    }
}
