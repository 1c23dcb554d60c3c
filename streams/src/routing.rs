//! Which input partition a record's key belongs in under the partitioner our producers use, so
//! that a record found in another one (a producer with another partitioner, or one that chose
//! the partition itself) is noticed: under `distinct` such a product may be counted once per
//! partition it appears in (see [`crate::state`]).
//!
//! Our producers are librdkafka clients with its default partitioner, `consistent_random`: the
//! CRC32 of the key's bytes modulo the partition count. `[kafka.properties] partitioner` names
//! another, and the check follows it where it can: `murmur2` and `murmur2_random` (the Java
//! client's default) are followed too; with any other (`random`, `fnv1a`, ...) the check is off.

use std::collections::BTreeMap;

/// The partitioner the input's producers are assumed to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioner {
    /// `consistent`, `consistent_random` (librdkafka's default): CRC32 of the key.
    Crc32,
    /// `murmur2`, `murmur2_random` (the Java client's default): murmur2 of the key, positive.
    Murmur2,
    /// Another partitioner, named: where it puts a key is not checked.
    Unchecked(String),
}

impl Partitioner {
    /// The partitioner `[kafka.properties]` configures, librdkafka's default without one.
    pub fn configured(properties: &BTreeMap<String, String>) -> Self {
        match properties.get("partitioner").map(String::as_str) {
            None | Some("consistent" | "consistent_random") => Self::Crc32,
            Some("murmur2" | "murmur2_random") => Self::Murmur2,
            Some(other) => Self::Unchecked(other.to_owned()),
        }
    }

    /// The partition of `partitions` this partitioner puts `key` in; `None` for an empty key
    /// (the `*_random` partitioners place those at random) or when it is not checked.
    pub fn partition(&self, key: &[u8], partitions: i32) -> Option<i32> {
        let count = u32::try_from(partitions).ok().filter(|c| *c > 0)?;
        if key.is_empty() {
            return None;
        }
        let hash = match self {
            Self::Crc32 => crc32(key),
            Self::Murmur2 => murmur2(key) & 0x7fff_ffff,
            Self::Unchecked(_) => return None,
        };
        i32::try_from(hash % count).ok()
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and librdkafka's `rd_crc32` compute it).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Murmur2 as the Java client's `Utils.murmur2` (and librdkafka's `rd_murmur2`) compute it, as
/// unsigned bits.
pub fn murmur2(bytes: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Key lengths are far below 4 GiB; a longer one only hashes differently.
    let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut h = SEED ^ length;
    let mut chunks = bytes.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(first) = tail.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32_is_the_ieee_checksum() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Kafka's own test vectors (`UtilsTest.testMurmur2`), as the signed ints Java prints.
        for (key, java) in [
            (&b"21"[..], -973_932_308i32),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key).cast_signed(), java, "{key:?}");
        }
    }

    #[test]
    fn the_configured_partitioner_is_followed_or_the_check_is_off() {
        let with = |name: &str| {
            let mut properties = BTreeMap::new();
            properties.insert("partitioner".to_owned(), name.to_owned());
            Partitioner::configured(&properties)
        };
        assert_eq!(
            Partitioner::configured(&BTreeMap::new()),
            Partitioner::Crc32
        );
        assert_eq!(with("consistent_random"), Partitioner::Crc32);
        assert_eq!(with("murmur2_random"), Partitioner::Murmur2);
        assert_eq!(with("random"), Partitioner::Unchecked("random".into()));
        assert_eq!(with("random").partition(b"key", 3), None);
        assert_eq!(Partitioner::Crc32.partition(b"", 3), None);
        assert_eq!(Partitioner::Crc32.partition(b"key", 0), None);
    }

    proptest! {
        #[test]
        fn every_key_belongs_in_one_partition(key in proptest::collection::vec(any::<u8>(), 1..32), partitions in 1i32..64) {
            for partitioner in [Partitioner::Crc32, Partitioner::Murmur2] {
                let p = partitioner.partition(&key, partitions).unwrap();
                prop_assert!((0..partitions).contains(&p));
            }
        }
    }
}
