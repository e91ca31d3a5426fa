//! The protocol data units, encoded with postcard (compact, varint integers, no field names).
//!
//! Every struct here is part of wire format version [`VERSION`]: a change that older nodes
//! cannot read needs a new version number, and the handshake ([`crate::handshake`]) refuses
//! peers of another version with a message that names both.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Kind;
use crate::frame::{self, FrameError};

/// The first four bytes of every handshake body.
pub const MAGIC: [u8; 4] = *b"FLTL";

/// The wire format version this crate speaks.
pub const VERSION: u16 = 4;

pub use crate::handshake::{
    Challenge, Claim, HandshakeHead, HandshakeRefusal, HandshakeReply, Hello, Lane, first_four,
};

/// Why bytes could not be turned into a PDU, or a PDU into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body is not a valid PDU of the frame's kind.
    #[error("undecodable {kind:?} frame: {reason}")]
    Undecodable {
        /// The frame's kind.
        kind: Kind,
        /// What the decoder said.
        reason: String,
    },
    /// The frame could not be built.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The PDU could not be encoded.
    #[error("cannot encode a {kind:?} frame: {reason}")]
    Encode {
        /// The frame's kind.
        kind: Kind,
        /// What the encoder said.
        reason: String,
    },
}

/// Appends `pdu` as one frame of `kind` to `out`, serializing straight into `out` (no
/// intermediate buffer). On an error `out` is left as it was.
pub fn encode<T: Serialize>(
    kind: Kind,
    pdu: &T,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; frame::HEADER_LEN - 1]);
    out.push(kind as u8);
    if let Err(e) = postcard::to_extend(pdu, Append(out)) {
        out.truncate(start);
        return Err(WireError::Encode {
            kind,
            reason: e.to_string(),
        });
    }
    // The length counts the kind byte and the body.
    let len = out.len() - start - (frame::HEADER_LEN - 1);
    let Some(prefix) = u32::try_from(len).ok().filter(|_| len <= max_frame) else {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        }
        .into());
    };
    out[start..start + frame::HEADER_LEN - 1].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Lets postcard append to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Decodes the body of a frame of `kind`.
pub fn decode<T: DeserializeOwned>(kind: Kind, body: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(|e| WireError::Undecodable {
        kind,
        reason: e.to_string(),
    })
}

/// A node's address on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireAddress {
    /// The actor system's name.
    pub system: String,
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A node's address and incarnation UID on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireUniqueAddress {
    /// Where.
    pub address: WireAddress,
    /// Which incarnation.
    pub uid: u64,
}

/// A heartbeat of remote deathwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's UID.
    pub from_uid: u64,
    /// A counter, echoed in the reply.
    pub seq: u64,
}

/// The answer to a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The replier's UID.
    pub from_uid: u64,
    /// The heartbeat's counter.
    pub seq: u64,
}

/// A reliably delivered system message between two incarnations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemEnvelope {
    /// The sender's UID.
    pub from_uid: u64,
    /// The recipient's UID: a message for another incarnation is dropped.
    pub to_uid: u64,
    /// The sequence number (1, 2, …) for this pair of incarnations.
    pub seq: u64,
    /// The serializer manifest of `payload`.
    pub manifest: String,
    /// The serialized message (postcard writes it as its length and the raw bytes).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Cumulative acknowledgement of system messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemAck {
    /// The acknowledging incarnation.
    pub from_uid: u64,
    /// Everything up to and including this sequence number arrived.
    pub upto: u64,
}

/// "I have quarantined you": the receiver publishes it and tells its operator to restart it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineNotice {
    /// The quarantining node.
    pub from: WireUniqueAddress,
    /// The quarantined incarnation.
    pub to_uid: u64,
    /// Why, in words.
    pub reason: String,
}

/// An ordinary message, delivered at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnvelope {
    /// The recipient's actor path.
    pub recipient: String,
    /// The sender's actor path, if there is one to reply to.
    pub sender: Option<String>,
    /// The serializer manifest of `payload`.
    pub manifest: String,
    /// The serialized message (postcard writes it as its length and the raw bytes).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl UserEnvelope {
    /// The envelope borrowed: what [`UserEnvelopeRef`]-taking senders want.
    pub fn borrowed(&self) -> UserEnvelopeRef<'_> {
        UserEnvelopeRef {
            recipient: &self.recipient,
            sender: self.sender.as_deref(),
            manifest: &self.manifest,
            payload: &self.payload,
        }
    }
}

/// A [`UserEnvelope`] whose fields borrow: the same bytes on the wire, encoded from borrowed
/// strings and decoded in place from a frame's body, with no allocation either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnvelopeRef<'a> {
    /// The recipient's actor path.
    pub recipient: &'a str,
    /// The sender's actor path, if there is one to reply to.
    pub sender: Option<&'a str>,
    /// The serializer manifest of `payload`.
    pub manifest: &'a str,
    /// The serialized message.
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
}

