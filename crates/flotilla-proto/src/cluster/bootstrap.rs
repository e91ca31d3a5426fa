//! Cluster bootstrap from service discovery, as a pure state machine: look the contact points
//! up until enough of them have been seen and the set has stopped changing, then join with them
//! as seed nodes, in address order.
//!
//! ```text
//!  Discovering ── every lookup-interval: Lookup ──▶ Discovered(set) / LookupFailed
//!     │ fewer than required-contact-point-nr, or the set changed within stable-margin: wait
//!     │ at least required-contact-point-nr, unchanged for stable-margin:
//!     ▼
//!  Joined: JoinSeeds(the set, lowest address first)
//! ```
//!
//! Why this is safe: only the first seed may form a new cluster (see the join protocol), and
//! every node that bootstraps from the same stable set puts the same node first — the one with
//! the lowest address. A node that discovers an existing cluster's members joins it through
//! them (they answer its InitJoin), whatever its own place in the order. Akka's Cluster
//! Bootstrap makes the same two demands (a required number of contact points, a stable margin)
//! for the same reason: nodes that start together see each other at slightly different times.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::{Address, StateMachine};

use super::protocol::LogLevel;

/// How a bootstrap decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapSettings {
    /// How many contact points must be seen before joining (default 2).
    pub required_contact_points: usize,
    /// How long the set of contact points must stay the same before joining (default 5 s).
    pub stable_margin: Duration,
    /// How often discovery is asked (default 1 s).
    pub lookup_interval: Duration,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            required_contact_points: 2,
            stable_margin: Duration::from_secs(5),
            lookup_interval: Duration::from_secs(1),
        }
    }
}

/// Inputs of a [`Bootstrap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapInput {
    /// The answer to [`BootstrapOutput::Lookup`]: the contact points found.
    Discovered(BTreeSet<Address>),
    /// Discovery did not answer (its error, in words).
    LookupFailed(String),
}

/// Outputs of a [`Bootstrap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutput {
    /// Ask discovery for the contact points (answer with [`BootstrapInput::Discovered`] or
    /// [`BootstrapInput::LookupFailed`]).
    Lookup,
    /// Join with these seed nodes, in this order (lowest address first). The last output.
    JoinSeeds(Vec<Address>),
    /// A line for the log.
    Log {
        /// How loud.
        level: LogLevel,
        /// What happened.
        text: String,
    },
}

/// One node's bootstrap. See the [module docs](self).
#[derive(Debug)]
pub struct Bootstrap {
    settings: BootstrapSettings,
    /// The last set seen, and since when it has been the same.
    seen: Option<(BTreeSet<Address>, Instant)>,
    /// When the next lookup is due (none while one is under way, or after joining).
    next_lookup: Option<Instant>,
    joined: bool,
    out: VecDeque<BootstrapOutput>,
}

impl Bootstrap {
    /// A bootstrap that asks for its first lookup at once.
    pub fn new(settings: BootstrapSettings) -> Self {
        Self {
            settings,
            seen: None,
            next_lookup: None,
            joined: false,
            out: VecDeque::from([BootstrapOutput::Lookup]),
        }
    }

    /// Whether it has decided (and asked to join).
    pub fn is_done(&self) -> bool {
        self.joined
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.out.push_back(BootstrapOutput::Log { level, text });
    }

    fn on_discovered(&mut self, now: Instant, found: BTreeSet<Address>) {
        let since = match &self.seen {
            Some((set, since)) if *set == found => *since,
            _ => {
                self.log(
                    LogLevel::Info,
                    format!(
                        "discovered {} contact point(s): {}",
                        found.len(),
                        list(&found)
                    ),
                );
                now
            }
        };
        self.seen = Some((found, since));
        self.decide(now);
    }

    fn decide(&mut self, now: Instant) {
        let Some((set, since)) = &self.seen else {
            return;
        };
        let enough = set.len() >= self.settings.required_contact_points;
        let stable = now.saturating_duration_since(*since) >= self.settings.stable_margin;
        if enough && stable {
            let seeds: Vec<Address> = set.iter().cloned().collect();
            let text = format!(
                "contact points stable for {:?}: joining with seed nodes {} (the first, the lowest address, may form a new cluster)",
                self.settings.stable_margin,
                list(set)
            );
            self.joined = true;
            self.next_lookup = None;
            self.log(LogLevel::Info, text);
            self.out.push_back(BootstrapOutput::JoinSeeds(seeds));
        }
    }
}

