//! The async lease API and its driver.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant as StdInstant;

use flotilla_core::{LeaseSettings, StateMachine};
pub use flotilla_proto::lease::{AcquireOutcome, LeaseEvent, LostCause, ReleaseOutcome};
use flotilla_proto::lease::{HolderInput, HolderOutput, LeaseHolder, LeaseOp, OpId};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{BackendReply, FencingToken, LeaseBackend, LeaseName, OwnerId};

type OnLost = Box<dyn FnOnce(LostCause) + Send>;

enum Command {
    Acquire {
        on_lost: OnLost,
        reply: oneshot::Sender<AcquireOutcome>,
    },
    Release {
        reply: oneshot::Sender<ReleaseOutcome>,
    },
}

pub(crate) struct Shared {
    pub(crate) name: LeaseName,
    pub(crate) owner: OwnerId,
    holder: Mutex<LeaseHolder>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Shared {
    fn holder(&self) -> MutexGuard<'_, LeaseHolder> {
        self.holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One lease, for one owner. Cheap to clone: clones are the same holder.
///
/// ```text
/// let lease = client.lease(LeaseName::new("shard-12")?);
/// match lease.acquire(|cause| tracing::warn!("lost: {cause}")).await {
///     AcquireOutcome::Granted { token } => { /* start entities; fence writes with token */ }
///     AcquireOutcome::Denied { .. } | AcquireOutcome::Unknown { .. } => { /* retry later */ }
/// }
/// assert!(lease.check_lease());
/// lease.release().await; // awaited, bounded by lease-operation-timeout
/// ```
#[derive(Clone)]
pub struct Lease {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.shared.name)
            .field("owner", &self.shared.owner)
            .field("state", &self.shared.holder().state_name())
            .finish()
    }
}

fn now() -> StdInstant {
    tokio::time::Instant::now().into_std()
}

impl Lease {
    /// Acquires the lease: granted (with a fencing token), denied (certainly someone else's),
    /// or unknown (no certain answer within `lease-operation-timeout`; treat as not acquired —
    /// a late grant is released). Granted at once if this owner already holds it.
    ///
    /// `on_lost` runs once, with the cause, if a hold granted to this call is later lost; never
    /// after a release, never without a grant.
    pub async fn acquire(
        &self,
        on_lost: impl FnOnce(LostCause) + Send + 'static,
    ) -> AcquireOutcome {
        let (reply, rx) = oneshot::channel();
        let command = Command::Acquire {
            on_lost: Box::new(on_lost),
            reply,
        };
        // A failed send hands the command (and its reply sender) back: drop it before waiting.
        let answer = match self.shared.commands.send(command) {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        answer.unwrap_or_else(|| AcquireOutcome::Unknown {
            reason: "the lease client has stopped".into(),
        })
    }

    /// Releases the lease and waits for the answer, retrying within `lease-operation-timeout`.
    /// Releasing a lease not held answers [`ReleaseOutcome::NotHeld`].
    pub async fn release(&self) -> ReleaseOutcome {
        let (reply, rx) = oneshot::channel();
        let answer = match self.shared.commands.send(Command::Release { reply }) {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        answer.unwrap_or_else(|| ReleaseOutcome::Unknown {
            reason: "the lease client has stopped".into(),
        })
    }

    /// True only while this owner is certain it holds the lease. Local and cheap.
    pub fn check_lease(&self) -> bool {
        self.shared.holder().check_lease(now())
    }

    /// The fencing token of the current hold.
    pub fn token(&self) -> Option<FencingToken> {
        self.shared.holder().token()
    }

    /// The lease's name.
    pub fn name(&self) -> &LeaseName {
        &self.shared.name
    }

    /// The owner this handle acquires for.
    pub fn owner(&self) -> &OwnerId {
        &self.shared.owner
    }

    /// The holder's state: released, acquiring, held or releasing.
    pub fn state(&self) -> &'static str {
        self.shared.holder().state_name()
    }
}

/// Starts the driver of one lease; returns its handle and the driver task.
pub(crate) fn start(
    backend: Arc<dyn LeaseBackend>,
    settings: LeaseSettings,
    name: LeaseName,
    owner: OwnerId,
    runtime: &tokio::runtime::Handle,
) -> (Lease, tokio::task::JoinHandle<()>) {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        name,
        owner,
        holder: Mutex::new(LeaseHolder::new(settings.clone())),
        commands,
    });
    let driver = Driver {
        shared: Arc::clone(&shared),
        backend,
        ttl: settings.heartbeat_timeout,
        acquire_waiters: Vec::new(),
        release_waiters: Vec::new(),
        on_lost: Vec::new(),
        runtime: runtime.clone(),
    };
    let task = runtime.spawn(driver.run(command_rx));
    (Lease { shared }, task)
}

