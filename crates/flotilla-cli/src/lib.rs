//! The `flotilla` command's library: what its subcommands run, for its tests and benchmarks.
//! Applications depend on the `flotilla` crate instead.
//!
//! - [`node`]: one cluster node as a process, behind `flotilla node`.
//! - [`demo`]: the failover demo behind `flotilla demo`: three nodes, sharded counters with
//!   leases, a graceful shutdown and a crash, a timeline and checks.
//! - [`pipeline`]: a supervised local-actor pipeline behind `flotilla pipeline`.
//! - [`leases`]: listing leases, behind `flotilla leases`; [`ops`]: the operator commands
//!   against a node's management endpoint.
//! - [`ledger`]: a durable sharded entity (records in etcd, written under the shard's fencing
//!   token); [`chaos`]: the real-process chaos harness behind `flotilla chaos`.
//! - [`certs`]: a cluster's credentials (CA, host certificates, secret), behind `flotilla certs`.
//! - [`panics`]: every panic logged as an error.

pub mod certs;
pub mod chaos;
pub mod demo;
pub mod leases;
pub mod ledger;
pub mod node;
pub mod ops;
pub mod panics;
pub mod pipeline;

/// An error for an operator: its text, then each cause that says something the text above it
/// does not already say (many errors quote their cause), without a backtrace.
///
/// ```
/// let e = anyhow::anyhow!("no such file").context("cannot read node.toml");
/// assert_eq!(flotilla_cli::report(&e), "cannot read node.toml\n  because: no such file");
/// ```
pub fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str("\n  because: ");
            out.push_str(&text);
        }
    }
    out
}
