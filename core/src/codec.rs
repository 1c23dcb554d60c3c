//! The registry codec: records to and from the Confluent wire format (magic byte `0`, a 4-byte
//! big-endian schema id, the Avro body), with schemas registered in and fetched from a schema
//! registry through `schema_registry_converter`, under TopicNameStrategy subjects.
//!
//! A payload names its writer's schema, so it is not trusted to name a fair one: a record read
//! from a topic decodes only when its schema id is a version of the topic's subject
//! ([`Codec::decode_value_for`]), and no record is built that would take more than
//! `registry.max_decoded_bytes` once decoded (see [`size`]).

mod size;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::RegistryConfig;
use crate::record::Keyed;
use crate::schema::{Part, SchemaFile, subject};
use crate::sync::lock;

pub use size::{MAX_DEPTH, Scalar};

/// Bytes before the Avro body: the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// How long a schema id found foreign to a subject stays so before the registry is asked again
/// (the same schema registered under the subject later gets the same id).
const FOREIGN_RECHECK: Duration = Duration::from_secs(60);

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
    /// The payload's schema id is not a version of the subject the topic's records are
    /// registered under: a record written with someone else's schema, refused unread.
    #[error(
        "schema id {id} is not a version of subject {subject} (the registry at {url} has it under \
         {found}): a record written for another topic, refused unread"
    )]
    ForeignSchema {
        /// The schema id in the payload.
        id: u32,
        /// The subject expected (`<topic>-value` or `<topic>-key`).
        subject: String,
        /// The subjects the id is a version of, for people.
        found: String,
        /// The registry asked.
        url: String,
    },
    /// The record would take more than the cap once decoded, or nest too deep: refused before
    /// it is built.
    #[error(
        "payload with schema id {id} {detail}; refused before it is built (the cap is \
         registry.max_decoded_bytes = {max} bytes, and {depth} levels of nesting)",
        depth = MAX_DEPTH
    )]
    TooLarge {
        /// The schema id in the payload.
        id: u32,
        /// The cap, in bytes.
        max: usize,
        /// What was over the limit.
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
            Self::ForeignSchema { .. } => "foreign_schema",
            Self::TooLarge { .. } => "too_large",
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
/// caches schemas, ids and which subjects an id belongs to, so each costs one registry round
/// trip per process.
#[derive(Debug)]
pub struct Codec {
    url: String,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    http: reqwest::Client,
    max_decoded_bytes: usize,
    writers: Mutex<HashMap<u32, Arc<WriterSchema>>>,
    memberships: Mutex<HashMap<(String, u32), Membership>>,
}

/// Whether a schema id is a version of a subject, as the registry last said.
#[derive(Debug, Clone)]
enum Membership {
    Member,
    Foreign { found: String, asked: Instant },
}

/// One entry of `GET /schemas/ids/{id}/versions`.
#[derive(Debug, serde::Deserialize)]
struct SubjectVersion {
    subject: String,
    version: u32,
}

impl Codec {
    /// A codec for the registry at `config.url`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (e.g. the URL is not one).
    pub fn new(config: &RegistryConfig) -> Result<Self, CodecError> {
        let unavailable = |detail: String| CodecError::RegistryUnavailable {
            url: config.url.clone(),
            detail,
        };
        let mut settings = SrSettings::new_builder(config.url.clone());
        settings.set_timeout(config.timeout);
        if let Some((user, password)) = config
            .credentials()
            .map_err(|e| unavailable(e.to_string()))?
        {
            settings.set_basic_authorization(user, Some(password));
        }
        let settings = settings.build().map_err(|e| unavailable(e.to_string()))?;
        let http = config
            .http_client(config.timeout)
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Self {
            url: config.url.trim_end_matches('/').to_owned(),
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
            http,
            max_decoded_bytes: config.max_decoded_bytes,
            writers: Mutex::default(),
            memberships: Mutex::default(),
        })
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The most a record's key or value may take once decoded (`registry.max_decoded_bytes`).
    pub fn max_decoded_bytes(&self) -> usize {
        self.max_decoded_bytes
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

    /// A handle that encodes `topic`'s records, keys and values, with `V`'s schemas, each
    /// registered under its subject on first use. Made once, it serves any number of records.
    pub fn record_encoder<V: Keyed>(&self, topic: &str) -> RecordEncoder<'_, V> {
        RecordEncoder {
            key: self.encoder(topic, Part::Key, V::KEY_SCHEMA),
            value: self.encoder(topic, Part::Value, V::VALUE_SCHEMA),
            record: PhantomData,
        }
    }

    /// Encodes one record of `topic` (see [`Codec::record_encoder`]). Returns the key's bytes
    /// and the value's.
    ///
    /// # Errors
    /// As [`RecordEncoder::encode`].
    pub async fn encode_record<V: Keyed>(
        &self,
        topic: &str,
        key: &V::Key,
        value: &V,
    ) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
        self.record_encoder(topic).encode(key, value).await
    }

    /// Decodes `part` of a record read from `topic` into `T`, once its schema id is found to be
    /// a version of `<topic>-key|value`.
    ///
    /// # Errors
    /// As [`Codec::decode_value_for`], and [`CodecError::Mismatch`].
    pub async fn decode_for<T: DeserializeOwned>(
        &self,
        topic: &str,
        part: Part,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        let (schema, value) = self.decode_value_for(topic, part, payload).await?;
        from_value(schema.id, &value)
    }

    /// Decodes `part` of a record read from `topic` into a generic Avro value, with the schema
    /// it was written with, once its schema id is found to be a version of
    /// `<topic>-key|value` (TopicNameStrategy).
    ///
    /// # Errors
    /// [`CodecError::ForeignSchema`] when the id belongs to other subjects only, and the errors
    /// of [`Codec::decode_value`].
    pub async fn decode_value_for(
        &self,
        topic: &str,
        part: Part,
        payload: &[u8],
    ) -> Result<(Arc<AvroSchema>, Value), CodecError> {
        let id = schema_id(payload)?;
        self.check_subject(&subject(topic, part), id).await?;
        self.decode_value(payload).await
    }

    /// Decodes a wire-format payload into `T`, with whatever schema its id names (no subject
    /// check: for payloads of known origin; see [`Codec::decode_for`]).
    ///
    /// # Errors
    /// A [`CodecError`] naming what is wrong with the payload, or that the registry is down.
    pub async fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, CodecError> {
        let (schema, value) = self.decode_value(payload).await?;
        from_value(schema.id, &value)
    }

    /// Decodes a wire-format payload into a generic Avro value, with the schema it was written
    /// with (no subject check: see [`Codec::decode_value_for`]). Nothing over
    /// `registry.max_decoded_bytes` is built.
    ///
    /// # Errors
    /// A [`CodecError`] naming what is wrong with the payload ([`CodecError::TooLarge`] over
    /// the cap), or that the registry is down.
    pub async fn decode_value(
        &self,
        payload: &[u8],
    ) -> Result<(Arc<AvroSchema>, Value), CodecError> {
        let id = schema_id(payload)?;
        let writer = self.writer_schema(id).await?;
        writer.check_size(&payload[HEADER_LEN..], self.max_decoded_bytes)?;
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

    /// The schema registered under `id`, ready for bounded decoding ([`WriterSchema::decode`]).
    ///
    /// # Errors
    /// As [`Codec::schema`], and [`CodecError::MalformedBody`] when the schema's named types do
    /// not resolve.
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<WriterSchema>, CodecError> {
        if let Some(writer) = lock(&self.writers).get(&id) {
            return Ok(writer.clone());
        }
        let schema = self.schema(id).await?;
        let writer = Arc::new(WriterSchema::new(id, schema.parsed.clone())?);
        lock(&self.writers).insert(id, writer.clone());
        Ok(writer)
    }

    /// Checks that schema `id` is a version of `subject` (soft-deleted versions included: they
    /// were the subject's when their records were written), asking the registry
    /// (`GET /schemas/ids/{id}/versions`) once per subject and id; an id found foreign is asked
    /// about again after a minute.
    ///
    /// # Errors
    /// [`CodecError::ForeignSchema`] when it is not, [`CodecError::UnknownSchemaId`] when the
    /// registry does not know the id, [`CodecError::RegistryUnavailable`] when it cannot be
    /// asked.
    pub async fn check_subject(&self, subject: &str, id: u32) -> Result<(), CodecError> {
        let key = (subject.to_owned(), id);
        match lock(&self.memberships).get(&key) {
            Some(Membership::Member) => return Ok(()),
            Some(Membership::Foreign { found, asked }) if asked.elapsed() < FOREIGN_RECHECK => {
                return Err(self.foreign(subject, id, found.clone()));
            }
            _ => {}
        }
        let versions = self.versions_of(id).await?;
        let membership = if versions.iter().any(|v| v.subject == subject) {
            Membership::Member
        } else {
            let found = versions
                .iter()
                .map(|v| format!("{} v{}", v.subject, v.version))
                .collect::<Vec<_>>()
                .join(", ");
            Membership::Foreign {
                found: if found.is_empty() {
                    "no subject".to_owned()
                } else {
                    found
                },
                asked: Instant::now(),
            }
        };
        lock(&self.memberships).insert(key, membership.clone());
        match membership {
            Membership::Member => Ok(()),
            Membership::Foreign { found, .. } => Err(self.foreign(subject, id, found)),
        }
    }

    fn foreign(&self, subject: &str, id: u32, found: String) -> CodecError {
        CodecError::ForeignSchema {
            id,
            subject: subject.to_owned(),
            found,
            url: self.url.clone(),
        }
    }

    /// The subject-version pairs that hold schema `id`, deleted ones included.
    async fn versions_of(&self, id: u32) -> Result<Vec<SubjectVersion>, CodecError> {
        let url = format!("{}/schemas/ids/{id}/versions?deleted=true", self.url);
        let unavailable = |detail: String| CodecError::RegistryUnavailable {
            url: self.url.clone(),
            detail,
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            let body = response.text().await.unwrap_or_default();
            return Err(CodecError::UnknownSchemaId {
                id,
                url: self.url.clone(),
                detail: format!("GET {url}: {status}: {body}"),
            });
        }
        if !status.is_success() {
            // A registry that refuses a read (auth, overload) is waited for, not trusted less.
            let body = response.text().await.unwrap_or_default();
            return Err(unavailable(format!("GET {url}: {status}: {body}")));
        }
        response
            .json()
            .await
            .map_err(|e| unavailable(format!("GET {url}: not a list of subject versions: {e}")))
    }
}

/// A writer's schema ready for bounded decoding: its id, the parsed schema and its named types.
pub struct WriterSchema {
    id: u32,
    schema: Schema,
    names: Names,
}

impl std::fmt::Debug for WriterSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSchema")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl WriterSchema {
    /// Schema `id`, with its named types resolved.
    ///
    /// # Errors
    /// [`CodecError::MalformedBody`] when they do not resolve (nothing can decode with it).
    pub fn new(id: u32, schema: Schema) -> Result<Self, CodecError> {
        let names = ResolvedSchema::try_from(&schema)
            .map_err(|e| CodecError::MalformedBody {
                id,
                detail: format!("its schema does not resolve: {e}"),
            })?
            .get_names()
            .iter()
            .map(|(name, named)| (name.clone(), (*named).clone()))
            .collect();
        Ok(Self { id, schema, names })
    }

    /// The schema id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// What decoding the Avro `body` (the payload after [`HEADER_LEN`]) would allocate, in
    /// bytes, when it is at most `max_decoded_bytes`, without building anything.
    ///
    /// # Errors
    /// [`CodecError::TooLarge`] over the cap or [`MAX_DEPTH`] levels of nesting,
    /// [`CodecError::MalformedBody`] when the body does not decode.
    pub fn check_size(&self, body: &[u8], max_decoded_bytes: usize) -> Result<usize, CodecError> {
        size::decoded_size(&self.schema, &self.names, body, max_decoded_bytes)
            .map_err(|refusal| self.refused(refusal, max_decoded_bytes))
    }

    /// Reads the top-level fields named in `wanted` from the Avro `body` (the payload after
    /// [`HEADER_LEN`]) without decoding the rest, having checked it as
    /// [`WriterSchema::check_size`] does, in the same pass: their values in `wanted`'s order,
    /// `None` for a field the schema does not have; `Ok(None)` when the schema is not a record.
    /// What the hot path of a stage that needs three fields of a listing uses instead of
    /// [`WriterSchema::decode`].
    ///
    /// # Errors
    /// As [`WriterSchema::check_size`] (a string that is not UTF-8 included, as apache-avro
    /// refuses one).
    pub fn project<'b>(
        &self,
        body: &'b [u8],
        max_decoded_bytes: usize,
        wanted: &[&str],
    ) -> Result<Option<Vec<Option<Scalar<'b>>>>, CodecError> {
        size::project(&self.schema, &self.names, body, max_decoded_bytes, wanted)
            .map_err(|refusal| self.refused(refusal, max_decoded_bytes))
    }

    fn refused(&self, refusal: size::Refusal, max_decoded_bytes: usize) -> CodecError {
        let id = self.id;
        match refusal {
            size::Refusal::TooLarge { bytes } => CodecError::TooLarge {
                id,
                max: max_decoded_bytes,
                detail: format!("would take at least {bytes} bytes once decoded"),
            },
            size::Refusal::TooDeep => CodecError::TooLarge {
                id,
                max: max_decoded_bytes,
                detail: format!("nests values deeper than {MAX_DEPTH} levels"),
            },
            size::Refusal::Malformed(detail) => CodecError::MalformedBody { id, detail },
        }
    }

    /// Decodes the Avro `body` (the payload after [`HEADER_LEN`]), once
    /// [`WriterSchema::check_size`] has found it within `max_decoded_bytes`.
    ///
    /// # Errors
    /// As [`WriterSchema::check_size`], and [`CodecError::MalformedBody`] when apache-avro
    /// refuses the body.
    pub fn decode(&self, body: &[u8], max_decoded_bytes: usize) -> Result<Value, CodecError> {
        self.check_size(body, max_decoded_bytes)?;
        let malformed = |e: apache_avro::Error| CodecError::MalformedBody {
            id: self.id,
            detail: e.to_string(),
        };
        let mut body = body;
        GenericDatumReader::builder(&self.schema)
            .build()
            .map_err(malformed)?
            .read_value(&mut body)
            .map_err(malformed)
    }
}

