//! Producing to Kafka: listings as Avro through the registry (key `ListingKey`, value `Listing`),
//! with the crawl id in a header, and the delivery awaited. On a full producer queue it waits
//! and tries again; it never drops a record and never flushes per message. A delivery that
//! waits long, or fails, is explained from the topic's replicas (see
//! [`marketflow_core::replicas`]): librdkafka itself only says that a message timed out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::SendLimit;
use marketflow_core::metric;
use marketflow_core::record::Listing;
use marketflow_core::replicas::{self, Shortage};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::Mutex;

/// The header holding the crawl id on every listing: a second record of a product id with the
/// same crawl id is a duplicate, with another crawl id a re-scrape.
pub const CRAWL_HEADER: &str = "marketflow-crawl";

/// How long a delivery may wait before the topic's replicas are looked at, and how long what
/// they showed stands (one look serves every delivery waiting meanwhile).
const WAIT_CHECK: Duration = Duration::from_secs(10);

/// What failed producing a record.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The record could not be encoded (retryable when the registry was unreachable).
    #[error(transparent)]
    Encode(#[from] CodecError),
    /// The record is over the size limit of the producer or of the topic: that product id's
    /// failure, not the crawl's.
    #[error(
        "the listing is {size} bytes, over the {limit} bytes topic {topic} or the producer takes \
         (max.message.bytes); it is not produced"
    )]
    TooLarge {
        /// The topic.
        topic: String,
        /// Key, value and headers, in bytes.
        size: usize,
        /// The limit, framing included (0 when only the broker's answer told).
        limit: usize,
    },
    /// The broker did not take the record (after librdkafka's own retries). Fatal for the crawl.
    #[error(
        "cannot produce to topic {topic}: {source}; is the cluster up? (scripts/cluster.sh up)"
    )]
    Delivery {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The record was not delivered because too few of the topic's replicas are in sync (brokers
    /// are down): the brokers refuse `acks=all` writes below `min.insync.replicas`, and
    /// librdkafka retried until `message.timeout.ms`. Fatal for the crawl; a restart resumes it.
    #[error(
        "cannot produce to topic {topic} ({cause}): not enough in-sync replicas: {shortage}; \
         writes with acks=all are refused until enough brokers are back: run \
         scripts/cluster.sh status (scripts/cluster.sh up starts what is down), then run the \
         crawl again to resume it"
    )]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// Its partitions that cannot take a write, and why (boxed: errors stay small).
        shortage: Box<Shortage>,
        /// What librdkafka said (not a `source`: the message shows it already).
        cause: KafkaError,
    },
}

impl ProduceError {
    /// Whether the same record may be produced later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Encode(e) => e.is_retryable(),
            Self::TooLarge { .. } | Self::Delivery { .. } | Self::NotEnoughReplicas { .. } => false,
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// The producer every record of the scraper goes through, and what explains a delivery that
/// waits or fails.
#[derive(Clone)]
pub struct Sender {
    producer: FutureProducer,
    kafka: KafkaConfig,
    /// The last look at each topic's replicas.
    looked: Arc<Mutex<HashMap<String, Look>>>,
}

/// One look at a topic's replicas: when, and what it showed (or why it failed).
struct Look {
    at: Instant,
    shortage: Result<Option<Shortage>, String>,
}

impl Sender {
    /// Sends through `producer`; `kafka` reaches the cluster to explain waiting deliveries.
    pub fn new(producer: FutureProducer, kafka: &KafkaConfig) -> Self {
        Self {
            producer,
            kafka: kafka.clone(),
            looked: Arc::default(),
        }
    }

    /// Sends `payload` to `topic` and awaits its delivery; a full queue is waited out. While
    /// the delivery waits, a shortage of in-sync replicas is logged (at most once per
    /// [`WAIT_CHECK`] however many deliveries wait).
    ///
    /// # Errors
    /// [`ProduceError::NotEnoughReplicas`] when librdkafka gives the record up and the topic
    /// lacks in-sync replicas, else [`ProduceError::Delivery`].
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<Delivered, ProduceError> {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        // rdkafka waits out a full queue (`Timeout::Never`), then the delivery.
        let delivery = self.producer.send(record, Timeout::Never);
        tokio::pin!(delivery);
        let started = Instant::now();
        let delivered = loop {
            tokio::select! {
                delivered = &mut delivery => break delivered,
                () = tokio::time::sleep(WAIT_CHECK) => self.explain_wait(topic, started).await,
            }
        };
        match delivered {
            Ok(delivered) => Ok(Delivered {
                partition: delivered.partition,
                offset: delivered.offset,
            }),
            Err((source, _)) => Err(self.failed(topic, source, key.len() + payload.len()).await),
        }
    }

    /// The error for a record of `size` bytes librdkafka gave up: too large (the producer or
    /// the broker said so), or why, when the replicas tell.
    async fn failed(&self, topic: &str, source: KafkaError, size: usize) -> ProduceError {
        if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            return ProduceError::TooLarge {
                topic: topic.to_owned(),
                size,
                limit: 0,
            };
        }
        match self.look(topic).await.0 {
            Ok(Some(shortage)) => ProduceError::NotEnoughReplicas {
                topic: topic.to_owned(),
                shortage: Box::new(shortage),
                cause: source,
            },
            _ => ProduceError::Delivery {
                topic: topic.to_owned(),
                source,
            },
        }
    }

