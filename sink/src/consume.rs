//! The consumer loop: records in, decoded, batched, written, and only then their offsets
//! committed; database outages retried with consumption paused; rebalances that write and commit
//! what is buffered before a partition is given away; and the control commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use marketflow_core::codec::Codec;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::control::{Command, ReplayFrom};
use crate::dlq::DeadLetters;
use crate::envelope::{self, Envelope};
use crate::settings::Settings;
use crate::stats::{self, Board, State};
use crate::writer::{WriteError, Writer};

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

/// A batch written: offsets to commit, and the error to stop with (after committing) if the
/// batch stopped at a poison record.
#[derive(Debug)]
struct Flushed {
    offsets: TopicPartitionList,
    stop: Option<ConsumeError>,
}

/// What the loop and the rebalance callback share.
pub struct Pipeline {
    settings: Arc<Settings>,
    batch: Batch<Envelope>,
    writer: Writer,
    dead_letters: Option<DeadLetters>,
    board: Board,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("buffered", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline writing through `writer`, dead letters to `dead_letters` (with tolerance all).
    pub fn new(
        settings: Arc<Settings>,
        writer: Writer,
        dead_letters: Option<DeadLetters>,
        board: Board,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            batch: Batch::new(settings.batch_size, settings.batch_max_age),
            settings,
            writer,
            dead_letters,
            board,
            shutdown,
        }
    }

