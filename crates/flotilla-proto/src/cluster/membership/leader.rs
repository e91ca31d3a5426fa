//! The leader's actions, failure detection, and downing by the split-brain resolver.

use std::collections::BTreeSet;
use std::time::Instant;

use flotilla_core::UniqueAddress;

use super::{JoinState, LeaseStep, Membership};
use crate::cluster::heartbeat::Verdict;
use crate::cluster::member::{Member, MemberStatus};
use crate::cluster::protocol::{ClusterMsg, ClusterOutput, LogLevel};
use crate::cluster::reachability::ReachabilityStatus;
use crate::cluster::sbr::{self, Outcome, View};

impl Membership {
    pub(super) fn is_leader(&self) -> bool {
        self.join == JoinState::Member
            && self.gossip.leader(&self.self_node) == Some(&self.self_node)
    }

    pub(super) fn leader_actions(&mut self, now: Instant) {
        if !self.is_leader() {
            return;
        }
        if self.gossip.converged(&self.self_node) {
            self.leader_actions_on_convergence(now);
        } else if !self.settings.allow_weakly_up_members.is_zero()
            && self.gossip.converged_except_unreachable()
        {
            let ready: Vec<UniqueAddress> = self
                .gossip
                .members()
                .filter(|m| m.status == MemberStatus::Joining)
                .filter(|m| {
                    self.joining_since
                        .get(&m.node)
                        .is_some_and(|t| *t + self.settings.allow_weakly_up_members <= now)
                })
                .map(|m| m.node.clone())
                .collect();
            if !ready.is_empty() {
                for n in &ready {
                    let _ = self.gossip.set_status(n, MemberStatus::WeaklyUp);
                }
                self.log(
                    LogLevel::Info,
                    format!(
                        "leader moves {} joining member(s) to WeaklyUp: the cluster has not converged for {:?} (a member is unreachable)",
                        ready.len(),
                        self.settings.allow_weakly_up_members
                    ),
                );
                self.gossip.bump(&self.self_node);
                self.changed(now);
            }
        }
    }

