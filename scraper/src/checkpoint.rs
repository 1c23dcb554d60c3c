//! Where a crawl stands, kept so that a restart (graceful or `kill -9`) resumes it without
//! producing an id twice.
//!
//! The checkpoint is a record in a compacted Kafka topic (`scraper.checkpoint_topic`), one key
//! per crawl, rather than a file: it lives in the same durable, replicated system as the
//! listings it describes, needs no volume on the scraper's machine (a container restarted
//! elsewhere resumes), and is written with the same idempotent `acks=all` producer only after
//! the deliveries it covers were acknowledged. It holds `next_id` (every id below it is done:
//! listed, deleted, blocked, malformed, or failed and recorded) and, per partition of the
//! listings topic, the offset from which every listing this crawl produced for an id at or
//! above `next_id` can be found. On restart those offsets are read to the end, and listings
//! carrying this crawl's id in their `marketflow-crawl` header are skipped: ids above the
//! checkpoint that were already produced before a crash are not produced again.
//!
//! Both reads stream: each record is looked at as it comes and dropped, so a restart's memory
//! does not grow with the topics (only with the ids of this crawl it finds).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};
use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{self, ClientError};
use marketflow_core::metric;
use marketflow_core::record::ListingKey;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::produce::{CRAWL_HEADER, Delivered, ProduceError, Sender};

/// What failed reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A Kafka client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Reading a topic failed or stalled.
    #[error("cannot read topic {topic}: {detail}; is the cluster up? (scripts/cluster.sh up)")]
    Read {
        /// The topic.
        topic: String,
        /// What went wrong.
        detail: String,
    },
    /// A checkpoint record is not one this program wrote.
    #[error("checkpoint at {topic}/{partition}@{offset} does not parse: {detail}")]
    Corrupt {
        /// The topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What the JSON parser said.
        detail: String,
    },
    /// A listing found while recovering does not decode.
    #[error("listing at {topic}/{partition}@{offset} does not decode: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// The codec's error.
        source: CodecError,
    },
    /// The checkpoint could not be produced.
    #[error(transparent)]
    Write(#[from] ProduceError),
}

/// One crawl's position, as stored (JSON; private to the scraper).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The crawl, as in the `marketflow-crawl` header of its listings.
    pub crawl_id: String,
    /// First id of the crawl.
    pub from_id: i64,
    /// Last id of the crawl (once mode); `None` for a continuous crawl.
    pub to_id: Option<i64>,
    /// Every id below this one is done.
    pub next_id: i64,
    /// The crawl visited its whole range.
    pub finished: bool,
    /// Per partition of the listings topic: where this crawl's listings of ids `>= next_id`
    /// start.
    pub scan_from: BTreeMap<i32, i64>,
    /// When written, epoch milliseconds.
    pub updated_at: i64,
}

/// Tracks which ids are done as they complete out of order, and where their listings are.
///
/// # Why `scan_from` finds every listing of an id at or above `next`
///
/// An id's listing is *settled* here (passed to [`Progress::complete`]) some time after the
/// brokers acknowledged it, and settling does not follow the order of the offsets: the page
/// tasks of one partition's batch are acknowledged in offset order but finish, and are joined,
/// in any order. So "just past the highest offset acknowledged" is no bound for a listing that
/// is acknowledged but not settled yet: on `kill -9` it sits below that offset, a checkpoint
/// written then says to scan past it, and the restart produces its id again. The bounds used
/// instead, per partition:
/// * a listing settled with an id `>= next` is at the offset it was delivered to;
/// * a listing not produced yet when [`Progress::start`] noted its id lands after every listing
///   acknowledged by then (a partition's log only grows), so past the bound taken then: the
///   highest offset settled plus one, else the floor;
/// * a listing of an id not started yet lands past the same bound taken now.
///
/// An id started and never settled (its task aborted, or failed) keeps its bound: its record
/// may still be in flight.
#[derive(Debug, Clone)]
pub struct Progress {
    next: i64,
    done_above: BTreeSet<i64>,
    delivered_above: BTreeMap<i64, Delivered>,
    acked_max: BTreeMap<i32, i64>,
    floor: BTreeMap<i32, i64>,
    /// Ids started and not settled, each with [`Progress::past_acked`] as it was at its start.
    in_flight: BTreeMap<i64, BTreeMap<i32, i64>>,
}

