//! The demo's timeline: the journal's facts in words, one line per thing that happened, with
//! the many same things a node does at once (34 leases released, 33 shards started) folded into
//! one line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::check::ShardRun;
use super::journal::{Entry, Fact, LeaseFact, NodeIx};

/// Facts of one kind by one node this close together are one line.
const FOLD: Duration = Duration::from_secs(1);

/// Who is who: node names by index, and by address.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// `node-1`, `node-2`, … by index.
    pub nodes: Vec<String>,
    /// Node names by address (`flotilla://…`, without the incarnation).
    pub by_address: BTreeMap<String, String>,
}

impl Names {
    /// A node's name.
    pub fn node(&self, n: NodeIx) -> &str {
        self.nodes.get(n).map_or("?", String::as_str)
    }

    /// The name of the node at `address` (with or without its incarnation), or the address.
    pub fn address(&self, address: &str) -> String {
        let bare = address.split('#').next().unwrap_or(address);
        self.by_address
            .get(bare)
            .cloned()
            .unwrap_or_else(|| address.to_owned())
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When.
    pub at: Duration,
    /// Whose doing or view.
    pub who: String,
    /// What, in words.
    pub text: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {:>7.2} s  {:<7} {}",
            self.at.as_secs_f64(),
            self.who,
            self.text
        )
    }
}

