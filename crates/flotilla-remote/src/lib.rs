//! Flotilla remoting on tokio.
//!
//! This crate moves bytes; the decisions — association lifecycle, reliable system messages,
//! quarantine, remote deathwatch — are made by the pure machine
//! [`flotilla_proto::remoting::Remoting`]. See `docs/design/remoting.md`.
//!
//! - [`handshake`]: the first exchange on every connection, checked field by field; a refusal
//!   says exactly what was wrong, on both sides.
//! - [`io`]: reading frames from a stream, and writing them in batches, control lane first.
//! - [`tls`]: mutual TLS from PEM files, reloaded when they change.
//! - [`node`]: [`RemoteNode`] — the listener, the connections and the driver of the machine, on
//!   remoting's own runtime threads.

pub mod convert;
pub mod handshake;
pub mod io;
pub mod node;
pub mod testing;
pub mod tls;

pub use node::{Inbound, RemoteNode, SendError, StartError, SystemPayload};
