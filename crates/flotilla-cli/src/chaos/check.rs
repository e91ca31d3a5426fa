//! The chaos checker: from what the node processes printed and what the harness did, decides
//! whether the promises held. Pure: records in, findings out (tested here with made-up runs).
//!
//! | promise | how it is checked |
//! | --- | --- |
//! | no acknowledged write is lost | per ledger entity: acknowledged totals are all different; a total acknowledged before another addition was sent is below that addition's; the final record holds at least the highest acknowledged total |
//! | fencing tokens only grow | per entity, acknowledged in order of their totals, tokens never go back |
//! | no two nodes run an entity at once | per entity, the running spells of different incarnations (start to stop; to the kill for a killed process; pauses left out) never overlap — but for a paused process's stale incarnations in the moment after its `SIGCONT` ([`STALE_AFTER_PAUSE`]), reported apart |
//! | every shard serves again | after the faults, each shard acknowledges an addition within the bound |
//! | no zombie lease | after the faults no lease is held by a node that is not running; after the last node has left, no lease is held at all |

use std::collections::BTreeMap;

/// Nanoseconds since the Unix epoch (the nodes print wall-clock times; they share one clock).
pub type Nanos = u128;

/// An acknowledged addition, as a workload printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The entity.
    pub entity: String,
    /// Its total after the addition.
    pub total: u64,
    /// The fencing token it was written under.
    pub token: u64,
    /// When it was asked for.
    pub sent: Nanos,
    /// When the answer came.
    pub acked: Nanos,
}

/// One entity incarnation's running spell on one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spell {
    /// The entity.
    pub entity: String,
    /// The process (an index per incarnation of a node).
    pub process: usize,
    /// Started.
    pub from: Nanos,
    /// Stopped (or the process was killed, or the run ended).
    pub to: Nanos,
}

/// What a process printed, read into records.
#[derive(Debug, Clone, Default)]
pub struct Printed {
    /// Its acknowledgements.
    pub acks: Vec<Ack>,
    /// Its entities' spells.
    pub spells: Vec<Spell>,
}

/// Reads one process's lines. `end`: when it stopped running (killed, or the run ended) —
/// entities without a stop line ran until then.
pub fn read(process: usize, lines: &[String], end: Nanos) -> Printed {
    let mut out = Printed::default();
    let mut open: BTreeMap<String, Nanos> = BTreeMap::new();
    for line in lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["ack", entity, total, token, sent, acked] => {
                if let (Ok(total), Ok(token), Ok(sent), Ok(acked)) =
                    (total.parse(), token.parse(), sent.parse(), acked.parse())
                {
                    out.acks.push(Ack {
                        entity: (*entity).to_owned(),
                        total,
                        token,
                        sent,
                        acked,
                    });
                }
            }
            ["entity-start", entity, _shard, _token, at] => {
                if let Ok(at) = at.parse() {
                    open.insert((*entity).to_owned(), at);
                }
            }
            ["entity-stop", entity, _shard, at] => {
                if let (Some(from), Ok(to)) = (open.remove(*entity), at.parse()) {
                    out.spells.push(Spell {
                        entity: (*entity).to_owned(),
                        process,
                        from,
                        to,
                    });
                }
            }
            _ => {}
        }
    }
    for (entity, from) in open {
        out.spells.push(Spell {
            entity,
            process,
            from,
            to: end.max(from),
        });
    }
    out
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which promise.
    pub promise: &'static str,
    /// What was seen.
    pub what: String,
}

fn finding(promise: &'static str, what: String) -> Finding {
    Finding { promise, what }
}

