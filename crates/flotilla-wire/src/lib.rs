//! Flotilla's wire format, version 4: frames ([`frame`]), the handshake ([`handshake`]), the
//! protocol data units of remoting ([`pdu`]), and cluster membership messages ([`cluster`]). See `docs/design/remoting.md` for the
//! whole protocol.
//!
//! # What this crate is not
//! No I/O and no runtime: it turns bytes into values and back, so it can be fuzzed and reused by
//! the transport, the simulator and tools alike. Decoding never panics and never allocates more
//! than the configured maximum frame size for one frame.

pub mod cluster;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod pdu;

pub use cluster::{
    ClusterPdu, WireGossip, WireMember, WireObserver, decode_cluster, encode_cluster,
};
pub use frame::{Frame, FrameDecoder, FrameError};
pub use handshake::{Challenge, Claim, Hello, MAX_HANDSHAKE_FRAME, Nonce, Proof, Step};
pub use pdu::{
    HandshakeHead, HandshakeRefusal, HandshakeReply, Heartbeat, HeartbeatReply, Lane,
    QuarantineNotice, SystemAck, SystemEnvelope, UserBatch, UserBatchChecked, UserBatchIter,
    UserEnvelope, UserEnvelopeRef, WireAddress, WireError, WireUniqueAddress,
};

/// What a frame's body is. The byte values are part of the wire format: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`Hello`], then [`Claim`]: the connecting side's handshake frames.
    Handshake = 0x01,
    /// [`Challenge`], then [`HandshakeReply`]: the accepting side's handshake frames.
    HandshakeReply = 0x02,
    /// [`Heartbeat`] of remote deathwatch.
    Heartbeat = 0x03,
    /// [`HeartbeatReply`].
    HeartbeatReply = 0x04,
    /// [`SystemEnvelope`]: a reliably delivered system message.
    System = 0x05,
    /// [`SystemAck`]: cumulative acknowledgement of system messages.
    SystemAck = 0x06,
    /// [`QuarantineNotice`]: "I have quarantined you".
    QuarantineNotice = 0x07,
    /// A cluster membership message: a [`ClusterPdu`] (see [`cluster`]), at most once.
    Cluster = 0x08,
    /// [`UserEnvelope`]: an ordinary message, at most once.
    User = 0x10,
}

impl Kind {
    /// The kind for a byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Handshake,
            0x02 => Self::HandshakeReply,
            0x03 => Self::Heartbeat,
            0x04 => Self::HeartbeatReply,
            0x05 => Self::System,
            0x06 => Self::SystemAck,
            0x07 => Self::QuarantineNotice,
            0x08 => Self::Cluster,
            0x10 => Self::User,
            _ => return None,
        })
    }

    /// Whether frames of this kind travel on the control lane (never behind user traffic).
    pub fn is_control(self) -> bool {
        self != Self::User
    }
}