impl Progress {
    /// Progress with every id below `next` done; `floor` is, per partition, an offset before
    /// which no listing of this crawl above `next` can be.
    pub fn new(next: i64, floor: BTreeMap<i32, i64>) -> Self {
        Self {
            next,
            done_above: BTreeSet::new(),
            delivered_above: BTreeMap::new(),
            acked_max: BTreeMap::new(),
            floor,
            in_flight: BTreeMap::new(),
        }
    }

    /// Every id below this one is done.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Whether `id` is done.
    pub fn is_done(&self, id: i64) -> bool {
        id < self.next || self.done_above.contains(&id)
    }

    /// Notes that `id` is about to be visited, before anything of it is produced: until it is
    /// [completed](Progress::complete), checkpoints keep the offsets its listing may land at
    /// in their `scan_from`.
    pub fn start(&mut self, id: i64) {
        self.in_flight.insert(id, self.past_acked());
    }

    /// Marks `id` done, with where its listing landed if it produced one.
    pub fn complete(&mut self, id: i64, delivered: Option<Delivered>) {
        self.in_flight.remove(&id);
        if let Some(d) = delivered {
            let max = self.acked_max.entry(d.partition).or_insert(d.offset);
            *max = (*max).max(d.offset);
        }
        if id < self.next {
            return;
        }
        self.done_above.insert(id);
        if let Some(d) = delivered {
            self.delivered_above.insert(id, d);
        }
        while self.done_above.remove(&self.next) {
            self.delivered_above.remove(&self.next);
            self.next += 1;
        }
    }

    /// Per partition, where the listings of ids `>= next` start (see [`Progress`]): the lowest
    /// of the offsets of those settled, the bounds of the ids in flight, and the bound now. A
    /// partition left out is read from its beginning.
    pub fn scan_from(&self) -> BTreeMap<i32, i64> {
        let mut out = self.past_acked();
        for d in self.delivered_above.values() {
            let slot = out.entry(d.partition).or_insert(d.offset);
            *slot = (*slot).min(d.offset);
        }
        for bound in self.in_flight.values() {
            // A partition without a bound when the id started: its listing may be anywhere.
            out.retain(|partition, _| bound.contains_key(partition));
            for (partition, offset) in bound {
                if let Some(slot) = out.get_mut(partition) {
                    *slot = (*slot).min(*offset);
                }
            }
        }
        out
    }

    /// Per partition, an offset every listing not produced yet will land at or past: just past
    /// the highest offset settled, else the floor.
    fn past_acked(&self) -> BTreeMap<i32, i64> {
        let mut out = self.floor.clone();
        for (partition, max) in &self.acked_max {
            out.insert(*partition, max + 1);
        }
        out
    }
}

/// Reads and writes the checkpoints of one crawl key.
#[derive(Clone)]
pub struct Store {
    kafka: KafkaConfig,
    sender: Sender,
    topic: String,
    key: String,
}

impl Store {
    /// The checkpoints stored under `key` in `topic`.
    pub fn new(kafka: &KafkaConfig, sender: Sender, topic: &str, key: &str) -> Self {
        Self {
            kafka: kafka.clone(),
            sender,
            topic: topic.to_owned(),
            key: key.to_owned(),
        }
    }

    /// The latest checkpoint under this store's key, if any.
    ///
    /// # Errors
    /// [`CheckpointError`] when the topic cannot be read or the record does not parse.
    pub async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let key = self.key.clone().into_bytes();
        // The latest record under the key: partition, offset and payload (none: a tombstone).
        let latest = scan(
            &self.kafka,
            &self.topic,
            BTreeMap::new(),
            None,
            move |latest, m| {
                if m.key() == Some(key.as_slice()) {
                    *latest = Some((m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec)));
                }
                true
            },
        )
        .await?;
        let Some((partition, offset, Some(payload))) = latest else {
            return Ok(None);
        };
        serde_json::from_slice::<Checkpoint>(&payload)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt {
                topic: self.topic.clone(),
                partition,
                offset,
                detail: e.to_string(),
            })
    }

    /// Writes `checkpoint` and waits until the brokers have it.
    ///
    /// # Errors
    /// [`CheckpointError::Write`] when it cannot be produced.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let payload = serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Corrupt {
            topic: self.topic.clone(),
            partition: -1,
            offset: -1,
            detail: e.to_string(),
        })?;
        self.sender
            .send(&self.topic, self.key.as_bytes(), &payload, None)
            .await?;
        metrics::gauge!(metric::scraper::CHECKPOINT_ID).set(precision_safe(checkpoint.next_id));
        Ok(())
    }
}

