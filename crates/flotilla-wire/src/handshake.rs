//! The handshake's four frames, and the transcript both sides prove knowledge of the cluster
//! secret over.
//!
//! ```text
//!  connecting side                              accepting side
//!  Hello { magic, version, nonce_c }        ──▶
//!                                           ◀── Challenge { nonce_a, proof_a1 }     (or Refused)
//!  Claim { from, to, lane, link, proof_c }  ──▶
//!                                           ◀── Accepted { from, proof_a2 }         (or Refused)
//! ```
//!
//! The connecting side says nothing about itself until the accepting side has proved that it
//! knows the secret (`proof_a1`, over both nonces), and the accepting side says nothing about
//! itself until the connecting side has proved it (`proof_c`, over both nonces and the whole
//! claim). The last proof binds the accepting side's identity to the same transcript. Every proof
//! covers both fresh nonces, so a recorded handshake is worth nothing on another connection;
//! each names its step, so no proof can be reflected as another. Without a secret (TLS alone,
//! or `insecure`) the proofs are absent and the same four frames are exchanged.
//!
//! The protocol logic (which check comes when) is `flotilla_proto::handshake`; this module only
//! defines the bytes.

use serde::{Deserialize, Serialize};

use crate::pdu::{MAGIC, VERSION, WireAddress, WireUniqueAddress};

/// A nonce: 32 random bytes drawn for one connection.
pub type Nonce = [u8; 32];

/// An HMAC-SHA256 proof of the cluster secret.
pub type Proof = [u8; 32];

/// The largest handshake frame either side accepts: a claim holds two addresses (host names of
/// at most 253 bytes) and a proof. Nothing larger is buffered before the peer is authenticated.
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

/// The first frame on a connection, from the side that connected. Its first two fields are the
/// same in every version ([`HandshakeHead`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`MAGIC`]: tells a Flotilla peer from anything else that connects.
    pub magic: [u8; 4],
    /// The sender's wire format version.
    pub version: u16,
    /// The connecting side's nonce.
    pub nonce: Nonce,
}

impl Hello {
    /// A hello of this wire format version.
    pub fn new(nonce: Nonce) -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            nonce,
        }
    }
}

/// The first two fields of every version's first frame: read on their own, so that a peer of
/// another version is told so rather than "not a Flotilla peer".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeHead {
    /// [`MAGIC`], if a Flotilla peer.
    pub magic: [u8; 4],
    /// The sender's wire format version.
    pub version: u16,
}

/// The accepting side's answer to a [`Hello`]. `Refused` keeps the variant index it had in
/// every earlier version's first answer, so a peer of another version reads the refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Challenge {
    /// Go on: here is the accepting side's nonce, and its proof of the secret over both nonces
    /// (none without a secret).
    Challenge {
        /// The accepting side's nonce.
        nonce: Nonce,
        /// HMAC over [`Step::AcceptorChallenge`]'s transcript.
        proof: Option<Proof>,
    },
    /// Refused, and why; the connection closes after this frame.
    Refused(HandshakeRefusal),
}

/// The connecting side's second frame: who it is and what it opens, with its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Who is connecting.
    pub from: WireUniqueAddress,
    /// Whom it means to reach.
    pub to: WireAddress,
    /// Which of the link's two connections this is.
    pub lane: Lane,
    /// The link this connection belongs to: drawn by the connecting side, the same on both of a
    /// link's connections, so that the accepting side can pair them.
    pub link: u64,
    /// HMAC over [`Step::Claim`]'s transcript (none without a secret).
    pub proof: Option<Proof>,
}

/// The accepting side's answer to a [`Claim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    /// Accepted; here is who answered, with its proof over the whole exchange.
    Accepted {
        /// The accepting node.
        from: WireUniqueAddress,
        /// HMAC over [`Step::Accepted`]'s transcript (none without a secret).
        proof: Option<Proof>,
    },
    /// Refused, and why; the connection closes after this frame.
    Refused(HandshakeRefusal),
}

