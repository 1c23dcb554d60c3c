//! Reads what the sums need from an input record (product id, price, category) straight from the
//! Avro body, with the writer's schema fetched once per schema id from the registry, without
//! building the whole `Listing` or any value tree (one pass over the bytes,
//! [`WriterSchema::project`]): the hot path of the aggregation stage. A schema id is used only
//! once found to be a version of the topic's subject, and no record over the decoded-size cap is
//! built.

use std::collections::HashMap;
use std::sync::Arc;

use marketflow_core::codec::{Codec, CodecError, HEADER_LEN, Scalar, WriterSchema, schema_id};
use marketflow_core::schema::{Part, subject};
use tokio::runtime::Handle;

/// What the sums read from a listing's value, borrowing from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The product id.
    pub product_id: i64,
    /// The price, if any.
    pub price: Option<i64>,
    /// The category at the configured level, if any.
    pub category: Option<&'a str>,
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
    pub fn value<'p>(&mut self, topic: &str, payload: &'p [u8]) -> Result<Fields<'p>, CodecError> {
        let writer = self.writer(topic, Part::Value, payload)?;
        let id = writer.id();
        let mismatch = |detail: &str| CodecError::Mismatch {
            id,
            target: "a listing (product_id, price, category)",
            detail: detail.to_owned(),
        };
        let wanted = ["product_id", "price", self.category_field.as_str()];
        let body = &payload[HEADER_LEN..];
        let Some(found) = writer.project(body, self.codec.max_decoded_bytes(), &wanted)? else {
            return Err(mismatch("not a record"));
        };
        let product_id = match found[0] {
            Some(Scalar::Long(n)) => n,
            None => return Err(mismatch("no product_id")),
            Some(_) => return Err(mismatch("product_id")),
        };
        let price = match found[1] {
            None | Some(Scalar::Null) => None,
            Some(Scalar::Long(n)) => Some(n),
            Some(_) => return Err(mismatch("price")),
        };
        let category = match found[2] {
            Some(Scalar::Str(category)) => Some(category),
            _ => None,
        };
        Ok(Fields {
            product_id,
            price,
            category,
        })
    }

    /// The product id of a listing key read from `topic`.
    ///
    /// # Errors
    /// A [`CodecError`], as for [`InputDecoder::value`] (the subject is `<topic>-key`).
    pub fn key(&mut self, topic: &str, payload: &[u8]) -> Result<i64, CodecError> {
        let writer = self.writer(topic, Part::Key, payload)?;
        let body = &payload[HEADER_LEN..];
        match writer.project(body, self.codec.max_decoded_bytes(), &["product_id"])? {
            Some(found) if let Some(Scalar::Long(product_id)) = found[0] => Ok(product_id),
            _ => Err(CodecError::Mismatch {
                id: writer.id(),
                target: "a listing key (product_id)",
                detail: "no long product_id".into(),
            }),
        }
    }

    /// The writer's schema of `payload`, once checked to be a version of `topic`'s subject.
    fn writer(
        &mut self,
        topic: &str,
        part: Part,
        payload: &[u8],
    ) -> Result<Arc<WriterSchema>, CodecError> {
        let id = schema_id(payload)?;
        if let Some((checked, writer)) = self.schemas.get(&(part == Part::Key, id))
            && checked == topic
        {
            return Ok(writer.clone());
        }
        let codec = &self.codec;
        let writer = self.runtime.block_on(async {
            codec.check_subject(&subject(topic, part), id).await?;
            codec.writer_schema(id).await
        })?;
        self.schemas
            .insert((part == Part::Key, id), (topic.to_owned(), writer.clone()));
        Ok(writer)
    }
}
