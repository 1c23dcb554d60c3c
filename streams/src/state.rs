//! Durable state: each input partition's aggregate is rebuilt from the changelog topic when the
//! partition is assigned, and the input resumes right after the offset the changelog reflects.
//!
//! # Why the sums are exact after any crash, without transactions
//!
//! * **State is per input partition.** Input records are keyed by product id, and a producer
//!   that places records by a hash of the key's bytes (ours: librdkafka's default
//!   `consistent_random`, CRC32) puts every version of a product in one input partition, so
//!   that partition's state (each product's contribution, each scope's count, sum, lowest
//!   and highest price) depends on nothing else. A producer with another partitioner, or one choosing
//!   the partition, can put a product in two partitions; under `distinct` it is then counted
//!   in each. This premise is checked, not assumed: a record whose key is not where the
//!   configured partitioner puts it is counted in `streams_records_misrouted_total` and logged
//!   ([`crate::routing`]). When a partition moves to another instance, its state moves with it:
//!   the new owner rebuilds it.
//! * **The changelog is the state, and carries its own position.** Every input record that
//!   changes a partition's state is written, as one changelog record holding the change *and the
//!   input offset it came from*, to the changelog partition of the same number, by one idempotent
//!   producer. One record is atomic; the producer keeps a partition's records in order and without
//!   gaps, so whatever survives a `kill -9` is a prefix of what was sent. What a record changes
//!   and writes is decided in [`crate::partition`], which has no Kafka in it
//!   ([`partition::Partition::apply`]); [`crate::worker`] only sends it.
//! * **Restore replays the changelog.** On assignment the partition's changelog is read from the
//!   beginning to its end and every change is applied again, in order, skipping one at or before
//!   the offset already applied (a retry's or an old owner's late duplicate). The state is then
//!   exactly the state after input offset `P`, the last one recorded: no input counted twice,
//!   none missed ([`partition::replay`]; its proptests restore from every prefix of a changelog
//!   a partition wrote and compare with the uninterrupted run). Compaction may drop a product's
//!   older records; the latest one per product is what the state needs.
//! * **Every sum a partition ever held is declared.** Before the first change that touches a sum,
//!   the partition writes the sum's declaration to its changelog, under a key of its own that no
//!   later record supersedes, so compaction keeps it. Without it, a sum whose last product moved
//!   away would vanish from a state restored after compaction (the records that put products in
//!   it are gone), and its share, never announced again at zero, would stay at its old figure in
//!   the totals whenever the crash came before that zero was sent.
//!   ([`partition::Partition::apply`] returns the declarations before the change;
//!   [`partition::Partition::restored`], those a changelog written before sums were declared
//!   lacks.)
//! * **Input resumes at the group's committed offset `C`.** It is committed only once the
//!   producer has delivered everything sent for the records before it (changelog records and
//!   forwards to the affordable topic), so every record before `C` is in the state and forwarded.
//!   Records from `C` to `P` (a crash between the changelog's delivery and the commit) are read
//!   again only to forward them: the state skips them ([`partition::Plan::replayed`]). So the
//!   affordable topic gets every accepted listing at least once, and the sums count each exactly
//!   once.
//! * **Sums leave as idempotent partial sums.** A partition's share of each touched sum is sent
//!   to the partials topic with its position `P` as version ([`partition::Partition::flush`],
//!   which also gives the offset to commit). Processing is deterministic, so the share at a
//!   given position is always the same; the merge stage keeps the highest version per (sum,
//!   input partition) and emits their total. A lost share is re-sent after every restore, a
//!   duplicate or an out-of-date one is ignored, so the total converges to the exact sum.
//!
//! The one thing this cannot prevent without transactions is a writer that lives on after its
//! partitions were taken away (a "zombie" stalled past the group's session timeout): it writes
//! true but old facts, which the version checks above ignore, except where compaction has
//! already removed the newer record of the same key. `streams.guarantee = "exactly_once"` fences
//! such writers with Kafka transactions on brokers that have them, as follows.
//!
//! # Why, under `exactly_once`, the affordable topic is exact too and a zombie is fenced
//!
//! * **One transactional producer per input partition, under a fixed id.** Partition `p`'s
//!   changelog records, forwards and shares of the sums go through a producer of its own, whose
//!   transactional id is `<group_id>-partition-<p>` ([`crate::output::transactional_id`]) in
//!   every instance and every run. Each commit interval one transaction per partition commits
//!   them together with the partition's next input offset (`send_offsets_to_transaction`): a
//!   `read_committed` reader sees all of it or none of it.
//! * **The next owner fences the last one before it restores.** When `p` is assigned, its
//!   producer is initialised first. The brokers abort whatever transaction the last owner left
//!   open (whether it was killed or is still alive) and refuse that owner's producer from then
//!   on, and the initialisation returns only once the abort is written. Only then is the
//!   changelog read, `read_committed`, to its end: no open transaction holds that end (the last
//!   stable offset) back, so the restore sees the changes of every committed transaction and of
//!   no other. (With an id per process, as this code first had, a killed instance's open
//!   transaction held the end back until it timed out: a restore in that minute missed changes
//!   that later transactions had committed, together with their input offsets, and the sums
//!   went wrong for good.)
//! * **The state and the committed offset describe the same point.** The group's committed
//!   offset `C` of `p` was committed by the transaction that committed the last changes, so the
//!   restored state is exactly the state after every input record before `C`, each counted
//!   once, and each accepted one forwarded once (its forward committed in the same
//!   transaction). Input resumes at `C` and nothing is read again, so the changelog mode's
//!   "read again only to forward" never happens. A partition whose committed offset cannot be
//!   read does not start: from the beginning it would forward twice.
//! * **A zombie writes nothing that counts, and stops.** An owner stalled past its session
//!   timeout wakes up to fenced producers: the new owner's initialisation aborted its open
//!   transactions, and every later step is refused. When its consumer first tells it that the
//!   partitions were lost, it aborts their transactions itself rather than commit them. It stops
//!   with an error saying that another instance took over as soon as a producer reports the
//!   fence; with none fenced (the group dropped it while its coordinator moved, say, and no one
//!   has taken over yet) it joins the group again and restores as any new owner. Its offset
//!   commits would be refused anyway: they carry its old group generation.
//! * **Readers see committed records only.** This restore, the merge stage and the worker's
//!   input consumer read `read_committed`, and so must readers of the affordable topic. The
//!   merge keeps the highest version per (sum, input partition) exactly as without
//!   transactions, so the sums are exact, and every accepted listing is on the affordable topic
//!   exactly once.
//!
//! The cost is a producer per owned input partition, created at each assignment.
//!
//! # Why no sum can wrap
//!
//! * **A price in a sum is a long.** The filter accepts prices from 0 to `streams.max_price`
//!   only (below 0 is dropped as `invalid_price`); a changelog written by an earlier version
//!   may hold any long. Either way every price `p` has `|p| <= 2^63`.
//! * **A partition's sum is 128 bits and holds fewer than 2^63 prices.** Each price enters a
//!   scope's sum through one applied change, and an applied change has an input offset above
//!   every earlier one (older ones are skipped): under `append` a scope holds at most one
//!   price per input record ever read, under `distinct` one per product in memory. No run
//!   reads 2^63 records (292 years at a billion a second), so `|sum| < 2^63 · 2^63 = 2^126`,
//!   well inside an `i128` (`|x| < 2^127`): the plain additions and subtractions in
//!   [`crate::aggregate`] cannot wrap. A removal takes out a price an addition put in, so it
//!   stays inside the same bound.
//! * **Shares travel in 128 bits.** The partials topic carries each share's sum in 16 bytes
//!   (layout 2; layout 1's 64-bit sums, written by earlier versions, are read as they are).
//! * **The total is added with checks and must fit the output.** The merge adds the shares with
//!   checked arithmetic (shares are read from a topic, and a topic can hold anything), and a
//!   total whose count or sum overflows, or whose sum does not fit the `long` of `ListingSum`,
//!   is not emitted: `streams_sums_out_of_range_total` counts it and an ERROR names it. With
//!   prices at most `max_price`, that takes more than `i64::MAX / max_price` listings in one
//!   sum (over 9.2 · 10^12 at the default 1,000,000 KRW). A wrong figure is never emitted.