    /// Writes the batch (retrying transient failures, calling `hold(true)` before the first
    /// retry and `hold(false)` once through), sends its dead letters, and returns the offsets to
    /// commit. `None` when the batch was empty.
    async fn flush(
        &mut self,
        hold: &mut (dyn FnMut(bool) + Send),
    ) -> Result<Option<Flushed>, ConsumeError> {
        if self.batch.is_empty() {
            return Ok(None);
        }
        let entries = self.batch.take();
        let started = Instant::now();
        let mut delays = self.settings.backoff().build();
        let mut retries = 0;
        let outcome = loop {
            match self.writer.write(&entries).await {
                Ok(outcome) => break outcome,
                Err(WriteError::Transient(e)) => {
                    let Some(delay) = delays.next() else {
                        self.board.lock().last_error = Some(e.to_string());
                        return Err(ConsumeError::GaveUp {
                            retries,
                            last: e.to_string(),
                        });
                    };
                    if retries == 0 {
                        hold(true);
                        self.board.set_state(State::BackingOff);
                    }
                    retries += 1;
                    metrics::counter!(stats::DB_RETRIES).increment(1);
                    self.board.lock().last_error = Some(e.to_string());
                    tracing::warn!(error = %e, retry = retries, ?delay, records = entries.len(), "Database write failed; consumption paused, retrying.");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => return Err(ConsumeError::GaveUp { retries, last: format!("shutdown while retrying: {e}") }),
                    }
                }
                Err(WriteError::Fatal(e)) => return Err(ConsumeError::Database(e)),
            }
        };
        if retries > 0 {
            hold(false);
            tracing::info!(retries, "Database back; consumption resumed.");
            let mut status = self.board.lock();
            status.last_error = None;
            status.state = State::Running;
        }
        if !outcome.dead.is_empty() {
            let letters: Vec<_> = outcome
                .dead
                .iter()
                .map(|d| (&entries[d.index], &d.poison))
                .collect();
            let Some(dead_letters) = &self.dead_letters else {
                return Err(ConsumeError::DeadLetter(
                    "records to dead-letter but no dead-letter producer".into(),
                ));
            };
            dead_letters
                .send_all(&letters)
                .await
                .map_err(|e| ConsumeError::DeadLetter(e.to_string()))?;
            for (envelope, poison) in &letters {
                tracing::warn!(record = %envelope.coordinates(), class = poison.class, error = %poison.message, dlq = dead_letters.topic(), "Record dead-lettered.");
                metrics::counter!(stats::DEAD_LETTERED, "topic" => envelope.topic.to_string())
                    .increment(1);
            }
        }
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for envelope in &entries[..outcome.done] {
            let slot = next
                .entry((&envelope.topic, envelope.partition))
                .or_insert(0);
            *slot = (*slot).max(envelope.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(ConsumeError::Kafka)?;
        }
        metrics::counter!(stats::BATCHES).increment(1);
        metrics::histogram!(stats::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        {
            let mut status = self.board.lock();
            status.batches += 1;
            status.dead_lettered += outcome.dead.len() as u64;
            for (table, rows) in &outcome.rows {
                metrics::counter!(stats::ROWS_WRITTEN, "table" => table.clone()).increment(*rows);
                status.rows_written += rows;
                *status
                    .rows_written_by_table
                    .entry(table.clone())
                    .or_default() += rows;
            }
            for (table, rows) in &outcome.deleted {
                metrics::counter!(stats::ROWS_DELETED, "table" => table.clone()).increment(*rows);
                status.rows_deleted += rows;
            }
        }
        let rows: u64 = outcome.rows.values().sum();
        tracing::debug!(rows, records = entries.len(), elapsed = ?started.elapsed(), "Batch written.");
        let stop = outcome.stopped_at.map(|d| ConsumeError::Stopped {
            coordinates: entries[d.index].coordinates(),
            class: d.poison.class.to_owned(),
            message: d.poison.message,
        });
        Ok(Some(Flushed { offsets, stop }))
    }
}

/// What the rebalance callback needs.
pub struct SinkContext {
    pipeline: Arc<Mutex<Pipeline>>,
    board: Board,
    paused: Arc<std::sync::atomic::AtomicBool>,
    failure: Arc<std::sync::Mutex<Option<ConsumeError>>>,
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
            && self.paused.load(std::sync::atomic::Ordering::SeqCst)
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
    /// Writes and commits what is buffered before partitions go to another member, so that it
    /// never writes a record of a partition it no longer owns after that member has.
    fn write_before_revoke(&self, base: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let revoked_list = partitions(revoked);
        if let Ok(pipeline) = self.pipeline.try_lock()
            && pipeline.batch.is_empty()
        {
            return;
        }
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread {
            // Cannot wait for the database here: drop the revoked partitions' records instead
            // (not committed, so their next owner reads them again).
            if let Ok(mut pipeline) = self.pipeline.try_lock() {
                pipeline
                    .batch
                    .retain(|e| !revoked_list.contains(&(e.topic.to_string(), e.partition)));
            }
            return;
        }
        tracing::info!(partitions = ?revoked_list, "Partitions revoked; writing what is buffered first.");
        let pipeline = self.pipeline.clone();
        let flushed = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(async move { pipeline.lock().await.flush(&mut |_| {}).await })
        });
        match flushed {
            Ok(Some(flushed)) => {
                if flushed.offsets.count() > 0
                    && let Err(error) = base.commit(&flushed.offsets, CommitMode::Sync)
                {
                    tracing::warn!(%error, "Commit before revoke failed; the next owner re-reads those records.");
                }
                if let Some(stop) = flushed.stop {
                    self.fail(stop);
                }
            }
            Ok(None) => {}
            Err(e) => self.fail(e),
        }
    }

    fn fail(&self, error: ConsumeError) {
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failure.get_or_insert(error);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer loop and what it owns.
pub struct Consumption {
    settings: Arc<Settings>,
    codec: Arc<Codec>,
    consumer: StreamConsumer<SinkContext>,
    pipeline: Arc<Mutex<Pipeline>>,
    board: Board,
    paused: Arc<std::sync::atomic::AtomicBool>,
    failure: Arc<std::sync::Mutex<Option<ConsumeError>>>,
    commands: mpsc::Receiver<Command>,
    /// Records consumed per topic since the figures were last published (per batch, not per
    /// record: a metrics lookup per record costs more than the rest of its handling).
    records_in: BTreeMap<Arc<str>, u64>,
}

impl std::fmt::Debug for Consumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumption")
            .field("topics", &self.settings.topics)
            .finish_non_exhaustive()
    }
}

