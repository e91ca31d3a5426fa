//! Runs the resolver's data-driven cases, `testdata/sbr_*.txt`: the scenarios of Akka's
//! `SplitBrainResolverSpec`, each decided from every member that may lead each side.
//!
//! A file is blocks separated by blank lines. A block is comment lines (`#`, saying what the
//! case shows), the input, a line `----`, and the expected output. The input is either
//!
//! ```text
//! members
//! A up-number=5 roles=role3         one line per member, in address order (A is lowest)
//! ```
//!
//! which sets the members the cases below draw from (output `ok`), or a case:
//!
//! ```text
//! keep-majority role=r              the strategy and its settings: role=, quorum-size=,
//!                                   down-if-alone=true|false
//! side A B:leaving C:joining        one line per side of the partition, each member with its
//!                                   status as the deciding side sees it (:joining, :weakly-up,
//!                                   :leaving, :exiting, :down; Up if none)
//! unreachable A>B B>A               observations besides the partition's (observer>subject)
//! records A>B C>D                   exactly these observations instead
//! decide 2                          the sides that decide (every side if absent)
//! ```
//!
//! As in Akka's spec, the partition's observations are those of the first member of the
//! deciding side, which finds every member outside it unreachable, and every member of the
//! deciding side has seen the gossip. Each side's gossip is built and every member of the side
//! that is neither Down nor Exiting (any of them may come to lead it) decides on its own view,
//! as the leader would: with nothing unreachable there is no decision; lease-majority is shown
//! with the lease acquired and denied. The output is one entry per deciding side, or the
//! deciders' answers one by one if they disagree (which would be a bug).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_core::{SplitBrainResolverSettings, Strategy, UniqueAddress};

use super::{Decision, Outcome, View, decide};
use crate::cluster::gossip::Gossip;
use crate::cluster::member::{Member, MemberStatus};
use crate::testing::node;

/// One member the cases draw from.
struct Known {
    node: UniqueAddress,
    up_number: u64,
    roles: BTreeSet<String>,
}

/// The members by name, and back.
#[derive(Default)]
struct Table {
    by_name: BTreeMap<String, Known>,
    names: BTreeMap<UniqueAddress, String>,
}

impl Table {
    fn known(&self, name: &str, line: usize) -> &Known {
        self.by_name
            .get(name)
            .unwrap_or_else(|| panic!("line {line}: no member {name} in the members block"))
    }

    fn names<'a>(&self, nodes: impl IntoIterator<Item = &'a UniqueAddress>) -> String {
        let names: Vec<&str> = nodes
            .into_iter()
            .map(|n| self.names.get(n).map_or("?", String::as_str))
            .collect();
        if names.is_empty() {
            "nobody".to_owned()
        } else {
            names.join(" ")
        }
    }
}

/// One block of a file: where its input starts, the input and the expected output.
struct Block {
    line: usize,
    input: Vec<String>,
    expected: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    while let Some((n, line)) = lines.next() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut block = Block {
            line: n,
            input: vec![line.to_owned()],
            expected: Vec::new(),
        };
        let mut separated = false;
        for (_, l) in lines.by_ref() {
            if !separated {
                if l == "----" {
                    separated = true;
                } else {
                    block.input.push(l.to_owned());
                }
            } else if l.is_empty() {
                break;
            } else {
                block.expected.push(l.to_owned());
            }
        }
        assert!(separated, "line {n}: a block without ----");
        out.push(block);
    }
    out
}

fn status(word: &str, line: usize) -> MemberStatus {
    match word {
        "joining" => MemberStatus::Joining,
        "weakly-up" => MemberStatus::WeaklyUp,
        "leaving" => MemberStatus::Leaving,
        "exiting" => MemberStatus::Exiting,
        "down" => MemberStatus::Down,
        other => panic!("line {line}: unknown status {other}"),
    }
}

fn members(table: &mut Table, block: &Block) -> Vec<String> {
    *table = Table::default();
    for (i, l) in block.input.iter().skip(1).enumerate() {
        let mut words = l.split_whitespace();
        let name = words
            .next()
            .unwrap_or_else(|| panic!("line {}: a member without a name", block.line));
        let mut known = Known {
            node: node(u16::try_from(i + 1).unwrap_or(u16::MAX)),
            up_number: u64::MAX,
            roles: BTreeSet::new(),
        };
        for kv in words {
            match kv.split_once('=') {
                Some(("up-number", v)) => {
                    known.up_number = v
                        .parse()
                        .unwrap_or_else(|e| panic!("line {}: {v}: {e}", block.line));
                }
                Some(("roles", v)) => known.roles = v.split(',').map(str::to_owned).collect(),
                _ => panic!("line {}: cannot read {kv}", block.line),
            }
        }
        table.names.insert(known.node.clone(), name.to_owned());
        table.by_name.insert(name.to_owned(), known);
    }
    vec!["ok".to_owned()]
}

