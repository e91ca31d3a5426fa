//! The handshake's driver: reads and writes the four frames of
//! [`flotilla_proto::handshake`] on one connection, draws the nonces, and supplies the checks
//! only the transport can make.
//!
//! Until the peer is authenticated a connection reads at most [`MAX_HANDSHAKE_FRAME`] bytes per
//! frame into a buffer of that size; the connection's real frame limit applies from the first
//! frame after the handshake. Both sides log the same reason for a refusal, so an operator
//! reading either log learns what was wrong. Garbage bytes are refused as "not a Flotilla
//! handshake"; nothing panics.

use std::time::Duration;

use flotilla_core::{Address, UniqueAddress};
pub use flotilla_proto::handshake::Opening;
use flotilla_proto::handshake::{Accepting, Connecting, Failure, Secrets};
use flotilla_wire::pdu::{self, HandshakeRefusal};
use flotilla_wire::{Challenge, FrameDecoder, Kind, MAX_HANDSHAKE_FRAME};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::convert::{from_wire_unique, to_wire, to_wire_unique};
use crate::io::{ReadError, fill_up_to};

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer refused this node, and said why.
    #[error("the peer refused the handshake: {0}")]
    RefusedByPeer(HandshakeRefusal),
    /// This node refused the peer.
    #[error("refused the peer's handshake: {0}")]
    Refused(HandshakeRefusal),
    /// The connection failed or closed, or the peer broke the framing.
    #[error("{0}")]
    Read(#[from] ReadError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// A frame could not be encoded.
    #[error("{0}")]
    Protocol(String),
    /// No handshake within the timeout.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    /// One of the addresses cannot go on the wire.
    #[error("{0}")]
    Address(String),
}

impl From<Failure> for HandshakeError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::RefusedByPeer(why) => Self::RefusedByPeer(why),
            Failure::Refused(why) => Self::Refused(why),
            other => Self::Protocol(other.to_string()),
        }
    }
}

async fn send<W: AsyncWrite + Unpin, T: serde::Serialize>(
    stream: &mut W,
    kind: Kind,
    pdu: &T,
) -> Result<(), HandshakeError> {
    let mut out = Vec::new();
    pdu::encode(kind, pdu, MAX_HANDSHAKE_FRAME, &mut out)
        .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(HandshakeError::Write)?;
    stream.flush().await.map_err(HandshakeError::Write)
}

/// Reads one handshake frame, buffering no more than one handshake frame's worth.
async fn read<R: AsyncRead + Unpin>(
    stream: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<flotilla_wire::Frame, ReadError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        let room = MAX_HANDSHAKE_FRAME + 5 - decoder.buffered().min(MAX_HANDSHAKE_FRAME);
        fill_up_to(stream, decoder, room).await?;
    }
}

/// A decoder for a new connection: handshake-sized until [`raise`] is called.
pub fn decoder() -> FrameDecoder {
    FrameDecoder::new(MAX_HANDSHAKE_FRAME)
}

/// After the handshake: the connection's real frame limit.
pub fn raise(decoder: &mut FrameDecoder, max_frame: usize) {
    decoder.set_max(max_frame);
}

/// Connecting side: runs the handshake for connection `opening` of a link to `target`, proving
/// `secrets` if set. Returns who answered.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    local: &UniqueAddress,
    target: &Address,
    secrets: Option<Secrets>,
    opening: Opening,
) -> Result<UniqueAddress, HandshakeError> {
    let from = to_wire_unique(local)
        .ok_or_else(|| HandshakeError::Address(format!("{local} has no host and port")))?;
    let to = to_wire(target)
        .ok_or_else(|| HandshakeError::Address(format!("{target} has no host and port")))?;
    let (connecting, hello) = Connecting::new(from, to, opening, rand::random(), secrets);
    send(stream, Kind::Handshake, &hello).await?;
    let frame = read(stream, decoder).await?;
    let (claiming, claim) = connecting.on_challenge(frame.kind, &frame.body)?;
    send(stream, Kind::Handshake, &claim).await?;
    let frame = read(stream, decoder).await?;
    let peer = claiming.on_reply(frame.kind, &frame.body)?;
    from_wire_unique(&peer).map_err(|e| HandshakeError::Refused(HandshakeRefusal::Protocol(e.0)))
}

/// Accepting side: runs the handshake as `local`, requiring proof of `secrets` if set; once the
/// peer has proved it and claims to reach this node, `admit` decides whether it may be who it
/// claims. Returns who connected and which connection it opened.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    local: &UniqueAddress,
    secrets: Option<Secrets>,
    admit: impl FnOnce(&UniqueAddress) -> Result<(), HandshakeRefusal>,
) -> Result<(UniqueAddress, Opening), HandshakeError> {
    let local_wire = to_wire_unique(local)
        .ok_or_else(|| HandshakeError::Address(format!("{local} has no host and port")))?;
    let accepting = Accepting::new(local_wire, rand::random(), secrets);
    let (answer, challenged) = match read(stream, decoder).await {
        Ok(frame) => accepting.on_hello(frame.kind, &frame.body),
        // Garbage that breaks the framing: not a Flotilla peer.
        Err(ReadError::Frame(_)) => {
            let why = HandshakeRefusal::BadMagic(pdu::first_four(decoder.pending()));
            (Challenge::Refused(why.clone()), Err(why))
        }
        Err(e) => return Err(e.into()),
    };
    // Best effort for a refusal: the peer is told why before the connection closes.
    let sent = send(stream, Kind::HandshakeReply, &answer).await;
    let challenged = challenged.map_err(HandshakeError::Refused)?;
    sent?;
    let frame = read(stream, decoder).await?;
    let (reply, accepted) = challenged.on_claim(frame.kind, &frame.body, |claimed| {
        let who = from_wire_unique(claimed).map_err(|e| HandshakeRefusal::Protocol(e.0))?;
        admit(&who)
    });
    let sent = send(stream, Kind::HandshakeReply, &reply).await;
    let (peer, opening) = accepted.map_err(HandshakeError::Refused)?;
    sent?;
    let peer = from_wire_unique(&peer)
        .map_err(|e| HandshakeError::Refused(HandshakeRefusal::Protocol(e.0)))?;
    Ok((peer, opening))
}