    /// Logs why a delivery to `topic`, sent at `started`, still waits, when the replicas tell
    /// and no other delivery has just said it.
    async fn explain_wait(&self, topic: &str, started: Instant) {
        let (shortage, fresh) = self.look(topic).await;
        if !fresh {
            return;
        }
        let waited = started.elapsed();
        match shortage {
            Ok(Some(shortage)) => tracing::warn!(
                topic,
                ?waited,
                %shortage,
                "Deliveries wait: not enough in-sync replicas for acks=all writes; they go on \
                 once enough brokers are back (scripts/cluster.sh status shows which are down)."
            ),
            Ok(None) => tracing::debug!(topic, ?waited, "A delivery waits."),
            Err(error) => tracing::warn!(
                topic,
                ?waited,
                %error,
                "Deliveries wait, and the cluster's metadata cannot be read; is the cluster up? \
                 (scripts/cluster.sh status)"
            ),
        }
    }

    /// What `topic`'s replicas show, looked at now unless a look younger than [`WAIT_CHECK`]
    /// stands; and whether this call looked.
    async fn look(&self, topic: &str) -> (Result<Option<Shortage>, String>, bool) {
        let mut looked = self.looked.lock().await;
        if let Some(look) = looked.get(topic)
            && look.at.elapsed() < WAIT_CHECK
        {
            return (look.shortage.clone(), false);
        }
        let shortage = replicas::shortage(&self.kafka, topic)
            .await
            .map_err(|e| e.to_string());
        let look = Look {
            at: Instant::now(),
            shortage: shortage.clone(),
        };
        looked.insert(topic.to_owned(), look);
        (shortage, true)
    }
}

/// Produces listings of one crawl to the listings topic.
#[derive(Clone)]
pub struct ListingProducer {
    sender: Sender,
    codec: Arc<Codec>,
    topic: String,
    crawl_id: String,
    limit: SendLimit,
}

impl ListingProducer {
    /// A producer of `crawl_id`'s listings to `topic`, each within `limit` on the wire.
    pub fn new(
        sender: Sender,
        codec: Arc<Codec>,
        topic: &str,
        crawl_id: &str,
        limit: SendLimit,
    ) -> Self {
        Self {
            sender,
            codec,
            topic: topic.to_owned(),
            crawl_id: crawl_id.to_owned(),
            limit,
        }
    }

    /// Encodes `listing` and produces it, returning once the brokers have it.
    ///
    /// # Errors
    /// [`ProduceError::TooLarge`] when the record is over the limit (nothing is sent);
    /// [`ProduceError`]: encoding failed, or the record was not delivered.
    pub async fn send(&self, listing: &Listing) -> Result<Delivered, ProduceError> {
        let (key, value) = self
            .codec
            .encode_record(&self.topic, &listing.key(), listing)
            .await?;
        let headers = OwnedHeaders::new().insert(Header {
            key: CRAWL_HEADER,
            value: Some(self.crawl_id.as_bytes()),
        });
        let size = key.len() + value.len() + CRAWL_HEADER.len() + self.crawl_id.len();
        if !self.limit.fits(size) {
            return Err(ProduceError::TooLarge {
                topic: self.topic.clone(),
                size,
                limit: self.limit.bytes(),
            });
        }
        let started = Instant::now();
        let delivered = self
            .sender
            .send(&self.topic, &key, &value, Some(headers))
            .await?;
        metrics::histogram!(metric::scraper::PRODUCE_SECONDS).record(started.elapsed());
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketflow_core::replicas::PartitionReplicas;

    #[test]
    fn a_listing_over_the_limit_is_that_listings_failure_not_the_crawls() {
        let error = ProduceError::TooLarge {
            topic: "listings".into(),
            size: 45_000,
            limit: 20_000,
        };
        assert!(!error.is_retryable());
        assert!(
            error
                .to_string()
                .contains("45000 bytes, over the 20000 bytes")
        );
    }

    #[test]
    fn a_shortage_of_in_sync_replicas_says_what_failed_and_what_to_do() {
        let shortage = Shortage::find(
            2,
            vec![PartitionReplicas {
                partition: 1,
                leader: Some(3),
                replicas: vec![1, 2, 3],
                in_sync: vec![3],
            }],
        )
        .unwrap();
        let error = ProduceError::NotEnoughReplicas {
            topic: "listings".into(),
            shortage: Box::new(shortage),
            cause: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert!(!error.is_retryable());
        let message = error.to_string();
        for part in [
            "cannot produce to topic listings",
            "not enough in-sync replicas",
            "partition 1 has 1 in-sync replica (node 3) of 3, fewer than min.insync.replicas=2",
            "run scripts/cluster.sh status",
            "run the crawl again to resume it",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        assert!(
            std::error::Error::source(&error).is_none(),
            "the cause is in the message; a source would print it twice"
        );
    }
}
