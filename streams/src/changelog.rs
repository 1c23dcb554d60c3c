//! The binary formats of the two internal topics: changelog records (one state change of one
//! input partition, with the input offset it reflects, or the declaration of a sum the partition
//! holds a share of) and partial sums (one input partition's share of one sum, with the input
//! position it reflects).
//!
//! Both topics are read only by `streams`, so they use a small fixed layout rather than the
//! registry; each value starts with a format version byte so that a later layout can be told
//! apart.

use marketflow_core::config::StreamsSemantics;
use marketflow_core::record::ListingSumKey;

use crate::aggregate::{Change, Contribution, Scoping, Summary};

/// The layout version written first in every changelog value.
const FORMAT: u8 = 1;

/// The layout version written first in every partial sum: 2 holds the sum in 128 bits (see
/// [`crate::state`]); 1, the sum in 64 bits as earlier versions wrote it, is still read.
const PARTIAL_FORMAT: u8 = 2;

/// The tag of a sum's declaration, in its changelog key and value (a change has its semantics'
/// tag there, `d` or `a`).
const DECLARED: u8 = b'k';

/// A record of an internal topic that does not decode.
#[derive(Debug, thiserror::Error)]
#[error(
    "a record of the internal topic {topic} does not decode ({what}); was the topic written by \
     another program or version? Use a new topic (streams.changelog_topic / \
     streams.partials_topic) and group (streams.group_id)"
)]
pub struct FormatError {
    /// The topic read.
    pub topic: String,
    /// What was wrong.
    pub what: &'static str,
}

/// The changelog key of a change: the product id under `distinct` (so that compaction keeps each
/// product's latest state), the input offset under `append` (every record counts, none may go).
pub fn change_key(semantics: StreamsSemantics, change: &Change) -> [u8; 9] {
    let (tag, id) = match semantics {
        StreamsSemantics::Distinct => (b'd', change.product_id),
        StreamsSemantics::Append => (b'a', change.offset),
    };
    let mut key = [tag; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// Encodes a change with the scoping it was made under.
pub fn encode_change(scoping: &Scoping, change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.push(FORMAT);
    out.push(semantics_tag(scoping.semantics));
    out.push(scoping.category_level);
    out.extend_from_slice(&change.offset.to_be_bytes());
    out.extend_from_slice(&change.timestamp.to_be_bytes());
    out.extend_from_slice(&change.product_id.to_be_bytes());
    match &change.next {
        None => out.push(0),
        Some(next) => {
            out.push(1);
            out.extend_from_slice(&next.price.to_be_bytes());
            put_str(&mut out, &next.category);
        }
    }
    out
}

/// One record of the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A change of the partition's state.
    Change(Change),
    /// The partition holds a share of this sum from now on (see [`crate::state`]).
    Declared(ListingSumKey),
}

/// The changelog key of a sum's declaration: one per sum, never superseded, so that compaction
/// keeps it however long ago the sum appeared.
pub fn declared_key(key: &ListingSumKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.scope.len() + key.value.len());
    out.push(DECLARED);
    put_str(&mut out, &key.scope);
    put_str(&mut out, &key.value);
    out
}

/// Encodes the declaration of `key`, made under `scoping`.
pub fn encode_declared(scoping: &Scoping, key: &ListingSumKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.scope.len() + key.value.len());
    out.push(FORMAT);
    out.push(DECLARED);
    out.push(semantics_tag(scoping.semantics));
    out.push(scoping.category_level);
    put_str(&mut out, &key.scope);
    put_str(&mut out, &key.value);
    out
}

/// Decodes a changelog record (a change or a declaration) and the scoping it was made under.
///
/// # Errors
/// [`FormatError`] when the bytes are not a changelog record of this layout.
pub fn decode_entry(topic: &str, bytes: &[u8]) -> Result<(Scoping, Entry), FormatError> {
    if bytes.get(1) != Some(&DECLARED) {
        let (scoping, change) = decode_change(topic, bytes)?;
        return Ok((scoping, Entry::Change(change)));
    }
    let mut r = Reader { topic, bytes };
    r.format()?;
    r.u8()?;
    let semantics = r.semantics()?;
    let category_level = r.u8()?;
    let scope = r.string()?;
    let value = r.string()?;
    r.end()?;
    let scoping = Scoping {
        semantics,
        category_level,
    };
    Ok((scoping, Entry::Declared(ListingSumKey { scope, value })))
}

