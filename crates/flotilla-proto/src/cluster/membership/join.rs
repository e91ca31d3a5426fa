//! Joining: seeking a contact among the seeds, the join request, the welcome, and taking in
//! joiners (including a new incarnation that replaces an old one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use flotilla_core::{Address, UniqueAddress};

use super::{INIT_JOIN_INTERVAL, JoinState, Membership};
use crate::cluster::gossip::Gossip;
use crate::cluster::member::{Member, MemberStatus};
use crate::cluster::protocol::{ClusterMsg, ClusterOutput, LogLevel};

impl Membership {
    pub(super) fn join_seeds(&mut self, now: Instant, seeds: Vec<Address>) {
        if self.join != JoinState::Idle {
            self.log(
                LogLevel::Warn,
                "join ignored: this node is already joining or a member".into(),
            );
            return;
        }
        if seeds.is_empty() {
            self.log(
                LogLevel::Warn,
                "join ignored: no seed nodes were given".into(),
            );
            return;
        }
        let first = seeds.first() == Some(&self.self_node.address);
        if first && seeds.len() == 1 {
            self.form_cluster(now, "this node is the only seed node");
            return;
        }
        self.log(
            LogLevel::Info,
            format!(
                "joining through seed nodes [{}]{}",
                seeds.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                if first {
                    format!(
                        "; as the first seed, this node forms a new cluster if no other seed answers within {:?}",
                        self.settings.seed_node_timeout
                    )
                } else {
                    String::new()
                }
            ),
        );
        self.join = JoinState::Seeking {
            form_at: first.then(|| now + self.settings.seed_node_timeout),
            seeds,
            next_try: now,
            nacked: BTreeSet::new(),
        };
        self.seek(now);
    }

    pub(super) fn seek(&mut self, now: Instant) {
        let JoinState::Seeking {
            seeds, next_try, ..
        } = &mut self.join
        else {
            return;
        };
        if *next_try > now {
            return;
        }
        *next_try = now + INIT_JOIN_INTERVAL;
        let targets: Vec<Address> = seeds
            .iter()
            .filter(|s| **s != self.self_node.address)
            .cloned()
            .collect();
        for seed in targets {
            let msg = ClusterMsg::InitJoin {
                from: self.self_node.clone(),
            };
            self.send(&seed, msg);
        }
    }

    pub(super) fn join_contact(&mut self, now: Instant, contact: Address, seeds: Vec<Address>) {
        if contact == self.self_node.address {
            self.form_cluster(now, "asked to join itself");
            return;
        }
        self.log(
            LogLevel::Info,
            format!("sending a join request to {contact}"),
        );
        let msg = ClusterMsg::Join {
            member: self.self_as_joining(),
        };
        self.send(&contact, msg);
        self.join = JoinState::Joining {
            contact,
            seeds,
            retry_at: now + self.settings.retry_unsuccessful_join_after,
        };
    }

    pub(super) fn form_cluster(&mut self, now: Instant, why: &str) {
        self.log(LogLevel::Info, format!("forming a new cluster: {why}"));
        let mut g = Gossip::new();
        g.put_member(self.self_as_joining());
        g.bump(&self.self_node);
        self.become_member(now, g);
    }

    pub(super) fn become_member(&mut self, now: Instant, gossip: Gossip) {
        self.gossip = gossip;
        self.gossip.see(&self.self_node);
        self.join = JoinState::Member;
        self.next_gossip = Some(now + self.settings.gossip_interval);
        self.next_leader = Some(now);
        self.next_heartbeat = Some(now + self.settings.failure_detector.heartbeat_interval);
        self.changed(now);
    }

