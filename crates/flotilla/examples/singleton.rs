//! A cluster singleton: three nodes started by the node builder each register it, one instance
//! runs (on the oldest node), every node reaches it through its proxy; when the oldest leaves,
//! it starts on the next.
//!
//! `cargo run -p flotilla --example singleton`

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::cluster::ClusterSingleton;
use flotilla::core::FlotillaConfig;
use flotilla::lease::MemoryBackend;
use flotilla::{Actor, ActorError, Context, Node, Props, RemoteMessage, ReplyTo};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Sequencer {
    /// The next number, and the node that gave it.
    Next(ReplyTo<(u64, String)>),
}

impl RemoteMessage for Sequencer {
    const MANIFEST: &'static str = "example.Sequencer";
}

struct Counter {
    next: u64,
    node: String,
}

impl Actor for Counter {
    type Msg = Sequencer;

    async fn pre_start(&mut self, ctx: &mut Context<Sequencer>) -> Result<(), ActorError> {
        self.node = ctx.system().address().to_string();
        println!("sequencer started on {}", self.node);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: Sequencer,
        _: &mut Context<Sequencer>,
    ) -> Result<(), ActorError> {
        let Sequencer::Next(reply) = msg;
        self.next += 1;
        let _ = reply.send((self.next, self.node.clone()));
        Ok(())
    }
}

fn config() -> FlotillaConfig {
    // Timings for a demonstration: failures noticed within about a second.
    let mut config = FlotillaConfig {
        remote: flotilla::remote::testing::fast_settings(),
        cluster: flotilla::cluster::testing::fast_settings(),
        ..FlotillaConfig::default()
    };
    config.management.enabled = false;
    config
}

async fn start(
    backend: &MemoryBackend,
    seed: Option<flotilla::core::Address>,
) -> Result<Node, flotilla::NodeError> {
    let singleton = ClusterSingleton::builder("sequencer", || {
        Props::new(|| Counter {
            next: 0,
            node: String::new(),
        })
    });
    Node::builder("seq")
        .config(config())
        .remote("127.0.0.1", 0)
        .seed_nodes(seed)
        .lease_backend(Arc::new(backend.clone()))
        .handle_signals(false)
        .singleton("sequencer", singleton)
        .start()
        .await
}

async fn next(node: &Node) -> Result<(u64, String), Box<dyn std::error::Error>> {
    let proxy = node
        .singleton::<Sequencer>("sequencer")
        .ok_or("no sequencer")?
        .proxy()
        .clone();
    let started = Instant::now();
    loop {
        match proxy.ask(Sequencer::Next, Duration::from_secs(2)).await {
            Ok(answer) => return Ok(answer),
            Err(e) if started.elapsed() > Duration::from_secs(60) => return Err(e.into()),
            Err(_) => {}
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = MemoryBackend::new();
    let first = start(&backend, None).await?;
    let seed = first.cluster().self_address().clone();
    let second = start(&backend, Some(seed.clone())).await?;
    let third = start(&backend, Some(seed)).await?;
    for n in [&first, &second, &third] {
        n.wait_up().await;
    }
    for n in [&first, &second, &third] {
        let (value, on) = next(n).await?;
        println!("{} got {value} from {on}", n.cluster().self_address());
    }
    // The oldest leaves: the singleton hands over to the next oldest (a new instance).
    let (_, before) = next(&second).await?;
    first.leave().await;
    let started = Instant::now();
    let (value, after) = next(&second).await?;
    println!(
        "after the oldest left: {value} from {after}, {:?} later",
        started.elapsed()
    );
    assert_ne!(before, after, "the singleton moved");
    second.leave().await;
    third.leave().await;
    Ok(())
}