fn from_value<T: DeserializeOwned>(id: u32, value: &Value) -> Result<T, CodecError> {
    apache_avro::from_value(value).map_err(|e| CodecError::Mismatch {
        id,
        target: std::any::type_name::<T>(),
        detail: e.to_string(),
    })
}

/// Encodes one topic's records, key and value; see [`Codec::record_encoder`].
#[derive(Debug)]
pub struct RecordEncoder<'a, V> {
    key: SubjectEncoder<'a>,
    value: SubjectEncoder<'a>,
    record: PhantomData<fn(&V)>,
}

impl<V: Keyed> RecordEncoder<'_, V> {
    /// Encodes `key` and `value` in the wire format; returns the key's bytes and the value's.
    ///
    /// # Errors
    /// [`CodecError::Encode`], naming the subject refused, as [`SubjectEncoder::encode`].
    pub async fn encode(&self, key: &V::Key, value: &V) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
        Ok((self.key.encode(key).await?, self.value.encode(value).await?))
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
    use apache_avro::writer::datum::GenericDatumWriter;

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

    #[test]
    fn foreign_and_oversized_records_are_poison_with_their_own_class() {
        let foreign = CodecError::ForeignSchema {
            id: 7,
            subject: "listings-value".into(),
            found: "other-value v1".into(),
            url: "http://registry".into(),
        };
        assert_eq!(foreign.class(), "foreign_schema");
        assert!(!foreign.is_retryable());
        assert!(
            foreign
                .to_string()
                .contains("not a version of subject listings-value"),
            "{foreign}"
        );
        let large = CodecError::TooLarge {
            id: 7,
            max: 4,
            detail: "would take at least 5 bytes once decoded".into(),
        };
        assert_eq!(large.class(), "too_large");
        assert!(!large.is_retryable());
        assert!(
            large.to_string().contains("registry.max_decoded_bytes = 4"),
            "{large}"
        );
    }

    #[test]
    fn a_record_over_the_cap_is_refused_and_one_under_it_decodes() {
        let writer = listing_writer();
        let listing = crate::record::arbitrary::distinct_listings(1, 3).remove(0);
        let body = body(&writer, &listing);
        let size = writer.check_size(&body, usize::MAX).unwrap();
        assert!(size >= body.len(), "{size} < {}", body.len());
        let decoded: crate::record::Listing =
            from_value(1, &writer.decode(&body, size).unwrap()).unwrap();
        assert_eq!(decoded, listing);
        assert!(matches!(
            writer.decode(&body, size - 1),
            Err(CodecError::TooLarge { id: 1, .. })
        ));
    }

    fn listing_writer() -> WriterSchema {
        WriterSchema::new(1, crate::schema::LISTING.parse().unwrap()).unwrap()
    }

    /// The Avro body of `listing`.
    fn body(writer: &WriterSchema, listing: &crate::record::Listing) -> Vec<u8> {
        GenericDatumWriter::builder(writer.schema())
            .build()
            .unwrap()
            .write_value_to_vec(apache_avro::to_value(listing).unwrap())
            .unwrap()
    }

    /// `body` decoded by apache-avro alone.
    fn avro_decode(writer: &WriterSchema, body: &[u8]) -> apache_avro::AvroResult<Value> {
        GenericDatumReader::builder(writer.schema())
            .build()?
            .read_value(&mut &body[..])
    }

    proptest::proptest! {
        /// The size walk reads a listing as apache-avro does: it accepts every listing, and what
        /// it builds is the same value.
        #[test]
        fn every_listing_decodes_within_a_cap_of_its_own_size(
            listing in crate::record::arbitrary::listing()
        ) {
            let writer = listing_writer();
            let body = body(&writer, &listing);
            let size = writer.check_size(&body, usize::MAX).unwrap();
            let expected = avro_decode(&writer, &body).unwrap();
            proptest::prop_assert_eq!(writer.decode(&body, size).unwrap(), expected);
        }

        /// On damaged bodies the walk never calls malformed what apache-avro decodes.
        #[test]
        fn the_size_walk_never_refuses_what_apache_avro_decodes(
            listing in crate::record::arbitrary::listing(),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let writer = listing_writer();
            let mut body = body(&writer, &listing);
            for (at, byte) in flips {
                let len = body.len();
                body[at % len] = byte;
            }
            body.truncate(cut % (body.len() + 1));
            if let Err(CodecError::MalformedBody { detail, .. }) = writer.check_size(&body, 4 << 20) {
                let decoded = avro_decode(&writer, &body);
                proptest::prop_assert!(decoded.is_err(), "walk said {detail}, apache-avro decoded {decoded:?}");
            }
        }

        /// Projecting three fields agrees with the whole decode on every body, damaged or not:
        /// it reads what `decode` reads, as apache-avro decodes it, and refuses what `decode`
        /// refuses (apache-avro, or the size walk before it).
        #[test]
        fn projecting_fields_agrees_with_apache_avro(
            listing in crate::record::arbitrary::listing(),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::prelude::any::<usize>(),
            damage in proptest::prelude::any::<bool>(),
        ) {
            let writer = listing_writer();
            let mut body = body(&writer, &listing);
            if damage {
                for (at, byte) in flips {
                    let len = body.len();
                    body[at % len] = byte;
                }
                body.truncate(cut % (body.len() + 1));
            }
            let wanted = ["price", "product_id", "category_level1", "no_such_field"];
            let projected = writer.project(&body, 4 << 20, &wanted);
            let decoded = writer.decode(&body, 4 << 20);
            match (projected, decoded) {
                (Ok(Some(found)), Ok(Value::Record(fields))) => {
                    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                    let as_scalar = |value: Option<Value>| match value {
                        Some(Value::Union(_, inner)) => Some(*inner),
                        other => other,
                    };
                    let expect = |name: &str| match as_scalar(field(name)) {
                        None => None,
                        Some(Value::Null) => Some(Scalar::Null),
                        Some(Value::Long(n)) => Some(Scalar::Long(n)),
                        Some(_) => Some(Scalar::Other),
                    };
                    proptest::prop_assert_eq!(found[0], expect("price"));
                    proptest::prop_assert_eq!(found[1], expect("product_id"));
                    proptest::prop_assert_eq!(found[3], None);
                    match (found[2], as_scalar(field("category_level1"))) {
                        (Some(Scalar::Str(a)), Some(Value::String(b))) => proptest::prop_assert_eq!(a, b),
                        (Some(Scalar::Null), Some(Value::Null)) => {}
                        (a, b) => proptest::prop_assert!(false, "projected {a:?}, decoded {b:?}"),
                    }
                    if !damage {
                        proptest::prop_assert_eq!(found[1], Some(Scalar::Long(listing.product_id)));
                    }
                }
                (Err(_), Err(_)) => {}
                (projected, decoded) => proptest::prop_assert!(false, "projected {projected:?}, decoded {decoded:?}"),
            }
        }

        #[test]
        fn schema_id_never_panics(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let _ = schema_id(&payload);
        }
    }
}
