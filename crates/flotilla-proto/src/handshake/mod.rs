//! The handshake: the first four frames on every connection, as a pure machine for each side.
//!
//! ```text
//!  Connecting::new ── Hello ──────────────────────────▶ Accepting::on_hello
//!  Connecting::on_challenge ◀─ Challenge (nonce, proof) ─┘   (or Refused: stop)
//!        └── Claim (who, what, proof) ─────────────────▶ Challenged::on_claim
//!  Claiming::on_reply ◀────── Accepted (who, proof) ───┘   (or Refused: stop)
//! ```
//!
//! Each state is its own type, consumed by the step that leaves it, so a step cannot be taken
//! twice or out of order. The driver (`flotilla-remote`) reads and writes the frames, draws the
//! nonces from the OS and supplies the checks only it can make (the TLS certificate, the
//! quarantine list) through the `admit` function of [`Challenged::on_claim`].
//!
//! # What each side checks, and when
//! - The accepting side answers a hello with its nonce and, with a cluster secret, a proof over
//!   both nonces. It says nothing about itself (no address, no UID) until the connecting side has
//!   proved the secret in its claim.
//! - The connecting side checks that proof before it sends its claim, so it says nothing about
//!   itself to a node that does not know the secret either.
//! - The accepting side checks the claim's proof first, then that the claim is for this node
//!   (system and port), then `admit`; only then does it name itself, with a proof over the whole
//!   exchange that the connecting side checks last.
//!
//! Proofs are HMAC-SHA256 under the secret over [`flotilla_wire::handshake::transcript`]: both
//! nonces, the step, and the claim and identities proved so far. Fresh nonces on both sides
//! make a recorded handshake useless on another connection; the step label keeps a proof from
//! being reflected as another; comparisons are constant-time.
//!
//! # What this does not do
//! It does not encrypt or authenticate the frames after the handshake: against someone who can
//! read or inject traffic on the path, use mutual TLS (with the secret, or alone).

use flotilla_wire::handshake::{
    Challenge, Claim, HandshakeRefusal, HandshakeReply, Hello, Lane, Nonce, Proof, Step,
    decode_hello, transcript,
};
use flotilla_wire::{Kind, WireAddress, WireUniqueAddress};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub mod fuzzing;
#[cfg(test)]
mod tests;

/// The cluster secrets a node knows: the first is the one it proves, every one is accepted from
/// peers. Two during a rotation (add the new one second everywhere, then first everywhere, then
/// drop the old one), usually one. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    keys: Vec<Vec<u8>>,
}

/// Why secrets could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// There was no secret at all.
    #[error("no secret: give at least one non-empty line")]
    Empty,
    /// A secret is too short to resist guessing.
    #[error(
        "secret {line} is {len} bytes long; use at least {MIN_SECRET_LEN} (`flotilla certs` writes 32 random bytes)"
    )]
    TooShort {
        /// Which one (1-based, among the non-blank lines).
        line: usize,
        /// Its length.
        len: usize,
    },
}

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

impl Secrets {
    /// The secrets in order (the first is proved).
    pub fn new<K: Into<Vec<u8>>>(keys: impl IntoIterator<Item = K>) -> Result<Self, SecretsError> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Err(SecretsError::Empty);
        }
        if let Some((i, k)) = keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.len() < MIN_SECRET_LEN)
        {
            return Err(SecretsError::TooShort {
                line: i + 1,
                len: k.len(),
            });
        }
        Ok(Self { keys })
    }

    /// The secrets of a secret file: one per line, surrounding white space ignored, blank lines
    /// and lines starting with `#` skipped.
    ///
    /// ```
    /// use flotilla_proto::handshake::Secrets;
    /// let s = Secrets::parse("# rotated 2026-12-01\nnew-0123456789abcdef\nold-0123456789abcdef\n")?;
    /// assert_eq!(s.len(), 2);
    /// assert!(!format!("{s:?}").contains("0123"));
    /// # Ok::<(), flotilla_proto::handshake::SecretsError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        Self::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::as_bytes),
        )
    }

    /// How many secrets.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a `Secrets` holds at least one.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn proving(&self) -> &[u8] {
        self.keys.first().map_or(&[], Vec::as_slice)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.keys.len())
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    #[allow(clippy::expect_used)] // reason: HMAC accepts keys of any length; this cannot fail
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn prove(key: &[u8], transcript: &[u8]) -> Proof {
    let mut mac = hmac(key);
    mac.update(transcript);
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of a proof with the one `key` gives.
fn verify(key: &[u8], transcript: &[u8], proof: &Proof) -> bool {
    let mut mac = hmac(key);
    mac.update(transcript);
    mac.verify_slice(proof).is_ok()
}

/// What a connection is, as its connecting side says: which of a link's connections, and which
/// link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    /// Which of the link's connections this is.
    pub lane: Lane,
    /// The link, drawn by the connecting side.
    pub link: u64,
}

