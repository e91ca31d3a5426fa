//! A durable sharded entity for the chaos harness: `ledger` entities whose totals live in etcd,
//! written only under the shard's fencing token, and a workload that asks them to add one and
//! prints every acknowledgement.
//!
//! Each entity keeps one key, `/flotilla/ledger/<shard>/<entity>`, whose value is `<token> <total>`: the
//! fencing token of the incarnation that wrote it last, and the entity's total. An incarnation
//!
//! 1. **claims** the record before its first write: it reads it, refuses to go on if a newer
//!    token wrote it, and writes its own token with the same total, on the condition that the
//!    record has not changed since it read it;
//! 2. **adds** with a compare-and-swap on the record's revision: the write lands only if nobody
//!    wrote since this incarnation's last write. It answers only after etcd has applied it.
//!
//! So an incarnation that lost its lease but still runs (a paused process, say) cannot overwrite
//! what the next one wrote: once the next has claimed the record, the old one's writes fail, and
//! it stops. An acknowledged total is never lost; totals acknowledged one after the other only
//! grow. The chaos checker (`crate::chaos::check`) verifies exactly that from the printed lines:
//!
//! ```text
//! ack l17 5 1041 1764060000123456789 1764060000130000000   entity, total, token, sent, acked (ns)
//! ```

use std::time::Duration;

use anyhow::Context as _;
use flotilla_actor::{Actor, ActorError, Context, Props, RemoteMessage, ReplyTo};
use flotilla_etcd::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

/// The entity type's name.
pub const TYPE_NAME: &str = "ledger";

/// Where the records live in etcd: `<PREFIX><shard>/<entity>` (apart from the leases).
pub const PREFIX: &str = "/flotilla/ledger/";

/// An acknowledged addition: the entity's total after it, and the fencing token it was
/// written under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAck {
    /// The total after the addition.
    pub total: u64,
    /// The shard's fencing token.
    pub token: u64,
}

/// A ledger entity's messages.
#[derive(Debug, Serialize, Deserialize)]
pub enum LedgerMsg {
    /// Add one; the answer comes once the new total is durable (or says why it is not).
    Add(ReplyTo<Result<LedgerAck, String>>),
}

impl RemoteMessage for LedgerMsg {
    const MANIFEST: &'static str = "flotilla.chaos.Ledger";
}

/// A record's value: the token that wrote it and the total.
fn encode(token: u64, total: u64) -> String {
    format!("{token} {total}")
}

fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (token, total) = text.split_once(' ')?;
    Some((token.parse().ok()?, total.parse().ok()?))
}

/// The etcd client the entities write their records with: connected at start, or at first use
/// when etcd did not answer at start (a node then starts anyway, as with its leases).
#[derive(Clone)]
pub struct Records {
    settings: flotilla_etcd::EtcdSettings,
    client: std::sync::Arc<tokio::sync::OnceCell<Client>>,
}

impl Records {
    /// Connects to etcd. Unusable settings or refused credentials fail here; an etcd that
    /// cannot be reached yet is connected to at the first write after it answers.
    pub async fn connect(settings: &flotilla_etcd::EtcdSettings) -> anyhow::Result<Self> {
        let cell = tokio::sync::OnceCell::new();
        match Client::connect(settings).await {
            Ok(client) => {
                let _ = cell.set(client);
            }
            Err(e) if e.is_unreachable() => tracing::warn!(
                "the ledger's records cannot be reached ({e}); starting without them: each \
                 write tries to connect until etcd answers"
            ),
            Err(e) => return Err(e).context("cannot use etcd for the ledger's records"),
        }
        Ok(Self {
            settings: settings.clone(),
            client: std::sync::Arc::new(cell),
        })
    }

    /// The client, connecting first if need be.
    async fn client(&self) -> Result<Client, String> {
        self.client
            .get_or_try_init(|| Client::connect(&self.settings))
            .await
            .cloned()
            .map_err(|e| format!("etcd not reached yet: {e}"))
    }
}

