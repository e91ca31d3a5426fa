//! The five subjects: a bare tokio baseline, Flotilla, actix, ractor and kameo.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::{Subject, timed_tokio};

pub(crate) fn all() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(Baseline),
        Box::new(Flotilla),
        Box::new(Actix),
        Box::new(Ractor),
        Box::new(Kameo),
    ]
}

/// Every subject asks with this timeout: an ask without one can wait forever, so the figure that
/// matters in production is the one with a timeout.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes the completion signal out of its slot (once).
fn take(slot: &Arc<Mutex<Option<oneshot::Sender<()>>>>) -> Option<oneshot::Sender<()>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

// ---------------------------------------------------------------- baseline: mpsc per actor

struct Baseline;

/// The baseline actor's messages: the same shape as every subject's (a tell and an ask with its
/// reply handle), so all channels carry messages of the same size.
enum BMsg {
    Add(u64),
    Echo(u64, oneshot::Sender<u64>),
}

/// A bare "actor": one unbounded channel read by one spawned task.
fn baseline_actor(target: u64) -> (mpsc::UnboundedSender<BMsg>, oneshot::Receiver<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<BMsg>();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut count = 0u64;
        let mut done_tx = Some(done_tx);
        while let Some(msg) = rx.recv().await {
            match msg {
                BMsg::Add(v) => {
                    count += std::hint::black_box(v);
                    if count == target
                        && let Some(done) = done_tx.take()
                    {
                        let _ = done.send(());
                    }
                }
                BMsg::Echo(v, reply) => {
                    let _ = reply.send(v + 1);
                }
            }
        }
    });
    (tx, done_rx)
}

impl Subject for Baseline {
    fn name(&self) -> &'static str {
        "baseline"
    }

    fn tell(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let (tx, done) = baseline_actor(n);
            let t = Instant::now();
            for _ in 0..n {
                let _ = tx.send(BMsg::Add(1));
            }
            let _ = done.await;
            t.elapsed()
        })
    }

    fn ask(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let (tx, _done) = baseline_actor(u64::MAX);
            let t = Instant::now();
            for i in 0..n {
                let (rtx, rrx) = oneshot::channel();
                let _ = tx.send(BMsg::Echo(i, rtx));
                let v = tokio::time::timeout(ASK_TIMEOUT, rrx).await;
                assert!(matches!(v, Ok(Ok(r)) if r == i + 1));
            }
            t.elapsed()
        })
    }

    fn spawn_stop(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let t = Instant::now();
            for _ in 0..n {
                let (tx, mut rx) = mpsc::unbounded_channel::<BMsg>();
                let h = tokio::spawn(async move { while rx.recv().await.is_some() {} });
                drop(tx);
                let _ = h.await;
            }
            t.elapsed()
        })
    }
}

// ---------------------------------------------------------------- flotilla

struct Flotilla;

enum FMsg {
    Add(u64),
    Echo(u64, flotilla_actor::ReplyTo<u64>),
}

struct FCounter {
    count: u64,
    target: u64,
    done: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl flotilla_actor::Actor for FCounter {
    type Msg = FMsg;

    async fn handle(
        &mut self,
        msg: FMsg,
        _ctx: &mut flotilla_actor::Context<FMsg>,
    ) -> Result<(), flotilla_actor::ActorError> {
        match msg {
            FMsg::Add(v) => {
                self.count += std::hint::black_box(v);
                if self.count == self.target
                    && let Some(done) = take(&self.done)
                {
                    let _ = done.send(());
                }
            }
            FMsg::Echo(v, reply) => {
                reply.send(v + 1);
            }
        }
        Ok(())
    }
}

fn flotilla_counter(
    system: &flotilla_actor::ActorSystem,
    target: u64,
) -> (flotilla_actor::ActorRef<FMsg>, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let done = Arc::new(Mutex::new(Some(tx)));
    let props = flotilla_actor::Props::new(move || FCounter {
        count: 0,
        target,
        done: Arc::clone(&done),
    });
    let actor = system
        .spawn_anonymous(props)
        .unwrap_or_else(|e| panic!("cannot spawn the counter: {e}"));
    (actor, rx)
}

fn flotilla_system() -> flotilla_actor::ActorSystem {
    flotilla_actor::ActorSystem::new("bench").unwrap_or_else(|e| panic!("cannot start: {e}"))
}

impl Subject for Flotilla {
    fn name(&self) -> &'static str {
        "flotilla"
    }

