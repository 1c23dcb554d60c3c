//! Reads what the sums need from an input record (product id, price, category) straight from the
//! Avro body, with the writer's schema fetched once per schema id from the registry, without
//! building the whole `Listing`: the hot path of the aggregation stage. A schema id is used only
//! once found to be a version of the topic's subject, and no record over the decoded-size cap is
//! built.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use marketflow_core::codec::{Codec, CodecError, HEADER_LEN, WriterSchema, schema_id};
use marketflow_core::schema::{Part, subject};
use tokio::runtime::Handle;

/// What the sums read from a listing's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The product id.
    pub product_id: i64,
    /// The price, if any.
    pub price: Option<i64>,
    /// The category at the configured level, if any.
    pub category: Option<String>,
}

/// Decodes input records by their writer's schema, cached per part (key or not) and schema id
/// with the topic whose subject it was checked against.
pub struct InputDecoder {
    codec: Arc<Codec>,
    runtime: Handle,
    category_field: String,
    schemas: HashMap<(bool, u32), (String, Arc<WriterSchema>)>,
}

impl InputDecoder {
    /// A decoder reading the category at `category_level`.
    pub fn new(codec: Arc<Codec>, runtime: Handle, category_level: u8) -> Self {
        Self {
            codec,
            runtime,
            category_field: format!("category_level{category_level}"),
            schemas: HashMap::new(),
        }
    }

    /// The fields of a listing value read from `topic`.
    ///
    /// # Errors
    /// A [`CodecError`]: retryable when the registry is unreachable, fatal when the payload is
    /// not a listing (`ForeignSchema` when its schema is not one of `<topic>-value`'s,
    /// `TooLarge` over the decoded-size cap).
    pub fn value(&mut self, topic: &str, payload: &[u8]) -> Result<Fields, CodecError> {
        let (id, value) = self.read(topic, Part::Value, payload)?;
        let mismatch = |detail: &str| CodecError::Mismatch {
            id,
            target: "a listing (product_id, price, category)",
            detail: detail.to_owned(),
        };
        let Value::Record(fields) = value else {
            return Err(mismatch("not a record"));
        };
        let (mut product_id, mut price, mut category) = (None, None, None);
        for (name, field) in fields {
            match name.as_str() {
                "product_id" => {
                    product_id = Some(long(field).ok_or_else(|| mismatch("product_id"))?)
                }
                "price" => price = nullable_long(field).ok_or_else(|| mismatch("price"))?,
                n if n == self.category_field => category = nullable_string(field),
                _ => {}
            }
        }
        Ok(Fields {
            product_id: product_id.ok_or_else(|| mismatch("no product_id"))?,
            price,
            category,
        })
    }

    /// The product id of a listing key read from `topic`.
    ///
    /// # Errors
    /// A [`CodecError`], as for [`InputDecoder::value`] (the subject is `<topic>-key`).
    pub fn key(&mut self, topic: &str, payload: &[u8]) -> Result<i64, CodecError> {
        let (id, value) = self.read(topic, Part::Key, payload)?;
        let found = match value {
            Value::Record(fields) => fields
                .into_iter()
                .find(|(name, _)| name == "product_id")
                .and_then(|(_, v)| long(v)),
            _ => None,
        };
        found.ok_or_else(|| CodecError::Mismatch {
            id,
            target: "a listing key (product_id)",
            detail: "no long product_id".into(),
        })
    }

    fn read(
        &mut self,
        topic: &str,
        part: Part,
        payload: &[u8],
    ) -> Result<(u32, Value), CodecError> {
        let id = schema_id(payload)?;
        let writer = match self.schemas.get(&(part == Part::Key, id)) {
            Some((checked, writer)) if checked == topic => writer.clone(),
            _ => {
                let codec = &self.codec;
                let writer = self.runtime.block_on(async {
                    codec.check_subject(&subject(topic, part), id).await?;
                    codec.writer_schema(id).await
                })?;
                self.schemas
                    .insert((part == Part::Key, id), (topic.to_owned(), writer.clone()));
                writer
            }
        };
        let value = writer.decode(&payload[HEADER_LEN..], self.codec.max_decoded_bytes())?;
        Ok((id, value))
    }
}

fn long(value: Value) -> Option<i64> {
    match value {
        Value::Long(n) | Value::TimestampMillis(n) => Some(n),
        Value::Int(n) => Some(i64::from(n)),
        _ => None,
    }
}

/// `Some(None)` for null, `Some(Some(n))` for a number, `None` for anything else.
fn nullable_long(value: Value) -> Option<Option<i64>> {
    match value {
        Value::Null => Some(None),
        Value::Union(_, inner) => nullable_long(*inner),
        other => long(other).map(Some),
    }
}

fn nullable_string(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Union(_, inner) => nullable_string(*inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_fields_read_through_their_union() {
        assert_eq!(
            nullable_long(Value::Union(1, Box::new(Value::Long(5)))),
            Some(Some(5))
        );
        assert_eq!(
            nullable_long(Value::Union(0, Box::new(Value::Null))),
            Some(None)
        );
        assert_eq!(nullable_long(Value::String("x".into())), None);
        assert_eq!(
            nullable_string(Value::Union(1, Box::new(Value::String("가구".into())))),
            Some("가구".to_owned())
        );
        assert_eq!(
            nullable_string(Value::Union(0, Box::new(Value::Null))),
            None
        );
    }
}
