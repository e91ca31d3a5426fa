//! The remember-entities stores against the same checks: the in-memory store, and the etcd
//! store against a real etcd server started on 127.0.0.1.

use std::collections::BTreeSet;

use flotilla_etcd::EtcdSettings;
use flotilla_etcd::testing::EtcdServer;
use flotilla_sharding::store::{EtcdEntityStore, MemoryEntityStore, RememberEntitiesStore};

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn conforms(store: &dyn RememberEntitiesStore) {
    let none = BTreeSet::new();
    assert_eq!(store.shards("counter").await, Ok(BTreeSet::new()));
    store
        .update("counter", "1", &set(&["a", "b", "c"]), &none)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .update("counter", "1", &set(&["d"]), &set(&["b", "zz"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.entities("counter", "1").await,
        Ok(set(&["a", "c", "d"]))
    );
    // Odd names: a shard with a slash and a percent sign, entities with slashes.
    store
        .update("counter", "x/7%", &set(&["p/q", "r"]), &none)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.entities("counter", "x/7%").await,
        Ok(set(&["p/q", "r"]))
    );
    // More ids in one update than one etcd transaction takes.
    let many: BTreeSet<String> = (0..300).map(|i| format!("e{i}")).collect();
    store
        .update("counter", "2", &many, &none)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.entities("counter", "2").await, Ok(many.clone()));
    store
        .update("counter", "2", &none, &many)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Types are separate; shards without ids are not listed.
    store
        .update("other", "1", &set(&["a"]), &none)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.shards("counter").await, Ok(set(&["1", "x/7%"])));
    assert_eq!(store.entities("other", "1").await, Ok(set(&["a"])));
    assert_eq!(store.entities("counter", "9").await, Ok(BTreeSet::new()));
}

#[tokio::test]
async fn the_memory_store_conforms() {
    conforms(&MemoryEntityStore::new()).await;
}

#[tokio::test]
async fn the_etcd_store_conforms_and_keeps_its_ids_across_clients() {
    let etcd = EtcdServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let settings = EtcdSettings {
        prefix: EtcdEntityStore::DEFAULT_PREFIX.into(),
        ..EtcdSettings::new([etcd.endpoint()])
    };
    let store = EtcdEntityStore::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    conforms(&store).await;
    // A second client (another node) sees the same ids.
    let other = EtcdEntityStore::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        other.entities("counter", "1").await,
        Ok(set(&["a", "c", "d"]))
    );
    // Unreachable etcd: a clear error at connect.
    let err = EtcdEntityStore::connect(&EtcdSettings {
        connect_timeout: std::time::Duration::from_millis(300),
        ..EtcdSettings::new(["http://127.0.0.1:9"])
    })
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("127.0.0.1:9"), "{err}");
}
