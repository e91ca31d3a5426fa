//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset

use std::time::Duration;

use tokio::sync::mpsc;

/// A log of what happened, in order, readable by the test.
#[derive(Clone)]
pub struct Probe(pub mpsc::UnboundedSender<String>);

/// The reading end of a [`Probe`].
pub struct ProbeRx(pub mpsc::UnboundedReceiver<String>);

/// A new probe and its reading end.
pub fn probe() -> (Probe, ProbeRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Probe(tx), ProbeRx(rx))
}

impl Probe {
    /// Records one entry.
    pub fn say(&self, what: impl Into<String>) {
        let _ = self.0.send(what.into());
    }
}

impl ProbeRx {
    /// The next entry, or a panic after 30 s (virtual time in paused tests).
    pub async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.0.recv())
            .await
            .expect("probe timed out")
            .expect("probe closed")
    }

    /// Everything logged so far, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(s) = self.0.try_recv() {
            out.push(s);
        }
        out
    }

    /// Asserts nothing more arrives within `d`.
    pub async fn expect_none(&mut self, d: Duration) {
        if let Ok(Some(s)) = tokio::time::timeout(d, self.0.recv()).await {
            panic!("unexpected probe entry {s:?}");
        }
    }
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
