//! The consumer loop: records in, decoded, batched and handed to the write stage; offsets
//! committed only once the stage has written their rows; consumption held while the database is
//! retried; control commands answered between records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use marketflow_core::codec::Codec;
use marketflow_core::metric;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::commit;
use super::pipeline::Pipeline;
use super::rebalance::SinkContext;
use crate::control::Command;
use crate::envelope::{self, Envelope};
use crate::error::ConsumeError;
use crate::settings::Settings;
use crate::stage::StageHandle;
use crate::stats::{Board, State};

/// The consumer loop and what it owns.
pub(crate) struct Consumption {
    pub(super) settings: Arc<Settings>,
    codec: Arc<Codec>,
    pub(super) consumer: StreamConsumer<SinkContext>,
    pipeline: Arc<Mutex<Pipeline>>,
    pub(super) stage: StageHandle,
    pub(super) board: Board,
    /// Whether the sink is paused through `POST /pause` (shared with the rebalance callback).
    pub(super) paused: Arc<AtomicBool>,
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
            .field("topics", &self.settings.sink.topics)
            .finish_non_exhaustive()
    }
}

impl Consumption {
    /// The loop over `consumer` (built with [`super::context`]), subscribed to the settings'
    /// topics.
    ///
    /// # Errors
    /// [`KafkaError`] when the subscription fails.
    pub(crate) fn new(
        settings: Arc<Settings>,
        codec: Arc<Codec>,
        consumer: StreamConsumer<SinkContext>,
        commands: mpsc::Receiver<Command>,
    ) -> Result<Self, KafkaError> {
        let topics: Vec<&str> = settings.sink.topics.iter().map(String::as_str).collect();
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
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConsumeError> {
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
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return self.finish().await,
                Some(command) = self.commands.recv() => {
                    self.handle(command).await?;
                    deadline = self.pipeline.lock().await.deadline();
                }
                () = due(deadline) => {
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
                    self.progressed(holding).await?;
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
                    let opened =
                        envelope::open(&self.codec, &self.settings, topic, &message, shutdown)
                            .await;
                    drop(message);
                    // An error: shutdown while the registry was down; the record is not
                    // committed.
                    if let Ok(envelope) = opened {
                        self.push(envelope, &mut deadline).await?;
                    }
                }
            }
        }
    }

    /// At shutdown: writes what is buffered; the caller commits it.
    async fn finish(&mut self) -> Result<(), ConsumeError> {
        self.drain().await?;
        if let Some(error) = self.stage.take_failure() {
            return Err(error);
        }
        tracing::info!("Buffered records written; committing and stopping.");
        Ok(())
    }

    /// The write stage moved on: holds or releases consumption as it retries the database, and
    /// commits what it finished when that is due.
    async fn progressed(&mut self, holding: bool) -> Result<(), ConsumeError> {
        self.hold(holding);
        let caught_up = self.pipeline.lock().await.caught_up();
        if commit::due(
            caught_up,
            self.last_commit.elapsed(),
            self.settings.commit_interval,
        ) {
            self.commit(CommitMode::Async)?;
        }
        Ok(())
    }

    /// Adds a record to the batch, handing the batch over when it is full; `deadline` is when
    /// the batch is due by age.
    async fn push(
        &mut self,
        envelope: Envelope,
        deadline: &mut Option<Instant>,
    ) -> Result<(), ConsumeError> {
        *self.records_in.entry(envelope.topic.clone()).or_default() += 1;
        let full = {
            let mut pipeline = self.pipeline.lock().await;
            let full = pipeline.push(envelope);
            *deadline = pipeline.deadline();
            full
        };
        if full {
            self.flush().await?;
            *deadline = None;
        }
        Ok(())
    }

    fn publish_records_in(&mut self) {
        let mut total = 0;
        for (topic, n) in std::mem::take(&mut self.records_in) {
            metrics::counter!(metric::sink::RECORDS_IN, "topic" => topic.to_string()).increment(n);
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
    pub(super) fn commit(&mut self, mode: CommitMode) -> Result<(), KafkaError> {
        self.last_commit = Instant::now();
        let written = self.stage.take_written();
        if written.is_empty() {
            return Ok(());
        }
        let assignment = self.consumer.assignment()?;
        let list = commit::offsets(written, Some(&assignment));
        if list.count() > 0 {
            self.consumer.commit(&list, mode)?;
        }
        Ok(())
    }

    /// Writes everything buffered and commits it; stops with the write stage's failure if it
    /// has one.
    pub(super) async fn drain_and_commit(&mut self) -> Result<(), ConsumeError> {
        self.drain().await?;
        if let Some(error) = self.stage.take_failure() {
            return Err(error);
        }
        self.commit(CommitMode::Sync)?;
        Ok(())
    }
}

/// Waits until `deadline`; never returns without one.
async fn due(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_name_is_allocated_once() {
        let mut known = Vec::new();
        let a = intern(&mut known, "a");
        let b = intern(&mut known, "b");
        let again = intern(&mut known, "a");
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(known.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_is_never_due() {
        let never = tokio::time::timeout(std::time::Duration::from_secs(3600), due(None)).await;
        assert!(never.is_err());
        let at = Instant::now() + std::time::Duration::from_millis(500);
        due(Some(at)).await;
        assert_eq!(Instant::now(), at);
    }
}