/// Why the connecting side's handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The peer refused this node, and said why.
    #[error("the peer refused the handshake: {0}")]
    RefusedByPeer(HandshakeRefusal),
    /// This node refused the peer's answer.
    #[error("refused the peer: {0}")]
    Refused(HandshakeRefusal),
}

fn expect_kind(kind: Kind, expected: Kind) -> Result<(), HandshakeRefusal> {
    if kind == expected {
        Ok(())
    } else {
        Err(HandshakeRefusal::Protocol(format!(
            "expected a {expected:?} frame, got a {kind:?} frame"
        )))
    }
}

fn undecodable(e: flotilla_wire::WireError) -> HandshakeRefusal {
    HandshakeRefusal::Protocol(e.to_string())
}

fn shown(a: &WireAddress) -> String {
    format!("{}@{}:{}", a.system, a.host, a.port)
}

/// The connecting side before the accepting side's challenge.
#[derive(Debug)]
pub struct Connecting {
    local: WireUniqueAddress,
    target: WireAddress,
    opening: Opening,
    nonce: Nonce,
    secrets: Option<Secrets>,
}

impl Connecting {
    /// Starts a handshake from `local` to `target` for connection `opening`, with a fresh
    /// `nonce` from a secure random source. Returns the state and the [`Hello`] to send.
    pub fn new(
        local: WireUniqueAddress,
        target: WireAddress,
        opening: Opening,
        nonce: Nonce,
        secrets: Option<Secrets>,
    ) -> (Self, Hello) {
        let hello = Hello::new(nonce);
        (
            Self {
                local,
                target,
                opening,
                nonce,
                secrets,
            },
            hello,
        )
    }

    /// The accepting side's first answer (`kind`, `body`). On success, the [`Claim`] to send.
    pub fn on_challenge(self, kind: Kind, body: &[u8]) -> Result<(Claiming, Claim), Failure> {
        expect_kind(kind, Kind::HandshakeReply).map_err(Failure::Refused)?;
        let (theirs, proof) = match flotilla_wire::pdu::decode::<Challenge>(kind, body)
            .map_err(|e| Failure::Refused(undecodable(e)))?
        {
            Challenge::Refused(why) => return Err(Failure::RefusedByPeer(why)),
            Challenge::Challenge { nonce, proof } => (nonce, proof),
        };
        if theirs == self.nonce {
            return Err(Failure::Refused(HandshakeRefusal::Protocol(
                "the peer echoed this node's nonce".into(),
            )));
        }
        let t = transcript(Step::AcceptorChallenge, &self.nonce, &theirs, None, None);
        // The peer proves its first secret; any of ours that matches is the one both share.
        let key = match (&self.secrets, proof) {
            (None, None) => None,
            (Some(secrets), Some(proof)) => Some(
                secrets
                    .keys
                    .iter()
                    .find(|k| verify(k, &t, &proof))
                    .cloned()
                    .ok_or(Failure::Refused(HandshakeRefusal::WrongSecret))?,
            ),
            _ => return Err(Failure::Refused(HandshakeRefusal::WrongSecret)),
        };
        let mut claim = Claim {
            from: self.local,
            to: self.target.clone(),
            lane: self.opening.lane,
            link: self.opening.link,
            proof: None,
        };
        if let Some(k) = &key {
            let t = transcript(Step::Claim, &self.nonce, &theirs, Some(&claim), None);
            claim.proof = Some(prove(k, &t));
        }
        Ok((
            Claiming {
                target: self.target,
                nonce: self.nonce,
                theirs,
                claim: claim.clone(),
                key,
            },
            claim,
        ))
    }
}

/// The connecting side after its claim, waiting for the verdict.
#[derive(Debug)]
pub struct Claiming {
    target: WireAddress,
    nonce: Nonce,
    theirs: Nonce,
    claim: Claim,
    /// The secret both sides share, when there is one.
    key: Option<Vec<u8>>,
}

impl Claiming {
    /// The accepting side's verdict (`kind`, `body`). On success, who answered.
    pub fn on_reply(self, kind: Kind, body: &[u8]) -> Result<WireUniqueAddress, Failure> {
        expect_kind(kind, Kind::HandshakeReply).map_err(Failure::Refused)?;
        let (from, proof) = match flotilla_wire::pdu::decode::<HandshakeReply>(kind, body)
            .map_err(|e| Failure::Refused(undecodable(e)))?
        {
            HandshakeReply::Refused(why) => return Err(Failure::RefusedByPeer(why)),
            HandshakeReply::Accepted { from, proof } => (from, proof),
        };
        let proved = match (&self.key, proof) {
            (None, None) => true,
            (Some(k), Some(proof)) => {
                let t = transcript(
                    Step::Accepted,
                    &self.nonce,
                    &self.theirs,
                    Some(&self.claim),
                    Some(&from),
                );
                verify(k, &t, &proof)
            }
            _ => false,
        };
        if !proved {
            return Err(Failure::Refused(HandshakeRefusal::WrongSecret));
        }
        if from.address.system != self.target.system || from.address.port != self.target.port {
            return Err(Failure::Refused(HandshakeRefusal::WrongAddress {
                meant: shown(&self.target),
                actual: shown(&from.address),
            }));
        }
        Ok(from)
    }
}

