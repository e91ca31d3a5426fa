//! The lease table of the embedded in-memory backend, as pure data: which owner holds which
//! lease until when, and the fencing tokens handed out.
//!
//! The in-memory backend (`flotilla-lease`) wraps it in a mutex and tokio's clock; the
//! whole-cluster simulator ([`crate::sim`]) drives it with simulated time. Both therefore run the
//! same rules:
//!
//! - **acquire** grants a free or expired lease with a new token (one more than the last token of
//!   that lease, so tokens strictly increase per lease), replaces a live hold of the same owner
//!   with a new hold under a new token (every grant is a hold of its own, so that a late release
//!   or renewal of an earlier hold can never touch it), and denies a live hold of another owner,
//!   naming it;
//! - **renew** extends the owner's hold under its token by a full TTL. Like some real backends,
//!   it accepts a late renewal of a lapsed hold that nobody else took: the holder must not rely
//!   on the backend to refuse it;
//! - **release** removes the owner's hold (of that token, when one is given) and says whether it
//!   was still live;
//! - **inspect** tells the owner the token of its live hold, if it has one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{BackendReply, FencingToken};

/// One owner's hold of one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Who holds it.
    pub owner: String,
    /// The hold's fencing token.
    pub token: FencingToken,
    /// When it expires unless renewed.
    pub expires: Instant,
    /// When this hold was granted (its first acquire).
    pub granted: Instant,
}

