//! The dead-letter topic: records that can never be written, as they arrived (same key and
//! value bytes), with headers naming where they came from and why they were set aside — the
//! header names of Kafka Connect's dead-letter queue, so existing tooling reads them.

use std::time::Duration;

use futures::future::try_join_all;
use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{ClientError, producer_config};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::OnceCell;

use crate::envelope::{Envelope, Poison};

/// Header: the record's source topic.
pub const HEADER_TOPIC: &str = "__connect.errors.topic";
/// Header: the record's source partition (decimal text).
pub const HEADER_PARTITION: &str = "__connect.errors.partition";
/// Header: the record's source offset (decimal text).
pub const HEADER_OFFSET: &str = "__connect.errors.offset";
/// Header: the error's class (`unknown_schema_id`, `row_refused`, ...).
pub const HEADER_CLASS: &str = "__connect.errors.exception.class.name";
/// Header: the error's message.
pub const HEADER_MESSAGE: &str = "__connect.errors.exception.message";

/// Why a dead letter could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot send {coordinates} to the dead-letter topic {topic}: {detail}")]
pub struct DlqError {
    /// The record's `topic/partition/offset`.
    pub coordinates: String,
    /// The dead-letter topic.
    pub topic: String,
    /// What the producer said.
    pub detail: String,
}

/// The producer of dead letters, made when the first one comes: an idle producer's polling
/// thread costs a few percent of a core (rust-rdkafka polls with a millisecond-truncated timeout
/// and spins through the last millisecond of every 100 ms), and most runs have none.
pub struct DeadLetters {
    config: ClientConfig,
    producer: OnceCell<FutureProducer>,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetters {
    /// Dead letters to `topic` through an idempotent producer.
    ///
    /// # Errors
    /// [`ClientError`] when the producer's configuration is refused (checked now, and the
    /// producer built once, so that a bad one stops the sink at start-up).
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, ClientError> {
        let config = producer_config(kafka)?;
        drop(config.create::<FutureProducer>()?);
        Ok(Self {
            config,
            producer: OnceCell::new(),
            topic: topic.to_owned(),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every letter and waits until the brokers have them all.
    ///
    /// # Errors
    /// [`DlqError`] for the first that could not be delivered.
    pub async fn send_all(&self, letters: &[(&Envelope, &Poison)]) -> Result<(), DlqError> {
        try_join_all(
            letters
                .iter()
                .map(|(envelope, poison)| self.send(envelope, poison)),
        )
        .await
        .map(drop)
    }

    async fn send(&self, envelope: &Envelope, poison: &Poison) -> Result<(), DlqError> {
        let failed = |detail: String| DlqError {
            coordinates: envelope.coordinates(),
            topic: self.topic.clone(),
            detail,
        };
        let producer = self
            .producer
            .get_or_try_init(async || self.config.create::<FutureProducer>())
            .await
            .map_err(|e| failed(format!("cannot build the producer: {e}")))?;
        let partition = envelope.partition.to_string();
        let offset = envelope.offset.to_string();
        let headers = headers(envelope, poison, &partition, &offset);
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = &envelope.key_bytes {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &envelope.value_bytes {
            record = record.payload(value.as_slice());
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map(drop)
            .map_err(|(e, _)| failed(e.to_string()))
    }
}

fn headers(envelope: &Envelope, poison: &Poison, partition: &str, offset: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: HEADER_TOPIC,
            value: Some(envelope.topic.as_bytes()),
        })
        .insert(Header {
            key: HEADER_PARTITION,
            value: Some(partition.as_bytes()),
        })
        .insert(Header {
            key: HEADER_OFFSET,
            value: Some(offset.as_bytes()),
        })
        .insert(Header {
            key: HEADER_CLASS,
            value: Some(poison.class.as_bytes()),
        })
        .insert(Header {
            key: HEADER_MESSAGE,
            value: Some(poison.message.as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Content;
    use rdkafka::message::Headers;
    use std::sync::Arc;

    #[test]
    fn headers_name_the_source_and_the_error() {
        let poison = Poison {
            class: "unknown_schema_id",
            message: "schema id 9 is not known".into(),
        };
        let envelope = Envelope {
            topic: Arc::from("listings"),
            partition: 2,
            offset: 41,
            key_bytes: None,
            value_bytes: Some(vec![0, 0, 0, 0, 9]),
            content: Content::Poison(poison.clone()),
        };
        let headers = headers(&envelope, &poison, "2", "41");
        let found: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (HEADER_TOPIC.to_owned(), "listings".to_owned()),
                (HEADER_PARTITION.to_owned(), "2".to_owned()),
                (HEADER_OFFSET.to_owned(), "41".to_owned()),
                (HEADER_CLASS.to_owned(), "unknown_schema_id".to_owned()),
                (
                    HEADER_MESSAGE.to_owned(),
                    "schema id 9 is not known".to_owned()
                ),
            ]
        );
    }
}
