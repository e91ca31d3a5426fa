//! The ordinary lane of a link: encoded user frames appended to one buffer, which the writer
//! takes whole.
//!
//! A sender copies its frame into the buffer under a short lock and wakes the writer only when
//! the buffer was empty; the writer swaps the buffer out and writes it with one call. Per
//! message that is one copy of the frame — no allocation, no channel slot, no wake-up while the
//! writer is busy — and as many messages per syscall as arrived during the last write.
//!
//! A full queue refuses frames (the caller sends them to dead letters), unless the caller
//! chose to wait for room ([`FrameQueue::wait_for_room`]): the writer signals room when it
//! takes a full queue, so a bulk sender is held back at the pace of the socket, as TCP holds
//! back a writer, instead of losing messages.

use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::io::FrameSource;

/// Encoded user frames waiting for the socket, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    state: Mutex<State>,
    ready: Notify,
    /// Signalled when a full queue is taken, and when it closes.
    room: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    bytes: Vec<u8>,
    /// The buffer the writer gave back, empty: the next `bytes` (no allocation, no fresh pages).
    spare: Vec<u8>,
    frames: usize,
    closed: bool,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// `capacity` frames already wait: the frame was not taken.
    Full,
    /// The link is gone: the frame was not taken.
    Closed,
}

impl FrameQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one encoded frame.
    #[cfg(test)]
    pub(crate) fn push(&self, frame: &[u8]) -> Push {
        let was_empty = {
            let mut s = self.lock();
            if s.closed {
                return Push::Closed;
            }
            if s.frames >= self.capacity {
                return Push::Full;
            }
            s.bytes.extend_from_slice(frame);
            s.frames += 1;
            s.frames == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Appends one frame that `encode` writes straight into the buffer (no copy), under the
    /// lock. `encode` must leave the buffer as it was when it fails. Nothing is encoded when the
    /// queue is full or closed.
    pub(crate) fn push_with<E>(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Push, E> {
        let was_empty = {
            let mut s = self.lock();
            if s.closed {
                return Ok(Push::Closed);
            }
            if s.frames >= self.capacity {
                return Ok(Push::Full);
            }
            encode(&mut s.bytes)?;
            s.frames += 1;
            s.frames == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
        Ok(Push::Queued)
    }

    /// No more frames are taken; the writer writes what is queued and ends.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Returns once a frame pushed now would not be refused as [`Push::Full`]: at once while
    /// there is room or the queue is closed, otherwise when the writer takes the queue.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a take between the check and the wait wakes it.
            room.as_mut().enable();
            {
                let s = self.lock();
                if s.closed || s.frames < self.capacity {
                    return;
                }
            }
            room.await;
        }
    }

    /// Everything queued, or `None` when nothing is.
    fn take(&self) -> Result<Vec<u8>, bool> {
        let (bytes, was_full, frames) = {
            let mut s = self.lock();
            if s.frames == 0 {
                return Err(s.closed);
            }
            let (was_full, frames) = (s.frames >= self.capacity, s.frames);
            s.frames = 0;
            let next = std::mem::take(&mut s.spare);
            (std::mem::replace(&mut s.bytes, next), was_full, frames)
        };
        // Counted once per take, outside the lock senders contend for.
        metrics::counter!("flotilla_remote_frames_sent_total", "lane" => "ordinary")
            .increment(frames as u64);
        // Only a full queue can have senders waiting for room (they wait only when refused).
        if was_full {
            self.room.notify_waiters();
        }
        Ok(bytes)
    }
}

impl FrameSource for std::sync::Arc<FrameQueue> {
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.take() {
                Ok(bytes) => return Some(bytes),
                Err(true) => return None,
                Err(false) => self.ready.notified().await,
            }
        }
    }

    fn try_chunk(&mut self) -> Option<Vec<u8>> {
        self.take().ok()
    }

    fn whole(&self) -> bool {
        true
    }

    fn recycle(&mut self, mut chunk: Vec<u8>) {
        chunk.clear();
        let mut s = self.lock();
        if s.spare.capacity() < chunk.capacity() {
            s.spare = chunk;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn frames_queue_up_to_capacity_and_are_taken_whole_in_order() {
        let mut q = Arc::new(FrameQueue::new(3));
        assert_eq!(q.push(b"a"), Push::Queued);
        assert_eq!(q.push(b"bc"), Push::Queued);
        assert_eq!(q.push(b"d"), Push::Queued);
        assert_eq!(q.push(b"e"), Push::Full, "three wait already");
        assert_eq!(q.next_chunk().await.as_deref(), Some(&b"abcd"[..]));
        assert_eq!(q.try_chunk(), None);
        assert_eq!(q.push(b"e"), Push::Queued, "room again once taken");
        q.close();
        assert_eq!(q.push(b"f"), Push::Closed);
        assert_eq!(
            q.next_chunk().await.as_deref(),
            Some(&b"e"[..]),
            "what was queued is still written"
        );
        assert_eq!(q.next_chunk().await, None);
    }

    #[tokio::test]
    async fn a_frame_encoded_in_place_is_queued_unless_encoding_fails() {
        let mut q = Arc::new(FrameQueue::new(2));
        let put = |q: &FrameQueue, b: &'static [u8]| {
            q.push_with(|out| {
                out.extend_from_slice(b);
                Ok::<(), ()>(())
            })
        };
        assert_eq!(put(&q, b"ab"), Ok(Push::Queued));
        assert_eq!(q.push_with(|_| Err("too large")), Err("too large"));
        assert_eq!(put(&q, b"c"), Ok(Push::Queued));
        assert_eq!(put(&q, b"d"), Ok(Push::Full));
        assert_eq!(q.next_chunk().await.as_deref(), Some(&b"abc"[..]));
        q.close();
        assert_eq!(put(&q, b"e"), Ok(Push::Closed));
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_goes_on_once_the_writer_takes_the_queue() {
        let mut q = Arc::new(FrameQueue::new(2));
        tokio::time::timeout(std::time::Duration::from_secs(5), q.wait_for_room())
            .await
            .unwrap_or_else(|_| panic!("room in an empty queue"));
        q.push(b"a");
        q.push(b"b");
        assert_eq!(q.push(b"c"), Push::Full);
        let waiter = Arc::clone(&q);
        let waiting = tokio::spawn(async move {
            waiter.wait_for_room().await;
            waiter.push(b"c")
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "no room until the writer takes the queue"
        );
        assert_eq!(q.next_chunk().await.as_deref(), Some(&b"ab"[..]));
        let pushed = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert_eq!(pushed.ok().and_then(Result::ok), Some(Push::Queued));
        assert_eq!(q.next_chunk().await.as_deref(), Some(&b"c"[..]));
        // A closed queue never keeps a sender waiting.
        q.push(b"d");
        q.push(b"e");
        let waiter = Arc::clone(&q);
        let waiting = tokio::spawn(async move { waiter.wait_for_room().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        q.close();
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_pushed_while_it_waits() {
        let q = Arc::new(FrameQueue::new(8));
        let mut writer = Arc::clone(&q);
        let taken = tokio::spawn(async move { writer.next_chunk().await });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        q.push(b"x");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), taken).await;
        assert_eq!(
            got.ok().and_then(Result::ok).flatten().as_deref(),
            Some(&b"x"[..])
        );
    }
}
