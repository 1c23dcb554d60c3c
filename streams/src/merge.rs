//! The merge stage: owns a share of the sums (the partials topic is partitioned by the sum's key,
//! and split over the instances by a second consumer group), keeps the latest share of each
//! input partition per sum, and emits their total to `listing-sums` as Avro through the registry.
//!
//! Its state is the partials topic itself: on every assignment it reads its partitions from the
//! beginning (it never commits offsets), keeping per (sum, input partition) the share of the
//! highest version. Taking the highest version is idempotent and order-free, so duplicates, late
//! writers and replays leave the totals exact; every total is emitted again after an assignment,
//! so one lost in a crash is replaced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::config::Config;
use marketflow_core::kafka::{ClientError, consumer_config};
use marketflow_core::record::ListingSumKey;
use marketflow_core::schema::{self, Part};
use marketflow_core::sync::lock;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{OutOfRange, Summary};
use crate::changelog::{FormatError, decode_partial, decode_partial_key, owner_partition};
use crate::control::Control;
use crate::output::{Output, OutputError};

/// What stopped the merge stage.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The consumer could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The consumer failed.
    #[error("consuming topic {topic} failed: {source}")]
    Consume {
        /// The partials topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// A partial sum does not decode: fatal.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Writing failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A sum could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Everything the merge stage needs, built by [`crate::run`].
pub struct MergeSetup {
    /// The whole configuration.
    pub config: Config,
    /// The codec.
    pub codec: Arc<Codec>,
    /// The runtime, for the codec's async calls.
    pub runtime: Handle,
    /// The producer of the sums.
    pub output: Output,
    /// Partition count of the partials topic.
    pub partials_partitions: i32,
    /// Shared with the admin routes.
    pub control: Arc<Control>,
}

/// Each input partition's latest share of one sum, by input partition: (version, share).
type Shares = BTreeMap<i32, (i64, Summary)>;

struct Engine {
    setup: MergeSetup,
    sums: HashMap<ListingSumKey, Shares>,
    dirty: BTreeSet<ListingSumKey>,
    emitted: Arc<AtomicU64>,
    fatal: Option<MergeError>,
    last_flush: Instant,
}

struct Context {
    engine: Mutex<Engine>,
}

impl Context {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
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
        let topic = engine.setup.config.streams.partials_topic.clone();
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            // Read each assigned partition again from its beginning into fresh state.
            let mut assignment = TopicPartitionList::new();
            let partitions = engine.setup.partials_partitions;
            let assigned: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            engine
                .sums
                .retain(|key, _| !assigned.contains(&owner_partition(key, partitions)));
            let assigned_from_beginning = assigned
                .iter()
                .try_for_each(|p| assignment.add_partition_offset(&topic, *p, Offset::Beginning))
                .and_then(|()| consumer.assign(&assignment));
            if let Err(source) = assigned_from_beginning {
                engine.fail(MergeError::Consume { topic, source });
            }
            tracing::info!(partitions = ?assigned, "Sums assigned.");
        } else {
            // Let every emitted total land before another instance takes the sums over.
            if let Err(error) = engine.setup.output.flush() {
                engine.fail(error.into());
            }
            engine.sums.clear();
            engine.dirty.clear();
            // Still reading partitions another instance now owns would emit stale totals.
            if let Err(source) = consumer.unassign() {
                engine.fail(MergeError::Consume { topic, source });
            }
            tracing::info!("Sums revoked.");
        }
        engine.publish();
    }
}

