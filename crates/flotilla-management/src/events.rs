//! The event log behind `GET /events` and the dashboard: cluster events as they come,
//! association state changes and shard-count changes as the node's state is sampled.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_actor::ActorSystem;
use flotilla_cluster::{Cluster, ClusterEvent};
use flotilla_sharding::RegionQueries;
use tokio_util::sync::CancellationToken;

use crate::api::Event;

/// How often associations and regions are sampled for changes.
const SAMPLE: Duration = Duration::from_millis(500);

/// The most recent events of one node, oldest first, at most a fixed number of them.
#[derive(Debug, Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    events: VecDeque<Event>,
    next: u64,
    capacity: usize,
}

impl EventLog {
    /// An empty log keeping the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                events: VecDeque::new(),
                next: 1,
                capacity: capacity.max(1),
            })),
        }
    }

    /// Adds an event of `kind` (a short word: `member`, `association`, …).
    pub fn push(&self, kind: &str, text: impl Into<String>) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = inner.next;
        inner.next += 1;
        inner.events.push_back(Event {
            seq,
            at_ms,
            kind: kind.to_owned(),
            text: text.into(),
        });
        while inner.events.len() > inner.capacity {
            inner.events.pop_front();
        }
    }

    /// The events with a sequence number above `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Event> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }
}

/// What a cluster event says, in words.
pub(crate) fn describe(e: &ClusterEvent) -> (&'static str, String) {
    match e {
        ClusterEvent::MemberJoined(m) => ("member", format!("{} is joining", m.node.address)),
        ClusterEvent::MemberWeaklyUp(m) => ("member", format!("{} is weakly up", m.node.address)),
        ClusterEvent::MemberUp(m) => ("member", format!("{} is up", m.node.address)),
        ClusterEvent::MemberLeft(m) => ("member", format!("{} is leaving", m.node.address)),
        ClusterEvent::MemberExited(m) => ("member", format!("{} has exited", m.node.address)),
        ClusterEvent::MemberDowned(m) => ("member", format!("{} was downed", m.node.address)),
        ClusterEvent::MemberRemoved { member, previous } => (
            "member",
            format!("{} was removed (it was {previous})", member.node.address),
        ),
        ClusterEvent::UnreachableMember(m) => {
            ("reachability", format!("{} is unreachable", m.node.address))
        }
        ClusterEvent::ReachableMember(m) => (
            "reachability",
            format!("{} is reachable again", m.node.address),
        ),
        ClusterEvent::LeaderChanged(l) => (
            "leader",
            match l {
                Some(a) => format!("the leader is now {a}"),
                None => "there is no leader".to_owned(),
            },
        ),
        ClusterEvent::RoleLeaderChanged { role, leader } => (
            "leader",
            match leader {
                Some(a) => format!("the leader of role {role} is now {a}"),
                None => format!("role {role} has no leader"),
            },
        ),
    }
}

/// Follows the node until `stop` or until it terminates, writing what changes into `log`.
pub(crate) async fn follow(
    system: &ActorSystem,
    cluster: &Cluster,
    regions: &[Arc<dyn RegionQueries>],
    log: &EventLog,
    stop: &CancellationToken,
) {
    let mut events = cluster.subscribe().await;
    // What happened before the endpoint started (the node may have joined already) comes
    // first, as events.
    for e in events.initial_state().as_events() {
        let (kind, text) = describe(&e);
        log.push(kind, text);
    }
    {
        let (log, stop, system) = (log.clone(), stop.clone(), system.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = system.when_terminated() => return,
                    event = events.recv() => match event {
                        Some(e) => {
                            let (kind, text) = describe(&e);
                            log.push(kind, text);
                        }
                        None => return,
                    },
                }
            }
        });
    }
    let (log, stop, system, regions) =
        (log.clone(), stop.clone(), system.clone(), regions.to_vec());
    tokio::spawn(async move {
        let mut links: BTreeMap<String, (String, Option<u64>)> = BTreeMap::new();
        let mut shards: BTreeMap<String, usize> = BTreeMap::new();
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = system.when_terminated() => return,
                _ = tick.tick() => {}
            }
            for a in system.associations().await {
                let key = a.remote.to_string();
                let now = (a.state.to_string(), a.uid);
                let before = links.insert(key.clone(), now.clone());
                if before.as_ref() != Some(&now) {
                    let cause = a
                        .last_cause
                        .as_ref()
                        .map_or_else(String::new, |c| format!(": {c}"));
                    let from = before.map_or_else(|| "new".to_owned(), |(s, _)| s);
                    log.push(
                        "association",
                        format!("association to {key}: {from} -> {}{cause}", now.0),
                    );
                }
            }
            for r in &regions {
                let count = r.state().await.shards.len();
                let before = shards.insert(r.type_name().to_owned(), count);
                if before.is_some_and(|b| b != count) || (before.is_none() && count > 0) {
                    log.push(
                        "shards",
                        format!(
                            "{} shards here: {} -> {count}",
                            r.type_name(),
                            before.unwrap_or(0)
                        ),
                    );
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_and_numbers_them_in_order() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.push("member", format!("e{i}"));
        }
        let all = log.after(0);
        let texts: Vec<&str> = all.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["e2", "e3", "e4"]);
        assert_eq!(all[0].seq, 3);
        assert_eq!(log.after(4).len(), 1);
        assert!(log.after(5).is_empty());
    }
}
