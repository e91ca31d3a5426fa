//! The shard coordinator of one entity type on a running node: the pure
//! [`ShardCoordinator`] inside an actor that runs as a cluster singleton.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actor::{Actor, ActorError, ActorRef, Context, RemoteMessage};
use flotilla_cluster::{Cluster, MemberStatus};
use flotilla_core::{StateMachine, UniqueAddress};
use flotilla_proto::cluster::LogLevel;
use flotilla_proto::sharding::{
    CoordinatorEvent, CoordinatorInput, CoordinatorOutput, ShardCoordinator, ShardId,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::region::{RegionMsg, region_path};
use crate::store::RememberEntitiesStore;
use crate::wire::{WireToCoordinator, WireToRegion};

/// What the coordinator receives.
#[derive(Serialize, Deserialize)]
pub(crate) enum CoordinatorMsg {
    /// From a region (its unique address).
    FromRegion {
        from: String,
        msg: WireToCoordinator,
    },
    #[serde(skip)]
    Local(CoordinatorLocal),
}

impl RemoteMessage for CoordinatorMsg {
    const MANIFEST: &'static str = "flotilla.ShardCoordinator";
}

pub(crate) enum CoordinatorLocal {
    Members(BTreeSet<UniqueAddress>),
    Terminated(UniqueAddress),
    /// Remember entities: the shards the store names.
    Remembered(BTreeSet<ShardId>),
    Tick,
}

pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The coordinator actor (one instance in the cluster per entity type).
pub(crate) struct CoordinatorActor<M: Send + 'static> {
    pub(crate) type_name: String,
    pub(crate) role: String,
    pub(crate) machine: ShardCoordinator,
    pub(crate) cluster: Cluster,
    /// The region on this node, reached directly (set once it exists).
    pub(crate) local_region: Arc<std::sync::OnceLock<ActorRef<RegionMsg<M>>>>,
    /// Remember entities: the store, whose shards are kept allocated.
    pub(crate) store: Option<Arc<dyn RememberEntitiesStore>>,
    /// How long after a failed store read it is tried again.
    pub(crate) retry_interval: Duration,
}

impl<M> Actor for CoordinatorActor<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    type Msg = CoordinatorMsg;

    async fn pre_start(&mut self, ctx: &mut Context<CoordinatorMsg>) -> Result<(), ActorError> {
        tracing::info!(entity_type = %self.type_name, "shard coordinator of {} started on this node", self.type_name);
        // Members with the role, and the ones that went away.
        let me = ctx.myself().clone();
        let role = self.role.clone();
        crate::follow_members(&self.cluster, move |state, gone| {
            for node in gone {
                me.tell(CoordinatorMsg::Local(CoordinatorLocal::Terminated(node)));
            }
            let up: BTreeSet<UniqueAddress> = state
                .members
                .iter()
                .filter(|m| role.is_empty() || m.roles.contains(&role))
                .filter(|m| m.status == MemberStatus::Up)
                .map(|m| m.node.clone())
                .collect();
            me.tell(CoordinatorMsg::Local(CoordinatorLocal::Members(up)));
            !me.is_stopped()
        });
        if let Some(store) = self.store.clone() {
            // The shards with remembered entities, read until the store answers.
            let (me, type_name, retry) = (
                ctx.myself().clone(),
                self.type_name.clone(),
                self.retry_interval,
            );
            tokio::spawn(async move {
                while !me.is_stopped() {
                    match store.shards(&type_name).await {
                        Ok(shards) => {
                            tracing::info!(entity_type = %type_name, "shard coordinator of {type_name}: {} shard(s) with remembered entities", shards.len());
                            let shards = shards.into_iter().map(ShardId).collect();
                            me.tell(CoordinatorMsg::Local(CoordinatorLocal::Remembered(shards)));
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(entity_type = %type_name, "shard coordinator of {type_name}: {e}; trying again in {retry:?}");
                            tokio::time::sleep(retry).await;
                        }
                    }
                }
            });
        }
        self.drive(ctx);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: CoordinatorMsg,
        ctx: &mut Context<CoordinatorMsg>,
    ) -> Result<(), ActorError> {
        match msg {
            CoordinatorMsg::FromRegion { from, msg } => match from.parse::<UniqueAddress>() {
                Ok(from) => {
                    tracing::debug!(entity_type = %self.type_name, "from region {from}: {msg:?}");
                    self.machine.handle(
                        now(),
                        CoordinatorInput::Received {
                            from,
                            msg: msg.into(),
                        },
                    );
                }
                Err(e) => {
                    metrics::counter!("flotilla_sharding_dropped_total", "reason" => "bad-sender")
                        .increment(1);
                    tracing::warn!(
                        "shard coordinator dropped a message with a bad sender {from:?}: {e}"
                    );
                }
            },
            CoordinatorMsg::Local(CoordinatorLocal::Members(m)) => {
                self.machine.handle(now(), CoordinatorInput::Members(m));
            }
            CoordinatorMsg::Local(CoordinatorLocal::Terminated(n)) => {
                self.machine.handle(now(), CoordinatorInput::Terminated(n));
            }
            CoordinatorMsg::Local(CoordinatorLocal::Remembered(shards)) => {
                self.machine
                    .handle(now(), CoordinatorInput::RememberedShards(shards));
            }
            CoordinatorMsg::Local(CoordinatorLocal::Tick) => self.machine.handle_timeout(now()),
        }
        self.drive(ctx);
        Ok(())
    }
}

impl<M> CoordinatorActor<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    fn drive(&mut self, ctx: &mut Context<CoordinatorMsg>) {
        let me = self.cluster.self_node().clone();
        while let Some(out) = self.machine.poll_output() {
            match out {
                CoordinatorOutput::Send { to, msg } => {
                    let wire = RegionMsg::FromCoordinator {
                        from: me.to_string(),
                        msg: WireToRegion::from(&msg),
                    };
                    if to == me
                        && let Some(local) = self.local_region.get()
                    {
                        local.tell(wire);
                        continue;
                    }
                    match ctx
                        .system()
                        .remote_ref::<RegionMsg<M>>(&region_path(&to.address, &self.type_name))
                    {
                        Ok(region) => region.tell(wire),
                        Err(e) => tracing::warn!("cannot reach the region at {to}: {e}"),
                    }
                }
                CoordinatorOutput::Event(e) => {
                    if let CoordinatorEvent::ShardHomeAllocated { shard, region } = &e {
                        tracing::debug!(entity_type = %self.type_name, "shard {shard} → {region}");
                    }
                }
                CoordinatorOutput::Log { level, text } => match level {
                    LogLevel::Info => {
                        tracing::info!(entity_type = %self.type_name, "shard coordinator of {}: {text}", self.type_name);
                    }
                    LogLevel::Warn => {
                        tracing::warn!(entity_type = %self.type_name, "shard coordinator of {}: {text}", self.type_name);
                    }
                },
            }
        }
        if let Some(at) = self.machine.poll_timeout() {
            ctx.timers().start_single(
                "tick",
                CoordinatorMsg::Local(CoordinatorLocal::Tick),
                at.saturating_duration_since(now()),
            );
        }
    }
}
