//! Helpers shared by the integration tests.

#![allow(dead_code)] // reason: each test binary uses a different subset

use std::time::Duration;

use flotilla_remote::Inbound;

pub(crate) use flotilla_remote::testing::fast_settings;

/// The next inbound item that `pick` accepts, within 15 s.
pub(crate) async fn next<T>(
    rx: &mut flotilla_remote::InboundReceiver,
    mut pick: impl FnMut(Inbound) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(t) = pick(rx.recv().await.expect("remoting stopped")) {
                return t;
            }
        }
    })
    .await
    .expect("nothing arrived in time")
}
