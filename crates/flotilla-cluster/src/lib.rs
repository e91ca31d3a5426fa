//! Flotilla cluster membership outside the pure machine.
//!
//! # Layout
//! - [`codec`]: membership messages to bytes and back, validated.
//!
//! # What this crate is not
//! It makes no membership decision: joining, gossip, leader actions and downing are the pure
//! [`flotilla_proto::cluster::Membership`] machine's. This crate only carries its messages.

pub mod codec;

pub use codec::{CodecError, decode, encode};