impl UserEnvelopeRef<'_> {
    /// An owned copy.
    pub fn to_envelope(self) -> UserEnvelope {
        UserEnvelope {
            recipient: self.recipient.to_owned(),
            sender: self.sender.map(str::to_owned),
            manifest: self.manifest.to_owned(),
            payload: self.payload.to_vec(),
        }
    }

    /// Decodes the body of a [`Kind::User`] frame in place.
    pub fn decode(body: &[u8]) -> Result<UserEnvelopeRef<'_>, WireError> {
        postcard::from_bytes(body).map_err(|e| WireError::Undecodable {
            kind: Kind::User,
            reason: e.to_string(),
        })
    }
}

/// User messages from one node, in the order they arrived, held as their encoded bodies in one
/// buffer: a reader hands over everything one read brought as one batch, and the receiver
/// decodes each envelope in place ([`UserBatch::iter`]). A body admitted with
/// [`UserBatch::push_body`] is known to decode; one admitted with [`UserBatch::push_raw`] is
/// decoded only by the receiver, once, which then learns of one that does not
/// ([`UserBatch::iter_checked`]).
#[derive(Debug, Clone, Default)]
pub struct UserBatch {
    /// `u32` little-endian body length, then the body; repeated.
    bytes: Vec<u8>,
    /// Where the messages not yet split off begin.
    start: usize,
    count: usize,
}

impl PartialEq for UserBatch {
    fn eq(&self, other: &Self) -> bool {
        self.bytes[self.start..] == other.bytes[other.start..]
    }
}

impl Eq for UserBatch {}

impl UserBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits the body of a [`Kind::User`] frame if it decodes; on an error the batch is
    /// unchanged.
    pub fn push_body(&mut self, body: &[u8]) -> Result<(), WireError> {
        UserEnvelopeRef::decode(body)?;
        self.push_raw(body)
    }

    /// Admits the body of a [`Kind::User`] frame without decoding it: the receiver decodes it
    /// (once, where [`UserBatch::push_body`] decodes it twice), and [`UserBatch::iter_checked`]
    /// reports it if it does not decode.
    pub fn push_raw(&mut self, body: &[u8]) -> Result<(), WireError> {
        let Ok(len) = u32::try_from(body.len()) else {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max: u32::MAX as usize,
            }
            .into());
        };
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(body);
        self.count += 1;
        Ok(())
    }

    /// Appends an envelope.
    pub fn push(&mut self, envelope: &UserEnvelopeRef<'_>) -> Result<(), WireError> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        if let Err(e) = postcard::to_extend(envelope, Append(&mut self.bytes)) {
            self.bytes.truncate(start);
            return Err(WireError::Encode {
                kind: Kind::User,
                reason: e.to_string(),
            });
        }
        let len = self.bytes.len() - start - 4;
        let Ok(prefix) = u32::try_from(len) else {
            self.bytes.truncate(start);
            return Err(FrameError::TooLarge {
                len,
                max: u32::MAX as usize,
            }
            .into());
        };
        self.bytes[start..start + 4].copy_from_slice(&prefix.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// How many messages the batch holds (counting any admitted raw that will not decode).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.start = 0;
        self.count = 0;
    }

    /// Every message that decodes, in order, decoded in place.
    pub fn iter(&self) -> UserBatchIter<'_> {
        UserBatchIter {
            checked: self.iter_checked(),
        }
    }

    /// Every message, in order, decoded in place, or why it does not decode (only a body
    /// admitted with [`UserBatch::push_raw`] can fail).
    pub fn iter_checked(&self) -> UserBatchChecked<'_> {
        UserBatchChecked {
            rest: &self.bytes[self.start..],
        }
    }

    /// The first message that decodes.
    pub fn first(&self) -> Option<UserEnvelopeRef<'_>> {
        self.iter().next()
    }

    /// Takes the first message off as a batch of its own (for a receiver that wants one
    /// message at a time); the rest stay, without being copied.
    pub fn split_first(&mut self) -> Option<Self> {
        let rest = &self.bytes[self.start..];
        let (prefix, _) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*prefix)).ok()?;
        let one = rest.get(..4 + len)?.to_vec();
        self.start += 4 + len;
        self.count -= 1;
        Some(Self {
            bytes: one,
            start: 0,
            count: 1,
        })
    }
}

impl<'a> IntoIterator for &'a UserBatch {
    type Item = UserEnvelopeRef<'a>;
    type IntoIter = UserBatchIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The messages of a [`UserBatch`] that decode.
#[derive(Debug, Clone)]
pub struct UserBatchIter<'a> {
    checked: UserBatchChecked<'a>,
}

impl<'a> Iterator for UserBatchIter<'a> {
    type Item = UserEnvelopeRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.checked.by_ref().find_map(Result::ok)
    }
}