/// One ledger entity (see the [module docs](self)).
pub struct Ledger {
    entity: String,
    token: Option<u64>,
    records: Records,
    key: String,
    /// After a claim: the total and the record's revision as this incarnation wrote it last.
    state: Option<(u64, i64)>,
}

impl Ledger {
    /// Claims the record for this incarnation's token (see the module docs).
    async fn claim(&self, token: u64) -> Result<(u64, i64), String> {
        let client = self.records.client().await?;
        for _ in 0..3 {
            let got = client
                .get(self.key.as_str())
                .await
                .map_err(|e| format!("etcd read failed: {e}"))?;
            let (guard, stored, total) = match got {
                None => (
                    Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0),
                    0,
                    0,
                ),
                Some(kv) => {
                    let (stored, total) = decode(&kv.value)
                        .ok_or_else(|| format!("the record {} is not a ledger's", self.key))?;
                    (
                        Compare::mod_revision(self.key.as_str(), CompareOp::Equal, kv.mod_revision),
                        stored,
                        total,
                    )
                }
            };
            if stored > token {
                return Err(format!(
                    "fenced out: token {stored} wrote the record, this incarnation has {token}"
                ));
            }
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(
                self.key.as_str(),
                encode(token, total),
                None,
            )]);
            let done = client
                .txn(txn)
                .await
                .map_err(|e| format!("etcd claim failed: {e}"))?;
            if done.succeeded {
                let revision = done.header.as_ref().map_or(0, |h| h.revision);
                return Ok((total, revision));
            }
        }
        Err("the record kept changing while it was claimed".into())
    }

    async fn add(&mut self) -> Result<LedgerAck, String> {
        let token = self
            .token
            .ok_or("the shard holds no lease: nothing is written")?;
        let (total, revision) = match self.state {
            Some(s) => s,
            None => self.claim(token).await?,
        };
        self.state = None;
        let next = total + 1;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(self.key.as_str(), encode(token, next), None)]);
        // On an error the write may or may not have landed: the next addition claims again and
        // reads what is there.
        let done = self
            .records
            .client()
            .await?
            .txn(txn)
            .await
            .map_err(|e| format!("etcd write failed: {e}"))?;
        if !done.succeeded {
            return Err(format!(
                "fenced out: the record of {} changed under this incarnation (token {token})",
                self.entity
            ));
        }
        self.state = Some((next, done.header.as_ref().map_or(0, |h| h.revision)));
        Ok(LedgerAck { total: next, token })
    }
}

impl Actor for Ledger {
    type Msg = LedgerMsg;

    async fn pre_start(&mut self, _ctx: &mut Context<LedgerMsg>) -> Result<(), ActorError> {
        crate::node::say(&format!(
            "entity-start {} {} {} {}",
            self.entity,
            self.key.rsplit('/').nth(1).unwrap_or("?"),
            self.token.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            crate::node::nanos()
        ));
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: LedgerMsg,
        ctx: &mut Context<LedgerMsg>,
    ) -> Result<(), ActorError> {
        let LedgerMsg::Add(reply) = msg;
        let outcome = self.add().await;
        if let Err(e) = &outcome
            && e.starts_with("fenced out")
        {
            // A newer incarnation owns the record: this one has nothing more to do.
            tracing::warn!(entity = %self.entity, "ledger {}: {e}; stopping", self.entity);
            ctx.stop();
        }
        reply.send(outcome);
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<LedgerMsg>) {
        crate::node::say(&format!(
            "entity-stop {} {} {}",
            self.entity,
            self.key.rsplit('/').nth(1).unwrap_or("?"),
            crate::node::nanos()
        ));
    }
}

/// The ledger entity type's definition: records under [`PREFIX`] in the etcd that `records`
/// reaches.
pub fn entity(records: Records) -> flotilla_sharding::Entity<Ledger> {
    flotilla_sharding::Entity::new(TYPE_NAME, move |ctx| {
        let entity = ctx.entity_id().to_owned();
        let key = format!("{PREFIX}{}/{entity}", ctx.shard_id());
        let token = ctx.fencing_token().map(|t| t.0);
        let records = records.clone();
        Props::new(move || Ledger {
            entity: entity.clone(),
            token,
            records: records.clone(),
            key: key.clone(),
            state: None,
        })
    })
}