fn settings(first: &str, line: usize) -> SplitBrainResolverSettings {
    let mut words = first.split_whitespace();
    let name = words.next().unwrap_or_default();
    let strategy = [
        Strategy::KeepMajority,
        Strategy::StaticQuorum,
        Strategy::KeepOldest,
        Strategy::DownAll,
        Strategy::LeaseMajority,
    ]
    .into_iter()
    .find(|s| s.to_string() == name)
    .unwrap_or_else(|| panic!("line {line}: unknown strategy {name}"));
    let mut s = SplitBrainResolverSettings {
        active_strategy: strategy,
        ..SplitBrainResolverSettings::default()
    };
    // Akka's spec waits 2 s on the minority side.
    s.lease_majority.acquire_lease_delay_for_minority = Duration::from_secs(2);
    for kv in words {
        match kv.split_once('=') {
            Some(("role", r)) => {
                s.keep_majority.role = r.to_owned();
                s.static_quorum.role = r.to_owned();
                s.keep_oldest.role = r.to_owned();
                s.lease_majority.role = r.to_owned();
            }
            Some(("quorum-size", q)) => {
                s.static_quorum.quorum_size = q
                    .parse()
                    .unwrap_or_else(|e| panic!("line {line}: {q}: {e}"));
            }
            Some(("down-if-alone", b)) => {
                s.keep_oldest.down_if_alone = b
                    .parse()
                    .unwrap_or_else(|e| panic!("line {line}: {b}: {e}"));
            }
            _ => panic!("line {line}: cannot read {kv}"),
        }
    }
    s
}

/// A case's input, read.
struct Case {
    settings: SplitBrainResolverSettings,
    /// Per side, each member's name and status (and the word as written).
    sides: Vec<Vec<(String, MemberStatus, String)>>,
    extra: Vec<(String, String)>,
    exact: Option<Vec<(String, String)>>,
    deciding: Vec<usize>,
}

fn pairs<'a>(words: impl Iterator<Item = &'a str>, line: usize) -> Vec<(String, String)> {
    words
        .map(|w| {
            let (o, s) = w
                .split_once('>')
                .unwrap_or_else(|| panic!("line {line}: {w} is not observer>subject"));
            (o.to_owned(), s.to_owned())
        })
        .collect()
}

fn case(block: &Block) -> Case {
    let line = block.line;
    let mut c = Case {
        settings: settings(&block.input[0], line),
        sides: Vec::new(),
        extra: Vec::new(),
        exact: None,
        deciding: Vec::new(),
    };
    for l in block.input.iter().skip(1) {
        let mut words = l.split_whitespace();
        match words.next() {
            Some("side") => c.sides.push(
                words
                    .map(|w| match w.split_once(':') {
                        Some((name, st)) => (name.to_owned(), status(st, line), w.to_owned()),
                        None => (w.to_owned(), MemberStatus::Up, w.to_owned()),
                    })
                    .collect(),
            ),
            Some("unreachable") => c.extra.extend(pairs(words, line)),
            Some("records") => c.exact = Some(pairs(words, line)),
            Some("decide") => {
                c.deciding = words
                    .map(|w| {
                        w.parse()
                            .unwrap_or_else(|e| panic!("line {line}: side {w}: {e}"))
                    })
                    .collect()
            }
            _ => panic!("line {line}: cannot read {l:?}"),
        }
    }
    if c.deciding.is_empty() {
        c.deciding = (1..=c.sides.len()).collect();
    }
    c
}

/// The gossip the members of side `i` (from 1) hold.
fn gossip(table: &Table, c: &Case, i: usize, line: usize) -> Gossip {
    let side = c
        .sides
        .get(i - 1)
        .unwrap_or_else(|| panic!("line {line}: no side {i}"));
    let mut g = Gossip::new();
    for (name, status, _) in c.sides.iter().flatten() {
        let known = table.known(name, line);
        g.put_member(Member {
            node: known.node.clone(),
            status: *status,
            roles: known.roles.clone(),
            app_version: "1".to_owned(),
            up_number: if matches!(status, MemberStatus::Joining | MemberStatus::WeaklyUp) {
                u64::MAX
            } else {
                known.up_number
            },
        });
    }
    let records = c.exact.clone().unwrap_or_else(|| {
        let mut r = c.extra.clone();
        if let Some((head, _, _)) = side.first() {
            let ours: BTreeSet<&String> = side.iter().map(|(n, _, _)| n).collect();
            r.extend(
                c.sides
                    .iter()
                    .flatten()
                    .filter(|(n, _, _)| !ours.contains(n))
                    .map(|(n, _, _)| (head.clone(), n.clone())),
            );
        }
        r
    });
    for (o, s) in &records {
        let (o, s) = (&table.known(o, line).node, &table.known(s, line).node);
        g.reachability_mut().unreachable(o, s);
    }
    for (name, _, _) in side {
        g.see(&table.known(name, line).node);
    }
    g
}