/// Checks the acknowledgements against each other and against the final records (entity →
/// total).
pub fn acks(all: &[Ack], finals: &BTreeMap<String, u64>) -> Vec<Finding> {
    const LOST: &str = "no acknowledged write is lost";
    const FENCED: &str = "fencing tokens only grow";
    let mut by_entity: BTreeMap<&str, Vec<&Ack>> = BTreeMap::new();
    for a in all {
        by_entity.entry(a.entity.as_str()).or_default().push(a);
    }
    let mut out = Vec::new();
    for (entity, mut acks) in by_entity {
        acks.sort_by_key(|a| (a.total, a.acked));
        for pair in acks.windows(2) {
            if pair[0].total == pair[1].total {
                out.push(finding(LOST, format!("{entity}: total {} acknowledged twice (tokens {} and {}): one addition overwrote the other", pair[0].total, pair[0].token, pair[1].token)));
            }
            if pair[1].token < pair[0].token {
                out.push(finding(
                    FENCED,
                    format!(
                        "{entity}: total {} under token {} after total {} under token {}",
                        pair[1].total, pair[1].token, pair[0].total, pair[0].token
                    ),
                ));
            }
        }
        // Real-time order: an addition asked for after another was acknowledged sees it.
        let mut by_acked = acks.clone();
        by_acked.sort_by_key(|a| a.acked);
        let mut by_sent = acks.clone();
        by_sent.sort_by_key(|a| a.sent);
        let (mut i, mut highest) = (0, 0u64);
        for b in by_sent {
            while i < by_acked.len() && by_acked[i].acked < b.sent {
                highest = highest.max(by_acked[i].total);
                i += 1;
            }
            if b.total <= highest {
                out.push(finding(LOST, format!("{entity}: an addition sent after total {highest} was acknowledged got total {} (token {}): acknowledged additions were lost", b.total, b.token)));
            }
        }
        let top = acks.last().map_or(0, |a| a.total);
        let last = finals.get(entity).copied().unwrap_or(0);
        if last < top {
            out.push(finding(
                LOST,
                format!("{entity}: the record ends at {last}, below the acknowledged total {top}"),
            ));
        }
    }
    out
}

/// How long after a `SIGCONT` a paused process may still run an entity whose lease expired
/// while it was stopped: it notices the expiry on its first look at the clock, and stops them.
/// Such a stale incarnation is no finding of its own (the ledger's fencing is what keeps its
/// writes out, and the acknowledgement checks prove it did); its spell is reported.
pub const STALE_AFTER_PAUSE: Nanos = 1_000_000_000;

/// What [`spells`] found: broken promises, and the overlaps that were stale incarnations of a
/// paused process just after it resumed (each one's length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlaps {
    /// Two running incarnations at once.
    pub findings: Vec<Finding>,
    /// Stale incarnations of a resumed process, within [`STALE_AFTER_PAUSE`] of the resume.
    pub stale: Vec<Nanos>,
}

