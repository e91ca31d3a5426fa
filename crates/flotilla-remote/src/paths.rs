//! The fast paths of ordinary messages: per remote node, the lane to write into while its
//! association is Active, shared by the sending handles and the driver that opens and closes it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use flotilla_core::Address;

use crate::queue::FrameQueue;

/// The path of ordinary messages to one remote node, shared by the handles and the driver.
#[derive(Debug, Default)]
pub(crate) struct Path {
    /// Messages handed to the driver and not processed yet: while there are any, later
    /// messages follow them the same way, so nothing overtakes.
    pub(crate) slow: AtomicUsize,
    /// The ordinary lane of the link in use, while the association is Active.
    pub(crate) lane: RwLock<Option<Arc<FrameQueue>>>,
}

/// Looked up on every send: hashed with foldhash (seeded per process) rather than SipHash.
pub(crate) type Paths = Arc<RwLock<HashMap<Address, Arc<Path>, foldhash::fast::RandomState>>>;

pub(crate) fn path(paths: &Paths, to: &Address) -> Arc<Path> {
    if let Some(p) = paths.read().unwrap_or_else(|e| e.into_inner()).get(to) {
        return Arc::clone(p);
    }
    let mut all = paths.write().unwrap_or_else(|e| e.into_inner());
    Arc::clone(all.entry(to.clone()).or_default())
}
