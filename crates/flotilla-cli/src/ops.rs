//! The operator commands `flotilla status|members|shards|associations|leases|leave|down`:
//! each asks a node's management endpoint and prints a table (or, with `--json`, the API's
//! JSON). The tables are plain functions of the API's answers, so they are tested without a
//! node.

use std::fmt::Write as _;

use flotilla_management::api::{Associations, Leases, Members, Operation, Shards, Status};
use flotilla_management::client::Client;

/// Lays out rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn seconds(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// `flotilla status`.
pub fn status_table(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node        {}", s.self_node);
    let _ = writeln!(
        out,
        "status      {}{}",
        s.status.as_deref().unwrap_or("not joined"),
        if s.ready { " (ready)" } else { " (not ready)" }
    );
    let _ = writeln!(out, "leader      {}", s.leader.as_deref().unwrap_or("none"));
    let members: Vec<String> = s
        .members_by_status
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "members     {}{}",
        if members.is_empty() {
            "none".to_owned()
        } else {
            members.join(", ")
        },
        if s.unreachable > 0 {
            format!(", {} unreachable", s.unreachable)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "here        {} shard(s), {} entit{}",
        s.shards,
        s.entities,
        if s.entities == 1 { "y" } else { "ies" }
    );
    let links: Vec<String> = s
        .associations_by_state
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "remotes     {}",
        if links.is_empty() {
            "none".to_owned()
        } else {
            links.join(", ")
        }
    );
    out
}

/// `flotilla members`.
pub fn members_table(m: &Members) -> String {
    let rows: Vec<Vec<String>> = m
        .members
        .iter()
        .map(|x| {
            vec![
                x.address.clone(),
                x.status.clone(),
                if x.reachable { "yes" } else { "NO" }.to_owned(),
                x.phi.map_or_else(
                    || "-".to_owned(),
                    |p| {
                        if p > 1e6 {
                            "inf".to_owned()
                        } else {
                            format!("{p:.2}")
                        }
                    },
                ),
                if m.leader.as_deref() == Some(x.address.as_str()) {
                    "leader".to_owned()
                } else {
                    String::new()
                },
                x.roles.join(","),
            ]
        })
        .collect();
    let mut out = table(
        &["ADDRESS", "STATUS", "REACHABLE", "PHI", "", "ROLES"],
        &rows,
    );
    if !m.converged {
        out.push_str("(the gossip has not converged: some member has not seen the latest state)\n");
    }
    out
}