/// Decodes a change and the scoping it was made under.
///
/// # Errors
/// [`FormatError`] when the bytes are not a change of this layout.
pub fn decode_change(topic: &str, bytes: &[u8]) -> Result<(Scoping, Change), FormatError> {
    let mut r = Reader { topic, bytes };
    r.format()?;
    let semantics = r.semantics()?;
    let category_level = r.u8()?;
    let offset = r.i64()?;
    let timestamp = r.i64()?;
    let product_id = r.i64()?;
    let next = match r.u8()? {
        0 => None,
        1 => Some(Contribution {
            price: r.i64()?,
            category: r.string()?,
        }),
        _ => return Err(r.error("unknown contribution tag")),
    };
    r.end()?;
    let scoping = Scoping {
        semantics,
        category_level,
    };
    let change = Change {
        offset,
        timestamp,
        product_id,
        next,
    };
    Ok((scoping, change))
}

/// The key of a partial sum: the sum's key and the input partition whose share it is.
pub fn encode_partial_key(key: &ListingSumKey, source: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.scope.len() + key.value.len());
    put_str(&mut out, &key.scope);
    put_str(&mut out, &key.value);
    out.extend_from_slice(&source.to_be_bytes());
    out
}

/// Decodes the key of a partial sum.
///
/// # Errors
/// [`FormatError`] when the bytes are not a partial-sum key.
pub fn decode_partial_key(topic: &str, bytes: &[u8]) -> Result<(ListingSumKey, i32), FormatError> {
    let mut r = Reader { topic, bytes };
    let scope = r.string()?;
    let value = r.string()?;
    let source = r.i32()?;
    r.end()?;
    Ok((ListingSumKey { scope, value }, source))
}

