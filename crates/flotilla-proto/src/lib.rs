//! Flotilla's protocols as pure state machines.
//!
//! Every machine here takes events and the current time as inputs and returns actions as data; a
//! thin driver elsewhere (tokio in `flotilla-actor` and `flotilla`, a seeded stepper in simulation)
//! does the I/O. Machines implement [`flotilla_core::StateMachine`] where they have timers, or
//! expose plain decision functions where they have none.
//!
//! # Layout
//! - [`supervision`]: the restart budget of a supervised actor — exponential backoff and "at most
//!   N restarts within a window".
//! - [`association`]: the lifecycle of the link to one remote address — Idle, Active, Gated,
//!   Quarantined — with per-incarnation quarantine.
//! - [`handshake`]: the first frames on every connection — mutual proof of the cluster secret
//!   over fresh nonces, then who is who — and what each side checks before it says anything.
//! - [`remoting`]: one node's remoting — associations, reliable system messages and quarantine
//!   notices composed — tested on a seeded simulated network.
//! - [`cluster`]: cluster membership — gossip, convergence and leader actions, heartbeats on a
//!   ring, the split-brain resolver — and a seeded whole-cluster simulator.
//! - [`failure_detector`]: the phi-accrual failure detector and a registry of detectors per
//!   remote.
//! - [`lease`]: the lease holder — acquire, renew within the TTL, release, lost — with fencing
//!   tokens and no zombie leases.
//! - [`system_messages`]: exactly-once, in-order delivery of system messages between two
//!   incarnations, with resend and the give-up rules that lead to quarantine.
//! - [`shutdown`]: coordinated shutdown — phases in a fixed order, each awaited up to its timeout.
//! - [`sim`]: the whole cluster — remoting, membership, split-brain resolver, singleton,
//!   sharding and leases — under one seeded simulator, with a fault-scenario generator and the
//!   invariants every run is checked against.
//! - [`sharding`]: entity → shard, the shard coordinator's state as a checked fold over events,
//!   and the least-shard allocation and rebalance strategy.
//!
//! # What this crate is not
//! It has no async code and depends on no runtime: no tokio, futures or mio (CI checks this with
//! `cargo tree`). It never reads a clock, never draws OS randomness and never iterates a
//! hash-ordered collection, so the same inputs always give the same outputs.

pub mod association;
pub mod cluster;
pub mod failure_detector;
pub mod handshake;
pub mod lease;
pub mod remoting;
pub mod sharding;
pub mod shutdown;
pub mod sim;
pub mod supervision;
pub mod system_messages;

#[cfg(test)]
pub(crate) mod testing {
    /// An arbitrary origin for virtual time in tests: machines only ever look at differences.
    #[allow(clippy::disallowed_methods)] // reason: the one sanctioned clock read, in tests only
    pub(crate) fn epoch() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// Cluster node `n` of a test cluster: `flotilla://c@127.0.0.1:<2550 + n>`, UID `100 + n`.
    pub(crate) fn node(n: u16) -> flotilla_core::UniqueAddress {
        flotilla_core::UniqueAddress {
            address: flotilla_core::Address::remote("c", "127.0.0.1", 2550 + n)
                .unwrap_or_else(|e| panic!("{e}")),
            uid: u64::from(n) + 100,
        }
    }

    /// Member `n` of a test cluster with `status` and `roles`; its up-number is `n` once Up.
    pub(crate) fn member(
        n: u16,
        status: crate::cluster::MemberStatus,
        roles: &[&str],
    ) -> crate::cluster::Member {
        use crate::cluster::MemberStatus::{Joining, WeaklyUp};
        crate::cluster::Member {
            status,
            up_number: if matches!(status, Joining | WeaklyUp) {
                u64::MAX
            } else {
                u64::from(n)
            },
            ..crate::cluster::Member::joining(
                node(n),
                roles.iter().map(|r| (*r).to_owned()).collect(),
                "1",
            )
        }
    }
}