/// `flotilla shards`.
pub fn shards_table(s: &Shards) -> String {
    if s.regions.is_empty() {
        return "(no shard region on this node)\n".to_owned();
    }
    let mut out = String::new();
    for r in &s.regions {
        let _ = writeln!(
            out,
            "{}: {} shard(s) here, {}registered, coordinator {}, {} message(s) held",
            r.type_name,
            r.shards.len(),
            if r.registered { "" } else { "NOT " },
            r.coordinator.as_deref().unwrap_or("unknown"),
            r.held_messages
        );
        let rows: Vec<Vec<String>> = r
            .cluster
            .iter()
            .map(|n| {
                vec![
                    n.address.clone(),
                    n.shards.to_string(),
                    n.entities.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["NODE", "SHARDS", "ENTITIES"], &rows));
    }
    out
}

/// `flotilla associations`.
pub fn associations_table(a: &Associations) -> String {
    if a.associations.is_empty() {
        return "(no association: this node has not talked to another)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = a
        .associations
        .iter()
        .map(|x| {
            vec![
                x.remote.clone(),
                x.state.clone(),
                x.uid.clone().unwrap_or_else(|| "-".to_owned()),
                seconds(x.since_ms),
                x.cause.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["REMOTE", "STATE", "UID", "FOR", "CAUSE"], &rows)
}

/// `flotilla leases` through a node (zombies only, when asked).
pub fn leases_table(l: &Leases, zombies_only: bool) -> String {
    let Some(backend) = &l.backend else {
        return "(this node has no lease backend)\n".to_owned();
    };
    let rows: Vec<Vec<String>> = l
        .leases
        .iter()
        .filter(|x| !zombies_only || x.zombie)
        .map(|x| {
            vec![
                x.name.clone(),
                x.owner.clone(),
                x.token.to_string(),
                x.age_ms.map_or_else(|| "-".to_owned(), seconds),
                x.expires_in_ms.map_or_else(|| "-".to_owned(), seconds),
                if x.zombie { "ZOMBIE" } else { "" }.to_owned(),
            ]
        })
        .collect();
    let mut out = table(&["NAME", "OWNER", "TOKEN", "AGE", "EXPIRES IN", ""], &rows);
    let _ = writeln!(
        out,
        "({} lease(s) in {backend}; {} zombie(s): held by an owner that is not a current member)",
        l.leases.len(),
        l.zombies
    );
    out
}

/// Prints an answer as JSON or as its table.
fn show<T: serde::Serialize>(
    answer: &T,
    json: bool,
    table: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        print!("{}", table(answer));
    }
    Ok(())
}

/// `flotilla status`.
pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    show(&client.status().await?, json, status_table)
}

/// `flotilla members`.
pub async fn members(client: &Client, json: bool) -> anyhow::Result<()> {
    show(&client.members().await?, json, members_table)
}

/// `flotilla shards`.
pub async fn shards(client: &Client, json: bool) -> anyhow::Result<()> {
    show(&client.shards().await?, json, shards_table)
}

/// `flotilla associations`.
pub async fn associations(client: &Client, json: bool) -> anyhow::Result<()> {
    show(&client.associations().await?, json, associations_table)
}

/// `flotilla leases [--zombies]`.
pub async fn leases(client: &Client, json: bool, zombies_only: bool) -> anyhow::Result<()> {
    let mut l = client.leases().await?;
    if zombies_only {
        l.leases.retain(|x| x.zombie);
    }
    show(&l, json, |l| leases_table(l, zombies_only))
}

/// `flotilla leave|down <address>`.
pub async fn operate(
    client: &Client,
    json: bool,
    address: &str,
    op: Operation,
) -> anyhow::Result<()> {
    let accepted = client.member_operation(address, op).await?;
    show(&accepted, json, |a| format!("{}\n", a.message))
}

#[cfg(test)]
mod tests {
    use flotilla_management::api::{AssociationInfo, LeaseInfo, MemberInfo};

    use super::*;

    #[test]
    fn tables_line_up_and_say_what_matters() {
        let m = Members {
            self_node: "flotilla://s@127.0.0.1:1#1".into(),
            leader: Some("flotilla://s@127.0.0.1:1".into()),
            converged: false,
            members: vec![
                MemberInfo {
                    address: "flotilla://s@127.0.0.1:1".into(),
                    uid: "1".into(),
                    status: "Up".into(),
                    reachable: true,
                    roles: vec![],
                    up_number: Some(1),
                    phi: None,
                },
                MemberInfo {
                    address: "flotilla://s@127.0.0.1:22".into(),
                    uid: "2".into(),
                    status: "Leaving".into(),
                    reachable: false,
                    roles: vec!["web".into()],
                    up_number: Some(2),
                    phi: Some(f64::MAX),
                },
            ],
        };
        let t = members_table(&m);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ADDRESS"), "{t}");
        assert!(
            lines[1].contains("leader") && lines[1].contains("yes"),
            "{t}"
        );
        assert!(lines[2].contains("NO") && lines[2].contains("inf"), "{t}");
        assert_eq!(
            lines[1].find("Up"),
            lines[2].find("Leaving"),
            "columns line up:\n{t}"
        );
        assert!(t.contains("not converged"));

        let a = Associations {
            associations: vec![AssociationInfo {
                remote: "flotilla://s@127.0.0.1:22".into(),
                state: "Gated".into(),
                uid: Some("2".into()),
                since_ms: 1500,
                cause: Some("the connection was lost".into()),
                quarantined: vec![],
            }],
        };
        assert!(associations_table(&a).contains("Gated  2    1.5s  the connection was lost"));

        let l = Leases {
            backend: Some("memory".into()),
            zombies: 1,
            leases: vec![
                LeaseInfo {
                    name: "s-shard-counter-1".into(),
                    owner: "flotilla://s@127.0.0.1:1".into(),
                    token: 3,
                    age_ms: Some(12_000),
                    expires_in_ms: Some(9_000),
                    zombie: false,
                },
                LeaseInfo {
                    name: "s-shard-counter-2".into(),
                    owner: "flotilla://s@127.0.0.1:9".into(),
                    token: 4,
                    age_ms: None,
                    expires_in_ms: Some(2_000),
                    zombie: true,
                },
            ],
        };
        let all = leases_table(&l, false);
        assert!(
            all.contains("ZOMBIE") && all.contains("12s") && all.contains("9.0s"),
            "{all}"
        );
        let zombies = leases_table(&l, true);
        assert!(
            !zombies.contains("counter-1") && zombies.contains("counter-2"),
            "{zombies}"
        );
        assert_eq!(
            leases_table(
                &Leases {
                    backend: None,
                    leases: vec![],
                    zombies: 0
                },
                false
            ),
            "(this node has no lease backend)\n"
        );
    }
}