impl Engine {
    fn fail(&mut self, error: MergeError) {
        tracing::error!(%error, "Merge stage failing.");
        if self.fatal.is_none() {
            self.fatal = Some(error);
        }
    }

    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), MergeError> {
        let topic = message.topic();
        let (Some(key), Some(value)) = (message.key(), message.payload()) else {
            return Ok(());
        };
        let (key, source) = decode_partial_key(topic, key)?;
        let (version, share) = decode_partial(topic, value)?;
        let shares = self.sums.entry(key.clone()).or_default();
        let changed = match shares.get(&source) {
            Some((held, _)) if *held > version => return Ok(()),
            Some((_, held)) => *held != share,
            None => true,
        };
        shares.insert(source, (version, share));
        if changed {
            self.dirty.insert(key);
        }
        Ok(())
    }

    /// Emits the total of every sum that changed since the last flush.
    fn flush(&mut self) -> Result<(), MergeError> {
        self.last_flush = Instant::now();
        let topic = self.setup.config.topics.listing_sums.clone();
        let keys = self
            .setup
            .codec
            .encoder(&topic, Part::Key, schema::LISTING_SUM_KEY);
        let values = self
            .setup
            .codec
            .encoder(&topic, Part::Value, schema::LISTING_SUM);
        for key in std::mem::take(&mut self.dirty) {
            let Some(shares) = self.sums.get(&key) else {
                continue;
            };
            let record = Summary::merge(shares.values().map(|(_, share)| share))
                .ok_or_else(|| OutOfRange {
                    scope: key.scope.clone(),
                    value: key.value.clone(),
                    detail: "adding the partitions' shares overflows".into(),
                })
                .and_then(|total| total.to_record(&key));
            let record = match record {
                Ok(record) => record,
                Err(error) => {
                    // A wrong figure is worse than none; an operator must look.
                    tracing::error!(%error, "Sum not emitted.");
                    metrics::counter!("streams_sums_out_of_range_total").increment(1);
                    continue;
                }
            };
            let encoded_key = self.setup.runtime.block_on(keys.encode(&key))?;
            let encoded_value = self.setup.runtime.block_on(values.encode(&record))?;
            self.setup
                .output
                .send(&topic, None, &encoded_key, &encoded_value)?;
            metrics::counter!("streams_sums_emitted_total").increment(1);
            self.emitted.fetch_add(1, Ordering::Relaxed);
        }
        self.setup.output.check()?;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        metrics::gauge!("streams_state_sums").set(self.sums.len() as f64);
        let owned = self.sums.len();
        let emitted = self.emitted.load(Ordering::Relaxed);
        self.setup.control.update(|s| {
            s.sums_owned = owned;
            s.sums_emitted = emitted;
        });
    }
}

/// The merge stage.
pub struct Merger {
    consumer: BaseConsumer<Context>,
    shutdown: CancellationToken,
}

impl Merger {
    /// Builds the stage: its consumer, in group `<streams.group_id>-merge`.
    ///
    /// # Errors
    /// [`MergeError`] when the consumer cannot be built.
    pub fn new(setup: MergeSetup, shutdown: CancellationToken) -> Result<Self, MergeError> {
        let group = format!("{}-merge", setup.config.streams.group_id);
        let mut config = consumer_config(&setup.config.kafka, &group)?;
        config.set("isolation.level", "read_committed");
        let engine = Engine {
            setup,
            sums: HashMap::new(),
            dirty: BTreeSet::new(),
            emitted: Arc::new(AtomicU64::new(0)),
            fatal: None,
            last_flush: Instant::now(),
        };
        let consumer: BaseConsumer<Context> = config
            .create_with_context(Context {
                engine: Mutex::new(engine),
            })
            .map_err(|e| MergeError::Client(ClientError::Kafka(e)))?;
        Ok(Self { consumer, shutdown })
    }

    /// Runs until `shutdown` is cancelled or a fatal error.
    ///
    /// # Errors
    /// [`MergeError`]; a restart rebuilds the totals from the partials topic.
    pub fn run(self) -> Result<(), MergeError> {
        let context = self.consumer.context();
        let (topic, interval) = {
            let engine = context.engine();
            let streams = &engine.setup.config.streams;
            (streams.partials_topic.clone(), streams.commit_interval)
        };
        self.consumer
            .subscribe(&[&topic])
            .map_err(|source| MergeError::Consume {
                topic: topic.clone(),
                source,
            })?;
        tracing::info!(%topic, "Merge stage started.");
        let outcome = self.work(&topic, interval);
        let ended = {
            let mut engine = context.engine();
            let flushed = engine.flush();
            flushed.and_then(|()| Ok(engine.setup.output.flush()?))
        };
        self.consumer.unsubscribe();
        crate::worker::serve_revocation(&self.consumer, &topic);
        outcome.and(ended)
    }

    fn work(&self, topic: &str, interval: Duration) -> Result<(), MergeError> {
        let context = self.consumer.context();
        while !self.shutdown.is_cancelled() {
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
                engine.flush()?;
            }
        }
        Ok(())
    }
}