use std::time::{Duration, Instant};

use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{ClientError, consumer_config};
use std::collections::{BTreeMap, BTreeSet};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::aggregate::{Aggregator, Scoping};
use crate::changelog::{FormatError, decode_entry};
use crate::partition;

/// What failed rebuilding a partition's state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The changelog could not be read; retrying may help.
    #[error(
        "cannot read partition {partition} of the changelog topic {topic}: {source}; is the \
         cluster up? (scripts/cluster.sh up)"
    )]
    Read {
        /// The changelog topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The changelog stopped delivering records before its end; retrying may help.
    #[error(
        "partition {partition} of the changelog topic {topic} delivered nothing for {waited:?} \
         before its end; is the cluster up? (scripts/cluster.sh up)"
    )]
    Stalled {
        /// The changelog topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// How long it waited.
        waited: Duration,
    },
    /// A changelog record does not decode: fatal.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The reader's configuration was refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The changelog was written under other settings: fatal, the sums would be wrong.
    #[error(
        "the changelog topic {topic} was written with semantics {found:?} and category level \
         {found_level}, but this configuration has {wanted:?} and level {wanted_level}: set a new \
         streams.changelog_topic, streams.partials_topic and streams.group_id to start over"
    )]
    Mismatch {
        /// The changelog topic.
        topic: String,
        /// The semantics found.
        found: marketflow_core::config::StreamsSemantics,
        /// The level found.
        found_level: u8,
        /// The semantics configured.
        wanted: marketflow_core::config::StreamsSemantics,
        /// The level configured.
        wanted_level: u8,
    },
}

