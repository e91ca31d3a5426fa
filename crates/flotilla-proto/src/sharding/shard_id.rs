//! Entity id → shard id.
//!
//! The default extractor hashes the entity id's UTF-8 bytes with 64-bit FNV-1a and takes the
//! hash modulo `number-of-shards`. The function is written out here rather than borrowed from a
//! hasher whose output may change between releases (Rust's `DefaultHasher` says so): every node
//! of a cluster, whatever its version, must put an entity in the same shard, or messages for it
//! would reach two incarnations of it. The test vectors below pin it.

use std::fmt;

/// A shard's id: the decimal shard number with the default extractor, or whatever a custom
/// extractor returns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub String);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ShardId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The shard of `entity_id` among `number_of_shards` (at least 1): `fnv1a64(id) mod n`.
pub fn shard_of(entity_id: &str, number_of_shards: u32) -> ShardId {
    let n = u64::from(number_of_shards.max(1));
    ShardId((fnv1a64(entity_id.as_bytes()) % n).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned_by_test_vectors() {
        // FNV-1a 64 reference values (the algorithm's published test suite).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // And the shards that follow from them: these must never change.
        assert_eq!(shard_of("", 1000), ShardId("37".into()));
        assert_eq!(shard_of("a", 1000), ShardId("996".into()));
        assert_eq!(shard_of("foobar", 1000), ShardId("968".into()));
        assert_eq!(shard_of("anything", 1), ShardId("0".into()));
        assert_eq!(
            shard_of("anything", 0),
            ShardId("0".into()),
            "0 shards counts as 1"
        );
    }

    #[test]
    fn ids_spread_evenly_over_the_shards() {
        let n = 100u32;
        let mut counts = vec![0u32; n as usize];
        for i in 0..100_000 {
            let s = shard_of(&format!("user-{i}"), n);
            let k: usize = s.0.parse().unwrap_or_else(|e| panic!("{e}"));
            counts[k] += 1;
        }
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(
            min > 850 && max < 1150,
            "min {min}, max {max} of 1000 expected"
        );
    }
}