/// A short list of shards: `3, 8, 11, … (34)`.
fn shard_list(shards: &[String]) -> String {
    let mut sorted: Vec<&String> = shards.iter().collect();
    sorted.sort_by_key(|s| (s.len(), s.as_str()));
    sorted.dedup();
    let shown: Vec<&str> = sorted.iter().take(6).map(|s| s.as_str()).collect();
    if sorted.len() > shown.len() {
        format!("{}, … ({} shards)", shown.join(", "), sorted.len())
    } else if sorted.len() == 1 {
        format!("shard {}", shown.join(", "))
    } else {
        format!("shards {}", shown.join(", "))
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn member_text(kind: &str, member: &str) -> String {
    match kind {
        "MemberJoined" => format!("sees {member} joining"),
        "MemberWeaklyUp" => format!("sees {member} weakly up"),
        "MemberUp" => format!("sees {member} up"),
        "MemberLeft" => format!("sees {member} leaving"),
        "MemberExited" => format!("sees {member} exiting"),
        "MemberDowned" => format!("sees {member} downed"),
        "MemberRemoved" => format!("sees {member} removed from the cluster"),
        "UnreachableMember" => format!("sees {member} unreachable"),
        "ReachableMember" => format!("sees {member} reachable again"),
        "LeaderChanged" => format!("sees {member} become the leader"),
        other => format!("sees {other} {member}"),
    }
}

/// A fold of lease facts: one node, one kind of outcome.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LeaseKind {
    Acquired,
    Denied(Option<String>),
    RenewDenied,
    Released,
    ReleasedNotHeld,
    Failed(&'static str),
}

struct Fold {
    at: Duration,
    node: NodeIx,
    shards: Vec<String>,
    tokens: Vec<u64>,
    reasons: Vec<String>,
}

/// The timeline of `entries` (in time order). `runs` gives shard starts and stops (from entity
/// lives); `observer` is the node whose cluster view is shown (one view is enough; every node's
/// associations are shown).
pub fn lines(
    entries: &[Entry],
    runs: &BTreeMap<String, Vec<ShardRun>>,
    window: (Duration, Duration),
    observer: NodeIx,
    names: &Names,
) -> Vec<Line> {
    let inside = |at: Duration| at >= window.0 && at < window.1;
    let mut out = Vec::new();
    // Lease facts, folded per node and outcome.
    let mut folds: BTreeMap<(NodeIx, LeaseKind), Fold> = BTreeMap::new();
    let flush = |key: (NodeIx, LeaseKind), f: Fold, out: &mut Vec<Line>| {
        let n = f.shards.len();
        let list = shard_list(&f.shards);
        let text = match key.1 {
            LeaseKind::Acquired => {
                let (lo, hi) = (
                    f.tokens.iter().min().copied().unwrap_or(0),
                    f.tokens.iter().max().copied().unwrap_or(0),
                );
                let tokens = if lo == hi {
                    format!("fencing token {lo}")
                } else {
                    format!("fencing tokens {lo}–{hi}")
                };
                format!(
                    "acquired {} ({list}; {tokens})",
                    plural(n, "shard lease", "shard leases")
                )
            }
            LeaseKind::Denied(holder) => format!(
                "was refused {} held by {} ({list}); retries until they are free",
                plural(n, "shard lease", "shard leases"),
                holder
                    .as_deref()
                    .map_or_else(|| "another node".into(), |h| names.address(h))
            ),
            LeaseKind::RenewDenied => format!(
                "lost {} (renewal refused; {list})",
                plural(n, "shard lease", "shard leases")
            ),
            LeaseKind::Released => {
                format!(
                    "released {} ({list})",
                    plural(n, "shard lease", "shard leases")
                )
            }
            LeaseKind::ReleasedNotHeld => format!(
                "released {} it no longer held ({list})",
                plural(n, "shard lease", "shard leases")
            ),
            LeaseKind::Failed(op) => format!(
                "could not {op} {} ({list}): {}",
                plural(n, "shard lease", "shard leases"),
                f.reasons.first().map_or("", String::as_str)
            ),
        };
        out.push(Line {
            at: f.at,
            who: names.node(f.node).to_owned(),
            text,
        });
    };
    for e in entries.iter().filter(|e| inside(e.at)) {
        match &e.fact {
            Fact::Lease { node, shard, what } => {
                let (kind, token, reason) = match what {
                    LeaseFact::Acquired(t) => (LeaseKind::Acquired, Some(*t), None),
                    LeaseFact::Denied(h) => (LeaseKind::Denied(h.clone()), None, None),
                    LeaseFact::RenewDenied => (LeaseKind::RenewDenied, None, None),
                    LeaseFact::Released(true) => (LeaseKind::Released, None, None),
                    LeaseFact::Released(false) => (LeaseKind::ReleasedNotHeld, None, None),
                    LeaseFact::Failed(op, r) => (LeaseKind::Failed(op), None, Some(r.clone())),
                };
                let key = (*node, kind);
                if folds.get(&key).is_some_and(|f| e.at - f.at > FOLD)
                    && let Some(f) = folds.remove(&key)
                {
                    flush(key.clone(), f, &mut out);
                }
                let f = folds.entry(key).or_insert_with(|| Fold {
                    at: e.at,
                    node: *node,
                    shards: Vec::new(),
                    tokens: Vec::new(),
                    reasons: Vec::new(),
                });
                f.shards.push(shard.clone());
                f.tokens.extend(token);
                f.reasons.extend(reason);
            }
            Fact::Member {
                observer: o,
                kind,
                member,
            } if *o == observer => {
                let who = names.node(*o).to_owned();
                let mut member = names.address(member);
                if member == who {
                    "itself".clone_into(&mut member);
                }
                out.push(Line {
                    at: e.at,
                    who,
                    text: member_text(kind, &member),
                });
            }
            Fact::Association {
                observer: o,
                remote,
                from,
                to,
                cause,
            } => out.push(Line {
                at: e.at,
                who: names.node(*o).to_owned(),
                text: format!(
                    "association to {}: {from} → {to} ({cause})",
                    names.address(remote)
                ),
            }),
            Fact::Note { node, text } => out.push(Line {
                at: e.at,
                who: node.map_or_else(|| "demo".into(), |n| names.node(n).to_owned()),
                text: text.clone(),
            }),
            Fact::Member { .. } | Fact::Entity { .. } => {}
        }
    }
    for (key, f) in std::mem::take(&mut folds) {
        flush(key, f, &mut out);
    }
    out.extend(shard_lines(runs, window, names));
    out.sort_by_key(|l| l.at);
    out
}

/// Shard starts and stops inside `window`, folded per node.
fn shard_lines(
    runs: &BTreeMap<String, Vec<ShardRun>>,
    window: (Duration, Duration),
    names: &Names,
) -> Vec<Line> {
    let inside = |at: Duration| at >= window.0 && at < window.1;
    // (at, node, kind, shard, entities)
    let mut events: Vec<(Duration, NodeIx, u8, &str, usize)> = Vec::new();
    for runs in runs.values() {
        for r in runs {
            if inside(r.from) {
                events.push((r.from, r.node, 0, &r.shard, r.entities));
            }
            if let Some(u) = r.until.filter(|u| inside(*u)) {
                events.push((
                    u,
                    r.node,
                    if r.crashed { 2 } else { 1 },
                    &r.shard,
                    r.entities,
                ));
            }
        }
    }
    events.sort_by_key(|e| e.0);
    let mut out = Vec::new();
    let mut open: BTreeMap<(NodeIx, u8), (Duration, Vec<String>, usize)> = BTreeMap::new();
    let emit = |(node, kind): (NodeIx, u8),
                (at, shards, entities): (Duration, Vec<String>, usize)| {
        let list = shard_list(&shards);
        let text = match kind {
            0 => format!(
                "started {} ({list}), {} in them",
                plural(shards.len(), "shard", "shards"),
                plural(entities, "entity", "entities")
            ),
            1 => format!(
                "stopped {} ({list}): {} stopped",
                plural(shards.len(), "shard", "shards"),
                plural(entities, "entity", "entities")
            ),
            _ => format!(
                "lost {} with its crash ({list}; {})",
                plural(shards.len(), "shard", "shards"),
                plural(entities, "entity", "entities")
            ),
        };
        Line {
            at,
            who: names.node(node).to_owned(),
            text,
        }
    };
    for (at, node, kind, shard, entities) in events {
        let key = (node, kind);
        if open.get(&key).is_some_and(|o| at - o.0 > FOLD)
            && let Some(o) = open.remove(&key)
        {
            out.push(emit(key, o));
        }
        let o = open.entry(key).or_insert_with(|| (at, Vec::new(), 0));
        o.1.push(shard.to_owned());
        o.2 += entities;
    }
    for (key, o) in open {
        out.push(emit(key, o));
    }
    out
}

/// The timeline as text, one line each.
pub fn render(lines: &[Line]) -> String {
    let mut s = String::new();
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            nodes: vec!["node-1".into(), "node-2".into()],
            by_address: BTreeMap::from([
                ("flotilla://demo@127.0.0.1:1".into(), "node-1".into()),
                ("flotilla://demo@127.0.0.1:2".into(), "node-2".into()),
            ]),
        }
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn many_leases_at_once_are_one_line_and_views_are_named() {
        let mut entries = Vec::new();
        for (i, shard) in ["3", "11", "8"].iter().enumerate() {
            entries.push(Entry {
                at: at(1000 + i as u64 * 10),
                fact: Fact::Lease {
                    node: 0,
                    shard: (*shard).into(),
                    what: LeaseFact::Released(true),
                },
            });
            entries.push(Entry {
                at: at(1100 + i as u64 * 10),
                fact: Fact::Lease {
                    node: 1,
                    shard: (*shard).into(),
                    what: LeaseFact::Acquired(5 + i as u64),
                },
            });
        }
        entries.push(Entry {
            at: at(1500),
            fact: Fact::Member {
                observer: 1,
                kind: "MemberRemoved",
                member: "flotilla://demo@127.0.0.1:1#77".into(),
            },
        });
        entries.push(Entry {
            at: at(1600),
            fact: Fact::Member {
                observer: 0,
                kind: "MemberRemoved",
                member: "flotilla://demo@127.0.0.1:1#77".into(),
            },
        });
        entries.push(Entry {
            at: at(5000),
            fact: Fact::Lease {
                node: 1,
                shard: "4".into(),
                what: LeaseFact::Acquired(9),
            },
        });
        let lines = lines(&entries, &BTreeMap::new(), (at(0), at(10_000)), 1, &names());
        let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(
            text[0].contains("node-1  released 3 shard leases (shards 3, 8, 11)"),
            "{text:#?}"
        );
        assert!(
            text[1]
                .contains("node-2  acquired 3 shard leases (shards 3, 8, 11; fencing tokens 5–7)"),
            "{text:#?}"
        );
        assert!(
            text[2].contains("node-2  sees node-1 removed from the cluster"),
            "{text:#?}"
        );
        assert!(
            text[3].contains("acquired 1 shard lease (shard 4; fencing token 9)"),
            "{text:#?}"
        );
        assert!(text[0].starts_with("     1.00 s"), "{text:#?}");
    }

    #[test]
    fn shard_runs_become_starts_stops_and_losses() {
        let run = |shard: &str, node, from: u64, until: Option<u64>, crashed| ShardRun {
            shard: shard.into(),
            node,
            token: Some(1),
            from: at(from),
            until: until.map(at),
            crashed,
            entities: 100,
        };
        let runs = BTreeMap::from([
            (
                "1".to_owned(),
                vec![
                    run("1", 0, 100, Some(2000), false),
                    run("1", 1, 2100, None, false),
                ],
            ),
            ("2".to_owned(), vec![run("2", 1, 100, Some(2050), true)]),
        ]);
        let text: Vec<String> = lines(&[], &runs, (at(1000), at(9000)), 1, &names())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(
            text[0].contains("node-1  stopped 1 shard (shard 1): 100 entities stopped"),
            "{text:#?}"
        );
        assert!(
            text[1].contains("node-2  lost 1 shard with its crash (shard 2; 100 entities)"),
            "{text:#?}"
        );
        assert!(
            text[2].contains("node-2  started 1 shard (shard 1)"),
            "{text:#?}"
        );
    }
}