/// The accepting side before the hello.
#[derive(Debug)]
pub struct Accepting {
    local: WireUniqueAddress,
    nonce: Nonce,
    secrets: Option<Secrets>,
}

impl Accepting {
    /// A handshake accepted by `local`, with a fresh `nonce` from a secure random source.
    pub fn new(local: WireUniqueAddress, nonce: Nonce, secrets: Option<Secrets>) -> Self {
        Self {
            local,
            nonce,
            secrets,
        }
    }

    /// The connecting side's hello (`kind`, `body`). Returns the answer to send, and the next
    /// state (or why the peer is refused: close after sending the answer).
    pub fn on_hello(
        self,
        kind: Kind,
        body: &[u8],
    ) -> (Challenge, Result<Challenged, HandshakeRefusal>) {
        let checked = expect_kind(kind, Kind::Handshake).and_then(|()| decode_hello(body));
        let hello = match checked {
            Ok(hello) => hello,
            Err(why) => return (Challenge::Refused(why.clone()), Err(why)),
        };
        let proof = self.secrets.as_ref().map(|s| {
            let t = transcript(
                Step::AcceptorChallenge,
                &hello.nonce,
                &self.nonce,
                None,
                None,
            );
            prove(s.proving(), &t)
        });
        (
            Challenge::Challenge {
                nonce: self.nonce,
                proof,
            },
            Ok(Challenged {
                local: self.local,
                theirs: hello.nonce,
                nonce: self.nonce,
                secrets: self.secrets,
            }),
        )
    }
}

/// The accepting side after its challenge, waiting for the claim.
#[derive(Debug)]
pub struct Challenged {
    local: WireUniqueAddress,
    theirs: Nonce,
    nonce: Nonce,
    secrets: Option<Secrets>,
}

impl Challenged {
    /// The connecting side's claim (`kind`, `body`). Once its proof and target check out,
    /// `admit` decides whether this peer may be who it claims (certificate, quarantine). Returns
    /// the answer to send, and who connected with what (or why the peer is refused: close after
    /// sending the answer).
    pub fn on_claim(
        self,
        kind: Kind,
        body: &[u8],
        admit: impl FnOnce(&WireUniqueAddress) -> Result<(), HandshakeRefusal>,
    ) -> (
        HandshakeReply,
        Result<(WireUniqueAddress, Opening), HandshakeRefusal>,
    ) {
        match self.check(kind, body, admit) {
            Ok((claim, proof)) => (
                HandshakeReply::Accepted {
                    from: self.local,
                    proof,
                },
                Ok((
                    claim.from,
                    Opening {
                        lane: claim.lane,
                        link: claim.link,
                    },
                )),
            ),
            Err(why) => (HandshakeReply::Refused(why.clone()), Err(why)),
        }
    }

    fn check(
        &self,
        kind: Kind,
        body: &[u8],
        admit: impl FnOnce(&WireUniqueAddress) -> Result<(), HandshakeRefusal>,
    ) -> Result<(Claim, Option<Proof>), HandshakeRefusal> {
        expect_kind(kind, Kind::Handshake)?;
        let claim: Claim = flotilla_wire::pdu::decode(kind, body).map_err(undecodable)?;
        let t = transcript(Step::Claim, &self.theirs, &self.nonce, Some(&claim), None);
        let proved = match (&self.secrets, &claim.proof) {
            (None, None) => true,
            (Some(s), Some(proof)) => verify(s.proving(), &t, proof),
            _ => false,
        };
        if !proved {
            return Err(HandshakeRefusal::WrongSecret);
        }
        let local = &self.local.address;
        if claim.from.address.system != local.system {
            return Err(HandshakeRefusal::WrongSystem {
                theirs: claim.from.address.system,
                ours: local.system.clone(),
            });
        }
        if claim.to.system != local.system || claim.to.port != local.port {
            return Err(HandshakeRefusal::WrongAddress {
                meant: shown(&claim.to),
                actual: shown(local),
            });
        }
        admit(&claim.from)?;
        let proof = self.secrets.as_ref().map(|s| {
            let t = transcript(
                Step::Accepted,
                &self.theirs,
                &self.nonce,
                Some(&claim),
                Some(&self.local),
            );
            prove(s.proving(), &t)
        });
        Ok((claim, proof))
    }
}
