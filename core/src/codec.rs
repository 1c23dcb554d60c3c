//! The registry codec: records to and from the Confluent wire format (magic byte `0`, a 4-byte
//! big-endian schema id, the Avro body), with schemas registered in and fetched from a schema
//! registry through `schema_registry_converter`, under TopicNameStrategy subjects.

use std::sync::Arc;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::RegistryConfig;
use crate::schema::{Part, SchemaFile, subject};

/// Bytes before the Avro body: the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// What went wrong encoding or decoding a record.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload cannot hold the wire-format header.
    #[error(
        "payload of {len} bytes is too short for the Confluent wire format (magic byte 0 and a \
         4-byte schema id take 5)"
    )]
    Short {
        /// The payload's length.
        len: usize,
    },
    /// The payload was not written by a schema-registry serialiser.
    #[error("payload starts with byte {byte:#04x}, not the Confluent magic byte 0x00")]
    ForeignMagic {
        /// The first byte found.
        byte: u8,
    },
    /// The payload names a schema id the registry does not know.
    #[error("schema id {id} is not known to the registry at {url}: {detail}")]
    UnknownSchemaId {
        /// The schema id in the payload.
        id: u32,
        /// The registry asked.
        url: String,
        /// What the registry client said.
        detail: String,
    },
    /// The registry could not be asked; retrying may help.
    #[error(
        "the schema registry at {url} did not answer: {detail}; is it up? (scripts/cluster.sh up)"
    )]
    RegistryUnavailable {
        /// The registry asked.
        url: String,
        /// What the registry client said.
        detail: String,
    },
    /// The Avro body does not decode with the schema its id names.
    #[error("payload with schema id {id} does not decode as Avro: {detail}")]
    MalformedBody {
        /// The schema id in the payload.
        id: u32,
        /// What the Avro reader said.
        detail: String,
    },
    /// The decoded Avro value does not fit the Rust type asked for.
    #[error("Avro value with schema id {id} does not fit {target}: {detail}")]
    Mismatch {
        /// The schema id in the payload.
        id: u32,
        /// The Rust type asked for.
        target: &'static str,
        /// What the Avro deserialiser said.
        detail: String,
    },
    /// The record could not be encoded or its schema not registered.
    #[error("cannot encode a record for subject {subject} at {url}: {detail}")]
    Encode {
        /// The subject written to.
        subject: String,
        /// The registry asked.
        url: String,
        /// What the registry client or the Avro writer said.
        detail: String,
        /// Whether trying again may succeed (registry unreachable rather than schema refused).
        retryable: bool,
    },
}

impl CodecError {
    /// Whether the same call may succeed later (the registry was unreachable), as opposed to a
    /// payload or schema that will never decode or encode.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RegistryUnavailable { .. } => true,
            Self::Encode { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// A short, stable name of the error's class, for metrics labels and dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Short { .. } => "short_payload",
            Self::ForeignMagic { .. } => "foreign_magic",
            Self::UnknownSchemaId { .. } => "unknown_schema_id",
            Self::RegistryUnavailable { .. } => "registry_unavailable",
            Self::MalformedBody { .. } => "malformed_body",
            Self::Mismatch { .. } => "type_mismatch",
            Self::Encode { .. } => "encode",
        }
    }
}

