//! The consumer loop: records in, decoded, batched, written, and only then their offsets
//! committed; database outages retried with consumption paused; rebalances that write and commit
//! what is buffered before a partition is given away; and the control commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use marketflow_core::codec::Codec;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::control::{Command, ReplayFrom};
use crate::envelope::{self, Envelope};
use crate::settings::Settings;
use crate::stage::{Job, Offsets, Retry, Stage, StageHandle};
use crate::stats::{self, Board, State};
use crate::writer::Planner;

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// With `errors_tolerance = "none"`: a record that cannot be written.
    #[error(
        "stopped at record {coordinates} ({class}): {message}; everything before it is written \
         and committed, nothing from it on; fix or remove the record, or set \
         sink.errors_tolerance = \"all\" to send such records to the dead-letter topic"
    )]
    Stopped {
        /// `topic/partition/offset`.
        coordinates: String,
        /// The error's class.
        class: String,
        /// What is wrong.
        message: String,
    },
    /// The database stayed unavailable through every retry.
    #[error(
        "the database is still unavailable after {retries} retries ({last}); nothing past the \
         last written batch was committed, so a restart resumes there"
    )]
    GaveUp {
        /// Retries made.
        retries: usize,
        /// The last error.
        last: String,
    },
    /// Retrying cannot help (e.g. permissions, a dropped table).
    #[error("cannot write to the database: {0}; nothing past the last written batch was committed")]
    Database(String),
    /// The dead-letter topic did not take a record.
    #[error("{0}; nothing past the last written batch was committed")]
    DeadLetter(String),
    /// The consumer failed.
    #[error("Kafka consumer error: {0}")]
    Kafka(#[from] KafkaError),
}

/// What the loop and the rebalance callback share: the batch being gathered, the planner that
/// prepares it, and the write stage it goes to.
pub struct Pipeline {
    settings: Arc<Settings>,
    batch: Batch<Envelope>,
    planner: Planner,
    stage: Stage,
    board: Board,
    shutdown: CancellationToken,
    /// Whether the next batch is read while one is written; not on a current-thread runtime,
    /// where the rebalance callback could not wait for the write stage.
    overlap: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("buffered", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline preparing batches with `planner` and writing them through `stage`.
    pub fn new(
        settings: Arc<Settings>,
        planner: Planner,
        stage: Stage,
        board: Board,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            batch: Batch::new(settings.batch_size, settings.batch_max_age),
            overlap: multi_thread(),
            settings,
            planner,
            stage,
            board,
            shutdown,
        }
    }

    /// Prepares the buffered batch (retrying while the database is unavailable for a table's
    /// shape or DDL) and hands it to the write stage. A batch the stage no longer takes (it
    /// stopped on a failure, which the loop then stops with) is not written.
    async fn flush(&mut self, hold: &mut (dyn FnMut(bool) + Send)) -> Result<(), ConsumeError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut entries = self.batch.take();
        let mut retry = Retry::new(&self.settings, &self.board, &self.shutdown);
        let prepared = loop {
            match self.planner.prepare(&mut entries).await {
                Ok(prepared) => break retry.through(hold, prepared),
                Err(e) => retry.wait(hold, e).await?,
            }
        };
        self.stage.submit(Job { entries, prepared }, hold).await;
        if !self.overlap {
            self.stage.drain().await;
        }
        Ok(())
    }

    /// Flushes, then waits until the stage has written everything handed to it.
    async fn drain(&mut self, hold: &mut (dyn FnMut(bool) + Send)) -> Result<(), ConsumeError> {
        self.flush(hold).await?;
        self.stage.drain().await;
        Ok(())
    }

    /// Whether nothing is buffered or being written.
    fn caught_up(&self) -> bool {
        self.batch.is_empty() && self.stage.idle()
    }
}

/// What the rebalance callback needs.
pub struct SinkContext {
    pipeline: Arc<Mutex<Pipeline>>,
    stage: StageHandle,
    board: Board,
    paused: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            self.write_before_revoke(base, revoked);
        }
    }

    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assignment = base.assignment().unwrap_or_default();
        if let Rebalance::Assign(assigned) = rebalance
            && self.paused.load(Ordering::SeqCst)
            && let Err(error) = base.pause(assigned)
        {
            tracing::warn!(%error, "Cannot pause newly assigned partitions.");
        }
        let list = partitions(&assignment);
        tracing::info!(partitions = ?list, "Partitions assigned.");
        self.board.set_assignment(&list);
    }
}

