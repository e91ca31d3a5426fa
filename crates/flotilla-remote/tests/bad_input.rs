//! Hostile peers against a running node: it closes their connections and keeps serving others.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use flotilla_core::{Address, RemoteSettings, UniqueAddress};
use flotilla_proto::handshake::Secrets;
use flotilla_remote::handshake::{Opening, decoder, initiate};
use flotilla_remote::{Inbound, RemoteNode};
use flotilla_wire::{Lane, UserEnvelope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start() -> (RemoteNode, flotilla_remote::InboundReceiver) {
    let settings = RemoteSettings {
        handshake_timeout: Duration::from_millis(500),
        secret: Some(flotilla_remote::testing::secret().to_owned()),
        ..RemoteSettings::default()
    };
    RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap()
}

/// A connection to `port` that completes the handshake as `me` for one lane of link `link`.
async fn open(port: u16, me: &UniqueAddress, target: &Address, lane: Lane, link: u64) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    initiate(
        &mut s,
        &mut decoder(),
        me,
        target,
        Some(Secrets::new([flotilla_remote::testing::secret()]).unwrap()),
        Opening { lane, link },
    )
    .await
    .unwrap();
    s
}

async fn delivered(rx: &mut flotilla_remote::InboundReceiver) -> UserEnvelope {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Inbound::User { messages, .. }) = rx.recv_one().await {
                return common::only(&messages);
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_that_connection_only() {
    let (node, mut inbound) = start();
    let port = node.local().address.port().unwrap();
    // A peer that opens a link properly, then announces a 100 MB frame.
    let me = UniqueAddress {
        address: Address::remote("sim", "127.0.0.1", 1).unwrap(),
        uid: 99,
    };
    let target = node.local().address.clone();
    let mut control = open(port, &me, &target, Lane::Control, 1).await;
    let mut evil = open(port, &me, &target, Lane::Ordinary, 1).await;
    evil.write_all(&(100u32 << 20).to_be_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), evil.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the node closed the connection");
    let closed = tokio::time::timeout(Duration::from_secs(5), control.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "and the link's other connection");

    // Half a link: closed once its partner is overdue (handshake-timeout, 500 ms here).
    let started = std::time::Instant::now();
    let mut lonely = open(port, &me, &target, Lane::Control, 2).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), lonely.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an unpaired connection is closed");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "not before its partner was overdue"
    );

    // Slow-loris connections that never handshake do not block anyone either.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let (other, _) = start();
    other
        .send_user(
            &node.local().address,
            UserEnvelope {
                recipient: "/user/x".into(),
                sender: None,
                manifest: "m".into(),
                payload: b"still here".to_vec(),
            },
        )
        .unwrap();
    assert_eq!(delivered(&mut inbound).await.payload, b"still here");
}

/// An envelope that does not decode, on an Active link: the receiver learns of it as an error in
/// its place (and the actor runtime drops and counts it), the messages around it arrive, and the
/// link stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_envelope_is_an_error_in_its_place_and_the_link_stays_up() {
    let (node, mut inbound) = start();
    let port = node.local().address.port().unwrap();
    let me = UniqueAddress {
        address: Address::remote("sim", "127.0.0.1", 1).unwrap(),
        uid: 98,
    };
    let target = node.local().address.clone();
    let _control = open(port, &me, &target, Lane::Control, 5).await;
    let mut ordinary = open(port, &me, &target, Lane::Ordinary, 5).await;
    let frame = |payload: &[u8]| {
        let mut out = Vec::new();
        let env = UserEnvelope {
            recipient: "/user/x".into(),
            sender: None,
            manifest: "m".into(),
            payload: payload.to_vec(),
        };
        flotilla_wire::pdu::encode(flotilla_wire::Kind::User, &env, 1 << 20, &mut out).unwrap();
        out
    };
    // One message first, so that the association is Active and later ones go straight through.
    ordinary.write_all(&frame(b"one")).await.unwrap();
    assert_eq!(delivered(&mut inbound).await.payload, b"one");
    let mut bytes = Vec::new();
    // A well-framed User frame whose body is no envelope (a string that is not UTF-8).
    flotilla_wire::frame::encode(
        flotilla_wire::Kind::User,
        &[2, 0xff, 0xfe, 0, 0, 0],
        1 << 20,
        &mut bytes,
    )
    .unwrap();
    bytes.extend(frame(b"two"));
    ordinary.write_all(&bytes).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Some(Inbound::User { messages, .. }) = inbound.recv().await {
                seen.extend(
                    messages
                        .iter_checked()
                        .map(|m| m.map(|e| e.payload.to_vec()).map_err(|e| e.to_string())),
                );
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(seen[0].is_err(), "{seen:?}");
    assert_eq!(seen[1], Ok(b"two".to_vec()));
    ordinary.write_all(&frame(b"three")).await.unwrap();
    assert_eq!(delivered(&mut inbound).await.payload, b"three");
    assert_eq!(
        node.associations().await.unwrap()[0].state,
        flotilla_proto::association::StateName::Active
    );
}
