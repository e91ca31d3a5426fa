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

/// A stream that, as TLS does, takes what is written into a buffer of its own and puts it on the
/// wire only when flushed (shared, so the test can look while the writer still runs).
#[derive(Clone, Default)]
struct Buffering {
    held: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    wire: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl AsyncWrite for Buffering {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.held.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        self.wire.lock().unwrap().extend_from_slice(&held);
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The last frames of a burst reach the wire while the lane stays open and idle: the writer
/// flushes before it waits (a TLS stream otherwise keeps them until the next write).
#[tokio::test]
async fn the_end_of_a_burst_is_flushed_before_the_writer_waits() {
    let (tx, lane) = mpsc::channel(4096);
    let stream = Buffering::default();
    let wire = std::sync::Arc::clone(&stream.wire);
    let writer = tokio::spawn(async move {
        let mut stream = stream;
        write_lane(&mut stream, lane).await
    });
    let mut sent = Vec::new();
    for i in 0..100u32 {
        let f = encoded(Kind::User, &i.to_be_bytes());
        sent.extend_from_slice(&f);
        tx.send(f).await.unwrap();
    }
    // The lane is open and idle now: everything must be on the wire within a moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while *wire.lock().unwrap() != sent {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} bytes reached the wire",
            wire.lock().unwrap().len(),
            sent.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(tx);
    writer.await.unwrap().unwrap();
}
