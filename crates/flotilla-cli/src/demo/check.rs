//! The demo's checks, as pure functions of the journal: no shard ran on two nodes at once,
//! fencing tokens only grow, a crashed node did nothing after its crash, and how long requests
//! to each shard waited according to the probes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::journal::{Entry, Fact, NodeIx};

/// One run of a shard on a node: from its first entity's start to its last entity's stop (or
/// the node's crash, or the end of the journal while it still runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRun {
    /// The shard.
    pub shard: String,
    /// Where it ran.
    pub node: NodeIx,
    /// Its fencing token, if it had a lease.
    pub token: Option<u64>,
    /// First entity start.
    pub from: Duration,
    /// Last entity stop; `None` while it still runs.
    pub until: Option<Duration>,
    /// Whether it ended because its node crashed.
    pub crashed: bool,
    /// Entities started in this run.
    pub entities: usize,
}

/// An entity's life on a node.
#[derive(Debug, Clone)]
struct Life {
    node: NodeIx,
    shard: String,
    token: Option<u64>,
    from: Duration,
    until: Option<Duration>,
    crashed: bool,
}

fn lives(entries: &[Entry], crashed: &BTreeMap<NodeIx, Duration>) -> Vec<Life> {
    let mut open: BTreeMap<(NodeIx, &str), usize> = BTreeMap::new();
    let mut out: Vec<Life> = Vec::new();
    for e in entries {
        let Fact::Entity {
            node,
            entity,
            shard,
            token,
            started,
        } = &e.fact
        else {
            continue;
        };
        if *started {
            open.insert((*node, entity.as_str()), out.len());
            out.push(Life {
                node: *node,
                shard: shard.clone(),
                token: *token,
                from: e.at,
                until: None,
                crashed: false,
            });
        } else if let Some(i) = open.remove(&(*node, entity.as_str())) {
            out[i].until = Some(e.at);
        }
    }
    // What still ran on a crashed node ended with it.
    for life in &mut out {
        if life.until.is_none()
            && let Some(at) = crashed.get(&life.node)
        {
            life.until = Some((*at).max(life.from));
            life.crashed = true;
        }
    }
    out
}