fn list(set: &BTreeSet<Address>) -> String {
    let names: Vec<String> = set.iter().map(ToString::to_string).collect();
    format!("[{}]", names.join(", "))
}

impl StateMachine for Bootstrap {
    type Input = BootstrapInput;
    type Output = BootstrapOutput;

    fn handle(&mut self, now: Instant, input: BootstrapInput) {
        if self.joined {
            return;
        }
        match input {
            BootstrapInput::Discovered(found) => self.on_discovered(now, found),
            BootstrapInput::LookupFailed(why) => {
                self.log(LogLevel::Warn, format!("service discovery failed: {why}"));
            }
        }
        if !self.joined {
            self.next_lookup = Some(now + self.settings.lookup_interval);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.next_lookup
            && at <= now
            && !self.joined
        {
            self.next_lookup = None;
            self.out.push_back(BootstrapOutput::Lookup);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_lookup
    }

    fn poll_output(&mut self) -> Option<BootstrapOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::machine::drain;

    fn a(port: u16) -> Address {
        Address::remote("app", "10.0.0.1", port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn set(ports: &[u16]) -> BTreeSet<Address> {
        ports.iter().map(|p| a(*p)).collect()
    }

    fn decisions(b: &mut Bootstrap) -> Vec<BootstrapOutput> {
        drain(b)
            .into_iter()
            .filter(|o| !matches!(o, BootstrapOutput::Log { .. }))
            .collect()
    }

    /// Feeds `answers`, one per lookup, each a second apart; returns when (seconds) and with
    /// what it joined.
    fn run(answers: &[Result<&[u16], &str>]) -> Option<(u64, Vec<Address>)> {
        let t0 = crate::testing::epoch();
        let mut b = Bootstrap::new(BootstrapSettings::default());
        let mut now = t0;
        let mut answers = answers.iter();
        for _ in 0..100 {
            while let Some(out) = b.poll_output() {
                match out {
                    BootstrapOutput::Lookup => {
                        let input = match answers.next() {
                            Some(Ok(ports)) => BootstrapInput::Discovered(set(ports)),
                            Some(Err(e)) => BootstrapInput::LookupFailed((*e).to_owned()),
                            None => return None,
                        };
                        b.handle(now, input);
                    }
                    BootstrapOutput::JoinSeeds(seeds) => {
                        return Some(((now - t0).as_secs(), seeds));
                    }
                    BootstrapOutput::Log { .. } => {}
                }
            }
            now = b.poll_timeout()?;
            b.handle_timeout(now);
        }
        None
    }

    #[test]
    fn joins_once_enough_contact_points_are_stable_for_the_margin_lowest_first() {
        let same: &[u16] = &[3, 1, 2];
        let answers = vec![Ok(same); 10];
        assert_eq!(run(&answers), Some((5, vec![a(1), a(2), a(3)])));
    }

    #[test]
    fn a_change_restarts_the_margin_and_failures_are_retried() {
        let answers: Vec<Result<&[u16], &str>> = vec![
            Ok(&[1]),
            Ok(&[1, 2]),
            Err("nameserver timed out"),
            Ok(&[1, 2]),
            Ok(&[1, 2, 3]), // at 4 s: the margin starts again
            Ok(&[1, 2, 3]),
            Ok(&[1, 2, 3]),
            Ok(&[1, 2, 3]),
            Ok(&[1, 2, 3]),
            Ok(&[1, 2, 3]),
            Ok(&[1, 2, 3]),
        ];
        assert_eq!(run(&answers), Some((9, vec![a(1), a(2), a(3)])));
    }

    #[test]
    fn too_few_contact_points_never_join() {
        let one: &[u16] = &[1];
        assert_eq!(run(&vec![Ok(one); 30]), None);
    }

    #[test]
    fn nothing_after_joining() {
        let mut b = Bootstrap::new(BootstrapSettings {
            stable_margin: Duration::ZERO,
            ..BootstrapSettings::default()
        });
        let now = crate::testing::epoch();
        assert_eq!(decisions(&mut b), [BootstrapOutput::Lookup]);
        b.handle(now, BootstrapInput::Discovered(set(&[2, 1])));
        assert_eq!(
            decisions(&mut b),
            [BootstrapOutput::JoinSeeds(vec![a(1), a(2)])]
        );
        assert!(b.is_done());
        assert_eq!(b.poll_timeout(), None);
        b.handle(now, BootstrapInput::Discovered(set(&[3])));
        b.handle_timeout(now + Duration::from_secs(60));
        assert!(decisions(&mut b).is_empty());
    }
}
