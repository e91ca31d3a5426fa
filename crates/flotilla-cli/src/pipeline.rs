//! The local-actor walkthrough behind `flotilla pipeline`: a supervised pipeline that crashes,
//! restarts and shuts down cleanly, narrating what happens (no cluster: one actor system).
//!
//! ```text
//!   source ──lines──▶ parser ──numbers──▶ sink
//!                       │ supervised: restart with backoff (100 ms doubling, ≤ 3 per 10 s)
//!                       └ fails on malformed input, panics on "panic"
//!   sink watches parser; a dead-letter reporter listens on the event stream;
//!   coordinated shutdown flushes the sink in service-requests-done, then stops every actor.
//! ```

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, DeadLetter, Failure, Phase, Props, ReplyTo,
    RestartSettings, ShutdownOutcome, SupervisorStrategy, Terminated,
};

/// What the walkthrough feeds the pipeline: numbers, two malformed lines and one that panics.
pub const DEFAULT_INPUT: &[&str] = &["7", "11", "not-a-number", "5", "panic", "13", "x9", "2"];

/// Where the walkthrough's narration goes.
#[derive(Clone, Default)]
pub struct Narrator {
    lines: Arc<Mutex<Vec<String>>>,
    echo: bool,
}

impl Narrator {
    /// A narrator that also prints each line to stdout.
    pub fn printing() -> Self {
        Self {
            lines: Arc::default(),
            echo: true,
        }
    }

    /// Records (and maybe prints) one line.
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        if self.echo {
            println!("{line}");
        }
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }

    /// Everything said so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Messages of the parser.
#[derive(Debug)]
pub enum ParserMsg {
    /// One line of input.
    Line(String),
    /// Answered once every line sent before it has been handled.
    Flush(ReplyTo<()>),
}

/// Messages of the sink.
#[derive(Debug)]
pub enum SinkMsg {
    /// A parsed number.
    Number(u64),
    /// Start watching the parser.
    Watch(ActorRef<ParserMsg>),
    /// Ask for the total so far.
    Total(ReplyTo<(u64, usize)>),
}

struct Parser {
    sink: ActorRef<SinkMsg>,
    narrator: Narrator,
    incarnation: Arc<Mutex<u32>>,
}

impl Actor for Parser {
    type Msg = ParserMsg;

    async fn pre_start(&mut self, ctx: &mut Context<ParserMsg>) -> Result<(), ActorError> {
        let mut n = self
            .incarnation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n += 1;
        self.narrator.say(format!(
            "  parser   {} started (incarnation {n})",
            ctx.path()
        ));
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: ParserMsg,
        _ctx: &mut Context<ParserMsg>,
    ) -> Result<(), ActorError> {
        let line = match msg {
            ParserMsg::Line(line) => line,
            ParserMsg::Flush(reply) => {
                reply.send(());
                return Ok(());
            }
        };
        if line == "panic" {
            self.narrator
                .say("  parser   got \"panic\": panicking inside the handler");
            panic!("the parser was told to panic");
        }
        let n: u64 = line
            .parse()
            .map_err(|e| format!("cannot parse {line:?}: {e}"))?;
        self.narrator.say(format!("  parser   {line:>3} -> {n}"));
        self.sink.tell(SinkMsg::Number(n));
        Ok(())
    }

    async fn pre_restart(&mut self, _ctx: &mut Context<ParserMsg>, cause: &Failure) {
        self.narrator.say(format!(
            "  parser   crashed: {cause}; supervisor restarts it after a backoff"
        ));
    }
}

struct Sink {
    total: u64,
    count: usize,
    narrator: Narrator,
}

impl Actor for Sink {
    type Msg = SinkMsg;

    async fn handle(&mut self, msg: SinkMsg, ctx: &mut Context<SinkMsg>) -> Result<(), ActorError> {
        match msg {
            SinkMsg::Number(n) => {
                self.total += n;
                self.count += 1;
                self.narrator
                    .say(format!("  sink     +{n} = {}", self.total));
            }
            SinkMsg::Watch(parser) => ctx.watch(&parser),
            SinkMsg::Total(reply) => {
                reply.send((self.total, self.count));
            }
        }
        Ok(())
    }

    async fn on_terminated(
        &mut self,
        t: Terminated,
        _ctx: &mut Context<SinkMsg>,
    ) -> Result<(), ActorError> {
        self.narrator
            .say(format!("  sink     saw {} stop (deathwatch)", t.path));
        Ok(())
    }
}

struct DeadLetterReporter(Narrator);

impl Actor for DeadLetterReporter {
    type Msg = DeadLetter;

    async fn handle(
        &mut self,
        d: DeadLetter,
        _ctx: &mut Context<DeadLetter>,
    ) -> Result<(), ActorError> {
        self.0.say(format!(
            "  dead-letter  a {} to {}: {}",
            short_type(d.message_type),
            d.recipient,
            d.reason
        ));
        Ok(())
    }
}

fn short_type(t: &str) -> &str {
    t.rsplit("::").next().unwrap_or(t)
}