    fn tell(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let system = flotilla_system();
            let (actor, done) = flotilla_counter(&system, n);
            let t = Instant::now();
            for _ in 0..n {
                actor.tell(FMsg::Add(1));
            }
            let _ = done.await;
            let elapsed = t.elapsed();
            system.terminate().await;
            elapsed
        })
    }

    fn ask(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let system = flotilla_system();
            let (actor, _done) = flotilla_counter(&system, u64::MAX);
            let t = Instant::now();
            for i in 0..n {
                let r = actor.ask(|reply| FMsg::Echo(i, reply), ASK_TIMEOUT).await;
                assert_eq!(r, Ok(i + 1));
            }
            let elapsed = t.elapsed();
            system.terminate().await;
            elapsed
        })
    }

    fn spawn_stop(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let system = flotilla_system();
            let t = Instant::now();
            for _ in 0..n {
                let (actor, _done) = flotilla_counter(&system, u64::MAX);
                actor.stop();
                actor.stopped().await;
            }
            let elapsed = t.elapsed();
            system.terminate().await;
            elapsed
        })
    }
}

// ---------------------------------------------------------------- actix

struct Actix;

struct ACounter {
    count: u64,
    target: u64,
    done: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Sender<()>>,
}

impl actix::Actor for ACounter {
    type Context = actix::Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(s) = self.stopped.take() {
            let _ = s.send(());
        }
    }
}

struct AAdd(u64);
impl actix::Message for AAdd {
    type Result = ();
}

struct AEcho(u64);
impl actix::Message for AEcho {
    type Result = u64;
}

struct AStop;
impl actix::Message for AStop {
    type Result = ();
}

impl actix::Handler<AAdd> for ACounter {
    type Result = ();
    fn handle(&mut self, msg: AAdd, _ctx: &mut Self::Context) {
        self.count += std::hint::black_box(msg.0);
        if self.count == self.target
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

impl actix::Handler<AEcho> for ACounter {
    type Result = u64;
    fn handle(&mut self, msg: AEcho, _ctx: &mut Self::Context) -> u64 {
        msg.0 + 1
    }
}

impl actix::Handler<AStop> for ACounter {
    type Result = ();
    fn handle(&mut self, _msg: AStop, ctx: &mut Self::Context) {
        actix::ActorContext::stop(ctx);
    }
}

fn actix_counter(
    target: u64,
) -> (
    actix::Addr<ACounter>,
    oneshot::Receiver<()>,
    oneshot::Receiver<()>,
) {
    let (done_tx, done_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let addr = actix::Actor::start(ACounter {
        count: 0,
        target,
        done: Some(done_tx),
        stopped: Some(stop_tx),
    });
    (addr, done_rx, stop_rx)
}

fn timed_actix<F, Fut>(f: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Duration>,
{
    actix::System::new().block_on(f())
}

impl Subject for Actix {
    fn name(&self) -> &'static str {
        "actix"
    }

    fn tell(&self, n: u64) -> Duration {
        timed_actix(|| async move {
            let (addr, done, _stopped) = actix_counter(n);
            let t = Instant::now();
            for _ in 0..n {
                addr.do_send(AAdd(1));
            }
            let _ = done.await;
            t.elapsed()
        })
    }

    fn ask(&self, n: u64) -> Duration {
        timed_actix(|| async move {
            let (addr, _done, _stopped) = actix_counter(u64::MAX);
            let t = Instant::now();
            for i in 0..n {
                let r = addr.send(AEcho(i)).timeout(ASK_TIMEOUT).await;
                assert_eq!(r.ok(), Some(i + 1));
            }
            t.elapsed()
        })
    }

    fn spawn_stop(&self, n: u64) -> Duration {
        timed_actix(|| async move {
            let t = Instant::now();
            for _ in 0..n {
                let (addr, _done, stopped) = actix_counter(u64::MAX);
                addr.do_send(AStop);
                let _ = stopped.await;
            }
            t.elapsed()
        })
    }
}

// ---------------------------------------------------------------- ractor

struct Ractor;

struct RCounter;

enum RMsg {
    Add(u64),
    Echo(u64, ractor::RpcReplyPort<u64>),
}

struct RState {
    count: u64,
    target: u64,
    done: Option<oneshot::Sender<()>>,
}

impl ractor::Actor for RCounter {
    type Msg = RMsg;
    type State = RState;
    type Arguments = (u64, Option<oneshot::Sender<()>>);

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<RMsg>,
        (target, done): Self::Arguments,
    ) -> Result<RState, ractor::ActorProcessingErr> {
        Ok(RState {
            count: 0,
            target,
            done,
        })
    }

    async fn handle(
        &self,
        _myself: ractor::ActorRef<RMsg>,
        msg: RMsg,
        state: &mut RState,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            RMsg::Add(v) => {
                state.count += std::hint::black_box(v);
                if state.count == state.target
                    && let Some(done) = state.done.take()
                {
                    let _ = done.send(());
                }
            }
            RMsg::Echo(v, reply) => {
                let _ = reply.send(v + 1);
            }
        }
        Ok(())
    }
}

async fn ractor_counter(
    target: u64,
    done: Option<oneshot::Sender<()>>,
) -> (ractor::ActorRef<RMsg>, tokio::task::JoinHandle<()>) {
    ractor::Actor::spawn(None, RCounter, (target, done))
        .await
        .unwrap_or_else(|e| panic!("cannot spawn the ractor counter: {e}"))
}

impl Subject for Ractor {
    fn name(&self) -> &'static str {
        "ractor"
    }