/// Creates the checkpoint topic when missing: one partition, `cleanup.policy=compact` (only the
/// latest checkpoint of each crawl matters). An existing topic is left as it is.
///
/// # Errors
/// [`CheckpointError::Client`] when the cluster refuses the creation for another reason than
/// the topic's existence.
pub async fn ensure_topic(kafka: &KafkaConfig, topic: &str) -> Result<(), CheckpointError> {
    Ok(kafka::ensure_compacted_topics(kafka, &[(topic, 1)]).await?)
}

/// An id as a gauge value (ids are far below 2^53).
#[allow(clippy::cast_precision_loss)]
fn precision_safe(id: i64) -> f64 {
    id as f64
}

/// The ids `>= next` that crawl `crawl_id` already produced to `topic`, found from `scan_from`
/// on, with where they are; and the topic's end offsets when read.
///
/// # Errors
/// [`CheckpointError`] when the topic cannot be read or a key does not decode.
pub async fn recover(
    kafka: &KafkaConfig,
    codec: &Arc<Codec>,
    topic: &str,
    crawl_id: &str,
    next: i64,
    scan_from: &BTreeMap<i32, i64>,
) -> Result<(BTreeMap<i64, Delivered>, BTreeMap<i32, i64>), CheckpointError> {
    // The reader hands this crawl's keys over as it finds them; the decoding (async: it may ask
    // the registry) keeps up, and a full channel holds the reader back.
    let (found, mut keys) = tokio::sync::mpsc::channel::<(i32, i64, Vec<u8>)>(RECOVERY_BUFFER);
    let crawl = crawl_id.as_bytes().to_vec();
    let reading = async {
        scan(kafka, topic, scan_from.clone(), found, move |found, m| {
            let ours = m.headers().is_some_and(|headers| {
                headers
                    .iter()
                    .any(|h| h.key == CRAWL_HEADER && h.value == Some(crawl.as_slice()))
            });
            match m.key().filter(|_| ours) {
                // A closed channel: the decoding failed, so stop reading.
                Some(key) => found
                    .blocking_send((m.partition(), m.offset(), key.to_vec()))
                    .is_ok(),
                None => true,
            }
        })
        .await
        // Dropping the sender ends the decoding loop.
        .map(drop)
    };
    let decoding = async {
        let mut produced = BTreeMap::new();
        while let Some((partition, offset, key)) = keys.recv().await {
            let key: ListingKey =
                codec
                    .decode(&key)
                    .await
                    .map_err(|source| CheckpointError::Decode {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                        source,
                    })?;
            if key.product_id >= next {
                produced.insert(key.product_id, Delivered { partition, offset });
            }
        }
        Ok(produced)
    };
    let ((), produced) = tokio::try_join!(reading, decoding)?;
    let ends = end_offsets(kafka, topic).await?;
    Ok((produced, ends))
}

