//! Remember-entities stores: where each shard keeps the ids of its entities, so that they run
//! again wherever the shard runs next (after a hand-off, a leave, a crash, a full restart).
//!
//! A store holds, per entity type, a set of entity ids per shard. A shard reads its set when it
//! starts (after it has its lease) and writes changes one update at a time: an id is added
//! before its entity first starts, and removed once a passivated entity has stopped. The
//! coordinator reads the shard ids when it starts, and keeps those shards allocated.
//!
//! - [`MemoryEntityStore`]: in memory, shared by the nodes of one process (tests, demos, the
//!   embedded default alongside the in-memory lease backend). Nothing survives the process.
//! - `EtcdEntityStore` (feature `etcd`): one key per entity,
//!   `<prefix><type>/<shard>/<entity>`, durable and shared by every node.
//!
//! Writes are not fenced by the shard's lease: a shard that lost its lease stops writing at
//! once, but a write already sent may still land.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

pub use flotilla_lease::backend::BoxFuture;

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remember-entities store ({kind}): {reason}")]
pub struct StoreError {
    /// The store's kind.
    pub kind: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// A remember-entities store. See the [module docs](self).
pub trait RememberEntitiesStore: Send + Sync + 'static {
    /// The store's kind, for logs: "memory", "etcd".
    fn kind(&self) -> &'static str;

    /// The shards of `type_name` that have remembered entities.
    fn shards<'a>(
        &'a self,
        type_name: &'a str,
    ) -> BoxFuture<'a, Result<BTreeSet<String>, StoreError>>;

    /// The remembered entity ids of one shard.
    fn entities<'a>(
        &'a self,
        type_name: &'a str,
        shard: &'a str,
    ) -> BoxFuture<'a, Result<BTreeSet<String>, StoreError>>;

    /// Adds and removes ids of one shard (disjoint sets); done when it returns `Ok`.
    fn update<'a>(
        &'a self,
        type_name: &'a str,
        shard: &'a str,
        add: &'a BTreeSet<String>,
        remove: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

type Sets = BTreeMap<(String, String), BTreeSet<String>>;

/// The in-memory store: clones share one table. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct MemoryEntityStore {
    sets: Arc<Mutex<Sets>>,
}

impl MemoryEntityStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sets) -> T) -> T {
        let mut sets = self
            .sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut sets)
    }

    /// Every remembered id of `type_name`, over all shards (for tests and queries).
    pub fn all(&self, type_name: &str) -> BTreeSet<String> {
        self.with(|sets| {
            sets.iter()
                .filter(|((t, _), _)| t == type_name)
                .flat_map(|(_, ids)| ids.iter().cloned())
                .collect()
        })
    }
}

impl RememberEntitiesStore for MemoryEntityStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn shards<'a>(
        &'a self,
        type_name: &'a str,
    ) -> BoxFuture<'a, Result<BTreeSet<String>, StoreError>> {
        let shards = self.with(|sets| {
            sets.iter()
                .filter(|((t, _), ids)| t == type_name && !ids.is_empty())
                .map(|((_, s), _)| s.clone())
                .collect()
        });
        Box::pin(async move { Ok(shards) })
    }

    fn entities<'a>(
        &'a self,
        type_name: &'a str,
        shard: &'a str,
    ) -> BoxFuture<'a, Result<BTreeSet<String>, StoreError>> {
        let ids = self.with(|sets| {
            sets.get(&(type_name.to_owned(), shard.to_owned()))
                .cloned()
                .unwrap_or_default()
        });
        Box::pin(async move { Ok(ids) })
    }

    fn update<'a>(
        &'a self,
        type_name: &'a str,
        shard: &'a str,
        add: &'a BTreeSet<String>,
        remove: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|sets| {
            let ids = sets
                .entry((type_name.to_owned(), shard.to_owned()))
                .or_default();
            ids.extend(add.iter().cloned());
            ids.retain(|id| !remove.contains(id));
        });
        Box::pin(async move { Ok(()) })
    }
}

#[cfg(feature = "etcd")]
pub use etcd::EtcdEntityStore;

#[cfg(feature = "etcd")]
mod etcd {
    use std::collections::BTreeSet;

    use flotilla_etcd::{Client, EtcdError, EtcdSettings, Txn, TxnOp};

    use super::{BoxFuture, RememberEntitiesStore, StoreError};