/// Checks that no entity ran in two processes at once. `paused`: per process, the spells it
/// was stopped (SIGSTOP), when nothing of it ran.
pub fn spells(all: &[Spell], paused: &BTreeMap<usize, Vec<(Nanos, Nanos)>>) -> Overlaps {
    let just_resumed = |process: usize, from: Nanos, to: Nanos| {
        paused.get(&process).is_some_and(|ps| {
            ps.iter()
                .any(|&(_, r)| r <= from && to <= r + STALE_AFTER_PAUSE)
        })
    };
    let mut by_entity: BTreeMap<&str, Vec<&Spell>> = BTreeMap::new();
    for s in all {
        by_entity.entry(s.entity.as_str()).or_default().push(s);
    }
    let running = |s: &Spell| -> Vec<(Nanos, Nanos)> {
        let mut parts = vec![(s.from, s.to)];
        for &(p, q) in paused.get(&s.process).map_or(&[][..], Vec::as_slice) {
            parts = parts
                .into_iter()
                .flat_map(|(a, b)| {
                    if q <= a || p >= b {
                        vec![(a, b)]
                    } else {
                        [(a, p.max(a)), (q.min(b), b)]
                            .into_iter()
                            .filter(|(x, y)| x < y)
                            .collect()
                    }
                })
                .collect();
        }
        parts
    };
    let mut out = Overlaps::default();
    for (entity, spells) in by_entity {
        for (i, x) in spells.iter().enumerate() {
            for y in &spells[i + 1..] {
                if x.process == y.process {
                    continue;
                }
                for (a, b) in running(x) {
                    for (c, d) in running(y) {
                        let (from, to) = (a.max(c), b.min(d));
                        if from < to
                            && (just_resumed(x.process, from, to)
                                || just_resumed(y.process, from, to))
                        {
                            out.stale.push(to - from);
                        } else if from < to {
                            out.findings.push(finding(
                                "no two nodes run an entity at once",
                                format!(
                                    "{entity} ran in processes {} and {} at once for {:.3} ms",
                                    x.process,
                                    y.process,
                                    (to - from) as f64 / 1e6
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(total: u64, token: u64, sent: Nanos, acked: Nanos) -> Ack {
        Ack {
            entity: "l1".into(),
            total,
            token,
            sent,
            acked,
        }
    }

    fn finals(total: u64) -> BTreeMap<String, u64> {
        [("l1".to_owned(), total)].into()
    }

    #[test]
    fn acknowledgements_that_build_on_each_other_pass() {
        let run = [ack(1, 5, 0, 10), ack(2, 5, 20, 30), ack(3, 9, 25, 40)];
        assert_eq!(acks(&run, &finals(3)), []);
        // Concurrent asks may come back in any order.
        let run = [ack(2, 5, 0, 10), ack(1, 5, 0, 20)];
        assert_eq!(acks(&run, &finals(2)), []);
    }

    #[test]
    fn a_lost_write_a_token_going_back_and_a_short_record_are_found() {
        // Total 2 acknowledged, then an addition sent later comes back with 2 again.
        let run = [ack(1, 5, 0, 10), ack(2, 5, 20, 30), ack(2, 9, 40, 50)];
        let f = acks(&run, &finals(2));
        assert!(
            f.iter().any(|x| x.what.contains("acknowledged twice")),
            "{f:?}"
        );
        assert!(f.iter().any(|x| x.what.contains("were lost")), "{f:?}");
        let run = [ack(1, 9, 0, 10), ack(2, 5, 20, 30)];
        let f = acks(&run, &finals(2));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].promise, "fencing tokens only grow");
        let f = acks(&[ack(1, 5, 0, 10)], &finals(0));
        assert!(f[0].what.contains("below the acknowledged total"), "{f:?}");
    }

    #[test]
    fn spells_overlap_only_while_both_processes_run() {
        let spell = |process, from, to| Spell {
            entity: "l1".into(),
            process,
            from,
            to,
        };
        let run = [spell(0, 0, 100), spell(1, 100, 200)];
        assert_eq!(spells(&run, &BTreeMap::new()), Overlaps::default());
        let run = [spell(0, 0, 150), spell(1, 100, 200)];
        let f = spells(&run, &BTreeMap::new()).findings;
        assert_eq!(f.len(), 1);
        assert!(f[0].what.contains("processes 0 and 1"), "{f:?}");
        // Process 0 was paused from 90 to 160: nothing of it ran while process 1 did.
        let paused = [(0, vec![(90, 160)])].into();
        assert_eq!(spells(&run, &paused), Overlaps::default());
        // Paused from 90 to 120, it ran on until 150 (stale, just resumed): reported apart.
        let paused = [(0, vec![(90, 120)])].into();
        let o = spells(&run, &paused);
        assert_eq!((o.findings.len(), o.stale.as_slice()), (0, &[30][..]));
        // The same long after the resume is a finding.
        let run = [spell(0, 0, 2_000_000_150), spell(1, 100, 2_000_000_200)];
        let o = spells(&run, &paused);
        assert_eq!((o.findings.len(), o.stale.len()), (1, 0));
    }

    #[test]
    fn printed_lines_become_records_and_open_spells_end_with_the_process() {
        let lines: Vec<String> = [
            "listening flotilla://chaos@127.0.0.1:1#7",
            "entity-start l1 3 41 100",
            "ack l1 1 41 90 120",
            "entity-stop l1 3 200",
            "entity-start l2 4 41 150",
            "ack garbage",
        ]
        .map(String::from)
        .into();
        let p = read(4, &lines, 900);
        assert_eq!(p.acks, [ack(1, 41, 90, 120)]);
        assert_eq!(p.spells.len(), 2);
        assert_eq!((p.spells[1].entity.as_str(), p.spells[1].to), ("l2", 900));
        assert!(p.spells.iter().all(|s| s.process == 4));
    }
}
