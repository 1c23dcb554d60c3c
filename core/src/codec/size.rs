//! The decoded-size bound: walks an Avro body against its writer's schema without building
//! anything and adds up what apache-avro would allocate decoding it, so that a record over the
//! cap is refused before it is built.
//!
//! apache-avro's own limit (`apache_avro::util::max_allocation_bytes`) is not enough: it bounds
//! each allocation on its own, and it is process-wide and set once. Items that take no input
//! (null, an empty record, a boolean or string at the end of the body) make a ~100-byte body of
//! schema `{"type":"array","items":{"type":"array","items":"null"}}` hold many arrays of millions
//! of values each, every one of them under the per-allocation limit. The walk charges what
//! each step allocates against one budget per record, in the order apache-avro allocates it (a
//! block's declared item count before its items, a string's length before its bytes), and reads
//! the body exactly as `apache_avro::decode` does, quirks at the end of input included, so the
//! two never disagree about where a value ends. Each step costs budget or is bounded by one that
//! did, so the walk itself takes time in proportion to the cap; its depth is bounded too, since
//! a recursive schema can nest a value a level per input byte and decoding recurses per level.

use std::collections::HashMap;
use std::mem::size_of;

use apache_avro::Schema;
use apache_avro::schema::{
    DecimalSchema, EnumSchema, FixedSchema, InnerDecimalSchema, Name, NamespaceRef, RecordSchema,
    UnionSchema, UuidSchema,
};
use apache_avro::types::Value;

/// Deepest nesting of values accepted: far above any listing's (a handful of levels), far
/// below what the decoder's recursion can take on a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 64;

/// apache-avro's own default cap on one allocation: a length over it fails there first.
const AVRO_MAX_ALLOCATION: usize = apache_avro::util::DEFAULT_MAX_ALLOCATION_BYTES;

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Decoding would allocate more than the cap: at least `bytes`.
    TooLarge {
        /// What was counted when the cap was passed.
        bytes: usize,
    },
    /// Values nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The body does not decode with this schema.
    Malformed(String),
}

/// What decoding `body` with `schema` would allocate, in bytes (the value itself and what it
/// owns), when that is at most `max`.
///
/// # Errors
/// A [`Refusal`] when it would be more than `max`, nest deeper than [`MAX_DEPTH`], or the body
/// does not decode.
pub fn decoded_size<S: std::borrow::Borrow<Schema>>(
    schema: &Schema,
    names: &HashMap<Name, S>,
    body: &[u8],
    max: usize,
) -> Result<usize, Refusal> {
    let mut walk = Walk::new(names, body, max)?;
    walk.value(schema, None, 0)?;
    Ok(walk.used)
}

/// A top-level field's value as [`project`] reads it, borrowed from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar<'b> {
    /// A null: the null type, a union's null branch, or what apache-avro decodes as null at the
    /// end of the body.
    Null,
    /// An int, a long or a timestamp-millis.
    Long(i64),
    /// A string.
    Str(&'b str),
    /// A value of any other type.
    Other,
}

/// Walks `body` exactly as [`decoded_size`] does (the same cap, depth and refusals) and reads,
/// on the way, the top-level record's fields named in `wanted`: their values in `wanted`'s
/// order, `None` for a name the record does not have. Nothing is built, so reading three fields
/// of a listing costs one pass over its bytes instead of a tree of every field. `Ok(None)` when
/// the schema is not a record.
///
/// # Errors
/// A [`Refusal`], as [`decoded_size`].
pub fn project<'b, S: std::borrow::Borrow<Schema>>(
    schema: &Schema,
    names: &HashMap<Name, S>,
    body: &'b [u8],
    max: usize,
    wanted: &[&str],
) -> Result<Option<Vec<Option<Scalar<'b>>>>, Refusal> {
    let mut walk = Walk::new(names, body, max)?;
    let Schema::Record(RecordSchema { name, fields, .. }) = schema else {
        walk.value(schema, None, 0)?;
        return Ok(None);
    };
    let full = name.fully_qualified_name(None);
    let mut found = vec![None; wanted.len()];
    walk.charge_items(fields.len(), size_of::<(String, Value)>())?;
    for field in fields {
        walk.charge(field.name.len())?;
        let before = walk.body;
        walk.value(&field.schema, full.namespace(), 1)?;
        if let Some(i) = wanted.iter().position(|w| *w == field.name) {
            let read = &before[..before.len() - walk.body.len()];
            found[i] = Some(scalar(&field.schema, read));
        }
    }
    Ok(Some(found))
}

