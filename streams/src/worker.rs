//! The aggregation stage's Kafka side: reads `listings` in the consumer group, hands each
//! record to its input partition's [`Partition`], and sends what that returns (accepted listings
//! to `listings-affordable`, state changes to the changelog, the partition's shares of the
//! touched sums to the partials topic), then commits the input offsets it gives.
//!
//! What a record does to a partition's state and what is written for it is decided in
//! [`crate::partition`], which has no Kafka in it; here are the consumer, its rebalance callback
//! (restoring a partition's state, see [`crate::state`]), the producers, transactions, offset
//! commits and lag.
//!
//! Under `changelog` every partition writes through one idempotent producer. Under
//! `exactly_once` each owned partition has a transactional producer of its own, made when the
//! partition is assigned and before its state is restored (see [`crate::state`]), and each
//! commit interval commits, per partition, one transaction holding its changelog records,
//! forwards, partial sums and input offset.
//!
//! It is a [`Stage`] of [`crate::driver`], which runs the poll loop (the merge stage's too): the
//! rebalance callback, which runs inside `poll` on the stage's thread, restores a partition's
//! state before the partition's first record is read, and makes everything durable before a
//! partition is given away.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use marketflow_core::codec::{Codec, CodecError, schema_id};
use marketflow_core::config::Config;
use marketflow_core::kafka::{self, ClientError, SendLimit, consumer_config};
use marketflow_core::metric;
use marketflow_core::record::{Listing, ListingKey};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregator, Scoping, Version};
use crate::control::{Control, PartitionStatus};
use crate::driver::{Driver, Stage, StageConsumer};
use crate::filter::DropReason;
use crate::input::{Fields, InputDecoder};
use crate::output::{Output, OutputError, end_to_end_seconds, epoch_millis, transactional_id};
use crate::partition::{Body, KeyValue, Outcome, Partition, Record};
use crate::routing::Partitioner;
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
    /// The group's committed offsets could not be read; under `exactly_once` the stage cannot
    /// start a partition without them.
    #[error(
        "cannot read the committed input offsets of group {group}: {source}; under \
         exactly_once a partition cannot start without them (from the beginning it would \
         forward again what was forwarded); is the cluster up? (scripts/cluster.sh up)"
    )]
    Committed {
        /// The consumer group.
        group: String,
        /// What librdkafka said.
        source: KafkaError,
    },
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
    let (key, value) = codec
        .encode_record(topic, &ListingKey { product_id: 0 }, &sample_listing())
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

/// An accepted listing as it goes to the affordable topic.
struct Onward<'m> {
    key: Cow<'m, [u8]>,
    value: Cow<'m, [u8]>,
}

/// What the aggregation stage writes through.
pub enum Writers {
    /// `changelog`: one idempotent producer for every input partition.
    Shared(Arc<Output>),
    /// `exactly_once`: a transactional producer per owned input partition, made when it is
    /// assigned, under [`transactional_id`].
    PerPartition,
}

/// Everything the aggregation stage needs, built by [`crate::run`].
pub struct Setup {
    /// The whole configuration.
    pub config: Config,
    /// The codec, shared with the merge stage.
    pub codec: Arc<Codec>,
    /// The runtime, for the codec's async calls.
    pub runtime: Handle,
    /// The producers.
    pub writers: Writers,
    /// Schema ids of the affordable topic.
    pub forward: ForwardIds,
    /// Partition count of the partials topic.
    pub partials_partitions: i32,
    /// Partition count of the input topic at start (read again at each assignment).
    pub input_partitions: i32,
    /// The largest record that can be forwarded.
    pub limit: SendLimit,
    /// Shared with the admin routes.
    pub control: Arc<Control>,
    /// Counts input records, for the status.
    pub records_in: Arc<AtomicU64>,
}