    fn tell(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let (tx, rx) = oneshot::channel();
            let (actor, handle) = ractor_counter(n, Some(tx)).await;
            let t = Instant::now();
            for _ in 0..n {
                let _ = actor.cast(RMsg::Add(1));
            }
            let _ = rx.await;
            let elapsed = t.elapsed();
            actor.stop(None);
            let _ = handle.await;
            elapsed
        })
    }

    fn ask(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let (actor, handle) = ractor_counter(u64::MAX, None).await;
            let t = Instant::now();
            for i in 0..n {
                let r = actor
                    .call(|port| RMsg::Echo(i, port), Some(ASK_TIMEOUT))
                    .await;
                assert!(matches!(r, Ok(ractor::rpc::CallResult::Success(v)) if v == i + 1));
            }
            let elapsed = t.elapsed();
            actor.stop(None);
            let _ = handle.await;
            elapsed
        })
    }

    fn spawn_stop(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let t = Instant::now();
            for _ in 0..n {
                let (actor, handle) = ractor_counter(u64::MAX, None).await;
                actor.stop(None);
                let _ = handle.await;
            }
            t.elapsed()
        })
    }
}

// ---------------------------------------------------------------- kameo

struct Kameo;

#[derive(kameo::Actor)]
struct KCounter {
    count: u64,
    target: u64,
    done: Option<oneshot::Sender<()>>,
}

struct KAdd(u64);
struct KEcho(u64);

impl kameo::message::Message<KAdd> for KCounter {
    type Reply = ();
    async fn handle(&mut self, msg: KAdd, _ctx: &mut kameo::message::Context<Self, ()>) {
        self.count += std::hint::black_box(msg.0);
        if self.count == self.target
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

impl kameo::message::Message<KEcho> for KCounter {
    type Reply = u64;
    async fn handle(&mut self, msg: KEcho, _ctx: &mut kameo::message::Context<Self, u64>) -> u64 {
        msg.0 + 1
    }
}

fn kameo_counter(
    target: u64,
    done: Option<oneshot::Sender<()>>,
) -> kameo::actor::ActorRef<KCounter> {
    use kameo::actor::Spawn;
    KCounter::spawn_with_mailbox(
        KCounter {
            count: 0,
            target,
            done,
        },
        kameo::mailbox::unbounded(),
    )
}

impl Subject for Kameo {
    fn name(&self) -> &'static str {
        "kameo"
    }

    fn tell(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let (tx, rx) = oneshot::channel();
            let actor = kameo_counter(n, Some(tx));
            let t = Instant::now();
            for _ in 0..n {
                let _ = actor.tell(KAdd(1)).try_send();
            }
            let _ = rx.await;
            let elapsed = t.elapsed();
            let _ = actor.stop_gracefully().await;
            actor.wait_for_shutdown().await;
            elapsed
        })
    }

    fn ask(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let actor = kameo_counter(u64::MAX, None);
            let t = Instant::now();
            for i in 0..n {
                let r = actor.ask(KEcho(i)).reply_timeout(ASK_TIMEOUT).await;
                assert_eq!(r.ok(), Some(i + 1));
            }
            let elapsed = t.elapsed();
            let _ = actor.stop_gracefully().await;
            actor.wait_for_shutdown().await;
            elapsed
        })
    }

    fn spawn_stop(&self, n: u64) -> Duration {
        timed_tokio(|| async move {
            let t = Instant::now();
            for _ in 0..n {
                let actor = kameo_counter(u64::MAX, None);
                let _ = actor.stop_gracefully().await;
                actor.wait_for_shutdown().await;
            }
            t.elapsed()
        })
    }
}