/// The two connections of a link between two nodes.
///
/// Control frames (handshake, heartbeats, system messages, acknowledgements, quarantine
/// notices) travel on the control connection and user messages on the ordinary one, so a
/// backlog of user messages never delays a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Handshake, heartbeats, system messages, acknowledgements, quarantine notices.
    Control,
    /// User messages.
    Ordinary,
}

/// Why a handshake was refused. Variants keep their indices across versions (new ones are
/// added at the end); texts that quote the peer escape its control characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HandshakeRefusal {
    /// Not a Flotilla peer.
    #[error("not a Flotilla handshake (magic bytes {0:02x?})")]
    BadMagic([u8; 4]),
    /// Another wire format version.
    #[error("incompatible wire format: the peer speaks version {theirs}, this node {ours}")]
    IncompatibleVersion {
        /// The peer's.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// Another actor system.
    #[error("wrong actor system: the peer is {theirs:?}, this node is {ours:?}")]
    WrongSystem {
        /// The peer's.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The handshake was meant for another address.
    #[error("the peer meant to reach {meant:?}, but this node is {actual:?}")]
    WrongAddress {
        /// Whom the peer meant.
        meant: String,
        /// Who this node is.
        actual: String,
    },
    /// The peer did not prove the cluster secret (a wrong one, or one side has none).
    #[error("wrong or missing cluster secret")]
    WrongSecret,
    /// This node has quarantined the connecting incarnation.
    #[error("this node has quarantined uid {uid}: restart that node")]
    Quarantined {
        /// The connecting incarnation.
        uid: u64,
    },
    /// The peer is authenticated but may not claim that identity: its TLS certificate is not
    /// valid for the host it claims, say.
    #[error("not allowed to claim {claimed:?}: {}", .why.escape_debug())]
    NotAuthorized {
        /// The address the peer claimed.
        claimed: String,
        /// Why not.
        why: String,
    },
    /// A frame that does not belong at this step of the handshake, or does not decode.
    #[error("handshake protocol violated: {}", .0.escape_debug())]
    Protocol(String),
}

/// Which proof a transcript is for: each step's proof covers a different label, so none can
/// stand in for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The accepting side's proof in [`Challenge::Challenge`].
    AcceptorChallenge,
    /// The connecting side's proof in [`Claim`].
    Claim,
    /// The accepting side's proof in [`HandshakeReply::Accepted`].
    Accepted,
}

/// What a proof is computed over, encoded with postcard (every field length-prefixed, so no two
/// transcripts encode alike).
#[derive(Serialize)]
struct Transcript<'a> {
    context: &'static str,
    version: u16,
    step: Step,
    connecting_nonce: &'a Nonce,
    accepting_nonce: &'a Nonce,
    claim: Option<(&'a WireUniqueAddress, &'a WireAddress, Lane, u64)>,
    acceptor: Option<&'a WireUniqueAddress>,
}

/// The bytes a proof for `step` is computed over. `claim` is the connecting side's claim (for
/// [`Step::Claim`] and [`Step::Accepted`]); `acceptor` the accepting side's identity (for
/// [`Step::Accepted`]).
pub fn transcript(
    step: Step,
    connecting_nonce: &Nonce,
    accepting_nonce: &Nonce,
    claim: Option<&Claim>,
    acceptor: Option<&WireUniqueAddress>,
) -> Vec<u8> {
    let t = Transcript {
        context: "flotilla remoting handshake",
        version: VERSION,
        step,
        connecting_nonce,
        accepting_nonce,
        claim: claim.map(|c| (&c.from, &c.to, c.lane, c.link)),
        acceptor,
    };
    // Serializing to a Vec cannot fail for these types; an empty transcript would still bind
    // the nonces through the MAC's key use, but never happens.
    postcard::to_stdvec(&t).unwrap_or_default()
}

