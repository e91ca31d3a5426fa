//! Nodes started by the builder: three of them in one process, on 127.0.0.1, with a
//! lease-guarded sharded entity type and a singleton; a graceful leave moves the entities, under
//! higher fencing tokens; bad configuration is refused with the key named.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla::cluster::ClusterSingleton;
use flotilla::core::FlotillaConfig;
use flotilla::lease::{LeaseBackend as _, MemoryBackend};
use flotilla::sharding::Entity;
use flotilla::{Actor, ActorError, Context, Node, NodeError, Props, RemoteMessage, ReplyTo};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
enum AccountMsg {
    Deposit(u64),
    /// Balance, the node it runs on, its shard's fencing token.
    Balance(ReplyTo<(u64, String, u64)>),
}

impl RemoteMessage for AccountMsg {
    const MANIFEST: &'static str = "test.Account";
}

struct Account {
    balance: u64,
    node: String,
    token: u64,
}

impl Actor for Account {
    type Msg = AccountMsg;

    async fn handle(
        &mut self,
        msg: AccountMsg,
        _: &mut Context<AccountMsg>,
    ) -> Result<(), ActorError> {
        match msg {
            AccountMsg::Deposit(n) => self.balance += n,
            AccountMsg::Balance(reply) => {
                let _ = reply.send((self.balance, self.node.clone(), self.token));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum ClockMsg {
    Where(ReplyTo<String>),
}

impl RemoteMessage for ClockMsg {
    const MANIFEST: &'static str = "test.Clock";
}

struct Clock(String);

impl Actor for Clock {
    type Msg = ClockMsg;

    async fn handle(&mut self, msg: ClockMsg, _: &mut Context<ClockMsg>) -> Result<(), ActorError> {
        let ClockMsg::Where(reply) = msg;
        let _ = reply.send(self.0.clone());
        Ok(())
    }
}

fn config() -> FlotillaConfig {
    // The test cluster's fast timings, with shards guarded by leases.
    flotilla::testkit::fast_config()
}

async fn start(backend: &MemoryBackend, seed: Option<flotilla::core::Address>) -> Node {
    let mut builder = Node::builder("bank")
        .config(config())
        .remote("127.0.0.1", 0)
        .lease_backend(Arc::new(backend.clone()))
        .handle_signals(false)
        .entity(Entity::new("account", |ctx| {
            let token = ctx.fencing_token().map_or(0, |t| t.0);
            Props::new(move || Account {
                balance: 0,
                node: String::new(),
                token,
            })
        }))
        .singleton(
            "clock",
            ClusterSingleton::builder("clock", || Props::new(|| Clock(String::new()))),
        );
    if let Some(seed) = seed {
        builder = builder.seed_nodes([seed]);
    }
    builder.start().await.unwrap()
}

async fn balance(node: &Node, id: &str) -> (u64, String, u64) {
    let region = node.region::<AccountMsg>("account").unwrap();
    let started = tokio::time::Instant::now();
    loop {
        match region
            .entity_ref(id)
            .ask(AccountMsg::Balance, Duration::from_millis(1000))
            .await
        {
            Ok(answer) => return answer,
            Err(e) => assert!(started.elapsed() < LIMIT, "{id} did not answer: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_a_lease_guarded_entity_type_and_a_singleton() {
    let backend = MemoryBackend::new();
    let a = start(&backend, None).await;
    let seed = a.cluster().self_address().clone();
    let b = start(&backend, Some(seed.clone())).await;
    let c = start(&backend, Some(seed)).await;
    for n in [&a, &b, &c] {
        assert!(tokio::time::timeout(LIMIT, n.wait_up()).await.unwrap());
    }
    assert!(
        a.region::<ClockMsg>("account").is_none(),
        "wrong message type"
    );
    assert!(a.region::<AccountMsg>("nope").is_none());

    let region = b.region::<AccountMsg>("account").unwrap();
    region.entity_ref("alice").tell(AccountMsg::Deposit(5));
    region.entity_ref("alice").tell(AccountMsg::Deposit(7));
    // Through the same region, the ask comes after the deposits; from another node it may
    // overtake them.
    let (total, _, token) = balance(&b, "alice").await;
    assert_eq!(total, 12);
    assert_eq!(balance(&c, "alice").await.0, 12);
    assert!(token > 0, "the shard holds a lease");
    assert!(!backend.list().await.unwrap().is_empty());

    let clock = a.singleton::<ClockMsg>("clock").unwrap();
    let answer = clock
        .proxy()
        .ask(ClockMsg::Where, Duration::from_secs(5))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(a.singleton::<AccountMsg>("clock").is_none());

    // The node hosting alice leaves: alice runs elsewhere, under a higher token.
    let hosts = |n: &Node| {
        let region = n.region::<AccountMsg>("account").unwrap();
        async move {
            let state = region.state().await;
            state
                .shards
                .values()
                .any(|ids| ids.iter().any(|e| e == "alice"))
        }
    };
    let nodes = [a, b, c];
    let mut host = None;
    for (i, n) in nodes.iter().enumerate() {
        if hosts(n).await {
            host = Some(i);
        }
    }
    let host = host.expect("alice runs on some node");
    let outcome = nodes[host].leave().await;
    assert_eq!(outcome.reason, flotilla::ShutdownReason::ClusterLeaving);
    let other = &nodes[(host + 1) % 3];
    let (total, _, moved) = balance(other, "alice").await;
    assert_eq!(total, 0, "no persistence: a new incarnation");
    assert!(moved > token, "{moved} after {token}");
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_key_named() {
    let err = Node::builder("bank")
        .config_toml("[lease]\nheartbeat-interval = \"30s\"")
        .env_overrides(false)
        .handle_signals(false)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Config { .. }), "{err}");
    assert!(
        err.to_string().contains("lease.heartbeat-interval"),
        "{err}"
    );

    let err = Node::builder("bank")
        .config_file("/nonexistent/flotilla.toml")
        .handle_signals(false)
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/flotilla.toml"),
        "{err}"
    );
}
