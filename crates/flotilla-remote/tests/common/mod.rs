//! Helpers shared by the integration tests.

#![allow(dead_code)] // reason: each test binary uses a different subset

use std::time::Duration;

use flotilla_remote::Inbound;

#[allow(unused_imports)] // reason: not every test binary uses it
pub(crate) use flotilla_remote::testing::fast_settings;

/// The one message of an [`Inbound::User`] taken with `recv_one`, owned.
pub(crate) fn only(messages: &flotilla_wire::UserBatch) -> flotilla_wire::UserEnvelope {
    assert_eq!(messages.len(), 1, "one message at a time");
    messages
        .first()
        .map(flotilla_wire::UserEnvelopeRef::to_envelope)
        .expect("a message")
}

/// The next inbound item that `pick` accepts (user messages one at a time), within 15 s.
pub(crate) async fn next<T>(
    rx: &mut flotilla_remote::InboundReceiver,
    mut pick: impl FnMut(Inbound) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(t) = pick(rx.recv_one().await.expect("remoting stopped")) {
                return t;
            }
        }
    })
    .await
    .expect("nothing arrived in time")
}