/// Decodes a [`Hello`] and checks its magic and version. A body that is not this version's
/// hello is told apart: a Flotilla peer of another version gets
/// [`HandshakeRefusal::IncompatibleVersion`], anything else [`HandshakeRefusal::BadMagic`].
pub fn decode_hello(body: &[u8]) -> Result<Hello, HandshakeRefusal> {
    match postcard::from_bytes::<HandshakeHead>(body) {
        Ok(head) if head.magic != MAGIC => Err(HandshakeRefusal::BadMagic(first_four(body))),
        Ok(head) if head.version != VERSION => Err(HandshakeRefusal::IncompatibleVersion {
            theirs: head.version,
            ours: VERSION,
        }),
        Ok(_) => postcard::from_bytes::<Hello>(body)
            .map_err(|e| HandshakeRefusal::Protocol(format!("undecodable hello: {e}"))),
        Err(_) => Err(HandshakeRefusal::BadMagic(first_four(body))),
    }
}

/// The first four bytes (zero-padded): what a refusal for bad magic shows.
pub fn first_four(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(system: &str, port: u16) -> WireAddress {
        WireAddress {
            system: system.into(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn claim(link: u64) -> Claim {
        Claim {
            from: WireUniqueAddress {
                address: addr("orders", 2551),
                uid: 7,
            },
            to: addr("orders", 2552),
            lane: Lane::Control,
            link,
            proof: None,
        }
    }

    #[test]
    fn a_hello_round_trips_and_other_versions_and_strangers_are_told_apart() {
        let hello = Hello::new([7; 32]);
        let body = postcard::to_stdvec(&hello).unwrap_or_default();
        assert_eq!(decode_hello(&body), Ok(hello));
        // Version 3's first frame: magic, version 3, then its unique address and so on.
        let mut v3 = MAGIC.to_vec();
        v3.extend_from_slice(&[3, 6, b'o', b'r', b'd', b'e', b'r', b's']);
        assert_eq!(
            decode_hello(&v3),
            Err(HandshakeRefusal::IncompatibleVersion {
                theirs: 3,
                ours: VERSION
            })
        );
        assert_eq!(
            decode_hello(b"GET / HTTP/1.1"),
            Err(HandshakeRefusal::BadMagic(*b"GET "))
        );
        assert!(matches!(
            decode_hello(&body[..10]),
            Err(HandshakeRefusal::Protocol(_))
        ));
    }

    #[test]
    fn a_refusal_keeps_the_variant_index_older_versions_read() {
        // Version 3 answered with `enum { Accepted { .. } = 0, Refused(..) = 1 }`.
        let refused = Challenge::Refused(HandshakeRefusal::IncompatibleVersion {
            theirs: 3,
            ours: VERSION,
        });
        let body = postcard::to_stdvec(&refused).unwrap_or_default();
        assert_eq!(body[0], 1);
        assert_eq!(body[1], 1, "IncompatibleVersion is refusal variant 1");
    }

    #[test]
    fn transcripts_differ_in_every_field() {
        let (n1, n2) = ([1; 32], [2; 32]);
        let base = transcript(Step::Claim, &n1, &n2, Some(&claim(1)), None);
        let variants = [
            transcript(Step::Accepted, &n1, &n2, Some(&claim(1)), None),
            transcript(Step::Claim, &n2, &n1, Some(&claim(1)), None),
            transcript(Step::Claim, &n1, &n2, Some(&claim(2)), None),
            transcript(Step::Claim, &n1, &n2, None, None),
            transcript(Step::Claim, &n1, &n2, Some(&claim(1)), Some(&claim(1).from)),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        // The proof itself is not part of what it proves.
        let mut with_proof = claim(1);
        with_proof.proof = Some([9; 32]);
        assert_eq!(
            transcript(Step::Claim, &n1, &n2, Some(&with_proof), None),
            base
        );
    }

    #[test]
    fn a_peer_string_with_control_characters_is_escaped_in_refusals() {
        let r = HandshakeRefusal::WrongSystem {
            theirs: "evil\n2026-01-01 INFO forged line\u{1b}[2J".into(),
            ours: "orders".into(),
        };
        let text = r.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        for r in [
            HandshakeRefusal::NotAuthorized {
                claimed: "a\nb".into(),
                why: "c\nd\u{1b}".into(),
            },
            HandshakeRefusal::Protocol("e\nf\u{1b}".into()),
        ] {
            let text = r.to_string();
            assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        }
    }
}