impl SinkContext {
    /// Writes and commits what is buffered or being written before partitions go to another
    /// member, so that it never writes a record of a partition it no longer owns after that
    /// member has.
    fn write_before_revoke(&self, base: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let revoked_list = partitions(revoked);
        if multi_thread() {
            let pipeline = self.pipeline.clone();
            let drained = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(async move { pipeline.lock().await.drain(&mut |_| {}).await })
            });
            if let Err(error) = drained {
                self.stage.fail(error);
            }
        } else if let Ok(mut pipeline) = self.pipeline.try_lock() {
            // Cannot wait for the database here (and nothing is being written: without
            // overlap each batch is waited for): drop the revoked partitions' records instead
            // (not committed, so their next owner reads them again).
            pipeline
                .batch
                .retain(|e| !revoked_list.contains(&(e.topic.to_string(), e.partition)));
        }
        let written = offsets(self.stage.take_written(), None);
        if written.count() > 0 {
            tracing::info!(partitions = ?revoked_list, "Partitions revoked; committing what is written first.");
            if let Err(error) = base.commit(&written, CommitMode::Sync) {
                tracing::warn!(%error, "Commit before revoke failed; the next owner re-reads those records.");
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// `written` as a list to commit, only the partitions in `assignment` when given (offsets of a
/// partition given away are its new owner's to commit).
fn offsets(written: Offsets, assignment: Option<&TopicPartitionList>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in written {
        if assignment.is_some_and(|a| a.find_partition(&topic, partition).is_none()) {
            continue;
        }
        // Only fails for a negative offset, which `written` never holds.
        let _ = list.add_partition_offset(&topic, partition, Offset::Offset(offset));
    }
    list
}

/// Whether this runs on a multi-thread runtime, where a blocking wait is allowed.
fn multi_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The consumer loop and what it owns.
pub struct Consumption {
    settings: Arc<Settings>,
    codec: Arc<Codec>,
    consumer: StreamConsumer<SinkContext>,
    pipeline: Arc<Mutex<Pipeline>>,
    stage: StageHandle,
    board: Board,
    paused: Arc<AtomicBool>,
    /// Whether the assignment is paused because the database is being retried.
    held: AtomicBool,
    commands: mpsc::Receiver<Command>,
    /// Records consumed per topic since the figures were last published (per batch, not per
    /// record: a metrics lookup per record costs more than the rest of its handling).
    records_in: BTreeMap<Arc<str>, u64>,
    /// The names of the topics records came from.
    topics: Vec<Arc<str>>,
    last_commit: Instant,
}

impl std::fmt::Debug for Consumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumption")
            .field("topics", &self.settings.topics)
            .finish_non_exhaustive()
    }
}

/// The callback's context for `pipeline`, and the flags it shares with the loop.
pub fn context(pipeline: Arc<Mutex<Pipeline>>, stage: StageHandle, board: Board) -> SinkContext {
    SinkContext {
        pipeline,
        stage,
        board,
        paused: Arc::default(),
    }
}

impl Consumption {
    /// The loop over `consumer` (built with [`context`]), subscribed to the settings' topics.
    ///
    /// # Errors
    /// [`KafkaError`] when the subscription fails.
    pub fn new(
        settings: Arc<Settings>,
        codec: Arc<Codec>,
        consumer: StreamConsumer<SinkContext>,
        commands: mpsc::Receiver<Command>,
    ) -> Result<Self, KafkaError> {
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let context = consumer.context();
        Ok(Self {
            pipeline: context.pipeline.clone(),
            stage: context.stage.clone(),
            board: context.board.clone(),
            paused: context.paused.clone(),
            held: AtomicBool::new(false),
            settings,
            codec,
            consumer,
            commands,
            records_in: BTreeMap::new(),
            topics: Vec::new(),
            last_commit: Instant::now(),
        })
    }