/// Reads the schema id from a wire-format payload, checking its length and magic byte.
///
/// # Errors
/// [`CodecError::Short`] or [`CodecError::ForeignMagic`].
pub fn schema_id(payload: &[u8]) -> Result<u32, CodecError> {
    match payload {
        [0, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [byte, _, _, _, _, ..] => Err(CodecError::ForeignMagic { byte: *byte }),
        short => Err(CodecError::Short { len: short.len() }),
    }
}

/// Encodes and decodes records through a schema registry. Cheap to share behind an `Arc`; it
/// caches schemas and ids, so each schema costs one registry round trip per process.
#[derive(Debug)]
pub struct Codec {
    url: String,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl Codec {
    /// A codec for the registry at `config.url`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (e.g. the URL is not one).
    pub fn new(config: &RegistryConfig) -> Result<Self, CodecError> {
        let settings = SrSettings::new_builder(config.url.clone())
            .set_timeout(config.timeout)
            .build()
            .map_err(|e| CodecError::RegistryUnavailable {
                url: config.url.clone(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            url: config.url.clone(),
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
        })
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A handle that encodes `part` of `topic`'s records with `schema`, registering the schema
    /// under `<topic>-key|value` on first use.
    pub fn encoder(&self, topic: &str, part: Part, schema: SchemaFile) -> SubjectEncoder<'_> {
        SubjectEncoder {
            codec: self,
            subject: subject(topic, part),
            strategy: SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_owned(),
                part == Part::Key,
                schema.supplied(),
            ),
        }
    }

    /// Decodes a wire-format payload into `T`.
    ///
    /// # Errors
    /// A [`CodecError`] naming what is wrong with the payload, or that the registry is down.
    pub async fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, CodecError> {
        let (schema, value) = self.decode_value(payload).await?;
        apache_avro::from_value(&value).map_err(|e| CodecError::Mismatch {
            id: schema.id,
            target: std::any::type_name::<T>(),
            detail: e.to_string(),
        })
    }

    /// Decodes a wire-format payload into a generic Avro value, with the schema it was written
    /// with.
    ///
    /// # Errors
    /// A [`CodecError`] naming what is wrong with the payload, or that the registry is down.
    pub async fn decode_value(
        &self,
        payload: &[u8],
    ) -> Result<(Arc<AvroSchema>, Value), CodecError> {
        let id = schema_id(payload)?;
        match self.decoder.decode_with_schema(Some(payload)).await {
            Ok(Some(decoded)) => Ok((decoded.schema, decoded.value)),
            Ok(None) => Err(CodecError::Short { len: payload.len() }),
            Err(e) => {
                // Told apart only on failure (the schema is cached, so asking again is cheap):
                // an unknown id or a registry that is down, else a body that does not decode.
                self.schema(id).await?;
                Err(CodecError::MalformedBody {
                    id,
                    detail: describe(&e),
                })
            }
        }
    }

    /// The schema registered under `id`.
    ///
    /// # Errors
    /// [`CodecError::UnknownSchemaId`], or [`CodecError::RegistryUnavailable`].
    pub async fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, CodecError> {
        self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                CodecError::RegistryUnavailable {
                    url: self.url.clone(),
                    detail: describe(&e),
                }
            } else {
                CodecError::UnknownSchemaId {
                    id,
                    url: self.url.clone(),
                    detail: describe(&e),
                }
            }
        })
    }
}

/// Encodes one subject's records; see [`Codec::encoder`].
#[derive(Debug)]
pub struct SubjectEncoder<'a> {
    codec: &'a Codec,
    subject: String,
    strategy: SubjectNameStrategy,
}

impl SubjectEncoder<'_> {
    /// Encodes `item` in the wire format.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the schema is refused, the registry is unreachable or `item`
    /// does not fit the schema.
    pub async fn encode(&self, item: &impl Serialize) -> Result<Vec<u8>, CodecError> {
        self.codec
            .encoder
            .encode_struct(item, &self.strategy)
            .await
            .map_err(|e| CodecError::Encode {
                subject: self.subject.clone(),
                url: self.codec.url.clone(),
                retryable: e.retriable,
                detail: describe(&e),
            })
    }

    /// The subject this encoder writes to.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_id_reads_the_big_endian_id_after_the_magic_byte() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 42]).ok(), Some(258));
        assert_eq!(schema_id(&[0, 0, 0, 0, 7]).ok(), Some(7));
    }

    #[test]
    fn short_payloads_are_a_typed_error() {
        for len in 0..HEADER_LEN {
            let payload = vec![0u8; len];
            assert!(matches!(schema_id(&payload), Err(CodecError::Short { len: l }) if l == len));
        }
    }

    #[test]
    fn foreign_payloads_are_a_typed_error() {
        let json = br#"{"product_id": 1}"#;
        assert!(matches!(
            schema_id(json),
            Err(CodecError::ForeignMagic { byte: b'{' })
        ));
        assert!(!CodecError::ForeignMagic { byte: 1 }.is_retryable());
    }

    proptest::proptest! {
        #[test]
        fn schema_id_never_panics(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let _ = schema_id(&payload);
        }
    }
}
