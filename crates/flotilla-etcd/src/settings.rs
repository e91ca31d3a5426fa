//! How to reach etcd: the settings are part of Flotilla's configuration (`[lease.etcd]`), so
//! they live in `flotilla-core`.

pub use flotilla_core::{EtcdSettings, EtcdTls};