    pub(super) fn leader_actions_on_convergence(&mut self, now: Instant) {
        let members: Vec<Member> = self.gossip.members().cloned().collect();
        let to_remove: Vec<Member> = members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Exiting | MemberStatus::Down))
            .cloned()
            .collect();
        let enough = members.len() >= self.settings.min_nr_of_members;
        let mut next_up = members
            .iter()
            .filter(|m| m.up_number != u64::MAX)
            .map(|m| m.up_number)
            .max()
            .unwrap_or(0);
        let mut changed = false;
        for m in &members {
            let to = match m.status {
                MemberStatus::Joining | MemberStatus::WeaklyUp if enough => MemberStatus::Up,
                MemberStatus::Leaving => MemberStatus::Exiting,
                _ => continue,
            };
            let moved = if to == MemberStatus::Up {
                next_up += 1;
                m.become_up(next_up)
            } else {
                m.become_(to)
            };
            if let Ok(moved) = moved {
                self.gossip.put_member(moved);
                changed = true;
            }
        }
        for m in &to_remove {
            self.gossip.remove_member(&m.node, 0);
            changed = true;
        }
        if changed {
            self.gossip.bump(&self.self_node);
            self.changed(now);
            for m in to_remove
                .iter()
                .filter(|m| m.status == MemberStatus::Exiting)
            {
                // The exiting member learns it was removed, so its shutdown can finish.
                self.send_gossip(&m.node);
            }
        }
    }

    // ---- failure detection and downing -----------------------------------------------------

    pub(super) fn heartbeat_tick(&mut self, now: Instant) {
        let seq = self.heartbeats.next_seq();
        let targets: Vec<UniqueAddress> = self.heartbeats.monitored().cloned().collect();
        for to in targets {
            let msg = ClusterMsg::Heartbeat {
                from: self.self_node.clone(),
                to: to.clone(),
                seq,
            };
            self.send(&to.address, msg);
        }
        let me = self.self_node.clone();
        let marked: BTreeSet<UniqueAddress> = self
            .heartbeats
            .monitored()
            .filter(|n| {
                self.gossip.reachability().observed(&me, n) == ReachabilityStatus::Unreachable
            })
            .cloned()
            .collect();
        let verdicts = self.heartbeats.verdicts(&marked, now);
        if verdicts.is_empty() {
            return;
        }
        for v in &verdicts {
            match v {
                Verdict::Unreachable(n) => {
                    self.gossip.reachability_mut().unreachable(&me, n);
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "marking {n} unreachable: no heartbeat reply within the failure detector's limits (threshold {}, acceptable pause {:?})",
                            self.settings.failure_detector.threshold,
                            self.settings.failure_detector.acceptable_heartbeat_pause
                        ),
                    );
                }
                Verdict::Reachable(n) => {
                    self.gossip.reachability_mut().reachable(&me, n);
                    self.log(
                        LogLevel::Info,
                        format!("marking {n} reachable again: heartbeats are answered"),
                    );
                }
            }
        }
        self.gossip.bump(&self.self_node);
        self.changed(now);
    }

    pub(super) fn mark_down(&mut self, now: Instant, node: &UniqueAddress, why: &str) {
        let Some(m) = self.gossip.member(node) else {
            return;
        };
        if matches!(m.status, MemberStatus::Down | MemberStatus::Removed) {
            return;
        }
        if self.gossip.set_status(node, MemberStatus::Down).is_ok() {
            if *node == self.self_node {
                self.down_reason = Some(why.to_owned());
            }
            self.log(LogLevel::Warn, format!("marking {node} down: {why}"));
            self.gossip.bump(&self.self_node);
            self.changed(now);
        }
    }

    pub(super) fn resolver(&mut self, now: Instant) {
        if !self.is_leader() {
            return;
        }
        let sbr = self.settings.split_brain_resolver.clone();
        let view = View::of(&self.gossip, &self.self_node);
        if view.unreachable.is_empty() {
            return;
        }
        // Both sides of a partition count the same members: the unreachable ones stay members
        // until they are downed.
        let members = view.members.len();
        let outcome = if self
            .stability
            .down_all_at(&sbr, members)
            .is_some_and(|t| t <= now)
        {
            Outcome::Decide(sbr::Decision::down_all(
                &view,
                format!(
                    "down-all-when-unstable: the view kept changing for {:?} after stable-after",
                    sbr.down_all_after(members).unwrap_or_default()
                ),
            ))
        } else if self
            .stability
            .stable_at(sbr.stable_after_for(members))
            .is_some_and(|t| t <= now)
        {
            match self.lease {
                LeaseStep::Idle | LeaseStep::Held(_) => sbr::decide(&sbr, &view, None),
                LeaseStep::Waiting(_) | LeaseStep::Asked => return,
            }
        } else {
            return;
        };
        match outcome {
            Outcome::AcquireLease { delay } => {
                self.log(
                    LogLevel::Info,
                    format!("split-brain resolver (lease-majority) will try the lease in {delay:?}; view: {view}"),
                );
                self.lease = LeaseStep::Waiting(now + delay);
                self.lease_step(now);
            }
            Outcome::Decide(d) => self.act(now, &view, &d),
        }
    }

    pub(super) fn lease_step(&mut self, now: Instant) {
        match self.lease {
            LeaseStep::Waiting(at) if at <= now => {
                self.lease = LeaseStep::Asked;
                self.out.push_back(ClusterOutput::AcquireLease);
            }
            LeaseStep::Held(at) if at <= now => {
                self.lease = LeaseStep::Idle;
                self.out.push_back(ClusterOutput::ReleaseLease);
            }
            _ => {}
        }
    }

    pub(super) fn on_lease(&mut self, now: Instant, acquired: bool) {
        if self.lease != LeaseStep::Asked {
            return;
        }
        self.lease = if acquired {
            LeaseStep::Held(
                now + self
                    .settings
                    .split_brain_resolver
                    .lease_majority
                    .release_after,
            )
        } else {
            LeaseStep::Idle
        };
        let view = View::of(&self.gossip, &self.self_node);
        if view.unreachable.is_empty() {
            return;
        }
        if let Outcome::Decide(d) =
            sbr::decide(&self.settings.split_brain_resolver, &view, Some(acquired))
        {
            self.act(now, &view, &d);
        }
    }

    pub(super) fn act(&mut self, now: Instant, view: &View, d: &sbr::Decision) {
        self.log(
            LogLevel::Warn,
            format!(
                "split-brain resolver ({}) decided {:?}: downing [{}]. Reason: {}. View: {view}",
                self.settings.split_brain_resolver.active_strategy,
                d.kind,
                d.down
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                d.reason
            ),
        );
        let why = format!("split-brain resolver decided {:?}", d.kind);
        let mut downs: Vec<UniqueAddress> = d
            .down
            .iter()
            .filter(|n| **n != self.self_node)
            .cloned()
            .collect();
        if d.down.contains(&self.self_node) {
            downs.push(self.self_node.clone()); // last, so the log reads in order
        }
        for n in &downs {
            self.mark_down(now, n, &why);
        }
        self.stability.decided(now);
        if d.down.contains(&self.self_node) {
            // This node goes down with its side and stops in a moment: the members it downed
            // beside it hear of it now rather than at gossip rounds this node may not live to
            // run — they must stop too, and they are the ones the other side waits for.
            let me = self.self_node.clone();
            let beside: Vec<UniqueAddress> = downs
                .iter()
                .filter(|n| **n != me && !view.unreachable.contains(*n))
                .cloned()
                .collect();
            for n in &beside {
                self.send_gossip(n);
            }
        }
    }
}
