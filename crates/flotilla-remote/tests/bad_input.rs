//! Hostile peers against a running node: it closes their connections and keeps serving others.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::time::Duration;

use flotilla_core::{Address, RemoteSettings, UniqueAddress};
use flotilla_remote::handshake::initiate;
use flotilla_remote::{Inbound, RemoteNode};
use flotilla_wire::{FrameDecoder, UserEnvelope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start() -> (RemoteNode, tokio::sync::mpsc::UnboundedReceiver<Inbound>) {
    let settings = RemoteSettings {
        handshake_timeout: Duration::from_millis(500),
        ..RemoteSettings::default()
    };
    RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap()
}

async fn delivered(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Inbound>) -> UserEnvelope {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Inbound::User { envelope, .. }) = rx.recv().await {
                return envelope;
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
    // A peer that handshakes properly, then announces a 100 MB frame.
    let mut evil = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let me = UniqueAddress {
        address: Address::remote("sim", "127.0.0.1", 1).unwrap(),
        uid: 99,
    };
    initiate(
        &mut evil,
        &mut FrameDecoder::new(1 << 20),
        &me,
        &node.local().address,
        None,
        1 << 20,
    )
    .await
    .unwrap();
    evil.write_all(&(100u32 << 20).to_be_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), evil.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the node closed the connection");

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