impl StateError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Read { .. } | Self::Stalled { .. })
    }
}

/// Logs client errors, except the end-of-partition events restores wait for.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "Changelog reader error.");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// Reads a changelog topic to rebuild the states of input partitions.
pub struct Restorer {
    consumer: BaseConsumer<QuietEof>,
    topic: String,
    scoping: Scoping,
    stall: Duration,
}

impl Restorer {
    /// A reader of `topic` (no consumer group; `read_committed`, so that under transactions an
    /// aborted change is never restored).
    ///
    /// # Errors
    /// [`StateError::Read`] when librdkafka rejects the configuration.
    pub fn new(kafka: &KafkaConfig, topic: &str, scoping: Scoping) -> Result<Self, StateError> {
        // The passthrough properties (security settings above all) apply to it as to the stages.
        let mut config = consumer_config(kafka, "marketflow-streams-restore")?;
        config
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            // The end of a partition is known from an empty fetch, which the broker otherwise
            // holds for 500 ms: every assignment would wait that long.
            .set("fetch.wait.max.ms", "20");
        crate::buffers::consumer(&mut config, kafka);
        let consumer = config
            .create_with_context(QuietEof)
            .map_err(|source| StateError::Read {
                topic: topic.to_owned(),
                partition: -1,
                source,
            })?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            scoping,
            stall: kafka.connect_timeout.max(Duration::from_secs(5)) * 3,
        })
    }

    /// The states of input partitions `partitions`: their changelogs replayed from the
    /// beginning, all in one pass.
    ///
    /// # Errors
    /// [`StateError`]: retryable when the changelog cannot be read, fatal when it does not
    /// decode or was written under another configuration.
    pub fn restore(&self, partitions: &[i32]) -> Result<BTreeMap<i32, Aggregator>, StateError> {
        let first = partitions.first().copied().unwrap_or(-1);
        let read_error = |partition, source| StateError::Read {
            topic: self.topic.clone(),
            partition,
            source,
        };
        let mut assignment = TopicPartitionList::new();
        let mut states = BTreeMap::new();
        for partition in partitions {
            assignment
                .add_partition_offset(&self.topic, *partition, Offset::Beginning)
                .map_err(|e| read_error(*partition, e))?;
            states.insert(*partition, Aggregator::new(self.scoping.clone()));
        }
        // The changelog's leaders first: a partition assigned before the consumer knows its
        // leader waits for librdkafka's next offset query, 500 ms later.
        self.consumer
            .fetch_metadata(Some(&self.topic), self.stall)
            .map_err(|e| read_error(first, e))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| read_error(first, e))?;
        let mut pending: BTreeSet<i32> = partitions.iter().copied().collect();
        let mut last_progress = Instant::now();
        let mut records = 0u64;
        let outcome = loop {
            if pending.is_empty() {
                break Ok(());
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None if last_progress.elapsed() > self.stall => {
                    break Err(StateError::Stalled {
                        topic: self.topic.clone(),
                        partition: pending.first().copied().unwrap_or(first),
                        waited: self.stall,
                    });
                }
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    pending.remove(&partition);
                }
                Some(Err(source)) => break Err(read_error(first, source)),
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let (Some(bytes), Some(state)) =
                        (message.payload(), states.get_mut(&message.partition()))
                    else {
                        continue;
                    };
                    let (scoping, entry) = decode_entry(&self.topic, bytes)?;
                    if scoping != self.scoping {
                        break Err(StateError::Mismatch {
                            topic: self.topic.clone(),
                            found: scoping.semantics,
                            found_level: scoping.category_level,
                            wanted: self.scoping.semantics,
                            wanted_level: self.scoping.category_level,
                        });
                    }
                    partition::replay(state, entry);
                    records += 1;
                }
            }
        };
        self.consumer.unassign().map_err(|e| read_error(first, e))?;
        outcome?;
        for (partition, state) in &states {
            tracing::info!(
                partition,
                position = state.position(),
                products = state.products(),
                "Partition state restored."
            );
        }
        tracing::info!(records, "Changelog replayed.");
        Ok(states)
    }
}