    /// Runs until `shutdown` (then writes and commits what is buffered) or an error (then
    /// commits what was written before it).
    ///
    /// # Errors
    /// [`ConsumeError`]; nothing past the last written record is ever committed.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConsumeError> {
        self.board.set_state(State::Running);
        let mut result = self.run_loop(&shutdown).await;
        if let Err(error) = self.commit(CommitMode::Sync) {
            result = result.and(Err(error.into()));
        }
        let mut status = self.board.lock();
        status.state = State::Stopped;
        if let Err(e) = &result {
            status.last_error = Some(e.to_string());
        }
        result
    }

    async fn run_loop(&mut self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let mut deadline: Option<Instant> = None;
        let mut progress = self.stage.watch();
        loop {
            if let Some(error) = self.stage.take_failure() {
                return Err(error);
            }
            let due = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.drain().await?;
                    if let Some(error) = self.stage.take_failure() {
                        return Err(error);
                    }
                    tracing::info!("Buffered records written; committing and stopping.");
                    return Ok(());
                }
                Some(command) = self.commands.recv() => {
                    self.handle(command).await?;
                    deadline = self.pipeline.lock().await.batch.deadline();
                }
                () = due => {
                    self.flush().await?;
                    deadline = None;
                }
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Err(self.stage.take_failure().unwrap_or_else(|| {
                            ConsumeError::Database("the write stage ended unexpectedly".into())
                        }));
                    }
                    let holding = progress.borrow_and_update().holding;
                    self.hold(holding);
                    let caught_up = self.pipeline.lock().await.caught_up();
                    if caught_up || self.last_commit.elapsed() >= self.settings.commit_interval {
                        self.commit(CommitMode::Async)?;
                    }
                }
                message = self.consumer.recv() => {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(%error, "Kafka consumer error; continuing.");
                            continue;
                        }
                    };
                    let topic = intern(&mut self.topics, message.topic());
                    let Ok(envelope) = envelope::open(&self.codec, &self.settings, topic, &message, shutdown).await else {
                        // Shutdown while the registry was down: this record is not committed.
                        continue;
                    };
                    drop(message);
                    *self.records_in.entry(envelope.topic.clone()).or_default() += 1;
                    let full = {
                        let mut pipeline = self.pipeline.lock().await;
                        let full = pipeline.batch.push(envelope);
                        deadline = pipeline.batch.deadline();
                        full
                    };
                    if full {
                        self.flush().await?;
                        deadline = None;
                    }
                }
            }
        }
    }

    fn publish_records_in(&mut self) {
        let mut total = 0;
        for (topic, n) in std::mem::take(&mut self.records_in) {
            metrics::counter!(stats::RECORDS_IN, "topic" => topic.to_string()).increment(n);
            total += n;
        }
        self.board.lock().records_in += total;
    }

    /// Pauses the assignment while the database is being retried, and resumes it after (unless
    /// paused through `POST /pause`).
    fn hold(&self, on: bool) {
        hold(&self.consumer, &self.paused, &self.held, on);
    }

    /// Hands the batch to the write stage.
    async fn flush(&mut self) -> Result<(), ConsumeError> {
        self.publish_records_in();
        let mut hold = |on: bool| self.hold(on);
        self.pipeline.lock().await.flush(&mut hold).await
    }

    /// Hands the batch to the write stage and waits until everything is written.
    async fn drain(&mut self) -> Result<(), ConsumeError> {
        self.publish_records_in();
        let mut hold = |on: bool| self.hold(on);
        self.pipeline.lock().await.drain(&mut hold).await
    }

    /// Commits the offsets the write stage finished since the last commit.
    fn commit(&mut self, mode: CommitMode) -> Result<(), KafkaError> {
        self.last_commit = Instant::now();
        let written = self.stage.take_written();
        if written.is_empty() {
            return Ok(());
        }
        let assignment = self.consumer.assignment()?;
        let list = offsets(written, Some(&assignment));
        if list.count() > 0 {
            self.consumer.commit(&list, mode)?;
        }
        Ok(())
    }

    /// Writes everything buffered and commits it; stops with the write stage's failure if it
    /// has one.
    async fn drain_and_commit(&mut self) -> Result<(), ConsumeError> {
        self.drain().await?;
        if let Some(error) = self.stage.take_failure() {
            return Err(error);
        }
        self.commit(CommitMode::Sync)?;
        Ok(())
    }

    async fn handle(&mut self, command: Command) -> Result<(), ConsumeError> {
        match command {
            Command::Pause(reply) => {
                let result = self.pause().await;
                let _ = reply.send(result);
            }
            Command::Resume(reply) => {
                let result = self.resume();
                let _ = reply.send(result);
            }
            Command::Replay(from, reply) => {
                if let Err(e) = self.drain_and_commit().await {
                    let _ = reply.send(Err(e.to_string()));
                    return Err(e);
                }
                let _ = reply.send(self.replay(from));
            }
        }
        Ok(())
    }

    async fn pause(&mut self) -> Result<Value, String> {
        self.drain_and_commit().await.map_err(|e| e.to_string())?;
        self.paused.store(true, Ordering::SeqCst);
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        self.consumer
            .pause(&assignment)
            .map_err(|e| e.to_string())?;
        self.board.set_state(State::Paused);
        tracing::info!(partitions = assignment.count(), "Consumption paused.");
        Ok(json!({ "state": "paused", "partitions": assignment.count() }))
    }

    fn resume(&mut self) -> Result<Value, String> {
        self.paused.store(false, Ordering::SeqCst);
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        self.consumer
            .resume(&assignment)
            .map_err(|e| e.to_string())?;
        self.board.set_state(State::Running);
        tracing::info!(partitions = assignment.count(), "Consumption resumed.");
        Ok(json!({ "state": "running", "partitions": assignment.count() }))
    }

    /// Seeks every assigned partition to `from` and commits there, so that a restart continues
    /// the replay. Under upsert a replay writes the same rows again: the table ends the same.
    fn replay(&mut self, from: ReplayFrom) -> Result<Value, String> {
        let timeout = Duration::from_secs(10);
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        let consumer = &self.consumer;
        let targets = blocking(|| -> Result<TopicPartitionList, KafkaError> {
            let mut targets = TopicPartitionList::new();
            let by_time = match from {
                ReplayFrom::Timestamp(ms) => Some(consumer.offsets_for_timestamp(ms, timeout)?),
                ReplayFrom::Beginning => None,
            };
            for element in assignment.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
                let offset = match by_time
                    .as_ref()
                    .and_then(|t| t.find_partition(topic, partition))
                    .map(|e| e.offset())
                {
                    None => low,
                    Some(Offset::Offset(o)) => o.max(low),
                    Some(_) => high,
                };
                targets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
            }
            consumer.seek_partitions(targets.clone(), timeout)?;
            consumer.commit(&targets, CommitMode::Sync)?;
            Ok(targets)
        })
        .map_err(|e| format!("replay failed: {e}"))?;
        let offsets: Vec<Value> = targets
            .elements()
            .iter()
            .map(|e| {
                json!({
                    "topic": e.topic(),
                    "partition": e.partition(),
                    "offset": match e.offset() { Offset::Offset(o) => Some(o), _ => None },
                })
            })
            .collect();
        tracing::info!(partitions = offsets.len(), ?from, "Replay started.");
        Ok(json!({ "replaying_from": offsets }))
    }
}

/// The shared name of `topic` among `known` (one allocation per topic, not per record).
fn intern(known: &mut Vec<Arc<str>>, topic: &str) -> Arc<str> {
    if let Some(name) = known.iter().find(|name| &***name == topic) {
        return name.clone();
    }
    let name: Arc<str> = Arc::from(topic);
    known.push(name.clone());
    name
}

/// Pauses (`on`) or resumes the assignment unless `held` says it already is; a sink paused
/// through `POST /pause` stays paused.
fn hold(consumer: &StreamConsumer<SinkContext>, paused: &AtomicBool, held: &AtomicBool, on: bool) {
    if held.swap(on, Ordering::SeqCst) == on {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if on {
        consumer.pause(&assignment)
    } else if !paused.load(Ordering::SeqCst) {
        consumer.resume(&assignment)
    } else {
        Ok(())
    };
    if let Err(error) = result {
        tracing::warn!(%error, on, "Cannot pause or resume the assignment.");
    }
}

/// Runs a blocking librdkafka call without stalling the runtime's other tasks.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    if multi_thread() {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