/// Every shard's runs, by shard, in the order they started. A run is one node's stretch of
/// overlapping entity lives of the shard.
pub fn shard_runs(
    entries: &[Entry],
    crashed: &BTreeMap<NodeIx, Duration>,
) -> BTreeMap<String, Vec<ShardRun>> {
    let mut by_shard: BTreeMap<String, Vec<Life>> = BTreeMap::new();
    for life in lives(entries, crashed) {
        by_shard.entry(life.shard.clone()).or_default().push(life);
    }
    let mut out = BTreeMap::new();
    for (shard, mut lives) in by_shard {
        lives.sort_by_key(|l| l.from);
        let mut runs: Vec<ShardRun> = Vec::new();
        for l in lives {
            let joins = runs.last().is_some_and(|r| {
                r.node == l.node && r.token == l.token && r.until.is_none_or(|u| u >= l.from)
            });
            if joins && let Some(r) = runs.last_mut() {
                r.until = match (r.until, l.until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                r.crashed |= l.crashed;
                r.entities += 1;
            } else {
                runs.push(ShardRun {
                    shard: shard.clone(),
                    node: l.node,
                    token: l.token,
                    from: l.from,
                    until: l.until,
                    crashed: l.crashed,
                    entities: 1,
                });
            }
        }
        out.insert(shard, runs);
    }
    out
}

/// Every instant a shard ran on two nodes at once (at most `limit` reported), in words.
pub fn shards_on_two_nodes(
    entries: &[Entry],
    crashed: &BTreeMap<NodeIx, Duration>,
    names: &[String],
    limit: usize,
) -> Vec<String> {
    let mut by_shard: BTreeMap<String, Vec<Life>> = BTreeMap::new();
    for life in lives(entries, crashed) {
        by_shard.entry(life.shard.clone()).or_default().push(life);
    }
    let name = |n: NodeIx| names.get(n).cloned().unwrap_or_else(|| format!("node {n}"));
    let mut out = Vec::new();
    for (shard, mut lives) in by_shard {
        lives.sort_by_key(|l| l.from);
        // Per node, the latest end of its lives so far (None: still running).
        let mut reach: BTreeMap<NodeIx, Option<Duration>> = BTreeMap::new();
        for l in &lives {
            for (other, until) in &reach {
                if *other != l.node && until.is_none_or(|u| u > l.from) {
                    out.push(format!(
                        "shard {shard} started on {} at {:.2} s while it still ran on {} (until {})",
                        name(l.node),
                        l.from.as_secs_f64(),
                        name(*other),
                        until.map_or_else(|| "the end".into(), |u| format!("{:.2} s", u.as_secs_f64()))
                    ));
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
            let r = reach.entry(l.node).or_insert(Some(Duration::ZERO));
            *r = match (*r, l.until) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
    }
    out
}

/// Every shard whose fencing token did not grow when it moved (or went back) — a new run must
/// hold a newer lease than every run before it. At most `limit` reported, in words.
pub fn tokens_that_did_not_grow(
    runs: &BTreeMap<String, Vec<ShardRun>>,
    names: &[String],
    limit: usize,
) -> Vec<String> {
    let name = |n: NodeIx| names.get(n).cloned().unwrap_or_else(|| format!("node {n}"));
    let mut out = Vec::new();
    for (shard, runs) in runs {
        let mut previous: Option<&ShardRun> = None;
        for r in runs {
            if let (Some(p), Some(before), Some(now)) =
                (previous, previous.and_then(|p| p.token), r.token)
            {
                let ok = if p.node == r.node {
                    now >= before
                } else {
                    now > before
                };
                if !ok {
                    out.push(format!(
                        "shard {shard}: token {now} on {} at {:.2} s after token {before} on {}",
                        name(r.node),
                        r.from.as_secs_f64(),
                        name(p.node)
                    ));
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
            previous = Some(r);
        }
    }
    out
}

/// What a crashed node did after its crash (entity starts or stops, lease calls), in words.
pub fn activity_after_crash(
    entries: &[Entry],
    crashed: &BTreeMap<NodeIx, Duration>,
    names: &[String],
) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| {
            let node = match &e.fact {
                Fact::Entity { node, .. } | Fact::Lease { node, .. } => *node,
                _ => return None,
            };
            let at = crashed.get(&node)?;
            (e.at > *at).then(|| {
                format!(
                    "{} at {:.2} s, after its crash at {:.2} s: {:?}",
                    names.get(node).map_or("?", String::as_str),
                    e.at.as_secs_f64(),
                    at.as_secs_f64(),
                    e.fact
                )
            })
        })
        .collect()
}

/// One probe of a shard: an ask sent to one of its entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// When it was sent.
    pub sent: Duration,
    /// When its answer came, if it did.
    pub answered: Option<Duration>,
}

/// How long requests to one shard waited within a window, from its probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// The longest any probe sent in the window waited for its answer; a probe never answered
    /// (lost with a crashed node) waited until the first answer to a later one.
    pub longest: Duration,
    /// When the shard answered again after the last probe that waited longer than `late`
    /// (none if no probe did).
    pub back_at: Option<Duration>,
    /// Whether some probe sent in the window is still without an answer (nor a later one).
    pub unanswered: bool,
}

/// The waits of one shard's probes (in the order sent) that were sent in `[from, until)`.
/// Probing every `interval`, the true longest wait is at most one interval more.
pub fn waits(
    probes: &[Probe],
    window: (Duration, Duration),
    late: Duration,
    end: Duration,
) -> Waits {
    let mut out = Waits::default();
    // The earliest answer at or after each probe, from the back.
    let mut first_answer_from: Vec<Option<Duration>> = vec![None; probes.len()];
    let mut earliest: Option<Duration> = None;
    for (i, p) in probes.iter().enumerate().rev() {
        earliest = match (earliest, p.answered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        first_answer_from[i] = earliest;
    }
    for (i, p) in probes.iter().enumerate() {
        if p.sent < window.0 || p.sent >= window.1 {
            continue;
        }
        let answered = p.answered.or(first_answer_from[i]);
        out.unanswered |= answered.is_none();
        let wait = answered.unwrap_or(end).saturating_sub(p.sent);
        out.longest = out.longest.max(wait);
        if wait > late {
            out.back_at = out.back_at.max(answered);
        }
    }
    out
}

/// The `q` quantile (0..=1) of `values`, nearest rank; zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    // reason: an index within 0..len, from a fraction of len
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    fn entity(
        at: f64,
        node: NodeIx,
        entity: &str,
        shard: &str,
        token: u64,
        started: bool,
    ) -> Entry {
        Entry {
            at: s(at),
            fact: Fact::Entity {
                node,
                entity: entity.into(),
                shard: shard.into(),
                token: Some(token),
                started,
            },
        }
    }

    fn names() -> Vec<String> {
        vec!["node-1".into(), "node-2".into(), "node-3".into()]
    }

    #[test]
    fn a_hand_off_is_not_an_overlap_but_an_early_start_is() {
        let clean = vec![
            entity(1.0, 0, "a", "7", 1, true),
            entity(1.5, 0, "b", "7", 1, true),
            entity(5.0, 0, "a", "7", 1, false),
            entity(5.1, 0, "b", "7", 1, false),
            entity(5.3, 1, "a", "7", 2, true),
        ];
        let none = BTreeMap::new();
        assert!(shards_on_two_nodes(&clean, &none, &names(), 10).is_empty());
        let runs = shard_runs(&clean, &none);
        assert_eq!(runs["7"].len(), 2);
        assert_eq!(runs["7"][0].entities, 2);
        assert_eq!(runs["7"][0].until, Some(s(5.1)));
        assert!(tokens_that_did_not_grow(&runs, &names(), 10).is_empty());

        let mut early = clean;
        early[4] = entity(5.05, 1, "a", "7", 2, true);
        let found = shards_on_two_nodes(&early, &none, &names(), 10);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("shard 7 started on node-2"), "{found:?}");
    }

    #[test]
    fn a_crashed_nodes_entities_end_with_it() {
        let entries = vec![
            entity(1.0, 2, "a", "3", 4, true),
            entity(20.0, 0, "a", "3", 5, true),
        ];
        let crashed = BTreeMap::from([(2, s(5.0))]);
        assert!(shards_on_two_nodes(&entries, &crashed, &names(), 10).is_empty());
        let runs = shard_runs(&entries, &crashed);
        assert!(runs["3"][0].crashed);
        assert_eq!(runs["3"][0].until, Some(s(5.0)));
        // Without the crash, node-3 would still be running it.
        assert_eq!(
            shards_on_two_nodes(&entries, &BTreeMap::new(), &names(), 10).len(),
            1
        );
        let late = vec![entity(6.0, 2, "b", "3", 4, true)];
        assert_eq!(activity_after_crash(&late, &crashed, &names()).len(), 1);
    }

    #[test]
    fn a_move_needs_a_newer_token() {
        let entries = vec![
            entity(1.0, 0, "a", "1", 9, true),
            entity(2.0, 0, "a", "1", 9, false),
            entity(3.0, 1, "a", "1", 9, true),
        ];
        let runs = shard_runs(&entries, &BTreeMap::new());
        let found = tokens_that_did_not_grow(&runs, &names(), 10);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    fn probe(sent: f64, answered: Option<f64>) -> Probe {
        Probe {
            sent: s(sent),
            answered: answered.map(s),
        }
    }

    #[test]
    fn a_lost_probe_waits_until_the_shard_answers_a_later_one() {
        let late = s(0.2);
        let probes = [
            probe(0.0, Some(0.01)),
            // Held while the shard moved: answered when it served again.
            probe(0.2, Some(1.1)),
            // Lost with a crashed node: it waited until the shard answered the next one.
            probe(0.4, None),
            probe(0.6, Some(1.1)),
            probe(1.2, Some(1.21)),
        ];
        let w = waits(&probes, (s(0.0), s(2.0)), late, s(2.0));
        assert_eq!(w.longest, s(1.1) - s(0.2));
        assert_eq!(w.back_at, Some(s(1.1)));
        assert!(!w.unanswered);
        // Outside the window, nothing counts.
        let w = waits(&probes, (s(1.0), s(2.0)), late, s(2.0));
        assert_eq!(w.longest, s(1.21) - s(1.2));
        assert_eq!(w.back_at, None);
        let never = [probe(0.0, Some(0.01)), probe(0.2, None)];
        let w = waits(&never, (s(0.0), s(1.0)), late, s(5.0));
        assert!(w.unanswered);
        assert_eq!(w.longest, s(4.8));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_secs).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_secs(5));
        assert_eq!(quantile(&v, 0.9), Duration::from_secs(9));
        assert_eq!(quantile(&v, 1.0), Duration::from_secs(10));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
