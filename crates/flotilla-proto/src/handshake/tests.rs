//! The handshake between two machines, frame by frame, as data; and what a peer without the
//! secret, a recorded handshake or a reflected proof gets.

use flotilla_wire::handshake::{Challenge, Claim, HandshakeRefusal, HandshakeReply, Lane};
use flotilla_wire::{Kind, WireAddress, WireUniqueAddress};

use super::*;

fn addr(system: &str, port: u16) -> WireAddress {
    WireAddress {
        system: system.into(),
        host: "127.0.0.1".into(),
        port,
    }
}

fn node(port: u16, uid: u64) -> WireUniqueAddress {
    WireUniqueAddress {
        address: addr("orders", port),
        uid,
    }
}

fn secrets(keys: &[&str]) -> Option<Secrets> {
    Some(Secrets::new(keys.iter().map(|k| k.as_bytes())).unwrap_or_else(|e| panic!("{e}")))
}

const A: &str = "a-cluster-secret-of-32-bytes-....";
const B: &str = "another-secret-of-32-bytes-......";

fn enc<T: serde::Serialize>(t: &T) -> Vec<u8> {
    postcard::to_stdvec(t).unwrap_or_else(|e| panic!("{e}"))
}

const OPENING: Opening = Opening {
    lane: Lane::Ordinary,
    link: 42,
};

/// What each side ended with: the connecting side's result, and the accepting side's if the
/// connecting side got as far as its claim.
type Outcome = (
    Result<WireUniqueAddress, Failure>,
    Option<Result<(WireUniqueAddress, Opening), HandshakeRefusal>>,
);

/// Runs a whole handshake from node 2551 (uid 7) to node 2552 (uid 9). Returns what each side
/// ended with.
fn run(
    connecting: Option<Secrets>,
    accepting: Option<Secrets>,
    admit: impl FnOnce(&WireUniqueAddress) -> Result<(), HandshakeRefusal>,
) -> Outcome {
    let (c, hello) = Connecting::new(
        node(2551, 7),
        addr("orders", 2552),
        OPENING,
        [1; 32],
        connecting,
    );
    let a = Accepting::new(node(2552, 9), [2; 32], accepting);
    let (challenge, a) = a.on_hello(Kind::Handshake, &enc(&hello));
    let (c, claim) = match c.on_challenge(Kind::HandshakeReply, &enc(&challenge)) {
        Ok(x) => x,
        Err(e) => return (Err(e), None),
    };
    let a = match a {
        Ok(a) => a,
        Err(e) => return (Err(Failure::RefusedByPeer(e)), None),
    };
    let (reply, accepted) = a.on_claim(Kind::Handshake, &enc(&claim), admit);
    (
        c.on_reply(Kind::HandshakeReply, &enc(&reply)),
        Some(accepted),
    )
}

#[test]
fn with_the_same_secret_or_none_on_both_sides_each_learns_who_the_other_is() {
    for (c, a) in [(secrets(&[A]), secrets(&[A])), (None, None)] {
        let (connected, accepted) = run(c, a, |_| Ok(()));
        assert_eq!(connected, Ok(node(2552, 9)));
        assert_eq!(accepted, Some(Ok((node(2551, 7), OPENING))));
    }
}

#[test]
fn a_node_with_another_secret_or_none_learns_nothing_and_tells_nothing() {
    let refused = Err(Failure::Refused(HandshakeRefusal::WrongSecret));
    for (c, a) in [
        (secrets(&[A]), secrets(&[B])),
        (secrets(&[A]), None),
        (None, secrets(&[A])),
    ] {
        // The connecting side stops at the challenge: it never sends its claim.
        assert_eq!(run(c, a, |_| Ok(())), (refused.clone(), None));
    }
    // The challenge names no one: neither the system, nor the host, nor the UID.
    let a = Accepting::new(node(2552, 0x5eed_5eed_5eed), [2; 32], secrets(&[A]));
    let (challenge, _) = a.on_hello(Kind::Handshake, &enc(&Hello::new([1; 32])));
    let bytes = enc(&challenge);
    let uid = enc(&0x5eed_5eed_5eed_u64);
    assert!(!bytes.windows(uid.len()).any(|w| w == uid));
    assert!(!bytes.windows(6).any(|w| w == b"orders" || w == b"127.0."));
}

