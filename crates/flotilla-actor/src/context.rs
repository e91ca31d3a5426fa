//! What a running actor can do: spawn children, watch others, stop itself, use timers.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_core::ActorPath;

use crate::actor::Actor;
use crate::actor_ref::{ActorId, ActorRef};
use crate::cell::{Erased, Signal};
use crate::props::Props;
use crate::system::{ActorSystem, SpawnError, spawn_child};
use crate::timers::Timers;

/// The context of one running actor, passed to every handler and hook.
pub struct Context<M: Send + 'static> {
    pub(crate) myself: ActorRef<M>,
    pub(crate) system: ActorSystem,
    /// Actors this one watches, by id (one `Terminated` each, at most).
    pub(crate) watching: BTreeMap<ActorId, Arc<dyn Erased>>,
    pub(crate) timers: Timers<M>,
    pub(crate) stop_requested: bool,
}

impl<M: Send + 'static> Context<M> {
    /// This actor's own reference.
    pub fn myself(&self) -> &ActorRef<M> {
        &self.myself
    }

    /// This actor's path.
    pub fn path(&self) -> &ActorPath {
        self.myself.path()
    }

    /// The system this actor runs in.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    /// Spawns a child called `name`. Names are unique among live siblings; the name of a stopped
    /// child can be reused once it has fully stopped.
    pub fn spawn<A: Actor>(
        &mut self,
        name: &str,
        props: Props<A>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        spawn_child(&self.system, &self.myself.erased(), Some(name), props)
    }

    /// Spawns a child with a generated name (`$a`, `$b`, …).
    pub fn spawn_anonymous<A: Actor>(
        &mut self,
        props: Props<A>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        spawn_child(&self.system, &self.myself.erased(), None, props)
    }

    /// The paths of this actor's live children, by name.
    pub fn children(&self) -> Vec<ActorPath> {
        self.myself.cell_children()
    }

    /// Stops this actor once the current handler returns.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Watches `target`: when it stops, this actor's [`Actor::on_terminated`] runs once. If the
    /// target has already stopped, the notice comes at once. Watching twice is the same as once.
    pub fn watch<N: Send + 'static>(&mut self, target: &ActorRef<N>) {
        let id = target.id();
        if id == self.myself.id() || self.watching.contains_key(&id) {
            return;
        }
        let erased = target.erased();
        self.watching.insert(id, Arc::clone(&erased));
        if !erased.signal(Signal::Watch {
            watcher: self.myself.erased(),
        }) {
            self.myself.erased().signal(Signal::Terminated {
                id,
                path: target.path().clone(),
            });
        }
    }

    /// Stops watching `target`. No `Terminated` for it arrives afterwards, even one already sent.
    pub fn unwatch<N: Send + 'static>(&mut self, target: &ActorRef<N>) {
        if let Some(erased) = self.watching.remove(&target.id()) {
            erased.signal(Signal::Unwatch {
                watcher: self.myself.id(),
            });
        }
    }

    /// This actor's timers.
    pub fn timers(&mut self) -> &mut Timers<M> {
        &mut self.timers
    }
}

impl<M: Send + 'static> ActorRef<M> {
    pub(crate) fn cell_children(&self) -> Vec<ActorPath> {
        let erased = self.erased();
        let children = erased.children();
        children
            .by_name
            .values()
            .map(|c| c.path().clone())
            .collect()
    }
}
