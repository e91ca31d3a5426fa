//! The handshake: the first frame each way on every connection.
//!
//! The connecting side sends [`Handshake`] (magic, wire version, its unique address, the address
//! it means to reach, an optional secret proof, and which connection of which link this is); the
//! accepting side checks it field by field and
//! answers [`HandshakeReply::Accepted`] with its own unique address, or
//! [`HandshakeReply::Refused`] with the reason — then closes. Both sides log the same reason, so
//! an operator reading either log learns what was wrong. Garbage bytes are refused as "not a
//! Flotilla handshake"; nothing panics.

use std::time::Duration;

use flotilla_core::{Address, UniqueAddress};
use flotilla_wire::pdu::{self, HandshakeRefusal, HandshakeReply, first_four};
use flotilla_wire::{FrameDecoder, Handshake, Kind, Lane};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::convert::{from_wire_unique, to_wire, to_wire_unique};
use crate::io::{ReadError, read_frame};

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
    /// A first frame of the wrong kind, or an undecodable one.
    #[error("{0}")]
    Protocol(String),
    /// No handshake within the timeout.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    /// One of the addresses cannot go on the wire.
    #[error("{0}")]
    Address(String),
}

async fn send<W: AsyncWrite + Unpin, T: serde::Serialize>(
    stream: &mut W,
    kind: Kind,
    pdu: &T,
    max_frame: usize,
) -> Result<(), HandshakeError> {
    let mut out = Vec::new();
    pdu::encode(kind, pdu, max_frame, &mut out)
        .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(HandshakeError::Write)?;
    stream.flush().await.map_err(HandshakeError::Write)
}

/// The proof that the connecting side knows the cluster secret: HMAC-SHA256 under the secret
/// over the wire version, the connecting incarnation and the target address. It keeps nodes of
/// other clusters out; it is no protection against someone who can read the traffic (use TLS).
fn proof(secret: &[u8], from: &UniqueAddress, to: &Address) -> Hmac<Sha256> {
    #[allow(clippy::expect_used)] // reason: HMAC accepts keys of any length; this cannot fail
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"flotilla-handshake-v1\0");
    mac.update(from.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(format!("{}@{}", to.system(), to.port().unwrap_or(0)).as_bytes());
    mac
}

/// What the connecting side says about the connection it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    /// Which of the link's connections this is.
    pub lane: Lane,
    /// The link, drawn by the connecting side.
    pub link: u64,
}

/// Connecting side: sends our handshake for connection `opening` (with the secret's proof, if a
/// secret is set) and waits for the answer. Returns who answered.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    local: &UniqueAddress,
    target: &Address,
    secret: Option<&[u8]>,
    opening: Opening,
    max_frame: usize,
) -> Result<UniqueAddress, HandshakeError> {
    let from = to_wire_unique(local)
        .ok_or_else(|| HandshakeError::Address(format!("{local} has no host and port")))?;
    let to = to_wire(target)
        .ok_or_else(|| HandshakeError::Address(format!("{target} has no host and port")))?;
    send(
        stream,
        Kind::Handshake,
        &Handshake::new(
            from,
            to,
            secret.map(|s| proof(s, local, target).finalize().into_bytes().to_vec()),
            opening.lane,
            opening.link,
        ),
        max_frame,
    )
    .await?;
    let frame = read_frame(stream, decoder).await?;
    if frame.kind != Kind::HandshakeReply {
        return Err(HandshakeError::Protocol(format!(
            "expected a handshake reply, got a {:?} frame",
            frame.kind
        )));
    }
    let reply: HandshakeReply = pdu::decode(frame.kind, &frame.body)
        .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    match reply {
        HandshakeReply::Accepted { from } => {
            let peer =
                from_wire_unique(&from).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
            if peer.address.system() != target.system() || peer.address.port() != target.port() {
                return Err(HandshakeError::Protocol(format!(
                    "meant to reach {target}, but {peer} answered"
                )));
            }
            Ok(peer)
        }
        HandshakeReply::Refused(why) => Err(HandshakeError::RefusedByPeer(why)),
    }
}

/// Accepting side: reads the peer's handshake, checks it against this node (`local`), the
/// cluster secret (compared in constant time) and `is_quarantined`, answers, and returns who
/// connected and which connection it opened.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    local: &UniqueAddress,
    secret: Option<&[u8]>,
    is_quarantined: impl Fn(&UniqueAddress) -> bool,
    max_frame: usize,
) -> Result<(UniqueAddress, Opening), HandshakeError> {
    let local_wire = to_wire_unique(local)
        .ok_or_else(|| HandshakeError::Address(format!("{local} has no host and port")))?;
    let refuse = |why: HandshakeRefusal| HandshakeError::Refused(why);
    let first = match read_frame(stream, decoder).await {
        Ok(frame) => Ok(frame),
        // Garbage that breaks the framing: not a Flotilla peer.
        Err(ReadError::Frame(_)) => Err(HandshakeRefusal::BadMagic(first_four(decoder.pending()))),
        Err(e) => return Err(e.into()),
    };
    let checked = first.and_then(|frame| {
        if frame.kind != Kind::Handshake {
            return Err(HandshakeRefusal::BadMagic([frame.kind as u8, 0, 0, 0]));
        }
        let hs = pdu::decode_handshake(&frame.body, &local_wire.address)?;
        let peer = from_wire_unique(&hs.from).map_err(|_| HandshakeRefusal::BadMagic(hs.magic))?;
        match (secret, &hs.secret_proof) {
            (None, None) => {}
            (Some(secret), Some(given)) => proof(secret, &peer, &local.address)
                .verify_slice(given)
                .map_err(|_| HandshakeRefusal::WrongSecret)?,
            _ => return Err(HandshakeRefusal::WrongSecret),
        }
        if is_quarantined(&peer) {
            return Err(HandshakeRefusal::Quarantined { uid: peer.uid });
        }
        Ok((
            peer,
            Opening {
                lane: hs.lane,
                link: hs.link,
            },
        ))
    });
    match checked {
        Ok(accepted) => {
            let reply = HandshakeReply::Accepted { from: local_wire };
            send(stream, Kind::HandshakeReply, &reply, max_frame).await?;
            Ok(accepted)
        }
        Err(why) => {
            // Best effort: tell the peer why before closing.
            let _ = send(
                stream,
                Kind::HandshakeReply,
                &HandshakeReply::Refused(why.clone()),
                max_frame,
            )
            .await;
            Err(refuse(why))
        }
    }
}
