//! Flotilla remoting on tokio.
//!
//! This crate moves bytes; the decisions — association lifecycle, reliable system messages,
//! quarantine, remote deathwatch — are made by the pure machine
//! [`flotilla_proto::remoting::Remoting`]. See `docs/design/remoting.md`.
//!
//! - [`handshake`]: the first exchange on every connection, checked field by field; a refusal
//!   says exactly what was wrong, on both sides.
//! - [`io`]: reading frames from a stream, and writing a lane's frames in batches.
//! - [`inbound`]: the channel of what arrives for the local runtime, handed over in batches.
//! - [`faults`]: fault injection on the real transport (blackhole, delay, disconnect, abort).
//! - [`tls`]: mutual TLS from PEM files, reloaded when they change.
//! - [`node`]: [`RemoteNode`] — the listener, the links and the driver of the machine, on
//!   remoting's own runtime threads. Each link to another node is two TCP connections, control
//!   and ordinary (`link.rs`), so user traffic never delays a heartbeat.

mod accept;
mod cluster_channel;
pub mod convert;
pub mod credentials;
mod driver;
pub mod faults;
pub mod handshake;
pub mod inbound;
pub mod io;
mod link;
pub mod node;
mod paths;
mod queue;
pub mod testing;
pub mod tls;

pub use faults::{Direction, FaultInjector};
pub use inbound::InboundReceiver;
pub use node::{
    ClusterInbound, ClusterInboundReceiver, Inbound, Outbound, RemoteNode, SendError, StartError,
    StartOptions, SystemPayload, undecodable_dropped,
};