#[test]
fn a_claim_without_the_secret_is_refused_before_the_node_names_itself() {
    // An attacker that skips checking the challenge and sends a claim with a made-up proof.
    let a = Accepting::new(node(2552, 9), [2; 32], secrets(&[A]));
    let (_, a) = a.on_hello(Kind::Handshake, &enc(&Hello::new([1; 32])));
    let claim = Claim {
        from: node(2551, 7),
        to: addr("orders", 2552),
        lane: Lane::Control,
        link: 1,
        proof: Some([0; 32]),
    };
    let (reply, accepted) =
        a.unwrap_or_else(|e| panic!("{e}"))
            .on_claim(Kind::Handshake, &enc(&claim), |_| {
                panic!("admit is asked only after the proof")
            });
    assert_eq!(
        reply,
        HandshakeReply::Refused(HandshakeRefusal::WrongSecret)
    );
    assert_eq!(accepted, Err(HandshakeRefusal::WrongSecret));
}

#[test]
fn a_recorded_claim_is_worthless_on_a_new_connection() {
    let (c, hello) = Connecting::new(
        node(2551, 7),
        addr("orders", 2552),
        OPENING,
        [1; 32],
        secrets(&[A]),
    );
    let a = Accepting::new(node(2552, 9), [2; 32], secrets(&[A]));
    let (challenge, _) = a.on_hello(Kind::Handshake, &enc(&hello));
    let (_, recorded) = c
        .on_challenge(Kind::HandshakeReply, &enc(&challenge))
        .unwrap_or_else(|e| panic!("{e}"));
    // Replayed, with the same hello, to a new connection: the node's nonce is new.
    let again = Accepting::new(node(2552, 9), [3; 32], secrets(&[A]));
    let (_, again) = again.on_hello(Kind::Handshake, &enc(&hello));
    let (reply, accepted) =
        again
            .unwrap_or_else(|e| panic!("{e}"))
            .on_claim(Kind::Handshake, &enc(&recorded), |_| Ok(()));
    assert_eq!(
        reply,
        HandshakeReply::Refused(HandshakeRefusal::WrongSecret)
    );
    assert!(accepted.is_err());
}

#[test]
fn no_proof_can_be_reflected_as_another() {
    // The node's own challenge proof sent back as a claim's proof, with the nonces swapped.
    let a = Accepting::new(node(2552, 9), [2; 32], secrets(&[A]));
    let (challenge, a) = a.on_hello(Kind::Handshake, &enc(&Hello::new([1; 32])));
    let Challenge::Challenge { proof, .. } = challenge else {
        panic!("{challenge:?}")
    };
    let claim = Claim {
        from: node(2551, 7),
        to: addr("orders", 2552),
        lane: Lane::Control,
        link: 1,
        proof,
    };
    let (_, accepted) =
        a.unwrap_or_else(|e| panic!("{e}"))
            .on_claim(Kind::Handshake, &enc(&claim), |_| Ok(()));
    assert_eq!(accepted, Err(HandshakeRefusal::WrongSecret));
    // A peer that echoes the connecting side's nonce is refused outright.
    let (c, hello) = Connecting::new(node(2551, 7), addr("orders", 2552), OPENING, [1; 32], None);
    let echo = Challenge::Challenge {
        nonce: hello.nonce,
        proof: None,
    };
    assert!(matches!(
        c.on_challenge(Kind::HandshakeReply, &enc(&echo)),
        Err(Failure::Refused(HandshakeRefusal::Protocol(_)))
    ));
}

