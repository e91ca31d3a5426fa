//! Handshakes over real TCP connections on 127.0.0.1.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::time::Duration;

use flotilla_core::{Address, UniqueAddress};
use flotilla_proto::handshake::Secrets;
use flotilla_remote::handshake::{HandshakeError, Opening, accept, decoder, initiate};
use flotilla_wire::Lane;
use flotilla_wire::pdu::HandshakeRefusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "a-cluster-secret-0123456789";
const OTHER: &str = "another-secret-0123456789";
const OPEN: Opening = Opening {
    lane: Lane::Control,
    link: 5,
};

fn secrets(s: &str) -> Secrets {
    Secrets::new([s]).unwrap()
}

fn node(system: &str, port: u16, uid: u64) -> UniqueAddress {
    UniqueAddress {
        address: Address::remote(system, "127.0.0.1", port).unwrap(),
        uid,
    }
}

/// A listener for `system`, and the result of accepting one connection there.
async fn server(
    system: &'static str,
    quarantined: Option<u64>,
) -> (
    u16,
    tokio::task::JoinHandle<Result<UniqueAddress, HandshakeError>>,
) {
    server_with_secret(system, quarantined, None).await
}

async fn server_with_secret(
    system: &'static str,
    quarantined: Option<u64>,
    secret: Option<&'static str>,
) -> (
    u16,
    tokio::task::JoinHandle<Result<UniqueAddress, HandshakeError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let me = node(system, port, 42);
        accept(&mut stream, &mut decoder(), &me, secret.map(secrets), |p| {
            if Some(p.uid) == quarantined {
                Err(HandshakeRefusal::Quarantined { uid: p.uid })
            } else {
                Ok(())
            }
        })
        .await
        .map(|(peer, opening)| {
            assert_eq!(opening, OPEN, "the lane and link arrive as sent");
            peer
        })
    });
    (port, task)
}

#[tokio::test]
async fn both_sides_learn_who_the_other_is() {
    let (port, accepted) = server("orders", None).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let me = node("orders", 2551, 7);
    let target = Address::remote("orders", "127.0.0.1", port).unwrap();
    let peer = initiate(&mut stream, &mut decoder(), &me, &target, None, OPEN)
        .await
        .unwrap();
    assert_eq!(peer, node("orders", port, 42));
    assert_eq!(accepted.await.unwrap().unwrap(), me);
}

#[tokio::test]
async fn a_wrong_system_name_is_refused_and_both_sides_say_why() {
    let (port, accepted) = server("orders", None).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let target = Address::remote("billing", "127.0.0.1", port).unwrap();
    let err = initiate(
        &mut stream,
        &mut decoder(),
        &node("billing", 2551, 7),
        &target,
        None,
        OPEN,
    )
    .await
    .unwrap_err();
    let want = "wrong actor system: the peer is \"billing\", this node is \"orders\"";
    assert!(
        matches!(
            &err,
            HandshakeError::RefusedByPeer(HandshakeRefusal::WrongSystem { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains(want), "{err}");
    let server_err = accepted.await.unwrap().unwrap_err();
    assert!(server_err.to_string().contains(want), "{server_err}");
}

#[tokio::test]
async fn a_quarantined_incarnation_is_refused_with_what_to_do() {
    let (port, accepted) = server("orders", Some(7)).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let target = Address::remote("orders", "127.0.0.1", port).unwrap();
    let err = initiate(
        &mut stream,
        &mut decoder(),
        &node("orders", 2551, 7),
        &target,
        None,
        OPEN,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("quarantined uid 7: restart that node"),
        "{err}"
    );
    assert!(accepted.await.unwrap().is_err());
}

#[tokio::test]
async fn garbage_bytes_are_refused_as_not_flotilla() {
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        &[0, 0, 0, 3, 0x01, 0xff, 0xff],
    ] {
        let (port, accepted) = server("orders", None).await;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let err = accepted.await.unwrap().unwrap_err();
        assert!(
            matches!(err, HandshakeError::Refused(HandshakeRefusal::BadMagic(_))),
            "{garbage:?}: {err}"
        );
        assert!(
            err.to_string().contains("not a Flotilla handshake"),
            "{err}"
        );
        // The peer is told, then the connection closes.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    }
}

#[tokio::test]
async fn accept_waits_for_a_silent_peer_so_the_transport_must_bound_it() {
    let (port, accepted) = server("orders", None).await;
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The caller bounds the handshake; here, as the transport does, with a timeout.
    let outcome = tokio::time::timeout(Duration::from_millis(300), accepted).await;
    assert!(
        outcome.is_err(),
        "still waiting: a slow-loris peer is bounded by the caller's timeout"
    );
}

#[tokio::test]
async fn the_cluster_secret_must_match_on_both_sides() {
    let target = |port| Address::remote("orders", "127.0.0.1", port).unwrap();
    let me = node("orders", 2551, 7);
    // The same secret: accepted.
    let (port, accepted) = server_with_secret("orders", None, Some(SECRET)).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    initiate(
        &mut stream,
        &mut decoder(),
        &me,
        &target(port),
        Some(secrets(SECRET)),
        OPEN,
    )
    .await
    .unwrap();
    assert_eq!(accepted.await.unwrap().unwrap(), me);
    // Another secret, or none where one is required, or one where none is expected: refused.
    for (theirs, ours) in [
        (Some(SECRET), Some(OTHER)),
        (Some(SECRET), None),
        (None, Some(SECRET)),
    ] {
        let (port, accepted) = server_with_secret("orders", None, theirs).await;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let err = initiate(
            &mut stream,
            &mut decoder(),
            &me,
            &target(port),
            ours.map(secrets),
            OPEN,
        )
        .await
        .unwrap_err();
        // The connecting side sees the accepting side cannot prove the secret, and stops
        // before it says who it is; the accepting side sees the connection close.
        assert!(
            matches!(err, HandshakeError::Refused(HandshakeRefusal::WrongSecret)),
            "{err}"
        );
        assert!(
            err.to_string().contains("wrong or missing cluster secret"),
            "{err}"
        );
        drop(stream);
        assert!(accepted.await.unwrap().is_err());
    }
}
