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
    let n = stream.read_buf(decoder.read_buffer(READ_CHUNK)).await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    Ok(())
}

/// Encoded frames waiting to be written, by lane.
#[derive(Debug)]
pub struct Lanes {
    /// Handshake replies, heartbeats, system messages, acknowledgements, quarantine notices.
    pub control: mpsc::UnboundedReceiver<Vec<u8>>,
    /// User messages.
    pub ordinary: mpsc::Receiver<Vec<u8>>,
}

/// At most this many bytes are gathered into one write.
pub const MAX_BATCH: usize = 256 * 1024;

/// Writes frames until both lanes close or the socket fails. Each write gathers everything that
/// is waiting — control frames first, then user frames — up to [`MAX_BATCH`] bytes, so many
/// frames go out in one syscall and a heartbeat never waits behind a queue of user messages.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    stream: &mut W,
    mut lanes: Lanes,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(64 * 1024);
    let (mut control_open, mut ordinary_open) = (true, true);
    while control_open || ordinary_open {
        batch.clear();
        // Wait for anything, control first when both are ready.
        tokio::select! {
            biased;
            frame = lanes.control.recv(), if control_open => match frame {
                Some(f) => batch.extend_from_slice(&f),
                None => control_open = false,
            },
            frame = lanes.ordinary.recv(), if ordinary_open => match frame {
                Some(f) => batch.extend_from_slice(&f),
                None => ordinary_open = false,
            },
        }
        // Gather what is already queued (`is_empty` first: it never waits).
        while control_open && batch.len() < MAX_BATCH && !lanes.control.is_empty() {
            match lanes.control.recv().await {
                Some(f) => batch.extend_from_slice(&f),
                None => control_open = false,
            }
        }
        while ordinary_open && batch.len() < MAX_BATCH && !lanes.ordinary.is_empty() {
            match lanes.ordinary.recv().await {
                Some(f) => batch.extend_from_slice(&f),
                None => ordinary_open = false,
            }
        }
        if !batch.is_empty() {
            stream.write_all(&batch).await?;
        }
    }
    stream.flush().await
}
