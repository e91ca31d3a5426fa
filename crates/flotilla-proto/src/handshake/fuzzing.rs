//! The body of the `handshake` fuzz target (`fuzz/fuzz_targets/handshake.rs`), here so that the
//! corpus replay test runs exactly the same code on every CI run.
//!
//! An input is one flags byte, then the two frames a side receives: the first as a 2-byte
//! big-endian length and its body, the second as the rest. Flags: bit 0 — the connecting side
//! has the secret; bit 1 — the accepting side has it; bit 2 — fuzz the connecting side (else the
//! accepting side); bit 3 — give the first frame the wrong kind.
//!
//! Beyond "never panics", each run checks what the handshake promises, independently of the
//! machine's own checks: the accepting side's first answer names no one; a side with the secret
//! goes past a step only if the proof it got is the one the secret gives for this connection's
//! nonces and claim.

use flotilla_wire::handshake::{
    Challenge, Claim, HandshakeReply, Lane, Nonce, Proof, Step, transcript,
};
use flotilla_wire::{Kind, WireAddress, WireUniqueAddress};

use super::{Accepting, Connecting, Opening, Secrets, prove};

/// The harness's secret.
pub const SECRET: &str = "fuzzing-cluster-secret-0123456789";
/// The connecting side's nonce.
pub const CONNECTING_NONCE: Nonce = [0x11; 32];
/// The accepting side's nonce.
pub const ACCEPTING_NONCE: Nonce = [0x22; 32];

/// The connecting node.
pub fn connecting_node() -> WireUniqueAddress {
    WireUniqueAddress {
        address: WireAddress {
            system: "fuzz".into(),
            host: "127.0.0.1".into(),
            port: 2551,
        },
        uid: 0x0123_4567_89ab_cdef,
    }
}

/// The accepting node.
pub fn accepting_node() -> WireUniqueAddress {
    WireUniqueAddress {
        address: WireAddress {
            system: "fuzz".into(),
            host: "127.0.0.1".into(),
            port: 2552,
        },
        uid: 0x0fed_cba9_8765_4321,
    }
}

const OPENING: Opening = Opening {
    lane: Lane::Control,
    link: 42,
};

fn secrets(on: bool) -> Option<Secrets> {
    on.then(|| Secrets::new([SECRET]).unwrap_or_else(|e| panic!("{e}")))
}

fn proved(step: Step, claim: Option<&Claim>, acceptor: Option<&WireUniqueAddress>) -> Proof {
    let t = transcript(step, &CONNECTING_NONCE, &ACCEPTING_NONCE, claim, acceptor);
    prove(SECRET.as_bytes(), &t)
}

/// A PDU's body as a frame carries it.
macro_rules! body {
    ($kind:expr, $pdu:expr) => {{
        let mut out = Vec::new();
        let _ = flotilla_wire::pdu::encode($kind, $pdu, 1 << 16, &mut out);
        out.split_off(flotilla_wire::frame::HEADER_LEN.min(out.len()))
    }};
}

/// `n` as postcard writes it (LEB128).
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = u8::try_from(n & 0x7f).unwrap_or(0);
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs one input. Panics only if a promise of the handshake breaks.
pub fn handshake(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest {
        [a, b, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*a, *b])).min(rest.len());
            rest.split_at(len)
        }
        _ => (rest, &[][..]),
    };
    let (connecting_secret, accepting_secret) = (flags & 1 != 0, flags & 2 != 0);
    let wrong_kind = flags & 8 != 0;
    if flags & 4 == 0 {
        accepting_side(accepting_secret, wrong_kind, first, second);
    } else {
        connecting_side(connecting_secret, wrong_kind, first, second);
    }
}

fn accepting_side(secret: bool, wrong_kind: bool, hello: &[u8], claim: &[u8]) {
    let me = accepting_node();
    let a = Accepting::new(me.clone(), ACCEPTING_NONCE, secrets(secret));
    let kind = if wrong_kind {
        Kind::User
    } else {
        Kind::Handshake
    };
    let (answer, next) = a.on_hello(kind, hello);
    // The first answer names no one, whatever it is.
    let bytes = body!(Kind::HandshakeReply, &answer);
    let uid = varint(me.uid);
    assert!(
        !contains(&bytes, &uid),
        "the challenge names the node's UID"
    );
    assert!(
        !contains(&bytes, me.address.host.as_bytes()),
        "the challenge names the node's host"
    );
    let Ok(next) = next else { return };
    let (reply, accepted) = next.on_claim(Kind::Handshake, claim, |_| Ok(()));
    if let Ok((who, opening)) = accepted {
        let claim: Claim = flotilla_wire::pdu::decode(Kind::Handshake, claim)
            .unwrap_or_else(|e| panic!("accepted a claim that does not decode: {e}"));
        assert_eq!(
            (who, opening.lane, opening.link),
            (claim.from.clone(), claim.lane, claim.link)
        );
        if secret {
            assert_eq!(
                claim.proof,
                Some(proved(Step::Claim, Some(&claim), None)),
                "accepted a claim without the secret's proof"
            );
            let HandshakeReply::Accepted { proof, .. } = reply else {
                panic!("accepted but answered {reply:?}")
            };
            assert_eq!(proof, Some(proved(Step::Accepted, Some(&claim), Some(&me))));
        }
    }
}