/// Encodes a partial sum as of input position `version` (the last input offset reflected), in
/// layout [`PARTIAL_FORMAT`].
pub fn encode_partial(version: i64, summary: &Summary) -> Vec<u8> {
    let mut out = Vec::with_capacity(68);
    out.push(PARTIAL_FORMAT);
    for n in [version, summary.count] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&summary.sum.to_be_bytes());
    for bound in [summary.min, summary.max] {
        match bound {
            None => out.push(0),
            Some(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&summary.updated_at.to_be_bytes());
    out
}

/// Decodes a partial sum and its version, of layout 2 or of layout 1 (a 64-bit sum, written by
/// earlier versions: a partials topic carries over an upgrade).
///
/// # Errors
/// [`FormatError`] when the bytes are not a partial sum of either layout.
pub fn decode_partial(topic: &str, bytes: &[u8]) -> Result<(i64, Summary), FormatError> {
    let mut r = Reader { topic, bytes };
    let layout = r.u8()?;
    let version = r.i64()?;
    let count = r.i64()?;
    let sum = match layout {
        1 => i128::from(r.i64()?),
        PARTIAL_FORMAT => i128::from_be_bytes(r.take()?),
        _ => return Err(r.error("unknown layout version")),
    };
    let min = r.opt_i64()?;
    let max = r.opt_i64()?;
    let updated_at = r.i64()?;
    r.end()?;
    let summary = Summary {
        count,
        sum,
        min,
        max,
        updated_at,
    };
    Ok((version, summary))
}

/// The partition of the partials topic that owns `key`: a stable hash (FNV-1a), so that every
/// instance and version agrees, whatever client library produced the record.
pub fn owner_partition(key: &ListingSumKey, partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key
        .scope
        .bytes()
        .chain(std::iter::once(0))
        .chain(key.value.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(hash % partitions).unwrap_or(0)
}

fn semantics_tag(semantics: StreamsSemantics) -> u8 {
    match semantics {
        StreamsSemantics::Distinct => b'd',
        StreamsSemantics::Append => b'a',
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

struct Reader<'a> {
    topic: &'a str,
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> FormatError {
        FormatError {
            topic: self.topic.to_owned(),
            what,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| self.error("truncated"))?;
        self.bytes = rest;
        Ok(*head)
    }

    fn format(&mut self) -> Result<(), FormatError> {
        if self.u8()? == FORMAT {
            Ok(())
        } else {
            Err(self.error("unknown layout version"))
        }
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take::<1>()?[0])
    }

    fn semantics(&mut self) -> Result<StreamsSemantics, FormatError> {
        match self.u8()? {
            b'd' => Ok(StreamsSemantics::Distinct),
            b'a' => Ok(StreamsSemantics::Append),
            _ => Err(self.error("unknown semantics")),
        }
    }

    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            _ => Err(self.error("unknown option tag")),
        }
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let len = u32::from_be_bytes(self.take()?) as usize;
        if self.bytes.len() < len {
            return Err(self.error("truncated string"));
        }
        let (s, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(s.to_vec()).map_err(|_| self.error("string is not UTF-8"))
    }

    fn end(&self) -> Result<(), FormatError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contribution() -> impl Strategy<Value = Option<Contribution>> {
        proptest::option::of(
            (any::<i64>(), ".{0,20}")
                .prop_map(|(price, category)| Contribution { price, category }),
        )
    }

    proptest! {
        #[test]
        fn changes_round_trip(
            offset in any::<i64>(), timestamp in any::<i64>(), product_id in any::<i64>(),
            next in contribution(), append in any::<bool>(), level in 1u8..=4,
        ) {
            let semantics = if append { StreamsSemantics::Append } else { StreamsSemantics::Distinct };
            let scoping = Scoping { semantics, category_level: level };
            let change = Change { offset, timestamp, product_id, next };
            let (s, c) = decode_change("t", &encode_change(&scoping, &change)).unwrap();
            prop_assert_eq!(s, scoping);
            prop_assert_eq!(c, change);
        }

        #[test]
        fn entries_round_trip(
            offset in any::<i64>(), product_id in any::<i64>(), next in contribution(),
            append in any::<bool>(), level in 1u8..=4, scope in ".{0,10}", value in ".{0,10}",
        ) {
            let semantics = if append { StreamsSemantics::Append } else { StreamsSemantics::Distinct };
            let scoping = Scoping { semantics, category_level: level };
            let change = Change { offset, timestamp: 0, product_id, next };
            prop_assert_eq!(
                decode_entry("t", &encode_change(&scoping, &change)).unwrap(),
                (scoping.clone(), Entry::Change(change))
            );
            let key = ListingSumKey { scope, value };
            prop_assert_eq!(
                decode_entry("t", &encode_declared(&scoping, &key)).unwrap(),
                (scoping, Entry::Declared(key))
            );
        }

        #[test]
        fn partials_round_trip(
            version in any::<i64>(), count in any::<i64>(), sum in any::<i128>(),
            min in proptest::option::of(any::<i64>()), max in proptest::option::of(any::<i64>()),
            updated_at in any::<i64>(), scope in ".{0,10}", value in ".{0,10}", source in any::<i32>(),
        ) {
            let summary = Summary { count, sum, min, max, updated_at };
            prop_assert_eq!(decode_partial("t", &encode_partial(version, &summary)).unwrap(), (version, summary));
            let key = ListingSumKey { scope, value };
            prop_assert_eq!(decode_partial_key("t", &encode_partial_key(&key, source)).unwrap(), (key, source));
        }

        #[test]
        fn garbage_is_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_change("t", &bytes);
            let _ = decode_entry("t", &bytes);
            let _ = decode_partial("t", &bytes);
            let _ = decode_partial_key("t", &bytes);
        }

        #[test]
        fn the_owner_is_a_partition(scope in ".{0,10}", value in ".{0,10}", partitions in 1i32..64) {
            let owner = owner_partition(&ListingSumKey { scope, value }, partitions);
            prop_assert!((0..partitions).contains(&owner));
        }
    }

    #[test]
    fn a_partial_sum_of_the_64_bit_layout_still_decodes() {
        // Layout 1, as earlier versions wrote it: version 7, count 2, sum -3, min 1, no max,
        // updated at 9.
        let mut v1 = vec![1u8];
        for n in [7i64, 2, -3] {
            v1.extend_from_slice(&n.to_be_bytes());
        }
        v1.push(1);
        v1.extend_from_slice(&1i64.to_be_bytes());
        v1.push(0);
        v1.extend_from_slice(&9i64.to_be_bytes());
        let summary = Summary {
            count: 2,
            sum: -3,
            min: Some(1),
            max: None,
            updated_at: 9,
        };
        assert_eq!(decode_partial("t", &v1).unwrap(), (7, summary));
        let v2 = encode_partial(7, &summary);
        assert_eq!(v2[0], 2);
        assert_eq!(decode_partial("t", &v2).unwrap(), (7, summary));
        let mut v3 = v2.clone();
        v3[0] = 3;
        assert!(decode_partial("t", &v3).is_err());
    }

    #[test]
    fn a_declaration_is_keyed_apart_from_every_change() {
        let key = ListingSumKey {
            scope: "all".into(),
            value: "all".into(),
        };
        let declared = declared_key(&key);
        // Changes are keyed `d` or `a` and a product id or offset: never this.
        assert_eq!(declared[0], b'k');
        assert_eq!(declared_key(&key), declared, "one key per sum");
    }

    #[test]
    fn distinct_changes_are_keyed_by_product_and_append_changes_by_offset() {
        let change = Change {
            offset: 9,
            timestamp: 0,
            product_id: 42,
            next: None,
        };
        assert_eq!(
            change_key(StreamsSemantics::Distinct, &change)[1..],
            42i64.to_be_bytes()
        );
        assert_eq!(
            change_key(StreamsSemantics::Append, &change)[1..],
            9i64.to_be_bytes()
        );
    }
}
