//! Transactions: compare, then put or delete — built without spelling out etcd's messages.

use crate::api::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request;

/// How a [`Compare`] compares the key's field with the value given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// The key's field is greater.
    Greater,
    /// The key's field is less.
    Less,
}

impl From<CompareOp> for CompareResult {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => Self::Equal,
            CompareOp::NotEqual => Self::NotEqual,
            CompareOp::Greater => Self::Greater,
            CompareOp::Less => Self::Less,
        }
    }
}

/// One condition of a transaction, on one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget, u: TargetUnion) -> Self {
        Self(pb::Compare {
            result: CompareResult::from(op).into(),
            target: target.into(),
            key: key.into(),
            range_end: Vec::new(),
            target_union: Some(u),
        })
    }

    /// Compares the revision that created the key (0: the key does not exist).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Create,
            TargetUnion::CreateRevision(revision),
        )
    }

    /// Compares the revision of the key's last change.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Mod,
            TargetUnion::ModRevision(revision),
        )
    }

    /// Compares the key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Value,
            TargetUnion::Value(value.into()),
        )
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnOp(pb::RequestOp);

impl TxnOp {
    /// Writes `value` at `key`, attached to the etcd lease `lease` if one is given (the key is
    /// deleted when that lease ends).
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: Option<i64>) -> Self {
        Self(pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: key.into(),
                value: value.into(),
                lease: lease.unwrap_or(0),
                ..pb::PutRequest::default()
            })),
        })
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self(pb::RequestOp {
            request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                ..pb::DeleteRangeRequest::default()
            })),
        })
    }

    /// Reads `key`.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Self(pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: key.into(),
                ..pb::RangeRequest::default()
            })),
        })
    }
}

/// A transaction: if every [`Compare`] holds, the `and_then` operations run, otherwise the
/// `or_else` ones — atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn(pb::TxnRequest);

impl Txn {
    /// An empty transaction (no condition: its `and_then` operations run).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions.
    #[must_use]
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.0.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }

    /// Adds operations run when every condition holds.
    #[must_use]
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.success.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// Adds operations run when a condition does not hold.
    #[must_use]
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.failure.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// The request etcd receives.
    pub fn into_request(self) -> pb::TxnRequest {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_if_absent_is_one_compare_and_one_put() {
        let t = Txn::new()
            .when([Compare::create_revision("k", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("k", "v", Some(7))])
            .into_request();
        assert_eq!(t.compare.len(), 1);
        assert_eq!(t.compare[0].target, i32::from(CompareTarget::Create));
        assert_eq!(
            t.compare[0].target_union,
            Some(TargetUnion::CreateRevision(0))
        );
        let Some(Request::RequestPut(put)) = &t.success[0].request else {
            panic!("{t:?}")
        };
        assert_eq!((put.key.as_slice(), put.lease), (&b"k"[..], 7));
        assert!(t.failure.is_empty());
    }
}
