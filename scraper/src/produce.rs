//! Producing to Kafka: listings as Avro through the registry (key `ListingKey`, value `Listing`),
//! with the crawl id in a header, and the delivery awaited. On a full producer queue it waits
//! and tries again; it never drops a record and never flushes per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::record::Listing;
use marketflow_core::schema::{self, Part};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The header holding the crawl id on every listing: a second record of a product id with the
/// same crawl id is a duplicate, with another crawl id a re-scrape.
pub const CRAWL_HEADER: &str = "marketflow-crawl";

/// How long to wait before offering a record again to a full producer queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// What failed producing a record.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The record could not be encoded (retryable when the registry was unreachable).
    #[error(transparent)]
    Encode(#[from] CodecError),
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
}

impl ProduceError {
    /// Whether the same record may be produced later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Encode(e) => e.is_retryable(),
            Self::Delivery { .. } => false,
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

/// Sends `payload` to `topic` and awaits its delivery; a full queue is waited out.
///
/// # Errors
/// [`ProduceError::Delivery`] when librdkafka gives the record up.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<Delivered, ProduceError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    let delivery = loop {
        match producer.send_result(record) {
            Ok(delivery) => break delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_WAIT).await;
            }
            Err((source, _)) => {
                return Err(ProduceError::Delivery {
                    topic: topic.to_owned(),
                    source,
                });
            }
        }
    };
    match delivery.await {
        Ok(Ok(delivered)) => Ok(Delivered {
            partition: delivered.partition,
            offset: delivered.offset,
        }),
        Ok(Err((source, _))) => Err(ProduceError::Delivery {
            topic: topic.to_owned(),
            source,
        }),
        Err(_canceled) => Err(ProduceError::Delivery {
            topic: topic.to_owned(),
            source: KafkaError::Canceled,
        }),
    }
}

/// Produces listings of one crawl to the listings topic.
#[derive(Clone)]
pub struct ListingProducer {
    producer: FutureProducer,
    codec: Arc<Codec>,
    topic: String,
    crawl_id: String,
}

impl ListingProducer {
    /// A producer of `crawl_id`'s listings to `topic`.
    pub fn new(producer: FutureProducer, codec: Arc<Codec>, topic: &str, crawl_id: &str) -> Self {
        Self {
            producer,
            codec,
            topic: topic.to_owned(),
            crawl_id: crawl_id.to_owned(),
        }
    }

    /// Encodes `listing` and produces it, returning once the brokers have it.
    ///
    /// # Errors
    /// [`ProduceError`]: encoding failed, or the record was not delivered.
    pub async fn send(&self, listing: &Listing) -> Result<Delivered, ProduceError> {
        let key = self
            .codec
            .encoder(&self.topic, Part::Key, schema::LISTING_KEY)
            .encode(&listing.key())
            .await?;
        let value = self
            .codec
            .encoder(&self.topic, Part::Value, schema::LISTING)
            .encode(listing)
            .await?;
        let headers = OwnedHeaders::new().insert(Header {
            key: CRAWL_HEADER,
            value: Some(self.crawl_id.as_bytes()),
        });
        let started = Instant::now();
        let delivered = send(&self.producer, &self.topic, &key, &value, Some(headers)).await?;
        metrics::histogram!("scraper_produce_latency_seconds").record(started.elapsed());
        Ok(delivered)
    }
}
