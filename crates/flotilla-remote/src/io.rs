//! Reading frames from a stream, and writing them in batches.

use std::io;
use std::task::{Context, Poll};

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
    let n = stream.read_buf(decoder.read_buffer(READ_CHUNK)).await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    Ok(())
}

/// A queue of encoded frames waiting to be written: the receiving end of a lane.
pub trait FrameSource: Send {
    /// The next frame, or `None` once the lane is closed and empty.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>>;
    /// A frame that is already waiting, without waiting.
    fn try_frame(&mut self) -> Option<Vec<u8>>;
}

impl FrameSource for mpsc::Receiver<Vec<u8>> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        self.poll_recv(cx)
    }
    fn try_frame(&mut self) -> Option<Vec<u8>> {
        self.try_recv().ok()
    }
}

impl FrameSource for mpsc::UnboundedReceiver<Vec<u8>> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        self.poll_recv(cx)
    }
    fn try_frame(&mut self) -> Option<Vec<u8>> {
        self.try_recv().ok()
    }
}

/// At most this many bytes are gathered into one write.
pub const MAX_BATCH: usize = 256 * 1024;

/// Writes a lane's frames to its connection until the lane closes or the socket fails. Each
/// write gathers every frame already waiting, up to [`MAX_BATCH`] bytes, so many frames go out
/// in one syscall; frames are written in the order they were queued.
pub async fn write_lane<W: AsyncWrite + Unpin, S: FrameSource>(
    stream: &mut W,
    mut lane: S,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Some(first) = std::future::poll_fn(|cx| lane.poll_frame(cx)).await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < MAX_BATCH {
            match lane.try_frame() {
                Some(f) => batch.extend_from_slice(&f),
                None => break,
            }
        }
        stream.write_all(&batch).await?;
    }
    stream.flush().await
}
