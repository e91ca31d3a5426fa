//! The coordinator protocol on the wire: serde mirrors of the pure machine's messages, with
//! node identities as unique-address strings and shard ids as strings. Decoding checks every
//! address; a message that does not parse is dropped, logged and counted by the caller.

use std::collections::BTreeSet;

use flotilla_core::UniqueAddress;
use flotilla_proto::sharding::{ShardId, ToCoordinator, ToRegion};
use serde::{Deserialize, Serialize};

/// [`ToCoordinator`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireToCoordinator {
    Register(Vec<String>),
    RegisterProxy,
    GetShardHome(String),
    ShardStarted(String),
    BeginHandOffAck(String),
    ShardStopped(String),
    GracefulShutdownReq,
}

/// [`ToRegion`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireToRegion {
    RegisterAck,
    ShardHome { shard: String, region: String },
    HostShard(String),
    BeginHandOff(String),
    HandOff(String),
    RegisterAgain,
}

impl From<&ToCoordinator> for WireToCoordinator {
    fn from(m: &ToCoordinator) -> Self {
        match m {
            ToCoordinator::Register(s) => Self::Register(s.iter().map(|s| s.0.clone()).collect()),
            ToCoordinator::RegisterProxy => Self::RegisterProxy,
            ToCoordinator::GetShardHome(s) => Self::GetShardHome(s.0.clone()),
            ToCoordinator::ShardStarted(s) => Self::ShardStarted(s.0.clone()),
            ToCoordinator::BeginHandOffAck(s) => Self::BeginHandOffAck(s.0.clone()),
            ToCoordinator::ShardStopped(s) => Self::ShardStopped(s.0.clone()),
            ToCoordinator::GracefulShutdownReq => Self::GracefulShutdownReq,
        }
    }
}

impl From<WireToCoordinator> for ToCoordinator {
    fn from(m: WireToCoordinator) -> Self {
        match m {
            WireToCoordinator::Register(s) => {
                Self::Register(s.into_iter().map(ShardId).collect::<BTreeSet<_>>())
            }
            WireToCoordinator::RegisterProxy => Self::RegisterProxy,
            WireToCoordinator::GetShardHome(s) => Self::GetShardHome(ShardId(s)),
            WireToCoordinator::ShardStarted(s) => Self::ShardStarted(ShardId(s)),
            WireToCoordinator::BeginHandOffAck(s) => Self::BeginHandOffAck(ShardId(s)),
            WireToCoordinator::ShardStopped(s) => Self::ShardStopped(ShardId(s)),
            WireToCoordinator::GracefulShutdownReq => Self::GracefulShutdownReq,
        }
    }
}

impl From<&ToRegion> for WireToRegion {
    fn from(m: &ToRegion) -> Self {
        match m {
            ToRegion::RegisterAck => Self::RegisterAck,
            ToRegion::ShardHome { shard, region } => Self::ShardHome {
                shard: shard.0.clone(),
                region: region.to_string(),
            },
            ToRegion::HostShard(s) => Self::HostShard(s.0.clone()),
            ToRegion::BeginHandOff(s) => Self::BeginHandOff(s.0.clone()),
            ToRegion::HandOff(s) => Self::HandOff(s.0.clone()),
            ToRegion::RegisterAgain => Self::RegisterAgain,
        }
    }
}

impl TryFrom<WireToRegion> for ToRegion {
    type Error = String;

    fn try_from(m: WireToRegion) -> Result<Self, String> {
        Ok(match m {
            WireToRegion::RegisterAck => Self::RegisterAck,
            WireToRegion::ShardHome { shard, region } => Self::ShardHome {
                shard: ShardId(shard),
                region: region.parse::<UniqueAddress>().map_err(|e| e.to_string())?,
            },
            WireToRegion::HostShard(s) => Self::HostShard(ShardId(s)),
            WireToRegion::BeginHandOff(s) => Self::BeginHandOff(ShardId(s)),
            WireToRegion::HandOff(s) => Self::HandOff(ShardId(s)),
            WireToRegion::RegisterAgain => Self::RegisterAgain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let node: UniqueAddress = "flotilla://app@10.0.0.1:2552#7"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let s = || ShardId("12".into());
        for m in [
            ToCoordinator::Register([s()].into()),
            ToCoordinator::RegisterProxy,
            ToCoordinator::GetShardHome(s()),
            ToCoordinator::ShardStarted(s()),
            ToCoordinator::BeginHandOffAck(s()),
            ToCoordinator::ShardStopped(s()),
            ToCoordinator::GracefulShutdownReq,
        ] {
            assert_eq!(ToCoordinator::from(WireToCoordinator::from(&m)), m);
        }
        for m in [
            ToRegion::RegisterAck,
            ToRegion::ShardHome {
                shard: s(),
                region: node,
            },
            ToRegion::HostShard(s()),
            ToRegion::BeginHandOff(s()),
            ToRegion::HandOff(s()),
            ToRegion::RegisterAgain,
        ] {
            assert_eq!(ToRegion::try_from(WireToRegion::from(&m)), Ok(m));
        }
        let bad = WireToRegion::ShardHome {
            shard: "1".into(),
            region: "nowhere".into(),
        };
        assert!(ToRegion::try_from(bad).is_err());
    }
}