/// The messages of a [`UserBatch`], each decoded or why it does not decode.
#[derive(Debug, Clone)]
pub struct UserBatchChecked<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for UserBatchChecked<'a> {
    type Item = Result<UserEnvelopeRef<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The batch's own length prefixes; the `?`s only end iteration of a batch that cannot
        // have been built through its methods.
        let (prefix, rest) = self.rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*prefix)).ok()?;
        let body = rest.get(..len)?;
        self.rest = &rest[len..];
        Some(UserEnvelopeRef::decode(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_bodies_are_errors_that_name_the_kind() {
        let err = decode::<Claim>(Kind::Handshake, b"\xff\xff\xff").unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Undecodable {
                    kind: Kind::Handshake,
                    ..
                }
            ),
            "{err}"
        );
        assert!(decode::<SystemEnvelope>(Kind::System, &[]).is_err());
    }

    #[test]
    fn every_pdu_round_trips() {
        let sys = SystemEnvelope {
            from_uid: 1,
            to_uid: 2,
            seq: 9,
            manifest: "flotilla.Watch".into(),
            payload: vec![1, 2, 3],
        };
        let back: SystemEnvelope =
            decode(Kind::System, &postcard::to_stdvec(&sys).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, sys);
        let reply = HandshakeReply::Refused(HandshakeRefusal::Quarantined { uid: 7 });
        let back: HandshakeReply = decode(
            Kind::HandshakeReply,
            &postcard::to_stdvec(&reply).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, reply);
        let user = UserEnvelope {
            recipient: "/user/counter".into(),
            sender: None,
            manifest: "demo.Add".into(),
            payload: vec![0; 100],
        };
        let bytes = postcard::to_stdvec(&user).unwrap_or_default();
        assert!(
            bytes.len() < 130,
            "compact: {} bytes for a 100-byte payload",
            bytes.len()
        );
        let back: UserEnvelope = decode(Kind::User, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, user);
    }

    /// The documented layout of a user envelope, byte for byte: a change here is a wire format
    /// change and needs a new version.
    #[test]
    fn a_user_envelope_has_the_documented_bytes() {
        let user = UserEnvelope {
            recipient: "/a".into(),
            sender: Some("/b".into()),
            manifest: "m".into(),
            payload: vec![7, 8, 9],
        };
        let bytes = postcard::to_stdvec(&user).unwrap_or_default();
        assert_eq!(
            bytes,
            [2, b'/', b'a', 1, 2, b'/', b'b', 1, b'm', 3, 7, 8, 9],
            "varint length + UTF-8 per string, 0/1 tag for the option, varint length + raw bytes"
        );
        let borrowed = postcard::to_stdvec(&user.borrowed()).unwrap_or_default();
        assert_eq!(borrowed, bytes, "the borrowed envelope has the same bytes");
        let back = UserEnvelopeRef::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_envelope(), user);
    }

    #[test]
    fn a_user_batch_keeps_order_and_admits_only_what_decodes() {
        let mut batch = UserBatch::new();
        assert!(batch.is_empty());
        let env = |n: u8| UserEnvelope {
            recipient: format!("/user/r{n}"),
            sender: n.is_multiple_of(2).then(|| "/user/s".to_owned()),
            manifest: "m".into(),
            payload: vec![n; usize::from(n)],
        };
        for n in 0..5u8 {
            let body = postcard::to_stdvec(&env(n)).unwrap_or_default();
            batch.push_body(&body).unwrap_or_else(|e| panic!("{e}"));
        }
        batch
            .push(&env(5).borrowed())
            .unwrap_or_else(|e| panic!("{e}"));
        let garbage = [0xff, 0xff, 0xff];
        let before = batch.clone();
        assert!(matches!(
            batch.push_body(&garbage),
            Err(WireError::Undecodable {
                kind: Kind::User,
                ..
            })
        ));
        assert_eq!(batch, before, "a refused body leaves the batch as it was");
        assert_eq!(batch.len(), 6);
        // Admitted raw, it is the receiver that finds out, where it stands in the order.
        let mut raw = before;
        raw.push_raw(&garbage).unwrap_or_else(|e| panic!("{e}"));
        raw.push(&env(6).borrowed())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(raw.len(), 8);
        let checked: Vec<bool> = raw.iter_checked().map(|r| r.is_ok()).collect();
        assert_eq!(checked, [true, true, true, true, true, true, false, true]);
        assert_eq!(
            raw.iter()
                .map(UserEnvelopeRef::to_envelope)
                .collect::<Vec<_>>(),
            (0..7).map(env).collect::<Vec<_>>(),
            "iteration skips what does not decode"
        );
        let got: Vec<UserEnvelope> = batch.iter().map(UserEnvelopeRef::to_envelope).collect();
        assert_eq!(got, (0..6).map(env).collect::<Vec<_>>());
        let first = batch.split_first().unwrap_or_default();
        assert_eq!(first.len(), 1);
        assert_eq!(
            first.first().map(UserEnvelopeRef::to_envelope),
            Some(env(0))
        );
        assert_eq!(batch.len(), 5);
        assert_eq!(
            batch.first().map(UserEnvelopeRef::to_envelope),
            Some(env(1))
        );
        let mut rest = UserBatch::new();
        for n in 1..6 {
            rest.push(&env(n).borrowed())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(batch, rest, "equal by the messages left");
        batch.clear();
        assert_eq!(batch.iter().count(), 0);
        assert!(batch.split_first().is_none());
    }
}
