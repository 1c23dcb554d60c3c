//! The aggregation stage: reads `listings` in the consumer group, filters, forwards accepted
//! listings to `listings-affordable`, keeps each input partition's state (see [`crate::state`]),
//! writes every state change to the changelog and each partition's share of the touched sums to
//! the partials topic.
//!
//! It runs on its own thread with a `BaseConsumer`, so that the rebalance callback, which runs
//! inside `poll` on that thread, can restore a partition's state before the partition's first
//! record is read, and make everything durable before a partition is given away.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use marketflow_core::codec::{Codec, CodecError, schema_id};
use marketflow_core::config::{Config, StreamsGuarantee};
use marketflow_core::kafka::{ClientError, consumer_config};
use marketflow_core::record::{Listing, ListingKey, ListingSumKey};
use marketflow_core::schema::{self, Part};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregator, Applied, Scoping, Version};
use crate::changelog::{
    change_key, encode_change, encode_partial, encode_partial_key, owner_partition,
};
use crate::control::{Control, PartitionStatus};
use crate::filter::{DropReason, Verdict};
use crate::input::{Fields, InputDecoder};
use crate::output::{Output, OutputError};
use crate::state::{Restorer, StateError};

/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How often, without transactions, the input offsets are committed. Each commit first waits
/// for every delivery, which stalls the stage; a restart reads again, only to forward it, at most
/// this much input.
const OFFSETS_COMMIT_INTERVAL: Duration = Duration::from_secs(30);
/// How long asking the group's committed offsets may take at assignment.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a restore, or a registry call, is tried before the stage gives up.
const ATTEMPTS: u32 = 5;

/// What stopped the aggregation stage.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The consumer could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The consumer failed.
    #[error("consuming topic {topic} failed: {source}")]
    Consume {
        /// The input topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// Writing failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A partition's state could not be restored.
    #[error(transparent)]
    State(#[from] StateError),
    /// The consumer has no group metadata to commit a transaction with.
    #[error("the consumer has no group metadata to commit the transaction's offsets with")]
    NoGroupMetadata,
    /// The registry stayed unreachable.
    #[error("decoding a record of topic {topic} failed: {source}")]
    Codec {
        /// The topic of the record.
        topic: String,
        /// What the codec said.
        source: CodecError,
    },
}

/// The schema ids the forwarded listings must carry on `listings-affordable`.
#[derive(Debug, Clone, Copy)]
pub struct ForwardIds {
    key: u32,
    value: u32,
}

/// Registers the listing schemas under the affordable topic's subjects, so that its records
/// decode through the registry under TopicNameStrategy, and returns their ids.
///
/// # Errors
/// [`CodecError`] when the registry refuses or is unreachable.
pub async fn register_forward(codec: &Codec, topic: &str) -> Result<ForwardIds, CodecError> {
    let key = codec
        .encoder(topic, Part::Key, schema::LISTING_KEY)
        .encode(&ListingKey { product_id: 0 })
        .await?;
    let value = codec
        .encoder(topic, Part::Value, schema::LISTING)
        .encode(&sample_listing())
        .await?;
    Ok(ForwardIds {
        key: schema_id(&key)?,
        value: schema_id(&value)?,
    })
}

fn sample_listing() -> Listing {
    Listing {
        condition: "unknown".into(),
        sale_status: "unknown".into(),
        ..Listing::default()
    }
}

/// Everything the aggregation stage needs, built by [`crate::run`].
pub struct Setup {
    /// The whole configuration.
    pub config: Config,
    /// The codec, shared with the merge stage.
    pub codec: Arc<Codec>,
    /// The runtime, for the codec's async calls.
    pub runtime: Handle,
    /// The producer (transactional under `exactly_once`).
    pub output: Output,
    /// Schema ids of the affordable topic.
    pub forward: ForwardIds,
    /// Partition count of the partials topic.
    pub partials_partitions: i32,
    /// Shared with the admin routes.
    pub control: Arc<Control>,
    /// Counts input records, for the status.
    pub records_in: Arc<AtomicU64>,
}

struct Owned {
    state: Aggregator,
    dirty: BTreeSet<ListingSumKey>,
    lag: Option<i64>,
    /// The last input offset processed, whether it changed the state or not: what the group's
    /// committed offset moves to once everything sent for it is delivered.
    processed: Option<i64>,
}

/// The stage's state, behind the consumer context so that the rebalance callback reaches it.
struct Engine {
    setup: Setup,
    input: InputDecoder,
    scoping: Scoping,
    restorer: Restorer,
    parts: BTreeMap<i32, Owned>,
    in_transaction: bool,
    paused: bool,
    fatal: Option<WorkerError>,
    last_flush: Instant,
    last_offsets_commit: Instant,
    last_lag: Instant,
}

struct Context {
    engine: Mutex<Engine>,
}

impl Context {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut engine = self.engine();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assignment = engine.assign(consumer, tpl);
                if let Err(source) = consumer.assign(&assignment) {
                    let topic = engine.setup.config.topics.listings.clone();
                    engine.fail(WorkerError::Consume { topic, source });
                }
                if engine.paused {
                    let _ = consumer.pause(&assignment);
                }
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(error = ?err, "Rebalance failed; giving up the partitions.");
                }
                // After a failure nothing more is made durable: the failed record's offset
                // must not be committed.
                if engine.fatal.is_none() {
                    let flushed = engine
                        .flush(consumer, true)
                        .and_then(|()| Ok(engine.setup.output.flush()?));
                    if let Err(error) = flushed {
                        engine.fail(error);
                    }
                }
                engine.parts.clear();
                engine.publish();
                let _ = consumer.unassign();
                tracing::info!("Partitions revoked.");
            }
        }
    }
}

