//! Frame writing: batched, in order.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use flotilla_remote::io::{MAX_BATCH, read_frame, write_lane};
use flotilla_wire::{FrameDecoder, Kind, frame};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

fn encoded(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(kind, body, 1 << 20, &mut out).unwrap();
    out
}

/// A sink that records the size of every write.
#[derive(Default)]
struct Writes(Vec<u8>, Vec<usize>);

impl AsyncWrite for Writes {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.extend_from_slice(buf);
        self.1.push(buf.len());
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn queued_frames_go_out_in_order_and_many_per_write() {
    let (tx, lane) = mpsc::channel(4096);
    for i in 0..1000u32 {
        tx.try_send(encoded(Kind::User, &i.to_be_bytes())).unwrap();
    }
    drop(tx);
    let mut sink = Writes::default();
    write_lane(&mut sink, lane).await.unwrap();
    assert!(
        sink.1.len() <= 2,
        "1000 queued frames took {} writes",
        sink.1.len()
    );
    assert!(sink.1.iter().all(|w| *w <= MAX_BATCH));
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut bytes = &sink.0[..];
    for i in 0..1000u32 {
        let f = read_frame(&mut bytes, &mut decoder).await.unwrap();
        assert_eq!(
            (f.kind, f.body),
            (Kind::User, i.to_be_bytes().to_vec()),
            "FIFO"
        );
    }
}

#[tokio::test]
async fn an_unbounded_control_lane_is_written_the_same_way() {
    let (tx, lane) = mpsc::unbounded_channel();
    for i in 0..10u32 {
        tx.send(encoded(Kind::Heartbeat, &i.to_be_bytes())).unwrap();
    }
    drop(tx);
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(async move { write_lane(&mut client, lane).await });
    let mut decoder = FrameDecoder::new(1 << 20);
    for i in 0..10u32 {
        let f = read_frame(&mut server, &mut decoder).await.unwrap();
        assert_eq!(
            (f.kind, f.body),
            (Kind::Heartbeat, i.to_be_bytes().to_vec())
        );
    }
    writer.await.unwrap().unwrap();
}