fn connecting_side(secret: bool, wrong_kind: bool, challenge: &[u8], reply: &[u8]) {
    let (c, _) = Connecting::new(
        connecting_node(),
        accepting_node().address,
        OPENING,
        CONNECTING_NONCE,
        secrets(secret),
    );
    let kind = if wrong_kind {
        Kind::Handshake
    } else {
        Kind::HandshakeReply
    };
    let Ok((claiming, claim)) = c.on_challenge(kind, challenge) else {
        return;
    };
    let answer: Challenge = flotilla_wire::pdu::decode(Kind::HandshakeReply, challenge)
        .unwrap_or_else(|e| panic!("went on after an undecodable challenge: {e}"));
    let Challenge::Challenge { nonce, proof } = answer else {
        panic!("went on after a refusal")
    };
    if secret {
        // The harness's nonces are fixed, so a valid challenge uses ACCEPTING_NONCE.
        let t = transcript(
            Step::AcceptorChallenge,
            &CONNECTING_NONCE,
            &nonce,
            None,
            None,
        );
        assert_eq!(
            proof,
            Some(prove(SECRET.as_bytes(), &t)),
            "named itself to a peer that did not prove the secret"
        );
    }
    if let Ok(peer) = claiming.on_reply(Kind::HandshakeReply, reply)
        && secret
        && nonce == ACCEPTING_NONCE
    {
        let HandshakeReply::Accepted { proof, .. } =
            flotilla_wire::pdu::decode(Kind::HandshakeReply, reply)
                .unwrap_or_else(|e| panic!("accepted an undecodable reply: {e}"))
        else {
            panic!("accepted a refusal")
        };
        assert_eq!(
            proof,
            Some(proved(Step::Accepted, Some(&claim), Some(&peer)))
        );
    }
}

/// Inputs that reach every step: real frames of handshakes with and without the secret, each
/// side's view, and refusals.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let input = |flags: u8, first: &[u8], second: &[u8]| {
        let mut v = vec![flags];
        v.extend_from_slice(&u16::try_from(first.len()).unwrap_or(0).to_be_bytes());
        v.extend_from_slice(first);
        v.extend_from_slice(second);
        v
    };
    let mut out = Vec::new();
    for secret in [false, true] {
        let (c, hello) = Connecting::new(
            connecting_node(),
            accepting_node().address,
            OPENING,
            CONNECTING_NONCE,
            secrets(secret),
        );
        let a = Accepting::new(accepting_node(), ACCEPTING_NONCE, secrets(secret));
        let (challenge, a) = a.on_hello(Kind::Handshake, &body!(Kind::Handshake, &hello));
        let Ok((c, claim)) = c.on_challenge(
            Kind::HandshakeReply,
            &body!(Kind::HandshakeReply, &challenge),
        ) else {
            continue;
        };
        let Ok(a) = a else { continue };
        let (reply, _) = a.on_claim(Kind::Handshake, &body!(Kind::Handshake, &claim), |_| Ok(()));
        let _ = c.on_reply(Kind::HandshakeReply, &body!(Kind::HandshakeReply, &reply));
        let both = if secret { 3 } else { 0 };
        out.push(input(
            both,
            &body!(Kind::Handshake, &hello),
            &body!(Kind::Handshake, &claim),
        ));
        out.push(input(
            both | 4,
            &body!(Kind::HandshakeReply, &challenge),
            &body!(Kind::HandshakeReply, &reply),
        ));
        // The other side without the secret.
        out.push(input(
            if secret { 1 } else { 2 },
            &body!(Kind::Handshake, &hello),
            &body!(Kind::Handshake, &claim),
        ));
        out.push(input(
            if secret { 6 } else { 5 },
            &body!(Kind::HandshakeReply, &challenge),
            &body!(Kind::HandshakeReply, &reply),
        ));
    }
    let refused = HandshakeReply::Refused(flotilla_wire::HandshakeRefusal::WrongSecret);
    let refusal = Challenge::Refused(flotilla_wire::HandshakeRefusal::WrongSecret);
    out.push(input(4, &body!(Kind::HandshakeReply, &refusal), &[]));
    out.push(input(
        8,
        b"GET / HTTP/1.1\r\n",
        &body!(Kind::HandshakeReply, &refused),
    ));
    out
}