#[test]
fn a_verdict_naming_someone_else_or_tampered_with_is_refused() {
    let start = || {
        let (c, hello) = Connecting::new(
            node(2551, 7),
            addr("orders", 2552),
            OPENING,
            [1; 32],
            secrets(&[A]),
        );
        let a = Accepting::new(node(2552, 9), [2; 32], secrets(&[A]));
        let (challenge, a) = a.on_hello(Kind::Handshake, &enc(&hello));
        let (c, claim) = c
            .on_challenge(Kind::HandshakeReply, &enc(&challenge))
            .unwrap_or_else(|e| panic!("{e}"));
        let (reply, _) =
            a.unwrap_or_else(|e| panic!("{e}"))
                .on_claim(Kind::Handshake, &enc(&claim), |_| Ok(()));
        (c, reply)
    };
    let (c, reply) = start();
    let HandshakeReply::Accepted { proof, .. } = reply else {
        panic!("{reply:?}")
    };
    // Another UID under the same proof: the proof covers the identity.
    let forged = HandshakeReply::Accepted {
        from: node(2552, 10),
        proof,
    };
    assert_eq!(
        c.on_reply(Kind::HandshakeReply, &enc(&forged)),
        Err(Failure::Refused(HandshakeRefusal::WrongSecret))
    );
    // Without a secret, an answer from another port is refused for what it is.
    let (c, hello) = Connecting::new(node(2551, 7), addr("orders", 2552), OPENING, [1; 32], None);
    let (challenge, a) =
        Accepting::new(node(2553, 9), [2; 32], None).on_hello(Kind::Handshake, &enc(&hello));
    let (c, claim) = c
        .on_challenge(Kind::HandshakeReply, &enc(&challenge))
        .unwrap_or_else(|e| panic!("{e}"));
    let (reply, accepted) =
        a.unwrap_or_else(|e| panic!("{e}"))
            .on_claim(Kind::Handshake, &enc(&claim), |_| Ok(()));
    assert!(matches!(
        accepted,
        Err(HandshakeRefusal::WrongAddress { .. })
    ));
    assert!(matches!(
        c.on_reply(Kind::HandshakeReply, &enc(&reply)),
        Err(Failure::RefusedByPeer(
            HandshakeRefusal::WrongAddress { .. }
        ))
    ));
}

#[test]
fn admit_is_asked_last_and_its_refusal_is_the_answer() {
    let no = HandshakeRefusal::Quarantined { uid: 7 };
    let (connected, accepted) = run(secrets(&[A]), secrets(&[A]), |who| {
        assert_eq!(who, &node(2551, 7));
        Err(HandshakeRefusal::Quarantined { uid: who.uid })
    });
    assert_eq!(connected, Err(Failure::RefusedByPeer(no.clone())));
    assert_eq!(accepted, Some(Err(no)));
}

#[test]
fn a_secret_rotates_without_a_refused_link() {
    // Step 1: everyone accepts both; step 2: everyone proves the new one; step 3: old dropped.
    let steps = [&[A][..], &[A, B], &[B, A], &[B]];
    for pair in steps.windows(2) {
        for (c, a) in [(pair[0], pair[1]), (pair[1], pair[0])] {
            let (connected, accepted) = run(secrets(c), secrets(a), |_| Ok(()));
            assert_eq!(connected, Ok(node(2552, 9)), "{} → {}", c.len(), a.len());
            assert!(matches!(accepted, Some(Ok(_))));
        }
    }
}

#[test]
fn strangers_and_other_versions_are_refused_at_the_hello() {
    let a = || Accepting::new(node(2552, 9), [2; 32], None);
    let (answer, next) = a().on_hello(Kind::Handshake, b"GET / HTTP/1.1\r\n");
    assert_eq!(
        answer,
        Challenge::Refused(HandshakeRefusal::BadMagic(*b"GET "))
    );
    assert!(next.is_err());
    let mut v3 = flotilla_wire::pdu::MAGIC.to_vec();
    v3.push(3);
    let (answer, _) = a().on_hello(Kind::Handshake, &v3);
    assert!(matches!(
        answer,
        Challenge::Refused(HandshakeRefusal::IncompatibleVersion { theirs: 3, .. })
    ));
    let (answer, _) = a().on_hello(Kind::User, &enc(&Hello::new([1; 32])));
    assert!(matches!(
        answer,
        Challenge::Refused(HandshakeRefusal::Protocol(_))
    ));
}

#[test]
fn secrets_are_never_printed_and_short_ones_are_refused() {
    let s = Secrets::parse("\n# comment\n  first-secret-0123456789  \nsecond-secret-0123456789\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.len(), 2);
    assert_eq!(s.proving(), b"first-secret-0123456789");
    assert_eq!(format!("{s:?}"), "Secrets(2 redacted)");
    assert_eq!(Secrets::parse("# nothing\n\n"), Err(SecretsError::Empty));
    assert_eq!(
        Secrets::parse("long-enough-secret-1234\nshort\n"),
        Err(SecretsError::TooShort { line: 2, len: 5 })
    );
}