    /// etcd's default limit of operations in one transaction.
    const MAX_TXN_OPS: usize = 128;

    /// The etcd store: one key per remembered entity, `<prefix><type>/<shard>/<entity>`, with
    /// an empty value; type and shard have `%` and `/` escaped. Cheap to clone.
    #[derive(Clone)]
    pub struct EtcdEntityStore {
        client: Client,
        prefix: String,
    }

    impl std::fmt::Debug for EtcdEntityStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EtcdEntityStore")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    fn escape(s: &str) -> String {
        s.replace('%', "%25").replace('/', "%2F")
    }

    fn unescape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("%2F") {
                out.push('/');
                rest = t;
            } else if let Some(t) = tail.strip_prefix("%25") {
                out.push('%');
                rest = t;
            } else {
                out.push('%');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }

    fn failed(what: &str, e: &EtcdError) -> StoreError {
        StoreError {
            kind: "etcd",
            reason: format!("{what} failed: {e}"),
        }
    }

    impl EtcdEntityStore {
        /// The default key prefix.
        pub const DEFAULT_PREFIX: &'static str = "/flotilla/entities/";

        /// Connects with `settings` (its prefix is the store's: give
        /// [`Self::DEFAULT_PREFIX`] unless several clusters share one etcd).
        pub async fn connect(settings: &EtcdSettings) -> Result<Self, EtcdError> {
            let client = Client::connect(settings).await?;
            Ok(Self {
                client,
                prefix: settings.prefix.clone(),
            })
        }

        fn type_prefix(&self, type_name: &str) -> String {
            format!("{}{}/", self.prefix, escape(type_name))
        }

        fn shard_prefix(&self, type_name: &str, shard: &str) -> String {
            format!("{}{}/", self.type_prefix(type_name), escape(shard))
        }

        async fn keys(&self, prefix: String) -> Result<Vec<String>, StoreError> {
            let kvs = self
                .client
                .get_prefix(prefix, true)
                .await
                .map_err(|e| failed("reading", &e))?;
            Ok(kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect())
        }
    }

    impl RememberEntitiesStore for EtcdEntityStore {
        fn kind(&self) -> &'static str {
            "etcd"
        }

        fn shards<'a>(
            &'a self,
            type_name: &'a str,
        ) -> BoxFuture<'a, Result<BTreeSet<String>, StoreError>> {
            Box::pin(async move {
                let prefix = self.type_prefix(type_name);
                let keys = self.keys(prefix.clone()).await?;
                Ok(keys
                    .iter()
                    .filter_map(|k| k.strip_prefix(&prefix)?.split_once('/'))
                    .map(|(shard, _)| unescape(shard))
                    .collect())
            })
        }

        fn entities<'a>(
            &'a self,
            type_name: &'a str,
            shard: &'a str,
        ) -> BoxFuture<'a, Result<BTreeSet<String>, StoreError>> {
            Box::pin(async move {
                let prefix = self.shard_prefix(type_name, shard);
                let keys = self.keys(prefix.clone()).await?;
                Ok(keys
                    .iter()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(str::to_owned)
                    .collect())
            })
        }

        fn update<'a>(
            &'a self,
            type_name: &'a str,
            shard: &'a str,
            add: &'a BTreeSet<String>,
            remove: &'a BTreeSet<String>,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                let prefix = self.shard_prefix(type_name, shard);
                let ops: Vec<TxnOp> = add
                    .iter()
                    .map(|id| TxnOp::put(format!("{prefix}{id}"), "", None))
                    .chain(
                        remove
                            .iter()
                            .map(|id| TxnOp::delete(format!("{prefix}{id}"))),
                    )
                    .collect();
                // Each chunk is atomic; a failure part-way leaves earlier chunks written, which
                // is harmless: the shard sends the whole update again, and puts and deletes of
                // the same ids are idempotent.
                for chunk in ops.chunks(MAX_TXN_OPS) {
                    self.client
                        .txn(Txn::new().and_then(chunk.to_vec()))
                        .await
                        .map_err(|e| failed("writing", &e))?;
                }
                Ok(())
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn type_and_shard_names_are_escaped_reversibly() {
            for s in ["plain", "a/b", "100%", "%2F", "/%/", "%25%2F", "é/%"] {
                assert_eq!(unescape(&escape(s)), s);
                assert!(!escape(s).contains('/'));
            }
        }
    }
}