/// What a run did, for the summary and for tests.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// The sink's total and how many numbers it received.
    pub total: u64,
    /// How many numbers reached the sink.
    pub numbers: usize,
    /// How many parser instances ran (1 + restarts).
    pub parser_incarnations: u32,
    /// Dead letters counted by the system.
    pub dead_letters: u64,
    /// The coordinated-shutdown outcome.
    pub shutdown: Arc<ShutdownOutcome>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Input lines fed to the parser.
    pub input: Vec<String>,
    /// Pause between lines, so restarts are visible.
    pub pace: Duration,
    /// After the pipeline is done, keep running until SIGTERM/Ctrl-C instead of shutting down.
    pub hold: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            input: DEFAULT_INPUT.iter().map(|s| (*s).to_owned()).collect(),
            pace: Duration::from_millis(150),
            hold: false,
        }
    }
}

/// Runs the walkthrough to the end of coordinated shutdown.
pub async fn run(options: DemoOptions, narrator: Narrator) -> anyhow::Result<DemoSummary> {
    let system = ActorSystem::new("demo")?;
    narrator.say(format!(
        "Flotilla pipeline: actor system {} (uid {:016x})",
        system.address(),
        system.uid()
    ));
    narrator.say("  a supervised pipeline: source -> parser -> sink; the parser crashes on bad input and is restarted");

    let reporter = system.spawn_system_actor(
        "dead-letter-reporter",
        Props::new({
            let n = narrator.clone();
            move || DeadLetterReporter(n.clone())
        }),
    )?;
    system.event_stream().subscribe(&reporter);

    let sink = system.spawn(
        "sink",
        Props::new({
            let n = narrator.clone();
            move || Sink {
                total: 0,
                count: 0,
                narrator: n.clone(),
            }
        }),
    )?;
    let incarnations = Arc::new(Mutex::new(0));
    let restart = RestartSettings::new(
        Duration::from_millis(100),
        Duration::from_secs(1),
        0.2,
        3,
        Duration::from_secs(10),
    )?;
    let parser = system.spawn(
        "parser",
        Props::new({
            let (n, s, i) = (narrator.clone(), sink.clone(), Arc::clone(&incarnations));
            move || Parser {
                sink: s.clone(),
                narrator: n.clone(),
                incarnation: Arc::clone(&i),
            }
        })
        .with_supervisor(SupervisorStrategy::restart(restart)),
    )?;
    sink.tell(SinkMsg::Watch(parser.clone()));

    let cs = system.coordinated_shutdown();
    cs.add_task(Phase::ServiceRequestsDone, "flush-sink", {
        let (sink, n) = (sink.clone(), narrator.clone());
        move || async move {
            match sink.ask(SinkMsg::Total, Duration::from_secs(1)).await {
                Ok((total, count)) => n.say(format!(
                    "  shutdown flush-sink: {count} numbers, total {total}"
                )),
                Err(e) => n.say(format!("  shutdown flush-sink failed: {e}")),
            }
        }
    })?;
    cs.add_task(Phase::ServiceStop, "stop-parser", {
        let parser = parser.clone();
        move || async move {
            parser.stop();
            parser.stopped().await;
        }
    })?;

    for line in &options.input {
        narrator.say(format!("  source   -> {line:?}"));
        parser.tell(ParserMsg::Line(line.clone()));
        tokio::time::sleep(options.pace).await;
    }
    // Lines queued while the parser was restarting are handled by its next incarnation.
    parser
        .ask(ParserMsg::Flush, Duration::from_secs(10))
        .await?;
    let (total, numbers) = sink.ask(SinkMsg::Total, Duration::from_secs(5)).await?;

    let outcome = if options.hold {
        cs.install_signal_handlers();
        narrator.say("  pipeline done; running until SIGTERM or Ctrl-C");
        cs.completed().await
    } else {
        narrator.say("  pipeline done; running coordinated shutdown");
        system.terminate().await
    };
    system.when_terminated().await;
    // A message sent now can only be a dead letter; shown to make the point.
    parser.tell(ParserMsg::Line("late".into()));

    narrator.say(describe(&outcome));
    let parser_incarnations = *incarnations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(DemoSummary {
        total,
        numbers,
        parser_incarnations,
        dead_letters: system.dead_letter_count(),
        shutdown: outcome,
    })
}

/// One paragraph on how shutdown went.
pub fn describe(outcome: &ShutdownOutcome) -> String {
    let mut s = format!("coordinated shutdown ({}):", outcome.reason);
    for p in outcome
        .report
        .phases
        .iter()
        .filter(|p| !p.completed.is_empty() || !p.failed.is_empty() || !p.timed_out.is_empty())
    {
        let _ = write!(
            s,
            "\n  phase {:<32} {:>6.0?}  done: [{}]",
            p.phase.as_str(),
            p.elapsed,
            p.completed.join(", ")
        );
        if !p.timed_out.is_empty() {
            let _ = write!(s, "  TIMED OUT: [{}]", p.timed_out.join(", "));
        }
        for (t, e) in &p.failed {
            let _ = write!(s, "  FAILED {t}: {e}");
        }
    }
    let verdict = if outcome.report.is_clean() {
        "every task finished in time"
    } else {
        "some tasks did not finish in time"
    };
    let _ = write!(s, "\n  {verdict}; every actor has stopped");
    s
}
