//! Frames: how bytes on a connection are cut into messages.
//!
//! ```text
//!  0               4        5
//!  +---------------+--------+------------------------------+
//!  | length u32 BE | kind   | body (length − 1 bytes)      |
//!  +---------------+--------+------------------------------+
//! ```
//!
//! `length` counts the kind byte and the body, and is at most the configured maximum frame size;
//! a larger prefix is refused before any body byte is buffered, so a peer cannot make the
//! decoder allocate more than the maximum. Frames are appended to one output buffer so that
//! many are written with one syscall.

use crate::Kind;

/// Bytes before the body: the length prefix and the kind.
pub const HEADER_LEN: usize = 5;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame would exceed the maximum frame size.
    #[error("a frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// The frame's length (kind byte and body).
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A length prefix of zero: there is not even a kind byte.
    #[error("an empty frame (length prefix 0)")]
    Empty,
    /// An unknown kind byte.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body is.
    pub kind: Kind,
    /// The body.
    pub body: Vec<u8>,
}

/// Appends one frame to `out`.
pub fn encode(kind: Kind, body: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = body.len() + 1;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or(FrameError::TooLarge { len, max })?;
    out.reserve(HEADER_LEN - 1 + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    Ok(())
}

/// Cuts a byte stream into frames. Feed it what the socket gave with [`FrameDecoder::extend`],
/// then take frames with [`FrameDecoder::next_frame`] until it answers `Ok(None)`.
///
/// After an error the connection must be closed: the stream's framing is lost.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Changes the largest frame accepted from now on: a connection reads its handshake with a
    /// small limit and raises it once the peer is authenticated.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read received bytes into, appending only (as `AsyncReadExt::read_buf`
    /// does): it saves the copy that [`FrameDecoder::extend`] makes. At least `room` bytes of
    /// spare capacity are reserved.
    pub fn read_buffer(&mut self, room: usize) -> &mut Vec<u8> {
        self.compact();
        self.buf.reserve(room);
        &mut self.buf
    }

    /// Drops the bytes already returned as frames, once they are the larger part of the buffer,
    /// so the buffer does not grow without bound on a long-lived connection.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The bytes received but not yet returned as frames (for reporting what a peer sent).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        Ok(self.next_frame_ref()?.map(|(kind, body)| Frame {
            kind,
            body: body.to_vec(),
        }))
    }

    /// The next complete frame's kind and body, borrowed from the decoder's buffer (no copy);
    /// `Ok(None)` if more bytes are needed.
    pub fn next_frame_ref(&mut self) -> Result<Option<(Kind, &[u8])>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if pending.len() < 4 + len {
            return Ok(None);
        }
        let kind_byte = pending[4];
        let kind = Kind::from_byte(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        let body = self.start + HEADER_LEN..self.start + 4 + len;
        self.start += 4 + len;
        Ok(Some((kind, &self.buf[body])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_arrive_in_pieces() {
        let mut out = Vec::new();
        encode(Kind::User, b"hello", 1024, &mut out).unwrap_or_else(|e| panic!("{e}"));
        encode(Kind::Heartbeat, b"", 1024, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&out[..5], &[0, 0, 0, 6, Kind::User as u8]);
        let mut d = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for byte in &out {
            d.extend(std::slice::from_ref(byte));
            while let Some(f) = d.next_frame().unwrap_or_else(|e| panic!("{e}")) {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame {
                    kind: Kind::User,
                    body: b"hello".to_vec()
                },
                Frame {
                    kind: Kind::Heartbeat,
                    body: vec![]
                }
            ]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_frames_are_refused_on_both_sides_before_buffering_the_body() {
        let mut out = Vec::new();
        assert_eq!(
            encode(Kind::User, &[0; 100], 50, &mut out),
            Err(FrameError::TooLarge { len: 101, max: 50 })
        );
        assert!(out.is_empty(), "nothing written for a refused frame");
        let mut d = FrameDecoder::new(1024);
        d.extend(&u32::MAX.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0, 0, 0, 1, 0xee]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(0xee)));
    }

    /// Bytes appended through `read_buffer` decode the same as through `extend`, across many
    /// compactions of the buffer, and the buffer stays bounded.
    #[test]
    fn reading_in_place_across_compactions() {
        let mut out = Vec::new();
        for i in 0..2000u32 {
            let body = vec![(i % 251) as u8; 150 + (i % 97) as usize];
            encode(Kind::User, &body, 1024, &mut out).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut d = FrameDecoder::new(1024);
        let mut seen = 0u32;
        let mut peak = 0;
        for chunk in out.chunks(7001) {
            d.read_buffer(chunk.len()).extend_from_slice(chunk);
            peak = peak.max(d.buf.len());
            while let Some((kind, body)) = d.next_frame_ref().unwrap_or_else(|e| panic!("{e}")) {
                assert_eq!(kind, Kind::User);
                assert_eq!(body, vec![(seen % 251) as u8; 150 + (seen % 97) as usize]);
                seen += 1;
            }
        }
        assert_eq!(seen, 2000);
        assert_eq!(d.buffered(), 0);
        assert!(peak < 160 * 1024, "the buffer stays bounded: {peak} bytes");
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and it never holds a frame over the limit.
        #[test]
        fn random_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
            let mut d = FrameDecoder::new(256);
            for chunk in chunks {
                d.extend(&chunk);
                while let Ok(Some(f)) = d.next_frame() {
                    prop_assert!(f.body.len() < 256);
                }
            }
        }

        /// Whatever is encoded decodes to the same frames, however the bytes are split.
        #[test]
        fn encode_then_decode_is_identity(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            split in 1usize..97,
        ) {
            let mut out = Vec::new();
            for b in &bodies {
                encode(Kind::User, b, 512, &mut out).unwrap_or_else(|e| panic!("{e}"));
            }
            let mut d = FrameDecoder::new(512);
            let mut got = Vec::new();
            for chunk in out.chunks(split) {
                d.extend(chunk);
                while let Some(f) = d.next_frame().unwrap_or_else(|e| panic!("{e}")) {
                    got.push(f.body);
                }
            }
            prop_assert_eq!(got, bodies);
        }
    }
}