/// Every lease of one backend. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    holds: BTreeMap<String, Hold>,
    /// The last token handed out per lease.
    last_token: BTreeMap<String, u64>,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn next_token(&mut self, lease: &str) -> FencingToken {
        let last = self.last_token.entry(lease.to_owned()).or_insert(0);
        *last += 1;
        FencingToken(*last)
    }

    /// `owner` acquires `lease` for `ttl`.
    pub fn acquire(
        &mut self,
        lease: &str,
        owner: &str,
        ttl: Duration,
        now: Instant,
    ) -> BackendReply {
        if let Some(h) = self.holds.get(lease)
            && h.expires > now
            && h.owner != owner
        {
            return BackendReply::Denied {
                holder: Some(h.owner.clone()),
            };
        }
        BackendReply::Granted {
            token: self.grant(lease, owner, ttl, now),
        }
    }

    /// A new hold of `lease` for `owner`, with the next token.
    fn grant(&mut self, lease: &str, owner: &str, ttl: Duration, now: Instant) -> FencingToken {
        let token = self.next_token(lease);
        self.holds.insert(
            lease.to_owned(),
            Hold {
                owner: owner.to_owned(),
                token,
                expires: now + ttl,
                granted: now,
            },
        );
        token
    }

    /// `owner` renews its hold `token` of `lease` for `ttl`.
    pub fn renew(
        &mut self,
        lease: &str,
        owner: &str,
        ttl: Duration,
        token: FencingToken,
        now: Instant,
    ) -> BackendReply {
        match self.holds.get_mut(lease) {
            Some(h) if h.owner == owner && h.token == token => {
                h.expires = now + ttl;
                BackendReply::Renewed
            }
            Some(h) => BackendReply::Denied {
                holder: Some(h.owner.clone()),
            },
            None => BackendReply::Denied { holder: None },
        }
    }

    /// `owner` releases `lease` (its hold `token`, if given).
    pub fn release(
        &mut self,
        lease: &str,
        owner: &str,
        token: Option<FencingToken>,
        now: Instant,
    ) -> BackendReply {
        let hold = self.holds.get(lease);
        let ours = hold.is_some_and(|h| h.owner == owner && token.is_none_or(|t| t == h.token));
        let live = hold.is_some_and(|h| h.expires > now);
        if ours {
            self.holds.remove(lease);
        }
        BackendReply::Released {
            was_held: ours && live,
        }
    }

    /// The token of `owner`'s live hold of `lease`, if it has one.
    pub fn inspect(&self, lease: &str, owner: &str, now: Instant) -> BackendReply {
        BackendReply::Inspected {
            token: self
                .holder(lease, now)
                .filter(|h| h.owner == owner)
                .map(|h| h.token),
        }
    }

    /// Gives `lease` to `owner` with a new token whoever holds it (an operator breaking it).
    pub fn take_over(
        &mut self,
        lease: &str,
        owner: &str,
        ttl: Duration,
        now: Instant,
    ) -> FencingToken {
        self.grant(lease, owner, ttl, now)
    }

    /// The live hold of `lease`, if any.
    pub fn holder(&self, lease: &str, now: Instant) -> Option<&Hold> {
        self.holds.get(lease).filter(|h| h.expires > now)
    }

    /// Every live hold, by lease name.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (&str, &Hold)> {
        self.holds
            .iter()
            .filter(move |(_, h)| h.expires > now)
            .map(|(name, h)| (name.as_str(), h))
    }

    /// The last token handed out for `lease` (0 if none).
    pub fn last_token(&self, lease: &str) -> u64 {
        self.last_token.get(lease).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::epoch;

    const TTL: Duration = Duration::from_secs(15);

    #[test]
    fn tokens_increase_per_lease_and_a_live_hold_is_kept_by_its_owner() {
        let t0 = epoch();
        let mut table = LeaseTable::new();
        assert_eq!(
            table.acquire("s-1", "a", TTL, t0),
            BackendReply::Granted {
                token: FencingToken(1)
            }
        );
        // The same owner gets a new hold under a new token; another is denied, named.
        assert_eq!(
            table.acquire("s-1", "a", TTL, t0 + Duration::from_secs(1)),
            BackendReply::Granted {
                token: FencingToken(2)
            }
        );
        assert_eq!(
            table.inspect("s-1", "a", t0 + Duration::from_secs(1)),
            BackendReply::Inspected {
                token: Some(FencingToken(2))
            }
        );
        assert_eq!(
            table.inspect("s-1", "b", t0 + Duration::from_secs(1)),
            BackendReply::Inspected { token: None }
        );
        assert_eq!(
            table.acquire("s-1", "b", TTL, t0 + Duration::from_secs(2)),
            BackendReply::Denied {
                holder: Some("a".into())
            }
        );
        // Another lease counts on its own.
        assert_eq!(
            table.acquire("s-2", "b", TTL, t0),
            BackendReply::Granted {
                token: FencingToken(1)
            }
        );
        // Expired: the next owner gets a higher token.
        let later = t0 + Duration::from_secs(1) + TTL;
        assert_eq!(
            table.acquire("s-1", "b", TTL, later),
            BackendReply::Granted {
                token: FencingToken(3)
            }
        );
        assert_eq!(
            table.holder("s-1", later).map(|h| h.owner.as_str()),
            Some("b")
        );
        assert_eq!(table.last_token("s-1"), 3);
    }

    #[test]
    fn a_late_release_or_renewal_of_an_earlier_hold_never_touches_a_later_one() {
        let t0 = epoch();
        let mut table = LeaseTable::new();
        table.acquire("s", "a", TTL, t0);
        table.acquire("s", "a", TTL, t0);
        assert_eq!(
            table.release("s", "a", Some(FencingToken(1)), t0),
            BackendReply::Released { was_held: false }
        );
        assert_eq!(
            table.renew("s", "a", TTL, FencingToken(1), t0),
            BackendReply::Denied {
                holder: Some("a".into())
            }
        );
        assert_eq!(
            table.holder("s", t0).map(|h| h.token),
            Some(FencingToken(2))
        );
    }

    #[test]
    fn renew_extends_only_the_owners_token_and_accepts_a_late_renewal_nobody_preempted() {
        let t0 = epoch();
        let mut table = LeaseTable::new();
        table.acquire("s", "a", TTL, t0);
        let late = t0 + TTL + Duration::from_secs(1);
        assert_eq!(
            table.renew("s", "a", TTL, FencingToken(1), late),
            BackendReply::Renewed
        );
        assert!(
            table
                .holder("s", late + TTL - Duration::from_millis(1))
                .is_some()
        );
        assert_eq!(
            table.renew("s", "a", TTL, FencingToken(9), late),
            BackendReply::Denied {
                holder: Some("a".into())
            }
        );
        assert_eq!(
            table.renew("x", "a", TTL, FencingToken(1), late),
            BackendReply::Denied { holder: None }
        );
    }

    #[test]
    fn release_removes_only_the_owners_hold_and_says_whether_it_was_live() {
        let t0 = epoch();
        let mut table = LeaseTable::new();
        table.acquire("s", "a", TTL, t0);
        assert_eq!(
            table.release("s", "b", None, t0),
            BackendReply::Released { was_held: false }
        );
        assert_eq!(
            table.release("s", "a", Some(FencingToken(2)), t0),
            BackendReply::Released { was_held: false }
        );
        assert!(table.holder("s", t0).is_some());
        assert_eq!(
            table.release("s", "a", Some(FencingToken(1)), t0),
            BackendReply::Released { was_held: true }
        );
        assert_eq!(table.live(t0).count(), 0);
        let token = table.take_over("s", "op", TTL, t0);
        assert_eq!(token, FencingToken(2));
    }
}