/// The callback's context for `pipeline`, and the flags it shares with the loop.
pub fn context(pipeline: Arc<Mutex<Pipeline>>, board: Board) -> SinkContext {
    SinkContext {
        pipeline,
        board,
        paused: Arc::default(),
        failure: Arc::default(),
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
            board: context.board.clone(),
            paused: context.paused.clone(),
            failure: context.failure.clone(),
            settings,
            codec,
            consumer,
            commands,
            records_in: BTreeMap::new(),
        })
    }

    /// Runs until `shutdown` (then writes and commits what is buffered) or an error.
    ///
    /// # Errors
    /// [`ConsumeError`]; nothing past the last written record is ever committed.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConsumeError> {
        self.board.set_state(State::Running);
        let result = self.run_loop(&shutdown).await;
        let mut status = self.board.lock();
        status.state = State::Stopped;
        if let Err(e) = &result {
            status.last_error = Some(e.to_string());
        }
        result
    }

    async fn run_loop(&mut self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(error) = self.take_failure() {
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
                    self.flush_and_commit(CommitMode::Sync).await?;
                    tracing::info!("Buffered records written and committed; stopping.");
                    return Ok(());
                }
                Some(command) = self.commands.recv() => {
                    self.handle(command).await?;
                    deadline = None;
                }
                () = due => {
                    self.flush_and_commit(CommitMode::Async).await?;
                    deadline = None;
                }
                message = self.consumer.recv() => {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(%error, "Kafka consumer error; continuing.");
                            continue;
                        }
                    };
                    let Ok(envelope) = envelope::open(&self.codec, &self.settings, &message, shutdown).await else {
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
                        self.flush_and_commit(CommitMode::Async).await?;
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

    fn take_failure(&self) -> Option<ConsumeError> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Writes the batch and commits its offsets; pauses the assignment while the database is
    /// being retried.
    async fn flush_and_commit(&mut self, mode: CommitMode) -> Result<(), ConsumeError> {
        self.publish_records_in();
        let consumer = &self.consumer;
        let paused = self.paused.clone();
        let mut hold = |on: bool| {
            let Ok(assignment) = consumer.assignment() else {
                return;
            };
            // A paused sink stays paused when the database comes back.
            let result = if on {
                consumer.pause(&assignment)
            } else if !paused.load(std::sync::atomic::Ordering::SeqCst) {
                consumer.resume(&assignment)
            } else {
                Ok(())
            };
            if let Err(error) = result {
                tracing::warn!(%error, on, "Cannot pause or resume the assignment.");
            }
        };
        let flushed = self.pipeline.lock().await.flush(&mut hold).await?;
        if let Some(flushed) = flushed {
            if flushed.offsets.count() > 0 {
                self.consumer.commit(&flushed.offsets, mode)?;
            }
            if let Some(stop) = flushed.stop {
                return Err(stop);
            }
        }
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
                if let Err(e) = self.flush_and_commit(CommitMode::Sync).await {
                    let _ = reply.send(Err(e.to_string()));
                    return Err(e);
                }
                let _ = reply.send(self.replay(from));
            }
        }
        Ok(())
    }

    async fn pause(&mut self) -> Result<Value, String> {
        self.flush_and_commit(CommitMode::Sync)
            .await
            .map_err(|e| e.to_string())?;
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        self.consumer
            .pause(&assignment)
            .map_err(|e| e.to_string())?;
        self.board.set_state(State::Paused);
        tracing::info!(partitions = assignment.count(), "Consumption paused.");
        Ok(json!({ "state": "paused", "partitions": assignment.count() }))
    }

    fn resume(&mut self) -> Result<Value, String> {
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
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

/// Runs a blocking librdkafka call without stalling the runtime's other tasks.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