/// Every ledger total in etcd: entity → (token, total).
pub async fn totals(
    client: &Client,
) -> anyhow::Result<std::collections::BTreeMap<String, (u64, u64)>> {
    let got = client
        .get_prefix(PREFIX, false)
        .await
        .context("cannot read the ledger records")?;
    let mut out = std::collections::BTreeMap::new();
    for kv in &got {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        let entity = key.rsplit('/').next().unwrap_or_default().to_owned();
        let value = decode(&kv.value).with_context(|| format!("bad ledger record {key}"))?;
        out.insert(entity, value);
    }
    Ok(out)
}

/// Asks random ledger entities `l0` … `l<entities-1>` to add one, `rate` times a second, each
/// ask on its own task (a slow answer holds nothing up), printing every acknowledgement as an
/// `ack` line. Runs until aborted.
pub async fn workload(
    region: flotilla_sharding::ShardRegion<LedgerMsg>,
    entities: u32,
    rate: u32,
    seed: u64,
) {
    let mut rng = flotilla_proto::sim::seeded::SeededRng::new(seed);
    let period = Duration::from_secs(1) / rate.max(1);
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let id = format!("l{}", rng.next_u64() % u64::from(entities.max(1)));
        let target = region.entity_ref(&id);
        tokio::spawn(async move {
            let sent = crate::node::nanos();
            if let Ok(Ok(ack)) = target.ask(LedgerMsg::Add, Duration::from_secs(5)).await {
                crate::node::say(&format!(
                    "ack {id} {} {} {sent} {}",
                    ack.total,
                    ack.token,
                    crate::node::nanos()
                ));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(records: &Records, token: u64) -> Ledger {
        Ledger {
            entity: "l1".into(),
            token: Some(token),
            records: records.clone(),
            key: format!("{PREFIX}3/l1"),
            state: None,
        }
    }

    #[tokio::test]
    async fn an_older_incarnation_cannot_write_once_a_newer_one_has_claimed_the_record() {
        let etcd = flotilla_etcd::testing::EtcdServer::start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let settings = flotilla_etcd::EtcdSettings::new([etcd.endpoint()]);
        let records = Records::connect(&settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut old = ledger(&records, 5);
        assert_eq!(old.add().await, Ok(LedgerAck { total: 1, token: 5 }));
        assert_eq!(old.add().await, Ok(LedgerAck { total: 2, token: 5 }));
        // The shard moved (a paused process, its lease expired): the next incarnation claims.
        let mut new = ledger(&records, 9);
        assert_eq!(new.add().await, Ok(LedgerAck { total: 3, token: 9 }));
        // The old one wakes up: its write does not land, and it cannot claim back.
        let e = old.add().await.expect_err("fenced");
        assert!(e.starts_with("fenced out"), "{e}");
        let e = old.add().await.expect_err("fenced");
        assert!(e.contains("token 9 wrote the record"), "{e}");
        assert_eq!(new.add().await, Ok(LedgerAck { total: 4, token: 9 }));
        let c = records.client().await.unwrap_or_else(|e| panic!("{e}"));
        let totals = totals(&c).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(totals.get("l1"), Some(&(9, 4)));
        // Without a lease nothing is written.
        let mut none = ledger(&records, 0);
        none.token = None;
        assert!(none.add().await.is_err());
    }

    #[test]
    fn a_record_is_its_token_and_total() {
        assert_eq!(decode(encode(1041, 7).as_bytes()), Some((1041, 7)));
        assert_eq!(decode(b"1041"), None);
        assert_eq!(decode(b"x 7"), None);
        assert_eq!(decode(&[0xff, b' ', b'1']), None);
    }
}