impl Engine {
    fn fail(&mut self, error: WorkerError) {
        tracing::error!(%error, "Aggregation stage failing.");
        if self.fatal.is_none() {
            self.fatal = Some(error);
        }
    }

    /// Restores each assigned partition and returns the assignment starting at the group's
    /// committed offset: everything before it was processed and everything sent for it delivered
    /// (the producer is flushed before each commit). Input between that offset and the position
    /// the restored state reflects is read again only to forward it (see `process`); with no
    /// committed offset, from the beginning.
    fn assign(
        &mut self,
        consumer: &BaseConsumer<Context>,
        tpl: &TopicPartitionList,
    ) -> TopicPartitionList {
        let topic = self.setup.config.topics.listings.clone();
        let mut positioned = TopicPartitionList::new();
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut restored = self.restorer.restore(&partitions);
        let mut attempt = 1;
        while let Err(error) = &restored
            && error.is_retryable()
            && attempt < ATTEMPTS
        {
            tracing::warn!(%error, attempt, "Restore failed; retrying.");
            std::thread::sleep(Duration::from_secs(1));
            restored = self.restorer.restore(&partitions);
            attempt += 1;
        }
        let states = match restored {
            Ok(states) => states,
            Err(error) => {
                self.fail(error.into());
                return positioned;
            }
        };
        let committed: BTreeMap<i32, i64> = match consumer
            .committed_offsets(tpl.clone(), COMMITTED_TIMEOUT)
        {
            Ok(list) => list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some((e.partition(), offset)),
                    _ => None,
                })
                .collect(),
            Err(error) => {
                // Reading from the beginning only forwards again what was forwarded: safe.
                tracing::warn!(%error, "Committed offsets unknown; reading the partitions from the beginning.");
                BTreeMap::new()
            }
        };
        for (partition, state) in states {
            let start = committed
                .get(&partition)
                .map_or(Offset::Beginning, |c| Offset::Offset(*c));
            // Re-announce every share: one sent before a crash may not have landed.
            let dirty = state.keys_summed().cloned().collect();
            self.parts.insert(
                partition,
                Owned {
                    state,
                    dirty,
                    lag: None,
                    processed: None,
                },
            );
            if let Err(source) = positioned.add_partition_offset(&topic, partition, start) {
                self.fail(WorkerError::Consume {
                    topic: topic.clone(),
                    source,
                });
            }
        }
        // The first commit comes a full interval after input starts flowing, not mid-burst.
        self.last_offsets_commit = Instant::now();
        tracing::info!(partitions = ?self.parts.keys().collect::<Vec<_>>(), "Partitions assigned.");
        self.publish();
        positioned
    }

    /// Processes one input record.
    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), WorkerError> {
        let partition = message.partition();
        let offset = message.offset();
        let timestamp = message.timestamp().to_millis().unwrap_or(0);
        metrics::counter!("streams_records_in_total").increment(1);
        self.setup.records_in.fetch_add(1, Ordering::Relaxed);
        let Some(part) = self.parts.get(&partition) else {
            return Ok(());
        };
        // The state already reflects this record: it is read again only to forward it, since
        // its forward may not have been delivered before a crash (at least once).
        let replayed = part.state.position().is_some_and(|p| offset <= p);
        let (fields, product_id) = match self.decode(message)? {
            Some(decoded) => decoded,
            None => {
                if !replayed {
                    metrics::counter!("streams_records_dropped_total", "reason" => DropReason::Undecodable.label())
                        .increment(1);
                }
                self.processed(partition, offset);
                return Ok(());
            }
        };
        let version = fields.as_ref().map(|f| Version {
            price: f.price,
            category: f.category.as_deref(),
        });
        let (verdict, change) = self.scoping.change_of(
            offset,
            timestamp,
            product_id,
            version,
            self.setup.config.streams.max_price,
        );
        if replayed {
            metrics::counter!("streams_records_skipped_total").increment(1);
            if let Some(Verdict::Accept(_)) = verdict {
                self.begin()?;
                self.forward(message)?;
            }
            self.processed(partition, offset);
            return Ok(());
        }
        if let Some(Verdict::Drop(reason)) = verdict {
            metrics::counter!("streams_records_dropped_total", "reason" => reason.label())
                .increment(1);
        }
        self.begin()?;
        let Some(part) = self.parts.get_mut(&partition) else {
            return Ok(());
        };
        let (applied, touched) = part.state.apply(&change);
        if applied == Applied::Changed {
            let key = change_key(self.scoping.semantics, &change);
            let value = encode_change(&self.scoping, &change);
            self.setup.output.send(
                &self.setup.config.streams.changelog_topic,
                Some(partition),
                &key,
                &value,
            )?;
            part.dirty.extend(touched);
        }
        if let Some(Verdict::Accept(_)) = verdict {
            self.forward(message)?;
        }
        self.processed(partition, offset);
        Ok(())
    }

    /// Notes that `offset` of `partition` is processed (its effects sent).
    fn processed(&mut self, partition: i32, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.processed = Some(offset);
        }
    }

    /// The fields of the listing (`None` for a tombstone) and its product id; `Ok(None)` when
    /// the record does not decode and never will. Retries while the registry is unreachable.
    fn decode(
        &mut self,
        message: &BorrowedMessage<'_>,
    ) -> Result<Option<(Option<Fields>, i64)>, WorkerError> {
        let mut attempt = 1;
        loop {
            let decoded = match (message.payload(), message.key()) {
                (Some(value), _) => self.input.value(value).map(|f| {
                    let id = f.product_id;
                    (Some(f), id)
                }),
                (None, Some(key)) => self.input.key(key).map(|id| (None, id)),
                (None, None) => return Ok(None),
            };
            match decoded {
                Ok(decoded) => return Ok(Some(decoded)),
                Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "Registry call failed; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(source) if source.is_retryable() => {
                    return Err(WorkerError::Codec {
                        topic: message.topic().to_owned(),
                        source,
                    });
                }
                Err(error) => {
                    // Data loss for the sums and the affordable topic: an operator must look.
                    tracing::error!(
                        partition = message.partition(),
                        offset = message.offset(),
                        class = error.class(),
                        %error,
                        "Record dropped: it does not decode."
                    );
                    return Ok(None);
                }
            }
        }
    }

    /// Sends an accepted listing to the affordable topic: the input's bytes when they carry the
    /// schema ids registered there, re-encoded otherwise.
    fn forward(&self, message: &BorrowedMessage<'_>) -> Result<(), WorkerError> {
        let topic = &self.setup.config.topics.listings_affordable;
        let ids = self.setup.forward;
        let carries =
            |bytes: Option<&[u8]>, id| bytes.is_some_and(|b| schema_id(b).ok() == Some(id));
        if let (Some(key), Some(value)) = (message.key(), message.payload())
            && carries(Some(key), ids.key)
            && carries(Some(value), ids.value)
        {
            self.setup.output.send(topic, None, key, value)?;
        } else {
            // Another writer schema: decode the whole listing and encode it with the contract's.
            let codec_error = |source| WorkerError::Codec {
                topic: topic.clone(),
                source,
            };
            let codec = &self.setup.codec;
            let payload = message.payload().unwrap_or_default();
            let listing: Listing = self
                .setup
                .runtime
                .block_on(codec.decode(payload))
                .map_err(codec_error)?;
            let key = codec.encoder(topic, Part::Key, schema::LISTING_KEY);
            let value = codec.encoder(topic, Part::Value, schema::LISTING);
            let key = self
                .setup
                .runtime
                .block_on(key.encode(&listing.key()))
                .map_err(codec_error)?;
            let value = self
                .setup
                .runtime
                .block_on(value.encode(&listing))
                .map_err(codec_error)?;
            self.setup.output.send(topic, None, &key, &value)?;
        }
        metrics::counter!("streams_listings_forwarded_total").increment(1);
        Ok(())
    }

    fn begin(&mut self) -> Result<(), WorkerError> {
        if self.setup.config.streams.guarantee == StreamsGuarantee::ExactlyOnce
            && !self.in_transaction
        {
            self.setup.output.begin()?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Sends each partition's share of the sums it touched since the last flush, then commits
    /// the input offsets processed: with the transaction under `exactly_once`, else once the
    /// producer has delivered everything sent for them (forwards and changelog records), so that
    /// a restart from the committed offset loses no forward.
    fn flush(&mut self, consumer: &BaseConsumer<Context>, last: bool) -> Result<(), WorkerError> {
        self.last_flush = Instant::now();
        self.begin()?;
        let partials_topic = self.setup.config.streams.partials_topic.clone();
        let mut offsets = TopicPartitionList::new();
        for (partition, part) in &mut self.parts {
            if let Some(processed) = part.processed {
                offsets
                    .add_partition_offset(
                        &self.setup.config.topics.listings,
                        *partition,
                        Offset::Offset(processed + 1),
                    )
                    .map_err(|source| WorkerError::Consume {
                        topic: self.setup.config.topics.listings.clone(),
                        source,
                    })?;
            }
            let Some(position) = part.state.position() else {
                continue;
            };
            for key in std::mem::take(&mut part.dirty) {
                let value = encode_partial(position, &part.state.summary(&key));
                let owner = owner_partition(&key, self.setup.partials_partitions);
                self.setup.output.send(
                    &partials_topic,
                    Some(owner),
                    &encode_partial_key(&key, *partition),
                    &value,
                )?;
                metrics::counter!("streams_partials_sent_total").increment(1);
            }
        }
        if self.in_transaction {
            let group = consumer
                .group_metadata()
                .ok_or(WorkerError::NoGroupMetadata)?;
            self.setup.output.commit(&offsets, &group)?;
            self.in_transaction = false;
        } else if offsets.count() > 0
            && (last || self.last_offsets_commit.elapsed() >= OFFSETS_COMMIT_INTERVAL)
        {
            // Waiting for every delivery stalls this stage, so it is done seldom: a crash only
            // means forwarding again what came after the last commit.
            self.last_offsets_commit = Instant::now();
            self.setup.output.flush()?;
            // Asynchronous is enough: a commit lost to a crash only means reading again, and
            // forwarding again, what the state already reflects.
            let _ = consumer.commit(&offsets, CommitMode::Async);
        }
        self.setup.output.check()?;
        if self.last_lag.elapsed() >= LAG_INTERVAL {
            self.measure_lag(consumer);
        }
        self.publish();
        Ok(())
    }

    fn measure_lag(&mut self, consumer: &BaseConsumer<Context>) {
        self.last_lag = Instant::now();
        let topic = &self.setup.config.topics.listings;
        let mut total = 0;
        for (partition, part) in &mut self.parts {
            if let Ok((_, high)) =
                consumer.fetch_watermarks(topic, *partition, Duration::from_secs(2))
            {
                let next = part.state.position().map_or(0, |p| p + 1);
                part.lag = Some((high - next).max(0));
                total += (high - next).max(0);
            }
        }
        metrics::gauge!("streams_consumer_lag").set(total as f64);
    }

    /// Publishes the stage's state to the status and the gauges.
    fn publish(&self) {
        let products: usize = self.parts.values().map(|p| p.state.products()).sum();
        metrics::gauge!("streams_state_products").set(products as f64);
        let records_in = self.setup.records_in.load(Ordering::Relaxed);
        let partitions = self
            .parts
            .iter()
            .map(|(p, part)| {
                let status = PartitionStatus {
                    position: part.state.position(),
                    products: part.state.products(),
                    lag: part.lag,
                };
                (*p, status)
            })
            .collect();
        self.setup.control.update(|s| {
            s.partitions = partitions;
            s.records_in = records_in;
        });
    }
}

/// The aggregation stage.
pub struct Worker {
    consumer: BaseConsumer<Context>,
    shutdown: CancellationToken,
}

impl Worker {
    /// Builds the stage: its consumer (in `streams.group_id`, `read_committed`) and its state.
    ///
    /// # Errors
    /// [`WorkerError`] when the consumer cannot be built.
    pub fn new(setup: Setup, shutdown: CancellationToken) -> Result<Self, WorkerError> {
        let streams = &setup.config.streams;
        let scoping = Scoping {
            semantics: streams.semantics,
            category_level: streams.category_level,
        };
        let restorer = Restorer::new(
            &setup.config.kafka,
            &streams.changelog_topic,
            scoping.clone(),
        )?;
        let mut config = consumer_config(&setup.config.kafka, &streams.group_id)?;
        config.set("isolation.level", "read_committed");
        let input = InputDecoder::new(
            setup.codec.clone(),
            setup.runtime.clone(),
            streams.category_level,
        );
        let engine = Engine {
            input,
            scoping,
            restorer,
            parts: BTreeMap::new(),
            in_transaction: false,
            paused: false,
            fatal: None,
            last_flush: Instant::now(),
            last_offsets_commit: Instant::now(),
            last_lag: Instant::now(),
            setup,
        };
        let consumer: BaseConsumer<Context> = config
            .create_with_context(Context {
                engine: Mutex::new(engine),
            })
            .map_err(|e| WorkerError::Client(ClientError::Kafka(e)))?;
        Ok(Self { consumer, shutdown })
    }

    /// Runs until `shutdown` is cancelled or a fatal error.
    ///
    /// # Errors
    /// [`WorkerError`]; the durable state stays consistent, a restart resumes from it.
    pub fn run(self) -> Result<(), WorkerError> {
        let topic = self
            .consumer
            .context()
            .engine()
            .setup
            .config
            .topics
            .listings
            .clone();
        let interval = self
            .consumer
            .context()
            .engine()
            .setup
            .config
            .streams
            .commit_interval;
        self.consumer
            .subscribe(&[&topic])
            .map_err(|source| WorkerError::Consume {
                topic: topic.clone(),
                source,
            })?;
        tracing::info!(%topic, "Aggregation stage started.");
        let outcome = self.work(&topic, interval);
        // Leave the group cleanly: the revoke callback makes everything durable.
        let ended = {
            let mut engine = self.consumer.context().engine();
            // After a failure nothing more is made durable: the failed record's offset must not
            // be committed (an open transaction is aborted by the broker when the next instance
            // initialises the same transactional id, or when it times out).
            let flushed = if outcome.is_ok() && engine.fatal.is_none() {
                engine
                    .flush(&self.consumer, true)
                    .and_then(|()| Ok(engine.setup.output.flush()?))
            } else {
                Ok(())
            };
            engine.parts.clear();
            flushed
        };
        self.consumer.unsubscribe();
        let _ = self.consumer.poll(Duration::from_millis(100));
        outcome.and(ended)
    }

    fn work(&self, topic: &str, interval: Duration) -> Result<(), WorkerError> {
        let context = self.consumer.context();
        while !self.shutdown.is_cancelled() {
            self.follow_control()?;
            match self.consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Ok(message)) => context.engine().process(&message)?,
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(error)) => tracing::warn!(%topic, %error, "Consumer error; continuing."),
            }
            let mut engine = context.engine();
            if let Some(error) = engine.fatal.take() {
                return Err(error);
            }
            if engine.last_flush.elapsed() >= interval {
                engine.flush(&self.consumer, false)?;
            }
        }
        Ok(())
    }

    fn follow_control(&self) -> Result<(), WorkerError> {
        let mut engine = self.consumer.context().engine();
        let wanted = engine.setup.control.paused();
        if wanted == engine.paused {
            return Ok(());
        }
        let assignment = self
            .consumer
            .assignment()
            .map_err(|source| WorkerError::Consume {
                topic: engine.setup.config.topics.listings.clone(),
                source,
            })?;
        let changed = if wanted {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        changed.map_err(|source| WorkerError::Consume {
            topic: engine.setup.config.topics.listings.clone(),
            source,
        })?;
        engine.paused = wanted;
        Ok(())
    }
}