/// Each partition's high watermark (the offset the next record will get).
///
/// # Errors
/// [`CheckpointError::Read`] when the topic's metadata or offsets cannot be read.
pub async fn end_offsets(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, CheckpointError> {
    let consumer = reader(kafka)?;
    let timeout = kafka.connect_timeout;
    let topic_name = topic.to_owned();
    blocking(topic, move || {
        let mut ends = BTreeMap::new();
        for partition in partitions(&consumer, &topic_name, timeout)? {
            let (_, high) = watermarks(&consumer, &topic_name, partition, timeout)?;
            ends.insert(partition, high);
        }
        Ok(ends)
    })
    .await
}

/// How long one poll of a reader waits (its errors and silences are judged between polls).
const STALL_POLL: Duration = Duration::from_millis(200);

/// Keys of this crawl's listings found by the reader and not decoded yet, at most.
const RECOVERY_BUFFER: usize = 1024;

/// Hands every record of `topic` from `starts` (per partition; absent ones from the beginning) to
/// the end offsets at the time of the call to `each`, with `state`, on a blocking thread; stops
/// early when `each` returns `false`. Returns the state. Records are not kept: memory stays flat
/// however long the topic.
async fn scan<S, F>(
    kafka: &KafkaConfig,
    topic: &str,
    starts: BTreeMap<i32, i64>,
    mut state: S,
    mut each: F,
) -> Result<S, CheckpointError>
where
    S: Send + 'static,
    F: FnMut(&mut S, &BorrowedMessage<'_>) -> bool + Send + 'static,
{
    let consumer = reader(kafka)?;
    let timeout = kafka.connect_timeout;
    let topic_name = topic.to_owned();
    blocking(topic, move || {
        let mut list = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for partition in partitions(&consumer, &topic_name, timeout)? {
            let (low, high) = watermarks(&consumer, &topic_name, partition, timeout)?;
            let start = starts.get(&partition).copied().unwrap_or(low).max(low);
            if start < high {
                list.add_partition_offset(&topic_name, partition, Offset::Offset(start))?;
                ends.insert(partition, high);
            }
        }
        if ends.is_empty() {
            return Ok(state);
        }
        consumer.assign(&list)?;
        // librdkafka reports a broker it cannot reach (one node of the cluster down, say) as a
        // consumer error and goes on through the others: an error ends the read only when no
        // record has come for `stall`.
        let stall = timeout * 3;
        let mut last_record = Instant::now();
        while !ends.is_empty() {
            let message = match consumer.poll(STALL_POLL.min(stall)) {
                Some(Ok(message)) => message,
                Some(Err(error)) if last_record.elapsed() >= stall => return Err(error),
                Some(Err(error)) => {
                    tracing::debug!(topic = %topic_name, %error, "Reader error; reading on.");
                    continue;
                }
                None if last_record.elapsed() >= stall => {
                    return Err(KafkaError::NoMessageReceived);
                }
                None => continue,
            };
            last_record = Instant::now();
            let partition = message.partition();
            if let Some(end) = ends.get(&partition)
                && message.offset() + 1 >= *end
            {
                ends.remove(&partition);
            }
            if !each(&mut state, &message) {
                break;
            }
        }
        Ok(state)
    })
    .await
}

fn reader(kafka: &KafkaConfig) -> Result<BaseConsumer, CheckpointError> {
    // A group of its own that never commits: the reader only assigns partitions.
    let group = format!("marketflow-scraper-reader-{}", uuid::Uuid::new_v4());
    let config = kafka::consumer_config(kafka, &group)?;
    Ok(config.create().map_err(ClientError::from)?)
}

fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = settled(timeout, || consumer.fetch_metadata(Some(topic), timeout))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// A partition's low and high watermarks, asked again while its leadership settles.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    settled(timeout, || {
        consumer.fetch_watermarks(topic, partition, timeout)
    })
}

/// Runs `ask` until it succeeds, for up to about `timeout * 3` while it fails with a
/// [transient](is_transient) error: a restart during a leader election (a broker stopped or
/// restarting) waits for the new leader instead of failing the crawl.
fn settled<T>(
    timeout: Duration,
    ask: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    ask.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .without_max_times()
            .with_total_delay(Some(timeout * 3)),
    )
    .sleep(std::thread::sleep)
    .when(is_transient)
    .notify(|error, after| {
        tracing::debug!(%error, ?after, "Partition leadership is settling; asking again.");
    })
    .call()
}

/// Whether `error` is one a leader election or a broker restart causes, and that goes away once
/// the cluster has settled.
fn is_transient(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::NotCoordinator
        )
    )
}

