//! Hostile peers against a running node: it closes their connections and keeps serving others.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use flotilla_core::{Address, RemoteSettings, UniqueAddress};
use flotilla_remote::handshake::{Opening, initiate};
use flotilla_remote::{Inbound, RemoteNode};
use flotilla_wire::{FrameDecoder, Lane, UserEnvelope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start() -> (RemoteNode, flotilla_remote::InboundReceiver) {
    let settings = RemoteSettings {
        handshake_timeout: Duration::from_millis(500),
        ..RemoteSettings::default()
    };
    RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap()
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
    let open = |lane: Lane, link: u64| {
        let (me, target) = (me.clone(), target.clone());
        async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            initiate(
                &mut s,
                &mut FrameDecoder::new(1 << 20),
                &me,
                &target,
                None,
                Opening { lane, link },
                1 << 20,
            )
            .await
            .unwrap();
            s
        }
    };
    let mut control = open(Lane::Control, 1).await;
    let mut evil = open(Lane::Ordinary, 1).await;
    evil.write_all(&(100u32 << 20).to_be_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), evil.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the node closed the connection");
    let closed = tokio::time::timeout(Duration::from_secs(5), control.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "and the link's other connection");

    // Half a link: closed once its partner is overdue (handshake-timeout, 500 ms here).
    let started = std::time::Instant::now();
    let mut lonely = open(Lane::Control, 2).await;
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
