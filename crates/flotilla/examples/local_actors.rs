//! Local actors: a supervised worker that fails on bad input and is restarted with a fresh
//! state, asks with a timeout, and a clean stop.
//!
//! `cargo run -p flotilla --example local_actors`

use std::time::Duration;

use flotilla::{
    Actor, ActorError, ActorSystem, Context, Props, ReplyTo, RestartSettings, SupervisorStrategy,
};

/// Parses numbers and sums them; a line that is not a number is a failure.
enum Msg {
    Line(String),
    Sum(ReplyTo<u64>),
}

#[derive(Default)]
struct Summer {
    sum: u64,
}

impl Actor for Summer {
    type Msg = Msg;

    async fn pre_start(&mut self, ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        println!("{} started with sum {}", ctx.path(), self.sum);
        Ok(())
    }

    async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        match msg {
            Msg::Line(line) => {
                let n: u64 = line
                    .trim()
                    .parse()
                    .map_err(|e| format!("not a number: {line:?} ({e})"))?;
                self.sum += n;
            }
            Msg::Sum(reply) => {
                let _ = reply.send(self.sum);
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let system = ActorSystem::new("local")?;
    // Restart on failure: 50 ms backoff doubling to 1 s, at most 3 restarts within 10 s.
    let restart = RestartSettings::new(
        Duration::from_millis(50),
        Duration::from_secs(1),
        0.2,
        3,
        Duration::from_secs(10),
    )?;
    let summer = system.spawn(
        "summer",
        Props::new(Summer::default).with_supervisor(SupervisorStrategy::restart(restart)),
    )?;

    for line in ["7", "11"] {
        summer.tell(Msg::Line(line.into()));
    }
    let sum = summer.ask(Msg::Sum, Duration::from_secs(1)).await?;
    println!("sum after 7 and 11: {sum}");
    assert_eq!(sum, 18);

    // A failure: the actor is restarted from its factory, its state starts again.
    summer.tell(Msg::Line("eleven".into()));
    summer.tell(Msg::Line("5".into()));
    let sum = summer.ask(Msg::Sum, Duration::from_secs(2)).await?;
    println!("sum after a failure and 5: {sum} (the restart began a fresh sum)");
    assert_eq!(sum, 5);

    let outcome = system.terminate().await;
    println!("stopped: {}", outcome.reason);
    Ok(())
}
