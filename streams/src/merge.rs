//! The merge stage: owns a share of the sums (the partials topic is partitioned by the sum's key,
//! and split over the instances by a second consumer group), keeps the latest share of each
//! input partition per sum, and emits their total to `listing-sums` as Avro through the registry.
//!
//! Its state is the partials topic itself: on every assignment it reads its partitions from the
//! beginning (it never commits offsets), keeping per (sum, input partition) the share of the
//! highest version. Taking the highest version is idempotent and order-free, so duplicates, late
//! writers and replays leave the totals exact; every total is emitted again after an assignment,
//! so one lost in a crash is replaced. It is a [`Stage`] of [`crate::driver`], as the aggregation
//! stage is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::config::Config;
use marketflow_core::kafka::{ClientError, consumer_config};
use marketflow_core::metric;
use marketflow_core::record::{ListingSum, ListingSumKey};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{OutOfRange, Summary};
use crate::changelog::{FormatError, decode_partial, decode_partial_key, owner_partition};
use crate::control::Control;
use crate::driver::{Driver, Stage, StageConsumer};
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
}

impl Stage for Engine {
    type Error = MergeError;

    const NAME: &'static str = "Merge stage";

    fn topic(&self) -> &str {
        &self.setup.config.streams.partials_topic
    }

    fn consume_error(&self, source: KafkaError) -> MergeError {
        MergeError::Consume {
            topic: self.setup.config.streams.partials_topic.clone(),
            source,
        }
    }

    fn fatal_slot(&mut self) -> &mut Option<MergeError> {
        &mut self.fatal
    }

    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), MergeError> {
        self.take_share(message)
    }

    fn flush(&mut self, _consumer: &StageConsumer<Self>) -> Result<(), MergeError> {
        self.emit()
    }

    /// Reads each assigned partition again from its beginning into fresh state.
    fn assigned(
        &mut self,
        _consumer: &StageConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> TopicPartitionList {
        let topic = self.setup.config.streams.partials_topic.clone();
        let partitions = self.setup.partials_partitions;
        let assigned: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        self.sums
            .retain(|key, _| !assigned.contains(&owner_partition(key, partitions)));
        let mut assignment = TopicPartitionList::new();
        if let Err(source) = assigned
            .iter()
            .try_for_each(|p| assignment.add_partition_offset(&topic, *p, Offset::Beginning))
        {
            self.fail(MergeError::Consume { topic, source });
        }
        tracing::info!(partitions = ?assigned, "Sums assigned.");
        self.publish();
        assignment
    }

    /// Lets every emitted total land before another instance takes the sums over.
    fn revoked(&mut self, _consumer: &StageConsumer<Self>, _err: RDKafkaRespErr) {
        if let Err(error) = self.setup.output.flush() {
            self.fail(error.into());
        }
        self.sums.clear();
        self.dirty.clear();
        tracing::info!("Sums revoked.");
        self.publish();
    }

    /// Emits what changed and waits for it to land, failed or not: the totals are right
    /// whatever stopped the stage (a restart rebuilds them from the partials topic).
    fn stop(&mut self, _consumer: &StageConsumer<Self>, _clean: bool) -> Result<(), MergeError> {
        self.emit()?;
        Ok(self.setup.output.flush()?)
    }
}

impl Engine {
    fn take_share(&mut self, message: &BorrowedMessage<'_>) -> Result<(), MergeError> {
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
    fn emit(&mut self) -> Result<(), MergeError> {
        let topic = self.setup.config.topics.listing_sums.clone();
        let codec = self.setup.codec.clone();
        let encoder = codec.record_encoder::<ListingSum>(&topic);
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
                    metrics::counter!(metric::streams::SUMS_OUT_OF_RANGE).increment(1);
                    continue;
                }
            };
            let (encoded_key, encoded_value) =
                self.setup.runtime.block_on(encoder.encode(&key, &record))?;
            self.setup
                .output
                .send(&topic, None, &encoded_key, &encoded_value)?;
            metrics::counter!(metric::streams::SUMS_EMITTED).increment(1);
            self.emitted.fetch_add(1, Ordering::Relaxed);
        }
        self.setup.output.check()?;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        metrics::gauge!(metric::streams::STATE_SUMS).set(self.sums.len() as f64);
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
    driver: Driver<Engine>,
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
        crate::buffers::consumer(&mut config, &setup.config.kafka);
        let interval = setup.config.streams.commit_interval;
        let engine = Engine {
            setup,
            sums: HashMap::new(),
            dirty: BTreeSet::new(),
            emitted: Arc::new(AtomicU64::new(0)),
            fatal: None,
        };
        let driver = Driver::new(&config, engine, interval, shutdown)
            .map_err(|e| MergeError::Client(ClientError::Kafka(e)))?;
        Ok(Self { driver })
    }

    /// Runs until `shutdown` is cancelled or a fatal error.
    ///
    /// # Errors
    /// [`MergeError`]; a restart rebuilds the totals from the partials topic.
    pub fn run(self) -> Result<(), MergeError> {
        self.driver.run()
    }
}