/// An owned input partition: its Kafka-free processing, and what writing and committing it
/// takes.
struct Owned {
    partition: Partition,
    lag: Option<i64>,
    /// Under `exactly_once`, the input offset last committed with a transaction.
    committed: Option<i64>,
    /// Under `exactly_once`, the timestamps of the input records whose state changes the open
    /// transaction holds: measured in [`metric::streams::END_TO_END_SECONDS`] when it commits
    /// (one commit interval's worth at most).
    uncommitted: Vec<i64>,
    /// The producer its records go through (shared with the other partitions under
    /// `changelog`, its own under `exactly_once`).
    writer: Arc<Output>,
}

/// The stage's state, behind the consumer context so that the rebalance callback reaches it.
struct Engine {
    setup: Setup,
    input: InputDecoder,
    scoping: Scoping,
    restorer: Restorer,
    parts: BTreeMap<i32, Owned>,
    /// Where the input's producers put a key (see [`crate::routing`]).
    partitioner: Partitioner,
    /// The input's partition count, as of the last assignment.
    input_partitions: i32,
    /// Partitions a misrouted record was logged for since their assignment.
    misrouted: BTreeSet<i32>,
    fatal: Option<WorkerError>,
    last_offsets_commit: Instant,
    last_lag: Instant,
    /// The per-record counters, looked up once instead of once per record.
    records_in: metrics::Counter,
    forwarded: metrics::Counter,
    /// `streams_records_dropped_total` by reason, each looked up at its first drop.
    dropped: Vec<(DropReason, metrics::Counter)>,
}

impl Stage for Engine {
    type Error = WorkerError;

    const NAME: &'static str = "Aggregation stage";

    fn topic(&self) -> &str {
        &self.setup.config.topics.listings
    }

    fn consume_error(&self, source: KafkaError) -> WorkerError {
        WorkerError::Consume {
            topic: self.setup.config.topics.listings.clone(),
            source,
        }
    }

    fn fatal_slot(&mut self) -> &mut Option<WorkerError> {
        &mut self.fatal
    }

    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), WorkerError> {
        self.process_record(message)
    }

    fn flush(&mut self, consumer: &StageConsumer<Self>) -> Result<(), WorkerError> {
        self.make_durable(consumer, false)
    }

    fn assigned(
        &mut self,
        consumer: &StageConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> TopicPartitionList {
        self.assign(consumer, tpl)
    }

    fn revoked(&mut self, consumer: &StageConsumer<Self>, _err: RDKafkaRespErr) {
        if self.shared().is_none() && consumer.assignment_lost() {
            self.lose();
        } else if self.fatal.is_none() {
            // After a failure nothing more is made durable: the failed record's offset must not
            // be committed.
            match self
                .make_durable(consumer, true)
                .and_then(|()| self.drain())
            {
                Ok(()) => {}
                // Under `exactly_once` what is not committed does not count: the next owner
                // resumes from the last commit.
                Err(error)
                    if self.shared().is_none()
                        && !matches!(error, WorkerError::Output(OutputError::Fenced { .. })) =>
                {
                    tracing::warn!(
                        %error,
                        "Committing before giving the partitions up failed; their transactions \
                         are aborted."
                    );
                    self.abort_all();
                }
                Err(error) => self.fail(error),
            }
        }
        self.parts.clear();
        self.publish();
        tracing::info!("Partitions revoked.");
    }

    /// After a failure nothing more is made durable: the failed record's offset must not be
    /// committed, and open transactions are aborted (were this instance killed, the brokers
    /// would abort them when the partitions' next owner initialises their transactional ids).
    fn stop(&mut self, consumer: &StageConsumer<Self>, clean: bool) -> Result<(), WorkerError> {
        let stopped = if clean {
            self.make_durable(consumer, true)
                .and_then(|()| self.drain())
        } else {
            self.abort_all();
            Ok(())
        };
        self.parts.clear();
        stopped
    }

    fn wants_paused(&self) -> bool {
        self.setup.control.paused()
    }

    /// The outcome of an asynchronous offset commit (only made under `changelog`).
    fn committed(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let failed = match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                offsets.elements().iter().find_map(|e| e.error().err())
            }
            Err(error) => Some(error),
        };
        if let Some(error) = failed {
            offsets_not_committed(&error, offsets);
        }
    }
}

