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
}

impl DeadLetterReason {
    /// A short label, as used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecipientStopped => "recipient-stopped",
            Self::MailboxFull => "mailbox-full",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RecipientStopped => "the recipient has stopped",
            Self::MailboxFull => "the recipient's mailbox is full",
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

#[derive(Debug)]
struct LogWindow {
    logged: u32,
    suspended_until: Option<Instant>,
    suppressed: u64,
}

/// Counts, publishes and logs dead letters for one system.
#[derive(Debug)]
pub(crate) struct DeadLetterOffice {
    settings: DeadLetterSettings,
    count: AtomicU64,
    window: Mutex<LogWindow>,
}

impl DeadLetterOffice {
    pub(crate) fn new(settings: DeadLetterSettings) -> Self {
        Self {
            settings,
            count: AtomicU64::new(0),
            window: Mutex::new(LogWindow {
                logged: 0,
                suspended_until: None,
                suppressed: 0,
            }),
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
        if self.settings.log_first == 0 {
            return;
        }
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if let Some(until) = w.suspended_until {
            if now < until {
                w.suppressed += 1;
                return;
            }
            if w.suppressed > 0 {
                tracing::info!(
                    suppressed = w.suppressed,
                    "{} more dead letters were not logged in the last {:?}",
                    w.suppressed,
                    self.settings.log_suspend
                );
            }
            *w = LogWindow {
                logged: 0,
                suspended_until: None,
                suppressed: 0,
            };
        }
        w.logged += 1;
        let last = w.logged >= self.settings.log_first;
        if last {
            w.suspended_until = Some(now + self.settings.log_suspend);
        }
        drop(w);
        tracing::info!(
            %recipient,
            message_type,
            reason = reason.as_str(),
            "message of type {message_type} to {recipient} was not delivered: {reason}{}",
            if last {
                format!("; dead-letter logging is suspended for {:?}", self.settings.log_suspend)
            } else {
                String::new()
            }
        );
    }
}