/// Pumps one [`LeaseHolder`]: feeds commands, backend replies and deadlines in; runs backend
/// calls, completes callers and reports events. Makes no decision of its own.
struct Driver {
    shared: Arc<Shared>,
    backend: Arc<dyn LeaseBackend>,
    ttl: std::time::Duration,
    acquire_waiters: Vec<(oneshot::Sender<AcquireOutcome>, OnLost)>,
    release_waiters: Vec<oneshot::Sender<ReleaseOutcome>>,
    /// Callbacks of the callers granted the current hold.
    on_lost: Vec<OnLost>,
    runtime: tokio::runtime::Handle,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (reply_tx, mut replies) = mpsc::unbounded_channel::<(OpId, BackendReply)>();
        loop {
            let deadline = self.shared.holder().poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Acquire { on_lost, reply }) => {
                        self.acquire_waiters.push((reply, on_lost));
                        self.shared.holder().handle(now(), HolderInput::Acquire);
                    }
                    Some(Command::Release { reply }) => {
                        self.release_waiters.push(reply);
                        self.shared.holder().handle(now(), HolderInput::Release);
                    }
                    // Every handle is gone (the client stopped): nothing can be asked any more.
                    None => return,
                },
                Some((op, reply)) = replies.recv() => {
                    self.shared.holder().handle(now(), HolderInput::Reply { op, reply });
                }
                () = sleep => self.shared.holder().handle_timeout(now()),
            }
            let outputs: Vec<HolderOutput> = {
                let mut holder = self.shared.holder();
                std::iter::from_fn(|| holder.poll_output()).collect()
            };
            for output in outputs {
                self.carry_out(output, &reply_tx);
            }
        }
    }

    fn carry_out(
        &mut self,
        output: HolderOutput,
        reply_tx: &mpsc::UnboundedSender<(OpId, BackendReply)>,
    ) {
        match output {
            HolderOutput::Op { id, op } => self.call_backend(id, op, reply_tx.clone()),
            HolderOutput::AcquireDone(outcome) => {
                for (reply, on_lost) in self.acquire_waiters.drain(..) {
                    if matches!(outcome, AcquireOutcome::Granted { .. }) {
                        self.on_lost.push(on_lost);
                    }
                    let _ = reply.send(outcome.clone());
                }
            }
            HolderOutput::ReleaseDone(outcome) => {
                self.on_lost.clear(); // a release is not a loss
                for reply in self.release_waiters.drain(..) {
                    let _ = reply.send(outcome.clone());
                }
            }
            HolderOutput::Event(event) => {
                crate::events::report(
                    self.backend.kind(),
                    &self.shared.name,
                    &self.shared.owner,
                    &event,
                );
                if let LeaseEvent::Lost { cause } = event {
                    for on_lost in self.on_lost.drain(..) {
                        on_lost(cause.clone());
                    }
                }
            }
        }
    }

    fn call_backend(
        &self,
        id: OpId,
        op: LeaseOp,
        reply_tx: mpsc::UnboundedSender<(OpId, BackendReply)>,
    ) {
        let backend = Arc::clone(&self.backend);
        let (name, owner, ttl) = (
            self.shared.name.clone(),
            self.shared.owner.clone(),
            self.ttl,
        );
        self.runtime.spawn(async move {
            let timeout = backend.request_timeout();
            let call = match op {
                LeaseOp::Acquire => backend.acquire(&name, &owner, ttl),
                LeaseOp::Renew { token } => backend.renew(&name, &owner, ttl, token),
                LeaseOp::Release { token } => backend.release(&name, &owner, Some(token)),
                LeaseOp::Inspect => backend.inspect(&name, &owner),
            };
            let reply = tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| BackendReply::Unknown {
                    reason: format!("no answer from the backend within {timeout:?}"),
                });
            let _ = reply_tx.send((id, reply));
        });
    }
}
