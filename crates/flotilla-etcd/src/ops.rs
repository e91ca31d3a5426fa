//! The requests: reads, writes, transactions and etcd leases.

use tonic::transport::Channel;

use crate::api::etcdserverpb as pb;
use crate::api::mvccpb::KeyValue;
use crate::{Client, EtcdError, Txn};
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;

/// The end of the range of every key starting with `prefix` (etcd's "prefix" range end: the
/// prefix with its last byte below 0xff incremented and what follows dropped; `\0`, every key,
/// when there is none).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Client {
    /// The underlying gRPC channel, for etcd requests this client has no method for (with the
    /// generated clients in [`crate::api`]). Requests made so carry no authentication token.
    pub fn channel(&self) -> Channel {
        self.inner_channel()
    }

    async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, EtcdError> {
        self.call(
            request,
            |c, r| async move { KvClient::new(c).range(r).await },
        )
        .await
    }

    /// The key `key`, if it exists.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, EtcdError> {
        let request = pb::RangeRequest {
            key: key.into(),
            ..pb::RangeRequest::default()
        };
        Ok(self.range(request).await?.kvs.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order; with `keys_only`, without their values.
    pub async fn get_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
        keys_only: bool,
    ) -> Result<Vec<KeyValue>, EtcdError> {
        let key = prefix.into();
        let request = pb::RangeRequest {
            range_end: prefix_end(&key),
            key,
            keys_only,
            ..pb::RangeRequest::default()
        };
        Ok(self.range(request).await?.kvs)
    }

    /// How many keys start with `prefix`.
    pub async fn count(&self, prefix: impl Into<Vec<u8>>) -> Result<i64, EtcdError> {
        let key = prefix.into();
        let request = pb::RangeRequest {
            range_end: prefix_end(&key),
            key,
            count_only: true,
            ..pb::RangeRequest::default()
        };
        Ok(self.range(request).await?.count)
    }

    /// Writes `value` at `key` (attached to the etcd lease `lease`, if given); returns the
    /// revision of the write.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: Option<i64>,
    ) -> Result<i64, EtcdError> {
        let request = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            lease: lease.unwrap_or(0),
            ..pb::PutRequest::default()
        };
        let response = self
            .call(request, |c, r| async move { KvClient::new(c).put(r).await })
            .await?;
        Ok(response.header.map_or(0, |h| h.revision))
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64, EtcdError> {
        let request = pb::DeleteRangeRequest {
            key: key.into(),
            ..pb::DeleteRangeRequest::default()
        };
        let response = self
            .call(request, |c, r| async move {
                KvClient::new(c).delete_range(r).await
            })
            .await?;
        Ok(response.deleted)
    }

    /// Runs a transaction; `succeeded` says whether its conditions held, and the header's
    /// revision is the store's revision after it (the revision of its writes, if any).
    pub async fn txn(&self, txn: Txn) -> Result<pb::TxnResponse, EtcdError> {
        self.call(txn.into_request(), |c, r| async move {
            KvClient::new(c).txn(r).await
        })
        .await
    }

    /// Grants an etcd lease of `ttl_secs` seconds (see [`crate::ttl_secs`]); returns its id.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let request = pb::LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        };
        let response = self
            .call(request, |c, r| async move {
                LeaseClient::new(c).lease_grant(r).await
            })
            .await?;
        if response.error.is_empty() {
            Ok(response.id)
        } else {
            Err(EtcdError::Refused {
                code: tonic::Code::Unknown,
                message: response.error,
            })
        }
    }

    /// Revokes the etcd lease `id`, deleting the keys attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let request = pb::LeaseRevokeRequest { id };
        self.call(request, |c, r| async move {
            LeaseClient::new(c).lease_revoke(r).await
        })
        .await
        .map(drop)
    }

    /// Renews the etcd lease `id` once (its TTL starts again); returns the TTL it got, or
    /// `None` if the lease no longer exists.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let request = pb::LeaseKeepAliveRequest { id };
        let mut stream = self
            .call(request, |c, r| async move {
                let (metadata, extensions, message) = r.into_parts();
                let once = tonic::codegen::tokio_stream::once(message);
                let r = tonic::Request::from_parts(metadata, extensions, once);
                LeaseClient::new(c).lease_keep_alive(r).await
            })
            .await?;
        let answer = self.bounded_message(stream.message()).await?;
        Ok(answer.map(|a| a.ttl).filter(|ttl| *ttl > 0))
    }

    /// The remaining TTL of the etcd lease `id`, or `None` if it no longer exists.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let request = pb::LeaseTimeToLiveRequest { id, keys: false };
        let response = self
            .call(request, |c, r| async move {
                LeaseClient::new(c).lease_time_to_live(r).await
            })
            .await?;
        Ok(Some(response.ttl).filter(|ttl| *ttl > 0))
    }

    /// The status of the member that answers (version, leader, revision).
    pub async fn status(&self) -> Result<pb::StatusResponse, EtcdError> {
        self.call(pb::StatusRequest {}, |c, r| async move {
            MaintenanceClient::new(c).status(r).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
