//! Reliable delivery of system messages (watch, unwatch, terminated, quarantine notices) between
//! one pair of incarnations: exactly once and in order, across lost frames and reconnects.
//!
//! ```text
//!  Sender                                         Receiver
//!  send(m) ─▶ seq n, buffered, Transmit{n, m} ──▶ n == expected: Deliver(m), expected = n + 1
//!                                                  n <  expected: duplicate, dropped
//!                                                  n >  expected: gap, dropped (the resend fills it)
//!  Ack{upto} ◀──────────────────────────────────── Ack{upto: expected − 1} after every frame
//!  drops buffered seq ≤ upto
//!  every resend-interval: Transmit every unacknowledged message again, oldest first
//! ```
//!
//! The sender gives up — and the association quarantines the remote incarnation — when its buffer
//! of unacknowledged messages would exceed `system-message-buffer-size`, or when the oldest of
//! them has waited `give-up-system-message-after`. One sender and one receiver exist per remote
//! incarnation: a new UID starts both afresh at sequence number 1.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use flotilla_core::{RemoteSettings, StateMachine};

#[cfg(test)]
mod tests;

/// A sequence number; the first message is 1.
pub type Seq = u64;

/// Why the sender gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// The buffer of unacknowledged messages is full.
    BufferOverflow {
        /// Its size.
        capacity: usize,
    },
    /// The oldest unacknowledged message has waited too long.
    Unacknowledged {
        /// For how long.
        waited: Duration,
    },
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferOverflow { capacity } => write!(
                f,
                "more than {capacity} system messages unacknowledged (system-message-buffer-size)"
            ),
            Self::Unacknowledged { waited } => write!(
                f,
                "a system message unacknowledged for {}s (give-up-system-message-after)",
                waited.as_secs()
            ),
        }
    }
}

/// Inputs of a [`Sender`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderInput<M> {
    /// Deliver this message reliably.
    Send(M),
    /// The receiver has everything up to and including `upto`.
    Ack {
        /// The highest sequence number received in order.
        upto: Seq,
    },
    /// A connection to the remote was (re)established: resend everything unacknowledged now.
    Reconnected,
}

/// Outputs of a [`Sender`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderOutput<M> {
    /// Write this message with its sequence number on the control lane.
    Transmit {
        /// Its sequence number.
        seq: Seq,
        /// The message.
        msg: M,
    },
    /// Reliable delivery is impossible: quarantine the remote incarnation.
    GaveUp(GiveUp),
}

#[derive(Debug)]
struct Pending<M> {
    seq: Seq,
    msg: M,
    first_sent: Instant,
}

/// The sending side. See the [module docs](self).
#[derive(Debug)]
pub struct Sender<M> {
    capacity: usize,
    resend_interval: Duration,
    give_up_after: Duration,
    next_seq: Seq,
    unacked: VecDeque<Pending<M>>,
    next_resend: Option<Instant>,
    gave_up: bool,
    outputs: VecDeque<SenderOutput<M>>,
}

impl<M: Clone> Sender<M> {
    /// A sender whose first message will be sequence number 1.
    pub fn new(settings: &RemoteSettings) -> Self {
        Self {
            capacity: settings.system_message_buffer_size,
            resend_interval: settings.system_message_resend_interval,
            give_up_after: settings.give_up_system_message_after,
            next_seq: 1,
            unacked: VecDeque::new(),
            next_resend: None,
            gave_up: false,
            outputs: VecDeque::new(),
        }
    }

    /// How many messages await acknowledgement.
    pub fn unacknowledged(&self) -> usize {
        self.unacked.len()
    }

    /// Whether the sender has given up (it then sends nothing more).
    pub fn has_given_up(&self) -> bool {
        self.gave_up
    }

    fn give_up(&mut self, why: GiveUp) {
        if !self.gave_up {
            self.gave_up = true;
            self.unacked.clear();
            self.next_resend = None;
            self.outputs.push_back(SenderOutput::GaveUp(why));
        }
    }

    fn resend_all(&mut self, now: Instant) {
        for p in &self.unacked {
            self.outputs.push_back(SenderOutput::Transmit {
                seq: p.seq,
                msg: p.msg.clone(),
            });
        }
        self.next_resend = (!self.unacked.is_empty()).then(|| now + self.resend_interval);
    }
}

impl<M: Clone> StateMachine for Sender<M> {
    type Input = SenderInput<M>;
    type Output = SenderOutput<M>;

    fn handle(&mut self, now: Instant, input: SenderInput<M>) {
        if self.gave_up {
            return;
        }
        match input {
            SenderInput::Send(msg) => {
                if self.unacked.len() >= self.capacity {
                    self.give_up(GiveUp::BufferOverflow {
                        capacity: self.capacity,
                    });
                    return;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.outputs.push_back(SenderOutput::Transmit {
                    seq,
                    msg: msg.clone(),
                });
                self.unacked.push_back(Pending {
                    seq,
                    msg,
                    first_sent: now,
                });
                if self.next_resend.is_none() {
                    self.next_resend = Some(now + self.resend_interval);
                }
            }
            // An acknowledgement of messages never sent is a broken or lying peer: taken at
            // face value it would drop messages that were never delivered, so it is ignored
            // (the resends go on).
            SenderInput::Ack { upto } if upto >= self.next_seq => {}
            SenderInput::Ack { upto } => {
                while self.unacked.front().is_some_and(|p| p.seq <= upto) {
                    self.unacked.pop_front();
                }
                if self.unacked.is_empty() {
                    self.next_resend = None;
                }
            }
            SenderInput::Reconnected => self.resend_all(now),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.gave_up {
            return;
        }
        if let Some(oldest) = self.unacked.front() {
            let waited = now.saturating_duration_since(oldest.first_sent);
            if waited >= self.give_up_after {
                self.give_up(GiveUp::Unacknowledged { waited });
                return;
            }
        }
        if self.next_resend.is_some_and(|at| now >= at) {
            self.resend_all(now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let give_up = self
            .unacked
            .front()
            .map(|p| p.first_sent + self.give_up_after);
        match (self.next_resend, give_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_output(&mut self) -> Option<SenderOutput<M>> {
        self.outputs.pop_front()
    }
}

/// What the receiving side does with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<M> {
    /// The next message in order: deliver it, then acknowledge `upto`.
    Deliver {
        /// The message.
        msg: M,
        /// The acknowledgement to send.
        upto: Seq,
    },
    /// A duplicate or a message after a gap: drop it, acknowledge `upto` again.
    Drop {
        /// The acknowledgement to send.
        upto: Seq,
    },
}

/// The receiving side: delivers in order, exactly once.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    delivered: Seq,
}

impl Receiver {
    /// A receiver expecting sequence number 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles the frame `seq` carrying `msg`.
    pub fn receive<M>(&mut self, seq: Seq, msg: M) -> Received<M> {
        if seq == self.delivered + 1 {
            self.delivered = seq;
            Received::Deliver {
                msg,
                upto: self.delivered,
            }
        } else {
            Received::Drop {
                upto: self.delivered,
            }
        }
    }

    /// The highest sequence number delivered.
    pub fn delivered(&self) -> Seq {
        self.delivered
    }
}
