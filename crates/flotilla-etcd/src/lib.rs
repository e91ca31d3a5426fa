//! A small etcd v3 client: what Flotilla's etcd lease backend and its stores on etcd need —
//! key-value reads and writes, transactions, etcd leases — over etcd's gRPC API, with user
//! authentication and TLS.
//!
//! The gRPC code is generated from etcd's API definitions ahead of time and checked in
//! (`src/api/`, compared with a fresh generation by a test), so building this crate needs no
//! `protoc` or other system package; `docs/design/etcd-client.md` says why this client exists.
//!
//! ```no_run
//! use flotilla_etcd::{Client, EtcdSettings, Txn, TxnOp, Compare, CompareOp};
//!
//! # async fn run() -> Result<(), flotilla_etcd::EtcdError> {
//! let client = Client::connect(&EtcdSettings::new(["http://127.0.0.1:2379"])).await?;
//! // Create a key only if it does not exist.
//! let created = client
//!     .txn(
//!         Txn::new()
//!             .when([Compare::create_revision("/app/config", CompareOp::Equal, 0)])
//!             .and_then([TxnOp::put("/app/config", "v1", None)]),
//!     )
//!     .await?
//!     .succeeded;
//! let value = client.get("/app/config").await?.map(|kv| kv.value);
//! # let _ = (created, value);
//! # Ok(())
//! # }
//! ```

mod client;
mod ops;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod txn;

/// etcd's API as generated from its definitions (`proto/`): the messages and gRPC clients of
/// the `etcdserverpb`, `mvccpb` and `authpb` packages.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
pub mod api {
    /// etcd's key-value, lease, watch, cluster, maintenance and auth services.
    pub mod etcdserverpb {
        include!("api/etcdserverpb.rs");
    }
    /// Keys, values and events of etcd's store.
    pub mod mvccpb {
        include!("api/mvccpb.rs");
    }
    /// etcd's users, roles and permissions.
    pub mod authpb {
        include!("api/authpb.rs");
    }
}

pub use api::mvccpb::KeyValue;
pub use client::{Client, EtcdError};
pub use settings::{EtcdSettings, EtcdTls};
pub use txn::{Compare, CompareOp, Txn, TxnOp};

/// etcd's smallest lease TTL, in seconds: lower values are raised by the server.
pub const MIN_TTL_SECS: i64 = 2;

/// A duration as an etcd lease TTL: whole seconds, rounded up, at least [`MIN_TTL_SECS`].
///
/// ```
/// use std::time::Duration;
/// assert_eq!(flotilla_etcd::ttl_secs(Duration::from_millis(2001)), 3);
/// assert_eq!(flotilla_etcd::ttl_secs(Duration::from_millis(500)), 2);
/// ```
pub fn ttl_secs(ttl: std::time::Duration) -> i64 {
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let secs = if ttl.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    };
    secs.max(MIN_TTL_SECS)
}
