//! The envelope: one consumed record with its coordinates, its raw bytes (for the dead-letter
//! topic) and what decoding made of it — a record, a tombstone, or poison that can never be
//! written.

use std::sync::Arc;

use apache_avro::types::Value;
use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::schema::Part;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders};
use schema_registry_converter::avro_common::AvroSchema;
use tokio_util::sync::CancellationToken;

use crate::settings::{PkMode, Settings};

/// A decoded key or value with the schema it was written with.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The registry's schema.
    pub schema: Arc<AvroSchema>,
    /// The Avro value.
    pub value: Value,
}

/// A record that can never be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// A short, stable class name (`unknown_schema_id`, `row_refused`, ...).
    pub class: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

/// What decoding made of a record.
#[derive(Debug, Clone)]
pub enum Content {
    /// A key (when the primary key needs it) and a value.
    Record {
        /// The decoded key, when `pk_mode = "record_key"`.
        key: Option<Decoded>,
        /// The decoded value.
        value: Decoded,
    },
    /// A record whose value is null (size -1).
    Tombstone {
        /// The decoded key, when `pk_mode = "record_key"`.
        key: Option<Decoded>,
    },
    /// Undecodable: set aside as a dead letter or stopped at.
    Poison(Poison),
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Its topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The key as it arrived.
    pub key_bytes: Option<Vec<u8>>,
    /// The value as it arrived.
    pub value_bytes: Option<Vec<u8>>,
    /// Its headers, for a dead letter to carry (e.g. the scraper's `marketflow-crawl`).
    pub headers: Option<OwnedHeaders>,
    /// Its timestamp (epoch milliseconds), for a dead letter to carry.
    pub timestamp: Option<i64>,
    /// What decoding made of it.
    pub content: Content,
}

impl Envelope {
    /// `topic/partition/offset`, as messages name a record.
    pub fn coordinates(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// An undecodable record at these coordinates, for unit tests of what is done with records.
    #[cfg(test)]
    pub(crate) fn poison_for_test(topic: &str, partition: i32, offset: i64) -> Self {
        Self {
            topic: Arc::from(topic),
            partition,
            offset,
            key_bytes: None,
            value_bytes: None,
            headers: None,
            timestamp: None,
            content: Content::Poison(Poison {
                class: "test",
                message: String::new(),
            }),
        }
    }
}

/// Decodes a consumed message of `topic` (a name shared by its records). A registry that does
/// not answer is waited for (with backoff, until `shutdown`); everything else that fails is
/// [`Content::Poison`].
///
/// # Errors
/// [`CodecError`] only when shutdown came while the registry was unreachable.
pub async fn open(
    codec: &Codec,
    settings: &Settings,
    topic: Arc<str>,
    message: &BorrowedMessage<'_>,
    shutdown: &CancellationToken,
) -> Result<Envelope, CodecError> {
    let key_bytes = message.key().map(<[u8]>::to_vec);
    let value_bytes = message.payload().map(<[u8]>::to_vec);
    let key = if settings.sink.pk_mode == PkMode::RecordKey {
        match &key_bytes {
            None => Err(Poison {
                class: "missing_key",
                message: "the record has no key, and sink.pk_mode = \"record_key\" needs one"
                    .into(),
            }),
            Some(bytes) => decode(codec, settings, (&topic, Part::Key), bytes, shutdown)
                .await?
                .map(Some)
                .map_err(|p| Poison {
                    message: format!("key: {}", p.message),
                    ..p
                }),
        }
    } else {
        Ok(None)
    };
    let content = match (key, &value_bytes) {
        (Err(poison), _) => Content::Poison(poison),
        (Ok(key), None) => Content::Tombstone { key },
        (Ok(key), Some(bytes)) => {
            match decode(codec, settings, (&topic, Part::Value), bytes, shutdown).await? {
                Ok(value) => Content::Record { key, value },
                Err(poison) => Content::Poison(poison),
            }
        }
    };
    Ok(Envelope {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        key_bytes,
        value_bytes,
        headers: message.headers().map(BorrowedHeaders::detach),
        timestamp: message.timestamp().to_millis(),
        content,
    })
}

/// Decodes `part` of a record of `topic`: only with a schema registered under the topic's
/// subject, and only within the decoded-size cap (else poison: `foreign_schema`, `too_large`).
async fn decode(
    codec: &Codec,
    settings: &Settings,
    (topic, part): (&str, Part),
    bytes: &[u8],
    shutdown: &CancellationToken,
) -> Result<Result<Decoded, Poison>, CodecError> {
    // Built at the first failure: most records decode at once.
    let mut delays = None;
    loop {
        match codec.decode_value_for(topic, part, bytes).await {
            Ok((schema, value)) => return Ok(Ok(Decoded { schema, value })),
            Err(e) if e.is_retryable() => {
                let delay = delays
                    .get_or_insert_with(|| {
                        backon::BackoffBuilder::build(
                            settings
                                .backoff()
                                .without_max_times()
                                .with_max_delay(settings.sink.retry_backoff_max),
                        )
                    })
                    .next()
                    .unwrap_or(settings.sink.retry_backoff_max);
                tracing::warn!(error = %e, ?delay, "Schema registry unavailable; waiting.");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(e),
                }
            }
            Err(e) => {
                return Ok(Err(Poison {
                    class: e.class(),
                    message: e.to_string(),
                }));
            }
        }
    }
}