    pub(super) fn join_timeouts(&mut self, now: Instant) {
        match &self.join {
            JoinState::Seeking {
                form_at: Some(at),
                seeds,
                nacked,
                ..
            } if *at <= now => {
                // Silence is not proof that no cluster runs: a seed cut off by a partition is
                // silent too. Those seeds are asked again while this cluster runs.
                let silent: BTreeMap<Address, Option<Instant>> = seeds
                    .iter()
                    .filter(|s| **s != self.self_node.address && !nacked.contains(*s))
                    .map(|s| (s.clone(), None))
                    .collect();
                self.form_cluster(now, "no other seed node answered within seed-node-timeout");
                if !silent.is_empty() {
                    self.log(
                        LogLevel::Info,
                        format!(
                            "seed nodes [{}] did not answer; this node keeps asking them every {:?} and, should one be a member of another cluster, this cluster gives way to it",
                            silent.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                            self.settings.seed_node_timeout
                        ),
                    );
                    self.silent_seeds = silent;
                    self.next_probe = Some(now + self.settings.seed_node_timeout);
                }
            }
            JoinState::Seeking { .. } => self.seek(now),
            JoinState::Joining {
                contact,
                seeds,
                retry_at,
            } if *retry_at <= now => {
                let (contact, seeds) = (contact.clone(), seeds.clone());
                self.log(
                    LogLevel::Warn,
                    format!(
                        "no welcome from {contact} within {:?}; trying the seed nodes again",
                        self.settings.retry_unsuccessful_join_after
                    ),
                );
                if seeds.is_empty() {
                    self.join_contact(now, contact, seeds);
                } else {
                    // As at the start: the first seed forms a new cluster if no other seed
                    // answers within seed-node-timeout. Without this, a first seed whose join
                    // went to a seed that then went away (a whole-cluster restart, where the
                    // old incarnations answer first and then shut down) would ask the other
                    // seeds for ever, none of them a member, and no cluster would ever form.
                    let first = seeds.first() == Some(&self.self_node.address);
                    self.join = JoinState::Seeking {
                        form_at: first.then(|| now + self.settings.seed_node_timeout),
                        seeds,
                        next_try: now,
                        nacked: BTreeSet::new(),
                    };
                    self.seek(now);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_init_join(&mut self, from: UniqueAddress) {
        let in_cluster = self.join == JoinState::Member
            && self
                .self_member()
                .is_some_and(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Exiting));
        let me = self.self_node.clone();
        let msg = if in_cluster {
            ClusterMsg::InitJoinAck { from: me }
        } else {
            ClusterMsg::InitJoinNack { from: me }
        };
        self.send(&from.address, msg);
    }

    pub(super) fn on_init_join_ack(&mut self, now: Instant, from: UniqueAddress) {
        if let JoinState::Seeking { seeds, .. } = &self.join {
            let seeds = seeds.clone();
            self.join_contact(now, from.address, seeds);
            return;
        }
        if self.join != JoinState::Member {
            return;
        }
        let Some(first_ack) = self.silent_seeds.get(&from.address).copied() else {
            return;
        };
        if self.gossip.member_at(&from.address).is_some() {
            self.silent_seeds.remove(&from.address);
            return;
        }
        // A member of a cluster this one does not know. Once more, a seed-node-timeout
        // later, so that a seed that joined this cluster through another member (and is not
        // in this node's gossip yet) is not mistaken for one.
        match first_ack {
            None => {
                self.silent_seeds.insert(from.address.clone(), Some(now));
            }
            Some(at) if now.saturating_duration_since(at) >= self.settings.seed_node_timeout => {
                self.give_way(now, &from);
            }
            Some(_) => {}
        }
    }

    pub(super) fn on_init_join_nack(&mut self, from: UniqueAddress) {
        if let JoinState::Seeking {
            seeds,
            nacked,
            form_at: Some(_),
            ..
        } = &mut self.join
        {
            if seeds.contains(&from.address) {
                nacked.insert(from.address);
            }
            return;
        }
        // A silent seed that is in no cluster joins this one through the seeds.
        self.silent_seeds.remove(&from.address);
    }

    /// Asks the seeds that stayed silent at this cluster's forming whether they are in a
    /// cluster; forgets those that are members here.
    pub(super) fn probe_silent_seeds(&mut self, now: Instant) {
        let gossip = &self.gossip;
        self.silent_seeds
            .retain(|seed, _| gossip.member_at(seed).is_none());
        if self.silent_seeds.is_empty() {
            self.next_probe = None;
            self.log(
                LogLevel::Info,
                "every seed node that was silent when this cluster formed is accounted for".into(),
            );
            return;
        }
        self.next_probe = Some(now + self.settings.seed_node_timeout);
        let targets: Vec<Address> = self.silent_seeds.keys().cloned().collect();
        for seed in targets {
            let msg = ClusterMsg::InitJoin {
                from: self.self_node.clone(),
            };
            self.send(&seed, msg);
        }
    }

    /// This cluster, formed by this first seed alone while `other`'s cluster ran, gives way:
    /// every member is downed (this node too); started again, they join through the seeds.
    fn give_way(&mut self, now: Instant, other: &UniqueAddress) {
        let members: Vec<UniqueAddress> = self
            .gossip
            .members()
            .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
            .map(|m| m.node.clone())
            .collect();
        self.log(
            LogLevel::Warn,
            format!(
                "seed node {other} is a member of another cluster, which ran while this node, the first seed, formed this one alone: this cluster gives way — its {} member(s) are downed and join the other cluster when they start again",
                members.len()
            ),
        );
        self.silent_seeds.clear();
        self.next_probe = None;
        let why = format!("this cluster gives way to the one seed node {other} is in");
        let me = self.self_node.clone();
        for node in members.iter().filter(|n| **n != me) {
            self.mark_down(now, node, &why);
        }
        self.mark_down(now, &me, &why);
        // Told to every member directly: this node shuts down next, and a member that missed
        // the news would stay behind as a cluster of its own.
        for node in members.iter().filter(|n| **n != me) {
            self.send_gossip(node);
        }
    }

    pub(super) fn on_join(&mut self, now: Instant, joiner: Member) {
        if self.join != JoinState::Member
            || self
                .self_member()
                .is_none_or(|m| matches!(m.status, MemberStatus::Down | MemberStatus::Exiting))
        {
            return; // not a member that can take joiners; the joiner retries elsewhere
        }
        let node = joiner.node.clone();
        if node.address == self.self_node.address {
            return;
        }
        if self.gossip.tombstones().contains_key(&node) {
            // This incarnation was removed before it heard its welcome (lost, or sent into a
            // partition) and asks again, as it will for ever: quarantined, it learns that it
            // can never join and stops; started again it is a new incarnation, which may.
            self.stats.misaddressed += 1;
            self.log(
                LogLevel::Info,
                format!("{node} asks to join, but that incarnation was removed from the cluster: quarantining it so that it stops (a new incarnation may join)"),
            );
            self.out.push_back(ClusterOutput::Quarantine {
                node,
                reason: "it was removed from the cluster and asked to join again".into(),
            });
            return;
        }
        match self.gossip.member_at(&node.address).cloned() {
            Some(m) if m.node == node => self.welcome(&node),
            Some(old) => {
                if old.status != MemberStatus::Down {
                    self.log(
                        LogLevel::Info,
                        format!(
                            "a new incarnation of {} (uid {}) asks to join; the old incarnation (uid {}) is downed and removed first, then the join is accepted",
                            node.address, node.uid, old.node.uid
                        ),
                    );
                    self.mark_down(
                        now,
                        &old.node,
                        "replaced by a new incarnation at the same address",
                    );
                }
            }
            None => {
                let joiner = Member {
                    status: MemberStatus::Joining,
                    up_number: u64::MAX,
                    ..joiner
                };
                self.gossip.put_member(joiner);
                self.gossip.bump(&self.self_node);
                self.welcome(&node);
                self.changed(now);
            }
        }
    }

    pub(super) fn welcome(&mut self, node: &UniqueAddress) {
        let msg = ClusterMsg::Welcome {
            from: self.self_node.clone(),
            to: node.clone(),
            gossip: Box::new(self.gossip.clone()),
        };
        self.send(&node.address, msg);
    }

    pub(super) fn on_welcome(
        &mut self,
        now: Instant,
        from: UniqueAddress,
        to: UniqueAddress,
        gossip: Gossip,
    ) {
        let expected =
            matches!(&self.join, JoinState::Joining { contact, .. } if *contact == from.address);
        if !expected || to != self.self_node || gossip.member(&self.self_node).is_none() {
            self.stats.misaddressed += 1;
            return;
        }
        self.log(
            LogLevel::Info,
            format!("welcomed into the cluster by {from}"),
        );
        self.become_member(now, gossip);
    }
}
