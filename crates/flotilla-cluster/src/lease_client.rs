//! A lease client that lives in an actor system: it stops only after every user actor — every
//! holder — has stopped, and its stop awaits the release of every lease still held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Never, Props, SpawnError};
use flotilla_core::LeaseSettings;
use flotilla_lease::{LeaseBackend, LeaseClient, LeaseError, OwnerId};

/// Why a lease client could not be started in an actor system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartLeaseClientError {
    /// The client itself could not be built (bad settings, no runtime).
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The system actor owning it could not be started (the system is stopping).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Starts a [`LeaseClient`] in an actor system's runtime layer.
pub trait LeaseClientExt: Sized {
    /// A client owned by a system actor of `system`: it outlives every user actor, and when
    /// the system stops it releases every lease still held, concurrently, and the system's
    /// termination waits for those releases.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flotilla_cluster::LeaseClientExt as _;
    /// use flotilla_lease::{LeaseClient, MemoryBackend, OwnerId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let system = flotilla_actor::ActorSystem::new("bank")?;
    /// let owner = OwnerId::new("flotilla://bank@127.0.0.1:2552")?;
    /// let leases = LeaseClient::start(
    ///     &system,
    ///     Arc::new(MemoryBackend::new()),
    ///     system.config().lease.clone(),
    ///     owner,
    /// )?;
    /// assert_eq!(leases.backend().kind(), "memory");
    /// # Ok(())
    /// # }
    /// ```
    fn start(
        system: &ActorSystem,
        backend: Arc<dyn LeaseBackend>,
        settings: LeaseSettings,
        owner: OwnerId,
    ) -> Result<Self, StartLeaseClientError>;
}

impl LeaseClientExt for LeaseClient {
    fn start(
        system: &ActorSystem,
        backend: Arc<dyn LeaseBackend>,
        settings: LeaseSettings,
        owner: OwnerId,
    ) -> Result<Self, StartLeaseClientError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let client = Self::new(backend, settings, owner)?;
        let name = format!(
            "lease-client-{}-{}",
            client.backend().kind(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let for_actor = client.clone();
        system.spawn_system_actor(&name, Props::new(move || ClientActor(for_actor.clone())))?;
        Ok(client)
    }
}

/// The system actor that owns a client's lifetime.
struct ClientActor(LeaseClient);

impl Actor for ClientActor {
    type Msg = Never;

    async fn handle(&mut self, msg: Never, _ctx: &mut Context<Never>) -> Result<(), ActorError> {
        match msg {}
    }

    async fn post_stop(&mut self, _ctx: &mut Context<Never>) {
        self.0.shutdown().await;
    }
}