impl Engine {
    /// Under `changelog`, the producer of every partition.
    fn shared(&self) -> Option<&Arc<Output>> {
        match &self.setup.writers {
            Writers::Shared(output) => Some(output),
            Writers::PerPartition => None,
        }
    }

    /// Restores each assigned partition (under `exactly_once` after initialising its producer)
    /// and returns the assignment starting at the group's committed offset: everything before it
    /// was processed and everything sent for it delivered (the producer is flushed before each
    /// commit, or commits the transaction with it). Under `changelog`, input between that offset
    /// and the position the restored state reflects is read again only to forward it (see
    /// `process`); with no committed offset, from the beginning.
    fn assign(
        &mut self,
        consumer: &StageConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> TopicPartitionList {
        let began = Instant::now();
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        self.count_input_partitions(consumer);
        self.misrouted.clear();
        let prepared = self.writers(&partitions).and_then(|writers| {
            let states = self.restore(&partitions)?;
            Ok((writers, states, self.committed(consumer, tpl)?))
        });
        let (mut writers, states, committed) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                self.fail(error);
                return TopicPartitionList::new();
            }
        };
        let restored_in = began.elapsed();
        let topic = self.setup.config.topics.listings.clone();
        let mut positioned = TopicPartitionList::new();
        for (partition, state) in states {
            let Some(writer) = writers.remove(&partition) else {
                continue;
            };
            self.take_on(partition, state, writer);
            let start = committed
                .get(&partition)
                .map_or(Offset::Beginning, |c| Offset::Offset(*c));
            if let Err(source) = positioned.add_partition_offset(&topic, partition, start) {
                self.fail(WorkerError::Consume {
                    topic: topic.clone(),
                    source,
                });
            }
        }
        // The first commit comes a full interval after input starts flowing, not mid-burst.
        self.last_offsets_commit = Instant::now();
        tracing::info!(
            partitions = ?self.parts.keys().collect::<Vec<_>>(),
            restored_in = ?restored_in,
            "Partitions assigned."
        );
        self.publish();
        positioned
    }

    /// Reads the input's partition count again: adding partitions to it starts a rebalance.
    fn count_input_partitions(&mut self, consumer: &StageConsumer<Self>) {
        let topic = &self.setup.config.topics.listings;
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), COMMITTED_TIMEOUT)
            && let Some(found) = metadata.topics().first().map(|t| t.partitions().len())
            && found > 0
        {
            self.input_partitions = i32::try_from(found).unwrap_or(i32::MAX);
        }
    }

    /// The producers of `partitions`. Under `exactly_once` they come before the restore:
    /// initialising them aborts whatever the last owners left open, so that the restore reads
    /// committed changes only, all of them.
    fn writers(&self, partitions: &[i32]) -> Result<BTreeMap<i32, Arc<Output>>, WorkerError> {
        partitions
            .iter()
            .map(|partition| Ok((*partition, self.writer(*partition)?)))
            .collect()
    }

    /// The states of `partitions` restored from the changelog, tried again while that may help.
    fn restore(&self, partitions: &[i32]) -> Result<BTreeMap<i32, Aggregator>, WorkerError> {
        let mut attempt = 1;
        loop {
            match self.restorer.restore(partitions) {
                Ok(states) => return Ok(states),
                Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "Restore failed; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Owns input partition `partition` from now on, from its restored `state`. A changelog
    /// written before sums were declared: what it holds is declared now, before compaction can
    /// lose it. Every share is announced again: one sent before a crash may not have landed.
    fn take_on(&mut self, partition: i32, state: Aggregator, writer: Arc<Output>) {
        let (restored, declarations) = Partition::restored(partition, state, self.scoping.clone());
        let changelog = &self.setup.config.streams.changelog_topic;
        if let Err(error) = write_changelog(&writer, changelog, partition, &declarations) {
            self.fail(error.into());
        }
        self.parts.insert(
            partition,
            Owned {
                partition: restored,
                lag: None,
                committed: None,
                uncommitted: Vec::new(),
                writer,
            },
        );
    }

    /// The producer of input partition `partition`: the shared one, or under `exactly_once` a
    /// new transactional one under the partition's id, initialised (retried while librdkafka
    /// says it may help).
    fn writer(&self, partition: i32) -> Result<Arc<Output>, OutputError> {
        if let Some(shared) = self.shared() {
            return Ok(shared.clone());
        }
        let kafka = &self.setup.config.kafka;
        let id = transactional_id(&self.setup.config.streams.group_id, partition);
        let mut attempt = 1;
        loop {
            match Output::transactional(kafka, &id, self.setup.limit) {
                Ok(output) => return Ok(Arc::new(output)),
                Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "Initialising transactions failed; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The group's committed offsets of the partitions in `tpl` (none for a partition the
    /// group never committed). Under `changelog`, when they cannot be read, none: reading from
    /// the beginning only forwards again what was forwarded. Under `exactly_once` that would
    /// forward twice, so it is retried, then the stage fails.
    fn committed(
        &self,
        consumer: &StageConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Result<BTreeMap<i32, i64>, WorkerError> {
        let mut attempt = 1;
        loop {
            match consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT) {
                Ok(list) => {
                    return Ok(list
                        .elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(offset) => Some((e.partition(), offset)),
                            _ => None,
                        })
                        .collect());
                }
                Err(error) if self.shared().is_some() => {
                    tracing::warn!(%error, "Committed offsets unknown; reading the partitions from the beginning.");
                    return Ok(BTreeMap::new());
                }
                Err(error) if attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "Committed offsets unknown; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(source) => {
                    return Err(WorkerError::Committed {
                        group: self.setup.config.streams.group_id.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Processes one input record: decodes it, has its partition plan it, forwards it when the
    /// plan says so, and writes what the partition returns (see [`crate::partition`]).
    fn process_record(&mut self, message: &BorrowedMessage<'_>) -> Result<(), WorkerError> {
        let partition = message.partition();
        let offset = message.offset();
        let timestamp = message.timestamp().to_millis().unwrap_or(0);
        self.records_in.increment(1);
        self.setup.records_in.fetch_add(1, Ordering::Relaxed);
        let Some(part) = self.parts.get(&partition) else {
            return Ok(());
        };
        // A record the state already reflects is read again only to forward it, since its
        // forward may not have been delivered before a crash (at least once). Under
        // `exactly_once` none is: the input resumes at the offset committed with the last
        // transaction, past every change that transaction committed.
        let replayed = part.partition.reflects(offset);
        let writer = part.writer.clone();
        if !replayed {
            self.check_routing(message);
        }
        let decoded = self.decode(message)?;
        let body = match &decoded {
            Ok((fields, product_id)) => Body::Listing {
                product_id: *product_id,
                version: fields.as_ref().map(|f| Version {
                    price: f.price,
                    category: f.category,
                }),
            },
            Err(reason) => Body::Undecodable(*reason),
        };
        let record = Record {
            offset,
            timestamp,
            max_price: self.setup.config.streams.max_price,
            body,
        };
        let Some(part) = self.parts.get(&partition) else {
            return Ok(());
        };
        let plan = part.partition.plan(&record);
        // An accepted listing that cannot be sent onward (over the size limit, or refused by the
        // producer as too large) is not summed either: the partition drops it as unsendable.
        let mut sent = false;
        if plan.forward()
            && let Some(product_id) = plan.product_id()
            && let Some(onward) = self.onward(message, product_id)?
        {
            sent = self.forward(&onward, &writer, product_id)?;
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            return Ok(());
        };
        let outcome = part.partition.apply(plan, sent);
        if outcome.replayed {
            if decoded.is_ok() {
                metrics::counter!(metric::streams::RECORDS_SKIPPED).increment(1);
            }
            return Ok(());
        }
        if let Some(reason) = outcome.dropped {
            self.count_dropped(reason);
        }
        let wrote_change = self.write_outcome(partition, &writer, &outcome, timestamp)?;
        if wrote_change
            && matches!(self.setup.writers, Writers::PerPartition)
            && timestamp > 0
            && let Some(part) = self.parts.get_mut(&partition)
        {
            part.uncommitted.push(timestamp);
        }
        Ok(())
    }

    /// Counts a record dropped for `reason`.
    fn count_dropped(&mut self, reason: DropReason) {
        if let Some((_, counter)) = self.dropped.iter().find(|(r, _)| *r == reason) {
            counter.increment(1);
            return;
        }
        let counter =
            metrics::counter!(metric::streams::RECORDS_DROPPED, "reason" => reason.label());
        counter.increment(1);
        self.dropped.push((reason, counter));
    }

    /// Writes a processed record's declarations and change to partition `partition` of the
    /// changelog, through `writer`; returns whether there was a change.
    fn write_outcome(
        &self,
        partition: i32,
        writer: &Output,
        outcome: &Outcome,
        timestamp: i64,
    ) -> Result<bool, WorkerError> {
        let changelog = &self.setup.config.streams.changelog_topic;
        // A sum's declaration goes before the first change that touches it (see `state`).
        write_changelog(writer, changelog, partition, &outcome.declarations)?;
        let Some(change) = &outcome.change else {
            return Ok(false);
        };
        // Its delivery makes the change durable under `changelog`; under `exactly_once` the
        // commit does.
        writer.send_effect(
            changelog,
            Some(partition),
            &change.key,
            &change.value,
            timestamp,
        )?;
        Ok(true)
    }

    /// Counts, and logs once per partition and assignment, a record whose key is not where the
    /// input's producers put it (see [`crate::routing`]): under `distinct` its product may be
    /// counted in two partitions.
    fn check_routing(&mut self, message: &BorrowedMessage<'_>) {
        let partition = message.partition();
        let Some(home) = message
            .key()
            .and_then(|key| self.partitioner.partition(key, self.input_partitions))
        else {
            return;
        };
        if home == partition {
            return;
        }
        metrics::counter!(metric::streams::RECORDS_MISROUTED).increment(1);
        if self.misrouted.insert(partition) {
            tracing::warn!(
                partition,
                offset = message.offset(),
                expected = home,
                partitioner = ?self.partitioner,
                "Record in another partition than its key's: its producer uses another \
                 partitioner, or chose the partition. Under distinct, a product whose versions \
                 are in two partitions is counted in each (see the README); counted in \
                 streams_records_misrouted_total, logged once per partition."
            );
        }
    }

    /// The fields of the listing (`None` for a tombstone) and its product id; `Ok(Err(reason))`
    /// when the record does not decode and never will (`foreign_schema`, `too_large`,
    /// `undecodable`). Retries while the registry is unreachable.
    fn decode<'m>(
        &mut self,
        message: &'m BorrowedMessage<'_>,
    ) -> Result<Result<(Option<Fields<'m>>, i64), DropReason>, WorkerError> {
        let mut attempt = 1;
        let topic = message.topic();
        loop {
            let decoded = match (message.payload(), message.key()) {
                (Some(value), _) => self.input.value(topic, value).map(|f| {
                    let id = f.product_id;
                    (Some(f), id)
                }),
                (None, Some(key)) => self.input.key(topic, key).map(|id| (None, id)),
                (None, None) => return Ok(Err(DropReason::Undecodable)),
            };
            match decoded {
                Ok(decoded) => return Ok(Ok(decoded)),
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
                    return Ok(Err(match error {
                        CodecError::ForeignSchema { .. } => DropReason::ForeignSchema,
                        CodecError::TooLarge { .. } => DropReason::TooLarge,
                        _ => DropReason::Undecodable,
                    }));
                }
            }
        }
    }

    /// The record an accepted listing goes onward as: the input's bytes when they carry the
    /// schema ids registered on the affordable topic, re-encoded otherwise; `None` (logged) when
    /// it is over the size limit.
    fn onward<'m>(
        &self,
        message: &'m BorrowedMessage<'_>,
        product_id: i64,
    ) -> Result<Option<Onward<'m>>, WorkerError> {
        let topic = &self.setup.config.topics.listings_affordable;
        let ids = self.setup.forward;
        let carries =
            |bytes: Option<&[u8]>, id| bytes.is_some_and(|b| schema_id(b).ok() == Some(id));
        let onward = if let (Some(key), Some(value)) = (message.key(), message.payload())
            && carries(Some(key), ids.key)
            && carries(Some(value), ids.value)
        {
            Onward {
                key: Cow::Borrowed(key),
                value: Cow::Borrowed(value),
            }
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
            let (key, value) = self
                .setup
                .runtime
                .block_on(codec.encode_record(topic, &listing.key(), &listing))
                .map_err(codec_error)?;
            Onward {
                key: Cow::Owned(key),
                value: Cow::Owned(value),
            }
        };
        let size = onward.key.len().saturating_add(onward.value.len());
        if self.setup.limit.fits(size) {
            return Ok(Some(onward));
        }
        tracing::warn!(
            topic = %topic,
            product_id,
            bytes = size,
            limit = self.setup.limit.bytes(),
            "Listing dropped as unsendable: over the size limit of the producer or the topic."
        );
        Ok(None)
    }

    /// Sends an accepted listing to the affordable topic; `false` (logged) when the producer
    /// refuses it as too large.
    fn forward(
        &self,
        onward: &Onward<'_>,
        writer: &Output,
        product_id: i64,
    ) -> Result<bool, WorkerError> {
        let topic = &self.setup.config.topics.listings_affordable;
        match writer.send(topic, None, &onward.key, &onward.value) {
            Ok(()) => {
                self.forwarded.increment(1);
                Ok(true)
            }
            Err(error @ OutputError::TooLarge { .. }) => {
                tracing::warn!(product_id, %error, "Listing dropped as unsendable.");
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Sends each partition's share of the sums it touched since the last flush, then commits
    /// the input offsets processed. Under `exactly_once`, partition by partition, each with the
    /// partition's transaction (its changelog records, forwards and shares). Under `changelog`,
    /// once the producer has delivered everything sent for them (forwards and changelog
    /// records), so that a restart from the committed offset loses no forward.
    fn make_durable(
        &mut self,
        consumer: &StageConsumer<Self>,
        last: bool,
    ) -> Result<(), WorkerError> {
        let input = &self.setup.config.topics.listings;
        let partials_topic = &self.setup.config.streams.partials_topic;
        let group = match self.shared() {
            None if !self.parts.is_empty() => Some(
                consumer
                    .group_metadata()
                    .ok_or(WorkerError::NoGroupMetadata)?,
            ),
            _ => None,
        };
        let consume_error = |source| WorkerError::Consume {
            topic: input.clone(),
            source,
        };
        let mut offsets = TopicPartitionList::new();
        // Under `exactly_once`, the partitions whose transactions commit now.
        let mut due = Vec::new();
        for (partition, part) in &mut self.parts {
            let flushed = part.partition.flush(self.setup.partials_partitions);
            for partial in &flushed.partials {
                part.writer.send(
                    partials_topic,
                    Some(partial.owner),
                    &partial.key,
                    &partial.value,
                )?;
                metrics::counter!(metric::streams::PARTIALS_SENT).increment(1);
            }
            let mut own = TopicPartitionList::new();
            if let Some(next) = flushed.commit {
                let next = Offset::Offset(next);
                own.add_partition_offset(input, *partition, next)
                    .map_err(consume_error)?;
                offsets
                    .add_partition_offset(input, *partition, next)
                    .map_err(consume_error)?;
            }
            if group.is_some() && (part.writer.in_transaction() || flushed.commit != part.committed)
            {
                due.push((*partition, part.writer.clone(), own, flushed.commit));
            }
        }
        if let Some(group) = &group {
            self.commit_transactions(due, group)?;
        }
        if let Some(shared) = self.shared().cloned() {
            if offsets.count() > 0
                && (last || self.last_offsets_commit.elapsed() >= OFFSETS_COMMIT_INTERVAL)
            {
                // Waiting for every delivery stalls this stage, so it is done seldom: a crash
                // only means forwarding again what came after the last commit.
                self.last_offsets_commit = Instant::now();
                shared.flush()?;
                // Asynchronous is enough: a commit lost to a crash only means reading again, and
                // forwarding again, what the state already reflects. Its outcome arrives in
                // `Stage::committed`; a refusal to even start it is counted here alike.
                if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
                    offsets_not_committed(&error, &offsets);
                }
            }
            shared.check()?;
        }
        if self.last_lag.elapsed() >= LAG_INTERVAL {
            self.measure_lag(consumer);
        }
        self.publish();
        Ok(())
    }

    /// Under `exactly_once`, commits the transactions of the partitions `due` (each with its
    /// input offset), side by side: each is a few round trips to the brokers, and one after the
    /// other they held the stage up for several of them every commit interval. Every partition
    /// is tried; the first error, in partition order, stops the stage.
    fn commit_transactions(
        &mut self,
        due: Vec<(i32, Arc<Output>, TopicPartitionList, Option<i64>)>,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), WorkerError> {
        let outcomes: Vec<(i32, Option<i64>, Result<(), OutputError>)> =
            std::thread::scope(|scope| {
                let running: Vec<_> = due
                    .into_iter()
                    .map(|(partition, writer, own, next)| {
                        (
                            partition,
                            next,
                            scope.spawn(move || writer.commit(&own, group)),
                        )
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|(partition, next, commit)| {
                        let outcome = commit
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        (partition, next, outcome)
                    })
                    .collect()
            });
        let mut failed = None;
        for (partition, next, outcome) in outcomes {
            let Some(part) = self.parts.get_mut(&partition) else {
                continue;
            };
            if let Err(error) = outcome {
                failed.get_or_insert(error);
                continue;
            }
            part.committed = next;
            let durable = epoch_millis();
            let latency = metrics::histogram!(metric::streams::END_TO_END_SECONDS);
            for since in part.uncommitted.drain(..) {
                if let Some(seconds) = end_to_end_seconds(since, durable) {
                    latency.record(seconds);
                }
            }
        }
        failed.map_or(Ok(()), |error| Err(error.into()))
    }

    /// Waits until the shared producer has delivered everything it was given (under
    /// `exactly_once` each commit already has).
    fn drain(&self) -> Result<(), WorkerError> {
        if let Some(shared) = self.shared() {
            shared.flush()?;
        }
        Ok(())
    }

    /// Under `exactly_once`, gives up partitions the group took away without asking: this
    /// instance missed its session timeout (stalled, or cut off while the group coordinator
    /// moved). Their open transactions are aborted, not committed, so nothing written since the
    /// last commit counts, and the stage rejoins the group, which assigns it partitions again.
    /// Unless a producer was fenced: another instance took a partition over while this one still
    /// wrote to it, and the stage stops.
    fn lose(&mut self) {
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        if partitions.is_empty() {
            return;
        }
        tracing::warn!(
            ?partitions,
            "Partitions lost: the group dropped this instance past its session timeout; their \
             open transactions are aborted and the group joined again."
        );
        let mut fenced = None;
        for (partition, part) in &self.parts {
            match part
                .writer
                .abort()
                .and_then(|()| part.writer.check_fenced())
            {
                Ok(()) => {}
                Err(error @ OutputError::Fenced { .. }) => {
                    fenced.get_or_insert(error);
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "Aborting the transaction failed.");
                }
            }
        }
        if let Some(error) = fenced {
            self.fail(error.into());
        }
    }

    /// Aborts every partition's open transaction, if any. A failure is only logged: the brokers
    /// abort it themselves when the partition's next owner initialises its transactional id.
    fn abort_all(&self) {
        for (partition, part) in &self.parts {
            if let Err(error) = part.writer.abort() {
                tracing::warn!(partition, %error, "Aborting the transaction failed.");
            }
        }
    }

    fn measure_lag(&mut self, consumer: &StageConsumer<Self>) {
        self.last_lag = Instant::now();
        let topic = &self.setup.config.topics.listings;
        let mut total = 0;
        for (partition, part) in &mut self.parts {
            if let Ok((low, high)) =
                consumer.fetch_watermarks(topic, *partition, Duration::from_secs(2))
            {
                let next = part.partition.state().position().map(|p| p + 1);
                let lag = kafka::lag(low, high, next);
                part.lag = Some(lag);
                total += lag;
            }
        }
        metrics::gauge!(metric::streams::CONSUMER_LAG).set(total as f64);
    }

    /// Publishes the stage's state to the status and the gauges.
    fn publish(&self) {
        let products: usize = self
            .parts
            .values()
            .map(|p| p.partition.state().products())
            .sum();
        metrics::gauge!(metric::streams::STATE_PRODUCTS).set(products as f64);
        let records_in = self.setup.records_in.load(Ordering::Relaxed);
        let partitions = self
            .parts
            .iter()
            .map(|(p, part)| {
                let state = part.partition.state();
                let status = PartitionStatus {
                    position: state.position(),
                    products: state.products(),
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

/// Writes `records` (declarations of sums, see [`crate::state`]) to the changelog partition of
/// input partition `partition`, in order.
fn write_changelog(
    writer: &Output,
    changelog: &str,
    partition: i32,
    records: &[KeyValue],
) -> Result<(), OutputError> {
    for record in records {
        writer.send(changelog, Some(partition), &record.key, &record.value)?;
    }
    Ok(())
}

/// Logs and counts input offsets whose commit failed (under `changelog`): nothing is lost, but
/// a crash now reads again, and forwards again, more than it would have, until a later commit
/// carries the offsets.
fn offsets_not_committed(error: &KafkaError, offsets: &TopicPartitionList) {
    let partitions: Vec<(i32, Offset)> = offsets
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    tracing::warn!(
        %error,
        ?partitions,
        "Committing input offsets failed; the next commit carries them."
    );
    metrics::counter!(metric::streams::OFFSET_COMMIT_FAILURES).increment(1);
}

/// The aggregation stage.
pub struct Worker {
    driver: Driver<Engine>,
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
        crate::buffers::consumer(&mut config, &setup.config.kafka);
        let input = InputDecoder::new(
            setup.codec.clone(),
            setup.runtime.clone(),
            streams.category_level,
        );
        let partitioner = Partitioner::configured(&setup.config.kafka.properties);
        if let Partitioner::Unchecked(name) = &partitioner {
            tracing::warn!(
                partitioner = %name,
                "The input's producers are assumed to use this partitioner, which places keys at \
                 random or in a way not followed here: records in another partition than their \
                 key's are not noticed, and under distinct a product in two partitions is \
                 counted in each."
            );
        }
        let engine = Engine {
            input,
            scoping,
            restorer,
            parts: BTreeMap::new(),
            partitioner,
            input_partitions: setup.input_partitions,
            misrouted: BTreeSet::new(),
            fatal: None,
            last_offsets_commit: Instant::now(),
            last_lag: Instant::now(),
            records_in: metrics::counter!(metric::streams::RECORDS_IN),
            forwarded: metrics::counter!(metric::streams::LISTINGS_FORWARDED),
            dropped: Vec::new(),
            setup,
        };
        let interval = engine.setup.config.streams.commit_interval;
        let driver = Driver::new(&config, engine, interval, shutdown)
            .map_err(|e| WorkerError::Client(ClientError::Kafka(e)))?;
        Ok(Self { driver })
    }

    /// Runs until `shutdown` is cancelled or a fatal error.
    ///
    /// # Errors
    /// [`WorkerError`]; the durable state stays consistent, a restart resumes from it.
    pub fn run(self) -> Result<(), WorkerError> {
        self.driver.run()
    }
}