/// The value of `schema` in `bytes`, which the walk has just read as one such value.
fn scalar<'b>(schema: &Schema, bytes: &'b [u8]) -> Scalar<'b> {
    let names: HashMap<Name, Schema> = HashMap::new();
    let mut read = Walk {
        names: &names,
        body: bytes,
        used: 0,
        max: usize::MAX,
    };
    match schema {
        Schema::Null => Scalar::Null,
        Schema::Int | Schema::Long | Schema::TimestampMillis => {
            read.long().map_or(Scalar::Other, Scalar::Long)
        }
        Schema::String => match read.len().ok().and_then(|len| read.take(len)) {
            Some(text) => simdutf8::basic::from_utf8(text).map_or(Scalar::Other, Scalar::Str),
            // The end of the body inside a string: apache-avro decodes a null.
            None => Scalar::Null,
        },
        Schema::Union(union) => match read.varint() {
            // The end of the body: a null in the first branch.
            Ok(None) => Scalar::Null,
            Ok(Some(z)) => {
                #[allow(clippy::cast_possible_truncation)]
                let index = (z >> 1) as usize;
                match union.variants().get(index) {
                    Some(variant) if z & 1 == 0 => scalar(variant, read.body),
                    _ => Scalar::Other,
                }
            }
            Err(_) => Scalar::Other,
        },
        _ => Scalar::Other,
    }
}

struct Walk<'a, 'b, S> {
    names: &'a HashMap<Name, S>,
    body: &'b [u8],
    used: usize,
    max: usize,
}

fn malformed(what: impl Into<String>) -> Refusal {
    Refusal::Malformed(what.into())
}

impl<'a, 'b, S: std::borrow::Borrow<Schema>> Walk<'a, 'b, S> {
    /// A walk of `body`, the top value's own size charged.
    fn new(names: &'a HashMap<Name, S>, body: &'b [u8], max: usize) -> Result<Self, Refusal> {
        let mut walk = Walk {
            names,
            body,
            used: 0,
            max,
        };
        walk.charge(size_of::<Value>())?;
        Ok(walk)
    }

