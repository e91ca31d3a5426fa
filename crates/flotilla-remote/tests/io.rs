//! Frame writing: batched, control lane first.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use flotilla_remote::io::{Lanes, read_frame, write_frames};
use flotilla_wire::{FrameDecoder, Kind, frame};
use tokio::sync::mpsc;

fn encoded(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(kind, body, 1 << 20, &mut out).unwrap();
    out
}

#[tokio::test]
async fn queued_control_frames_go_before_queued_user_frames_and_everything_arrives_in_order() {
    let (control_tx, control) = mpsc::unbounded_channel();
    let (ordinary_tx, ordinary) = mpsc::channel(4096);
    for i in 0..1000u32 {
        ordinary_tx
            .try_send(encoded(Kind::User, &i.to_be_bytes()))
            .unwrap();
    }
    control_tx.send(encoded(Kind::Heartbeat, b"beat")).unwrap();
    drop((control_tx, ordinary_tx));
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let writer =
        tokio::spawn(async move { write_frames(&mut client, Lanes { control, ordinary }).await });
    let mut decoder = FrameDecoder::new(1 << 20);
    let first = read_frame(&mut server, &mut decoder).await.unwrap();
    assert_eq!(
        first.kind,
        Kind::Heartbeat,
        "the heartbeat did not wait for 1000 user frames"
    );
    for i in 0..1000u32 {
        let f = read_frame(&mut server, &mut decoder).await.unwrap();
        assert_eq!(
            (f.kind, f.body),
            (Kind::User, i.to_be_bytes().to_vec()),
            "FIFO"
        );
    }
    writer.await.unwrap().unwrap();
}