fn decision(table: &Table, d: &Decision) -> String {
    assert!(!d.reason.is_empty(), "a decision without a reason");
    format!("{:?}, downs {}", d.kind, table.names(&d.down))
}

/// What `decider` decides on its view of `g`, as lines.
fn answer(table: &Table, g: &Gossip, decider: &UniqueAddress, c: &Case) -> Vec<String> {
    let view = View::of(g, decider);
    if view.unreachable.is_empty() {
        return vec!["no decision (nothing unreachable)".to_owned()];
    }
    let settled = |lease| match decide(&c.settings, &view, lease) {
        Outcome::Decide(d) => decision(table, &d),
        Outcome::AcquireLease { .. } => "asks for the lease again".to_owned(),
    };
    match decide(&c.settings, &view, None) {
        Outcome::Decide(d) => vec![decision(table, &d)],
        Outcome::AcquireLease { delay } => vec![
            if delay.is_zero() {
                "asks for the lease at once".to_owned()
            } else {
                format!("asks for the lease after {delay:?}")
            },
            format!("  acquired: {}", settled(Some(true))),
            format!("  denied: {}", settled(Some(false))),
        ],
    }
}

fn run(table: &Table, block: &Block) -> Vec<String> {
    let c = case(block);
    let mut out = Vec::new();
    for &i in &c.deciding {
        let g = gossip(table, &c, i, block.line);
        let side = &c.sides[i - 1];
        let label = format!(
            "side {i} ({})",
            side.iter()
                .map(|(_, _, w)| w.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let answers: Vec<(&str, Vec<String>)> = side
            .iter()
            .filter(|(_, s, _)| !matches!(s, MemberStatus::Down | MemberStatus::Exiting))
            .map(|(name, _, _)| {
                let node = &table.known(name, block.line).node;
                (name.as_str(), answer(table, &g, node, &c))
            })
            .collect();
        match answers.first() {
            None => out.push(format!("{label}: nobody decides")),
            Some((_, first)) if answers.iter().all(|(_, a)| a == first) => {
                out.push(format!("{label}: {}", first[0]));
                out.extend(first[1..].iter().cloned());
            }
            Some(_) => {
                out.push(format!("{label}: the deciders disagree"));
                for (name, a) in &answers {
                    out.push(format!("  {name} decides {}", a.join(" / ")));
                }
            }
        }
    }
    out
}

/// Runs one file; every block that fails is reported, with its line.
fn run_file(name: &str, text: &str) {
    let mut table = Table::default();
    let mut failures = Vec::new();
    let mut cases = 0;
    for block in blocks(text) {
        let got = if block.input[0] == "members" {
            members(&mut table, &block)
        } else {
            cases += 1;
            run(&table, &block)
        };
        if got != block.expected {
            failures.push(format!(
                "{name}:{}:\n{}\n----\nexpected:\n{}\ngot:\n{}",
                block.line,
                block.input.join("\n"),
                block.expected.join("\n"),
                got.join("\n")
            ));
        }
    }
    assert!(cases > 0, "{name}: no cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn keep_majority() {
    run_file(
        "sbr_keep_majority.txt",
        include_str!("../../../testdata/sbr_keep_majority.txt"),
    );
}

#[test]
fn keep_oldest() {
    run_file(
        "sbr_keep_oldest.txt",
        include_str!("../../../testdata/sbr_keep_oldest.txt"),
    );
}

#[test]
fn static_quorum_and_down_all() {
    run_file(
        "sbr_static_quorum.txt",
        include_str!("../../../testdata/sbr_static_quorum.txt"),
    );
    run_file(
        "sbr_down_all.txt",
        include_str!("../../../testdata/sbr_down_all.txt"),
    );
}

#[test]
fn lease_majority() {
    run_file(
        "sbr_lease_majority.txt",
        include_str!("../../../testdata/sbr_lease_majority.txt"),
    );
}
