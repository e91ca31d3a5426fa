//! Two nodes exchanging messages over real TCP on 127.0.0.1: node b exposes an actor, node a
//! reaches it by its path and asks; the answer comes back over the same link.
//!
//! `cargo run -p flotilla --example two_nodes`

use std::time::Duration;

use flotilla::core::{FlotillaConfig, RemoteSettings};
use flotilla::{Actor, ActorError, ActorSystem, Context, Props, RemoteMessage, ReplyTo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Greeter {
    Greet {
        name: String,
        reply: ReplyTo<String>,
    },
}

impl RemoteMessage for Greeter {
    const MANIFEST: &'static str = "example.Greeter";
}

struct Greeting(String);

impl Actor for Greeting {
    type Msg = Greeter;

    async fn handle(&mut self, msg: Greeter, _: &mut Context<Greeter>) -> Result<(), ActorError> {
        let Greeter::Greet { name, reply } = msg;
        let _ = reply.send(format!("hello {name}, from {}", self.0));
        Ok(())
    }
}

/// Nodes that talk have the same system name and prove to each other that they know the same
/// cluster secret (a real cluster reads it from `remote.secret-file`, made by `flotilla certs`;
/// without one, a node refuses to start unless told `remote.insecure = true`).
fn node(secret: &str) -> Result<ActorSystem, Box<dyn std::error::Error>> {
    let config = FlotillaConfig {
        remote: RemoteSettings {
            secret: Some(secret.to_owned()),
            ..RemoteSettings::default()
        },
        ..FlotillaConfig::default()
    };
    // Port 0 picks a free port.
    Ok(ActorSystem::builder("greeters")
        .config(config)
        .remote("127.0.0.1", 0)
        .build()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = flotilla::remote::testing::random_secret();
    let (a, b) = (node(&secret)?, node(&secret)?);
    let greeter = b.spawn(
        "greeter",
        Props::new({
            let name = b.address().to_string();
            move || Greeting(name.clone())
        }),
    )?;
    b.expose(&greeter);

    let path = format!("{}/user/greeter", b.address());
    let remote = a.remote_ref::<Greeter>(&path)?;
    for name in ["ada", "grace"] {
        let answer = remote
            .ask(
                |reply| Greeter::Greet {
                    name: name.into(),
                    reply,
                },
                Duration::from_secs(5),
            )
            .await?;
        println!("{} asked {path}: {answer}", a.address());
    }
    a.terminate().await;
    b.terminate().await;
    Ok(())
}