    fn charge(&mut self, bytes: usize) -> Result<(), Refusal> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(Refusal::TooLarge { bytes: self.used });
        }
        Ok(())
    }

    /// Charges `count` items of `each` bytes.
    fn charge_items(&mut self, count: usize, each: usize) -> Result<(), Refusal> {
        self.charge(count.saturating_mul(each))
    }

    /// Takes `n` bytes, or `None` (taking all there is, as `read_exact` does) when fewer remain.
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        if n > self.body.len() {
            self.body = &[];
            return None;
        }
        let (taken, rest) = self.body.split_at(n);
        self.body = rest;
        Some(taken)
    }

    /// A varint, as apache-avro reads one: `None` at the end of input, even mid-varint.
    fn varint(&mut self) -> Result<Option<u64>, Refusal> {
        let mut value = 0u64;
        for shift in 0..10u32 {
            let Some(&[byte]) = self.take(1) else {
                return Ok(None);
            };
            value |= u64::from(byte & 0x7f) << (shift * 7);
            if byte >> 7 == 0 {
                return Ok(Some(value));
            }
        }
        Err(malformed("a varint longer than 10 bytes"))
    }

    fn long(&mut self) -> Result<i64, Refusal> {
        let z = self
            .varint()?
            .ok_or_else(|| malformed("the body ends inside a number"))?;
        // Zigzag: the bit pattern, as apache-avro reinterprets it.
        #[allow(clippy::cast_possible_wrap)]
        let value = if z & 1 == 0 {
            (z >> 1) as i64
        } else {
            !(z >> 1) as i64
        };
        Ok(value)
    }

    /// A length (of bytes, a string): not negative, under apache-avro's own allocation cap.
    fn len(&mut self) -> Result<usize, Refusal> {
        let len = self.long()?;
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= AVRO_MAX_ALLOCATION)
            .ok_or_else(|| malformed(format!("a length of {len}")))
    }

    /// A block's item count, as apache-avro reads it (a negative count is followed by the
    /// block's size in bytes); 0 ends the array or map.
    fn block_len(&mut self) -> Result<usize, Refusal> {
        let raw = self.long()?;
        let count = match raw {
            0 => return Ok(0),
            n if n < 0 => {
                self.long()?;
                n.checked_neg()
                    .ok_or_else(|| malformed("a block count of i64::MIN"))?
            }
            n => n,
        };
        usize::try_from(count)
            .ok()
            .filter(|&n| n <= AVRO_MAX_ALLOCATION)
            .ok_or_else(|| malformed(format!("a block count of {count}")))
    }

    /// A string's bytes: charged before they are read, as they are allocated; `false` when the
    /// body ends first (apache-avro then decodes a null and the body is spent).
    /// apache-avro refuses a string that is not UTF-8, and so does the walk.
    fn string(&mut self) -> Result<bool, Refusal> {
        let len = self.len()?;
        self.charge(len)?;
        match self.take(len) {
            // simdutf8's check, several times std's on non-ASCII text; std's only to say where
            // a string goes wrong.
            Some(bytes) => match simdutf8::basic::from_utf8(bytes) {
                Ok(_) => Ok(true),
                Err(_) => Err(malformed(std::str::from_utf8(bytes).err().map_or_else(
                    || "a string that is not UTF-8".to_owned(),
                    |e| format!("a string that is not UTF-8: {e}"),
                ))),
            },
            None => Ok(false),
        }
    }

    fn bytes(&mut self) -> Result<(), Refusal> {
        let len = self.len()?;
        self.charge(len)?;
        self.take(len)
            .map(drop)
            .ok_or_else(|| malformed("the body ends inside bytes"))
    }

    /// Reads `n` bytes held inline in the value (a float, a double).
    fn skip(&mut self, n: usize) -> Result<(), Refusal> {
        self.take(n)
            .map(drop)
            .ok_or_else(|| malformed("the body ends inside a number"))
    }

    fn fixed(&mut self, size: usize) -> Result<(), Refusal> {
        self.charge(size)?;
        self.take(size)
            .map(drop)
            .ok_or_else(|| malformed(format!("the body ends inside a fixed of {size}")))
    }

    /// Walks one value of `schema`. Charges what the value owns on the heap; its own inline
    /// size is charged by whatever holds it (a record's fields, an array's block, a union's box).
    fn value(
        &mut self,
        schema: &Schema,
        namespace: NamespaceRef<'_>,
        depth: usize,
    ) -> Result<(), Refusal> {
        if depth > MAX_DEPTH {
            return Err(Refusal::TooDeep);
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => match self.take(1) {
                None | Some([0 | 1]) => Ok(()),
                Some(other) => Err(malformed(format!("a boolean byte {other:?}"))),
            },
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Bytes | Schema::Uuid(UuidSchema::Bytes) => self.bytes(),
            // The digits become a big integer about as large again.
            Schema::BigDecimal => {
                let before = self.used;
                self.bytes()?;
                self.charge(self.used - before)
            }
            Schema::String => self.string().map(drop),
            Schema::Uuid(UuidSchema::String) => {
                if self.string()? {
                    Ok(())
                } else {
                    Err(malformed("the body ends inside a uuid"))
                }
            }
            Schema::Fixed(FixedSchema { size, .. })
            | Schema::Uuid(UuidSchema::Fixed(FixedSchema { size, .. }))
            | Schema::Duration(FixedSchema { size, .. }) => self.fixed(*size),
            Schema::Decimal(DecimalSchema { inner, .. }) => match inner {
                InnerDecimalSchema::Fixed(FixedSchema { size, .. }) => self.fixed(*size),
                InnerDecimalSchema::Bytes => self.bytes(),
            },
            Schema::Enum(EnumSchema { symbols, .. }) => self.symbol(symbols),
            Schema::Union(union) => self.union(union, namespace, depth),
            Schema::Record(record) => self.record(record, namespace, depth),
            Schema::Array(array) => self.items(&array.items, namespace, depth, false),
            Schema::Map(map) => self.items(&map.types, namespace, depth, true),
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(namespace);
                let resolved = self
                    .names
                    .get(full.as_ref())
                    .ok_or_else(|| malformed(format!("an unknown named type {full}")))?;
                self.value(resolved.borrow(), full.namespace(), depth + 1)
            }
        }
    }

    /// An enum's symbol, which the decoded value holds as a string.
    fn symbol(&mut self, symbols: &[String]) -> Result<(), Refusal> {
        let index = self.long()?;
        let symbol = usize::try_from(index)
            .ok()
            .and_then(|i| symbols.get(i))
            .ok_or_else(|| malformed(format!("enum index {index}")))?;
        self.charge(symbol.len())
    }

    /// A union's branch index, then the branch's value, boxed.
    fn union(
        &mut self,
        union: &UnionSchema,
        namespace: NamespaceRef<'_>,
        depth: usize,
    ) -> Result<(), Refusal> {
        // The end of input decodes as a null in the first branch.
        let Some(z) = self.varint()? else {
            return self.charge(size_of::<Value>());
        };
        #[allow(clippy::cast_possible_wrap)]
        let index = if z & 1 == 0 {
            (z >> 1) as i64
        } else {
            !(z >> 1) as i64
        };
        let variant = usize::try_from(index)
            .ok()
            .and_then(|i| union.variants().get(i))
            .ok_or_else(|| malformed(format!("union branch {index}")))?;
        self.charge(size_of::<Value>())?;
        self.value(variant, namespace, depth + 1)
    }

    /// A record's fields, each with its name.
    fn record(
        &mut self,
        record: &RecordSchema,
        namespace: NamespaceRef<'_>,
        depth: usize,
    ) -> Result<(), Refusal> {
        let full = record.name.fully_qualified_name(namespace);
        self.charge_items(record.fields.len(), size_of::<(String, Value)>())?;
        for field in &record.fields {
            self.charge(field.name.len())?;
            self.value(&field.schema, full.namespace(), depth + 1)?;
        }
        Ok(())
    }

    /// The blocks of an array's items, or of a map's entries (`keyed`: each item has a string
    /// key before it), up to the empty block that ends them.
    fn items(
        &mut self,
        schema: &Schema,
        namespace: NamespaceRef<'_>,
        depth: usize,
        keyed: bool,
    ) -> Result<(), Refusal> {
        loop {
            let count = self.block_len()?;
            if count == 0 {
                return Ok(());
            }
            if keyed {
                // A hash table reserves up to twice its entries.
                self.charge_items(count, 2 * (size_of::<(String, Value)>() + 1))?;
            } else {
                self.charge_items(count, size_of::<Value>())?;
            }
            for _ in 0..count {
                if keyed && !self.string()? {
                    return Err(malformed("the body ends inside a map key"));
                }
                self.value(schema, namespace, depth + 1)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::ResolvedSchema;

    fn size(schema: &str, body: &[u8], max: usize) -> Result<usize, Refusal> {
        let schema = Schema::parse_str(schema).unwrap();
        let resolved = ResolvedSchema::try_from(&schema).unwrap();
        decoded_size(&schema, resolved.get_names(), body, max)
    }

    /// Zigzag varint of `n`.
    fn long(n: i64) -> Vec<u8> {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return out;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    #[test]
    fn a_listing_like_record_costs_about_what_it_holds() {
        let schema = r#"{"type":"record","name":"L","fields":[
            {"name":"id","type":"long"},{"name":"title","type":["null","string"]}]}"#;
        let mut body = long(42);
        body.extend(long(1));
        body.extend(long(5));
        body.extend(b"hello");
        let used = size(schema, &body, usize::MAX).unwrap();
        assert!(used >= 5 + 2 + "id".len() + "title".len(), "{used}");
        assert!(used < 1024, "{used}");
    }

    /// The walk takes a string exactly when std does, on both sides of simdutf8's 64-byte
    /// threshold (below it simdutf8 runs std's check; from it, SIMD), and says where it breaks.
    #[test]
    fn a_string_is_taken_exactly_when_it_is_utf8() {
        let korean = "직거래 선호, 네고 가능합니다. 상태 좋아요. 박스 포함, 충전기 없음.";
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 10, 63, 64, 65, 127, 128, 300] {
            let text: Vec<u8> = korean.bytes().cycle().take(len).collect();
            cases.push(text.clone());
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    for bad in [0xff, 0x80, 0xc0, 0xed] {
                        let mut broken = text.clone();
                        broken[at] = bad;
                        cases.push(broken);
                    }
                }
            }
        }
        for text in cases {
            let mut body = long(text.len() as i64);
            body.extend(&text);
            let walked = size(r#""string""#, &body, usize::MAX);
            match std::str::from_utf8(&text) {
                Ok(_) => assert!(walked.is_ok(), "{text:?}: {walked:?}"),
                Err(e) => assert_eq!(
                    walked,
                    Err(malformed(format!("a string that is not UTF-8: {e}"))),
                    "{text:?}"
                ),
            }
        }
    }

    #[test]
    fn items_that_take_no_input_are_still_counted() {
        let schema = r#"{"type":"array","items":{"type":"array","items":"null"}}"#;
        // 18 arrays of 10 million nulls each, in 93 bytes.
        let mut body = long(18);
        for _ in 0..18 {
            body.extend(long(10_000_000));
            body.extend(long(0));
        }
        body.extend(long(0));
        assert!(body.len() < 100);
        assert!(matches!(
            size(schema, &body, 4 << 20),
            Err(Refusal::TooLarge { .. })
        ));
    }

    #[test]
    fn recursion_deeper_than_the_limit_is_refused() {
        let schema =
            r#"{"type":"record","name":"R","fields":[{"name":"next","type":["null","R"]}]}"#;
        let body = vec![2u8; 10_000]; // branch 1, again and again
        assert_eq!(size(schema, &body, usize::MAX), Err(Refusal::TooDeep));
    }

    #[test]
    fn the_end_of_input_reads_as_apache_avro_reads_it() {
        // A boolean, a union and a string at the end of the body decode as nulls.
        let schema = r#"{"type":"record","name":"E","fields":[
            {"name":"b","type":"boolean"},{"name":"u","type":["null","long"]}]}"#;
        assert!(size(schema, &[], usize::MAX).is_ok());
        assert!(matches!(
            size(r#""long""#, &[0x80], usize::MAX),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            size(r#""bytes""#, &long(10), usize::MAX),
            Err(Refusal::Malformed(_))
        ));
        assert!(size(r#""string""#, &long(10), usize::MAX).is_ok());
        // A length is charged before the bytes it announces are looked for.
        assert!(matches!(
            size(r#""string""#, &long(100 << 20), 4 << 20),
            Err(Refusal::TooLarge { .. })
        ));
    }
}