async fn blocking<T: Send + 'static>(
    topic: &str,
    work: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CheckpointError::Read {
            topic: topic.to_owned(),
            detail: e.to_string(),
        })?
        .map_err(|e| CheckpointError::Read {
            topic: topic.to_owned(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Option<Delivered> {
        Some(Delivered { partition, offset })
    }

    #[test]
    fn leader_elections_are_waited_out_and_other_errors_are_not() {
        let moved = KafkaError::MetadataFetch(RDKafkaErrorCode::NotLeaderForPartition);
        let timed_out = KafkaError::OffsetFetch(RDKafkaErrorCode::OperationTimedOut);
        let missing = KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(is_transient(&moved) && is_transient(&timed_out));
        assert!(!is_transient(&missing));

        let mut calls = 0;
        let answer = settled(Duration::from_secs(1), || {
            calls += 1;
            if calls < 3 { Err(moved.clone()) } else { Ok(7) }
        });
        assert_eq!((answer, calls), (Ok(7), 3));

        let mut calls = 0;
        let refused: Result<(), _> = settled(Duration::from_secs(1), || {
            calls += 1;
            Err(missing.clone())
        });
        assert_eq!(
            (refused, calls),
            (Err(missing), 1),
            "asked once, not retried"
        );
    }

    #[test]
    fn next_moves_only_over_a_contiguous_run_of_done_ids() {
        let mut p = Progress::new(10, BTreeMap::new());
        p.complete(12, None);
        p.complete(11, at(0, 5));
        assert_eq!(p.next(), 10);
        assert!(p.is_done(12) && !p.is_done(10));
        p.complete(10, None);
        assert_eq!(p.next(), 13);
        p.complete(14, None);
        assert_eq!(p.next(), 13);
    }

    #[test]
    fn scan_from_covers_every_listing_above_next() {
        let mut p = Progress::new(0, BTreeMap::from([(0, 100), (1, 200), (2, 300)]));
        assert_eq!(
            p.scan_from(),
            BTreeMap::from([(0, 100), (1, 200), (2, 300)])
        );
        p.complete(1, at(0, 101));
        p.complete(2, at(0, 102));
        p.complete(3, at(1, 200));
        // id 0 is still pending: the listings of 1, 2, 3 must stay findable.
        assert_eq!(
            p.scan_from(),
            BTreeMap::from([(0, 101), (1, 200), (2, 300)])
        );
        p.complete(0, at(2, 300));
        // Everything is below next: scanning starts past the last acknowledged offsets.
        assert_eq!(p.next(), 4);
        assert_eq!(
            p.scan_from(),
            BTreeMap::from([(0, 103), (1, 201), (2, 301)])
        );
    }

    #[test]
    fn a_completion_below_next_changes_nothing_but_the_acked_offsets() {
        let mut p = Progress::new(5, BTreeMap::new());
        p.complete(3, at(0, 9));
        assert_eq!(p.next(), 5);
        assert_eq!(p.scan_from(), BTreeMap::from([(0, 10)]));
    }

    #[test]
    fn a_listing_acknowledged_but_not_settled_stays_findable() {
        // 11 and 12 land on partition 0 in one batch, 12 at 101 after 11 at 100, but the task
        // of 12 is joined first; 10 is still being fetched.
        let mut p = Progress::new(10, BTreeMap::from([(0, 100), (1, 50)]));
        for id in 10..=12 {
            p.start(id);
        }
        p.complete(12, at(0, 101));
        assert_eq!(
            p.scan_from(),
            BTreeMap::from([(0, 100), (1, 50)]),
            "a checkpoint now must lead a restart to 11's listing at 100"
        );
        // Now 11 is joined before 12 and next passes both: 12's listing (at 100, before 11's)
        // is still unsettled.
        let mut p = Progress::new(10, BTreeMap::from([(0, 100)]));
        for id in 10..=12 {
            p.start(id);
        }
        p.complete(10, None);
        p.complete(11, at(0, 101));
        assert_eq!(p.next(), 12);
        assert_eq!(p.scan_from(), BTreeMap::from([(0, 100)]));
        p.complete(12, at(0, 100));
        assert_eq!(p.scan_from(), BTreeMap::from([(0, 102)]));
    }

    #[test]
    fn an_id_started_and_never_settled_keeps_its_bound() {
        let mut p = Progress::new(0, BTreeMap::from([(0, 10)]));
        p.start(0);
        p.complete(0, at(0, 10));
        p.start(1); // aborted at the grace period: its record may still land at 11 or later
        p.start(2);
        p.complete(2, at(0, 12));
        assert_eq!(p.scan_from(), BTreeMap::from([(0, 11)]));
        // An id started before any partition was known may be anywhere.
        let mut p = Progress::new(0, BTreeMap::new());
        p.start(0);
        p.start(1);
        p.complete(1, at(0, 3));
        assert_eq!(p.scan_from(), BTreeMap::new());
    }

    /// A crawl against a model of the brokers: ids start in order, their listings are produced
    /// in any order (each partition's offsets in the order they are produced), and each id is
    /// settled in any order once its listing is acknowledged. Whenever a checkpoint could be
    /// written, every listing of an id at or above its `next` is at or past its `scan_from`.
    mod model {
        use super::*;
        use proptest::prelude::*;

        const PARTITIONS: i32 = 3;
        const FLOOR: i64 = 100;

        struct World {
            /// Per id, the partition of its listing (none: the id produces nothing).
            outcomes: Vec<Option<i32>>,
            progress: Progress,
            started: usize,
            /// Started ids whose listing is not produced yet.
            unsent: Vec<i64>,
            /// Ids that may be settled, with where their listing landed.
            unsettled: Vec<(i64, Option<Delivered>)>,
            /// The listings topic: each listing's id and place.
            topic: Vec<(i64, Delivered)>,
            ends: BTreeMap<i32, i64>,
        }

        impl World {
            fn start(&mut self) -> bool {
                let Some(outcome) = self.outcomes.get(self.started).copied() else {
                    return false;
                };
                let id = i64::try_from(self.started).unwrap();
                self.progress.start(id);
                match outcome {
                    Some(_) => self.unsent.push(id),
                    None => self.unsettled.push((id, None)),
                }
                self.started += 1;
                true
            }

            fn produce(&mut self, pick: usize) -> bool {
                if self.unsent.is_empty() {
                    return false;
                }
                let id = self.unsent.swap_remove(pick % self.unsent.len());
                let partition = self.outcomes[usize::try_from(id).unwrap()].unwrap();
                let end = self.ends.get_mut(&partition).unwrap();
                let delivered = Delivered {
                    partition,
                    offset: *end,
                };
                *end += 1;
                self.topic.push((id, delivered));
                self.unsettled.push((id, Some(delivered)));
                true
            }

            fn settle(&mut self, pick: usize) -> bool {
                if self.unsettled.is_empty() {
                    return false;
                }
                let (id, delivered) = self.unsettled.swap_remove(pick % self.unsettled.len());
                self.progress.complete(id, delivered);
                true
            }

            /// Whether a restart from a checkpoint written now finds every listing it must.
            fn check(&self) -> Result<(), TestCaseError> {
                let (next, scan_from) = (self.progress.next(), self.progress.scan_from());
                for (id, d) in self.topic.iter().filter(|(id, _)| *id >= next) {
                    let from = scan_from.get(&d.partition).copied().unwrap_or(0);
                    prop_assert!(
                        from <= d.offset,
                        "the listing of {} at {:?} is below scan_from {:?} (next {})",
                        id,
                        d,
                        scan_from,
                        next
                    );
                }
                Ok(())
            }
        }

        proptest! {
            #[test]
            fn every_listing_above_next_is_at_or_past_scan_from(
                outcomes in prop::collection::vec(prop::option::of(0..PARTITIONS), 1..40),
                steps in prop::collection::vec((0u8..3, any::<usize>()), 1..300),
            ) {
                let ends: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, FLOOR)).collect();
                let mut world = World {
                    outcomes,
                    progress: Progress::new(0, ends.clone()),
                    started: 0,
                    unsent: Vec::new(),
                    unsettled: Vec::new(),
                    topic: Vec::new(),
                    ends,
                };
                for (action, pick) in steps {
                    let acted = match action {
                        0 => world.start(),
                        1 => world.produce(pick),
                        _ => world.settle(pick),
                    };
                    if acted {
                        world.check()?;
                    }
                }
                // Then the rest of the crawl, in order.
                while world.start() || world.produce(0) || world.settle(0) {
                    world.check()?;
                }
                prop_assert_eq!(world.progress.next(), i64::try_from(world.outcomes.len()).unwrap());
                prop_assert_eq!(world.progress.scan_from(), world.ends.clone());
            }
        }
    }

    #[test]
    fn checkpoints_round_trip_as_json() {
        let c = Checkpoint {
            crawl_id: "c".into(),
            from_id: 1,
            to_id: Some(9),
            next_id: 4,
            finished: false,
            scan_from: BTreeMap::from([(0, 3)]),
            updated_at: 5,
        };
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(serde_json::from_slice::<Checkpoint>(&json).unwrap(), c);
    }
}
