//! Dead letters: messages that could not be delivered.
//!
//! Every dead letter is counted (`flotilla_dead_letters_total{reason}` and
//! [`ActorSystem::dead_letter_count`](crate::ActorSystem::dead_letter_count)), published on the
//! event stream as a [`DeadLetter`] and logged — the first `log-first` of them, then nothing for
//! `log-suspend`, then one line saying how many were not logged, and so on.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_core::{ActorPath, DeadLetterSettings};
use tokio::time::Instant;

use crate::system::SystemInner;

/// Why a message became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The recipient had stopped, or stopped with the message still queued.
    RecipientStopped,
    /// The recipient's bounded mailbox was full.
    MailboxFull,
    /// A message to a remote actor could not be encoded or sent (its node is unreachable, the
    /// association is gated or quarantined, or the outbound queue is full).
    Undeliverable,
}

impl DeadLetterReason {
    /// A short label, as used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecipientStopped => "recipient-stopped",
            Self::MailboxFull => "mailbox-full",
            Self::Undeliverable => "undeliverable",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RecipientStopped => "the recipient has stopped",
            Self::MailboxFull => "the recipient's mailbox is full",
            Self::Undeliverable => "it could not be sent to the recipient's node",
        })
    }
}

/// A message that could not be delivered, as published on the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it was sent.
    pub recipient: ActorPath,
    /// The Rust type of the message.
    pub message_type: &'static str,
    /// Why it was not delivered.
    pub reason: DeadLetterReason,
}

/// Whether one dead letter is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogDecision {
    /// Log it. `suppressed`: how many were not logged in the window that just ended (report
    /// them first). `last`: logging is suspended after this one.
    Log { suppressed: u64, last: bool },
    /// Do not log it (counted for the next summary).
    Suppress,
}

/// Rate limiting of dead-letter logs: the first `log_first`, then nothing for `log_suspend`,
/// then a summary of what was skipped and a new window. A pure function of the instants given.
#[derive(Debug)]
struct LogWindow {
    log_first: u32,
    log_suspend: std::time::Duration,
    logged: u32,
    suspended_until: Option<Instant>,
    suppressed: u64,
}

impl LogWindow {
    fn new(settings: &DeadLetterSettings) -> Self {
        Self {
            log_first: settings.log_first,
            log_suspend: settings.log_suspend,
            logged: 0,
            suspended_until: None,
            suppressed: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> LogDecision {
        if self.log_first == 0 {
            return LogDecision::Suppress;
        }
        let mut suppressed = 0;
        if let Some(until) = self.suspended_until {
            if now < until {
                self.suppressed += 1;
                return LogDecision::Suppress;
            }
            suppressed = std::mem::take(&mut self.suppressed);
            self.logged = 0;
            self.suspended_until = None;
        }
        self.logged += 1;
        let last = self.logged >= self.log_first;
        if last {
            self.suspended_until = Some(now + self.log_suspend);
        }
        LogDecision::Log { suppressed, last }
    }
}

/// Counts, publishes and logs dead letters for one system.
#[derive(Debug)]
pub(crate) struct DeadLetterOffice {
    count: AtomicU64,
    window: Mutex<LogWindow>,
}

impl DeadLetterOffice {
    pub(crate) fn new(settings: DeadLetterSettings) -> Self {
        Self {
            count: AtomicU64::new(0),
            window: Mutex::new(LogWindow::new(&settings)),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn record(
        &self,
        system: &SystemInner,
        recipient: &ActorPath,
        message_type: &'static str,
        reason: DeadLetterReason,
    ) {
        self.count.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("flotilla_dead_letters_total", "reason" => reason.as_str()).increment(1);
        self.log(recipient, message_type, reason);
        system.event_stream.publish(DeadLetter {
            recipient: recipient.clone(),
            message_type,
            reason,
        });
    }

    fn log(&self, recipient: &ActorPath, message_type: &str, reason: DeadLetterReason) {
        let decision = {
            let mut w = self
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (w.admit(Instant::now()), w.log_suspend)
        };
        let (LogDecision::Log { suppressed, last }, suspend) = decision else {
            return;
        };
        if suppressed > 0 {
            tracing::info!(
                suppressed,
                "{suppressed} more dead letters were not logged in the last {suspend:?}"
            );
        }
        let tail = if last {
            format!("; dead-letter logging is suspended for {suspend:?} (all are still counted)")
        } else {
            String::new()
        };
        tracing::info!(
            %recipient,
            message_type,
            reason = reason.as_str(),
            "message of type {message_type} to {recipient} was not delivered: {reason}{tail}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window(log_first: u32, suspend_s: u64) -> LogWindow {
        LogWindow::new(&DeadLetterSettings {
            log_first,
            log_suspend: Duration::from_secs(suspend_s),
        })
    }

    #[test]
    fn logs_the_first_n_then_suspends_then_summarises() {
        let t0 = Instant::now();
        let mut w = window(3, 60);
        let s = Duration::from_secs;
        let first: Vec<_> = (0..5).map(|i| w.admit(t0 + s(i))).collect();
        assert_eq!(
            first,
            vec![
                LogDecision::Log {
                    suppressed: 0,
                    last: false
                },
                LogDecision::Log {
                    suppressed: 0,
                    last: false
                },
                LogDecision::Log {
                    suppressed: 0,
                    last: true
                },
                LogDecision::Suppress,
                LogDecision::Suppress,
            ]
        );
        // The third was logged at t0 + 2 s: suspended until t0 + 62 s.
        assert_eq!(w.admit(t0 + s(61)), LogDecision::Suppress);
        assert_eq!(
            w.admit(t0 + s(62)),
            LogDecision::Log {
                suppressed: 3,
                last: false
            }
        );
        assert_eq!(
            w.admit(t0 + s(63)),
            LogDecision::Log {
                suppressed: 0,
                last: false
            }
        );
    }

    #[test]
    fn zero_logs_nothing() {
        let mut w = window(0, 60);
        assert_eq!(w.admit(Instant::now()), LogDecision::Suppress);
    }
}
