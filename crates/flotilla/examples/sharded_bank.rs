//! Three nodes in one process run a sharded entity type whose shards hold leases: accounts take
//! deposits from any node; one node leaves gracefully (its shards hand off at once, their leases
//! released), another crashes (its shards start elsewhere only once their leases have expired,
//! under higher fencing tokens). Leases are in memory, or in etcd with `--etcd <url>` (build
//! with `--features etcd`).
//!
//! `cargo run -p flotilla --features testkit --example sharded_bank [-- --etcd http://127.0.0.1:2379]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::sharding::Entity;
use flotilla::testkit::TestCluster;
use flotilla::{Actor, ActorError, Context, Props, RemoteMessage, ReplyTo};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Account {
    Deposit(u64),
    /// Balance and the shard's fencing token.
    Balance(ReplyTo<(u64, u64)>),
}

impl RemoteMessage for Account {
    const MANIFEST: &'static str = "bank.Account";
}

struct Balance {
    balance: u64,
    token: u64,
}

impl Actor for Balance {
    type Msg = Account;

    async fn handle(&mut self, msg: Account, _: &mut Context<Account>) -> Result<(), ActorError> {
        match msg {
            Account::Deposit(n) => self.balance += n,
            Account::Balance(reply) => drop(reply.send((self.balance, self.token))),
        }
        Ok(())
    }
}

fn accounts() -> Entity<Balance> {
    Entity::new("account", |ctx| {
        let token = ctx.fencing_token().map_or(0, |t| t.0);
        Props::new(move || Balance { balance: 0, token })
    })
}

/// Asks through node `via` until the account answers.
async fn balance(cluster: &TestCluster, via: usize, id: &str) -> Result<(u64, u64), String> {
    let started = Instant::now();
    loop {
        let answer = cluster
            .entity_ref::<Account>(via, "account", id)
            .ask(Account::Balance, Duration::from_secs(1))
            .await;
        match answer {
            Ok(b) => return Ok(b),
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                return Err(format!("{id} did not answer within 60 s: {e}"));
            }
            Err(_) => {}
        }
    }
}

/// The node hosting `id`.
async fn host(cluster: &TestCluster, id: &str) -> Option<usize> {
    for i in 0..cluster.len() {
        let region = cluster.node(i).region::<Account>("account")?;
        if region
            .state()
            .await
            .shards
            .values()
            .any(|e| e.iter().any(|e| e == id))
        {
            return Some(i);
        }
    }
    None
}

fn backend() -> Result<Option<Arc<dyn flotilla::lease::LeaseBackend>>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--etcd") else {
        return Ok(None);
    };
    let url = args.get(at + 1).ok_or("--etcd needs a URL")?;
    #[cfg(feature = "etcd")]
    {
        let settings = flotilla::lease_etcd::EtcdSettings::new([url.clone()]);
        let runtime = tokio::runtime::Handle::current();
        let backend = tokio::task::block_in_place(|| {
            runtime.block_on(flotilla::lease_etcd::EtcdBackend::connect(settings))
        })?;
        Ok(Some(Arc::new(backend)))
    }
    #[cfg(not(feature = "etcd"))]
    {
        Err(format!("--etcd {url}: build with --features etcd").into())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = TestCluster::builder(3).system("bank").entity(accounts);
    if let Some(b) = backend()? {
        builder = builder.lease_backend(b);
    }
    let mut cluster = builder.start().await?;
    cluster.wait_up().await?;
    println!("three nodes Up");

    for (i, id) in ["alice", "bob", "carol"].iter().enumerate() {
        cluster
            .entity_ref::<Account>(i, "account", id)
            .tell(Account::Deposit(10 * (i as u64 + 1)));
        let (b, token) = balance(&cluster, i, id).await?;
        println!("{id}: balance {b} (shard lease token {token})");
    }

    // A crash: bob's shard waits for its lease to expire, then starts on another node. (With
    // three members the two others are the majority: the split-brain resolver downs the
    // crashed one. With two, a tie, the side with the lowest address would stay.)
    let crashing = host(&cluster, "bob").await.ok_or("bob runs nowhere")?;
    let survivor = (crashing + 1) % 3;
    let (_, before) = balance(&cluster, survivor, "bob").await?;
    let started = Instant::now();
    cluster.crash(crashing);
    let (_, after) = balance(&cluster, survivor, "bob").await?;
    println!(
        "node {crashing} crashed: bob serves again after {:?} under token {after} (was {before})",
        started.elapsed()
    );
    assert!(after > before);
    cluster.wait_up().await?;

    // A graceful leave: the leaving node hands its shards off at once, leases released.
    let leaving = survivor;
    let last = (0..3)
        .find(|&i| i != crashing && i != leaving)
        .ok_or("no node left")?;
    let (_, before) = balance(&cluster, last, "alice").await?;
    let started = Instant::now();
    cluster.stop(leaving).await;
    let (_, after) = balance(&cluster, last, "alice").await?;
    println!(
        "node {leaving} left: alice serves after {:?} under token {after} (was {before})",
        started.elapsed()
    );
    assert!(after >= before);
    cluster.shutdown().await;
    println!("done");
    Ok(())
}
