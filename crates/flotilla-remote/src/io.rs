//! Reading frames from a stream, and writing them in batches.

use std::io;

use flotilla_wire::{Frame, FrameDecoder, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the framing (oversized, empty or unknown frame).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
}

/// Bytes asked of the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Reads until `decoder` yields a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<Frame, ReadError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        fill(stream, decoder).await?;
    }
}

/// Reads once from `stream` straight into `decoder`'s buffer (up to [`READ_CHUNK`] bytes).
pub async fn fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<(), ReadError> {
    fill_up_to(stream, decoder, READ_CHUNK).await
}

/// Reads once from `stream` into `decoder`'s buffer, reserving room for `room` bytes (the read
/// may take more if the buffer already has spare capacity).
pub async fn fill_up_to<R: AsyncRead + Unpin>(
    stream: &mut R,
    decoder: &mut FrameDecoder,
    room: usize,
) -> Result<(), ReadError> {
    let n = stream.read_buf(decoder.read_buffer(room)).await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    Ok(())
}

/// Encoded frames waiting to be written: the receiving end of a lane. A chunk holds one or more
/// whole frames.
pub trait FrameSource: Send {
    /// The next chunk, or `None` once the lane is closed and empty.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send;
    /// A chunk that is already waiting, without waiting.
    fn try_chunk(&mut self) -> Option<Vec<u8>>;
    /// Takes back a chunk that was written, to reuse its memory.
    fn recycle(&mut self, chunk: Vec<u8>) {
        drop(chunk);
    }
    /// Whether a chunk is already everything that was waiting, so that a writer gains nothing
    /// by gathering more chunks into one write (it would only copy them).
    fn whole(&self) -> bool {
        false
    }
}

impl FrameSource for mpsc::Receiver<Vec<u8>> {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send {
        self.recv()
    }
    fn try_chunk(&mut self) -> Option<Vec<u8>> {
        self.try_recv().ok()
    }
}

impl FrameSource for mpsc::UnboundedReceiver<Vec<u8>> {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send {
        self.recv()
    }
    fn try_chunk(&mut self) -> Option<Vec<u8>> {
        self.try_recv().ok()
    }
}

/// At most this many bytes are gathered into one write.
pub const MAX_BATCH: usize = 256 * 1024;

/// Writes a lane's frames to its connection until the lane closes or the socket fails. Each
/// write gathers every chunk already waiting, up to [`MAX_BATCH`] bytes (a single chunk is
/// written as it is, whatever its size, and so is a [whole](FrameSource::whole) one), so many
/// frames go out in one syscall; frames are written in the order they were queued.
///
/// Before waiting for more, the stream is flushed: a TLS stream accepts bytes into its own
/// buffer and may keep part of them there when the socket is full, to be written only by a
/// later write or a flush — without one, the last frames of a burst could wait for ever.
pub async fn write_lane<W: AsyncWrite + Unpin, S: FrameSource>(
    stream: &mut W,
    mut lane: S,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let first = match lane.try_chunk() {
            Some(chunk) => chunk,
            None => {
                stream.flush().await?;
                match lane.next_chunk().await {
                    Some(chunk) => chunk,
                    None => break,
                }
            }
        };
        let second = if lane.whole() { None } else { lane.try_chunk() };
        let Some(second) = second else {
            stream.write_all(&first).await?;
            lane.recycle(first);
            continue;
        };
        batch.clear();
        for chunk in [first, second] {
            batch.extend_from_slice(&chunk);
            lane.recycle(chunk);
        }
        while batch.len() < MAX_BATCH {
            match lane.try_chunk() {
                Some(f) => {
                    batch.extend_from_slice(&f);
                    lane.recycle(f);
                }
                None => break,
            }
        }
        stream.write_all(&batch).await?;
    }
    stream.flush().await
}
