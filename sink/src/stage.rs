//! The write stage: prepared batches written in order on a task of their own, so that the
//! consumer loop reads, decodes and prepares the next batch while the database writes this one.
//! After each batch its dead letters are sent, the figures published and the offsets it finished
//! recorded for the loop to commit. The first failure stops the stage: nothing after it is
//! written, and the loop stops with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use marketflow_core::metric;
use marketflow_core::sync::lock;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dlq::DeadLetters;
use crate::envelope::Envelope;
use crate::error::ConsumeError;
use crate::retry::Retry;
use crate::settings::Settings;
use crate::stats::Board;
use crate::writer::{DeadLetter, Outcome, Prepared, Writer};

/// Batches handed over and not yet written: one being written, one waiting.
const DEPTH: usize = 1;

/// Next offset to commit per (topic, partition).
pub type Offsets = BTreeMap<(Arc<str>, i32), i64>;

/// A batch for the stage: its records and what the planner made of them.
#[derive(Debug)]
pub struct Job {
    /// The records, in the order they were consumed.
    pub entries: Vec<Envelope>,
    /// Their rows and statements.
    pub prepared: Prepared,
}

/// What the stage has done, as the loop watches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Batches finished (written, dead letters sent, offsets recorded).
    pub done: u64,
    /// Whether the database is being retried (consumption should pause meanwhile).
    pub holding: bool,
    /// Whether the stage stopped on a failure (see [`StageHandle::take_failure`]).
    pub stopped: bool,
}

/// What the stage and its users share.
#[derive(Debug, Default)]
struct Shared {
    /// Offsets finished since the loop last took them.
    written: Mutex<Offsets>,
    /// Why the stage (or the rebalance callback) stopped the sink.
    failure: Mutex<Option<ConsumeError>>,
}

/// The loop's end of the write stage: where batches are handed over.
#[derive(Debug)]
pub struct Stage {
    jobs: mpsc::Sender<Job>,
    handle: StageHandle,
    submitted: u64,
}

/// What anyone may watch and take of the stage: its progress, the offsets it finished and why
/// it stopped.
#[derive(Debug, Clone)]
pub struct StageHandle {
    progress: watch::Receiver<Progress>,
    shared: Arc<Shared>,
}

impl Stage {
    /// Starts the stage's task on `tracker`, writing through `writer`, dead letters to
    /// `dead_letters`. A panic of the task stops the sink with [`ConsumeError::Panicked`],
    /// naming the panic's message.
    pub fn spawn(
        settings: Arc<Settings>,
        writer: Writer,
        dead_letters: Option<DeadLetters>,
        board: Board,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let (jobs, receiver) = mpsc::channel(DEPTH);
        let (progress, watcher) = watch::channel(Progress::default());
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            settings,
            writer,
            dead_letters,
            board,
            shutdown,
            progress: progress.clone(),
            shared: shared.clone(),
            tracker: tracker.clone(),
        };
        tracker.spawn(supervise(worker.run(receiver), shared.clone(), progress));
        Self {
            jobs,
            handle: StageHandle {
                progress: watcher,
                shared,
            },
            submitted: 0,
        }
    }

    /// A handle for watching the stage and taking what it finished.
    pub fn handle(&self) -> StageHandle {
        self.handle.clone()
    }

    /// Hands a batch over; waits while a batch is already waiting, calling `hold`
    /// whenever the stage starts or stops retrying the database. `false` when the stage has
    /// stopped (see [`StageHandle::take_failure`]); the batch is then not written.
    pub async fn submit(&mut self, job: Job, hold: &mut (dyn FnMut(bool) + Send)) -> bool {
        let mut watcher = self.handle.progress.clone();
        loop {
            tokio::select! {
                permit = self.jobs.reserve() => {
                    let Ok(permit) = permit else { return false };
                    permit.send(job);
                    self.submitted += 1;
                    return true;
                }
                changed = watcher.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    hold(watcher.borrow_and_update().holding);
                }
            }
        }
    }

    /// Whether every batch handed over is finished.
    pub fn idle(&self) -> bool {
        self.handle.progress.borrow().done >= self.submitted
    }

    /// Waits until every batch handed over is finished, or the stage stopped.
    pub async fn drain(&self) {
        let submitted = self.submitted;
        let mut watcher = self.handle.progress.clone();
        // An error means the task ended, which it only does after a failure.
        let _ = watcher.wait_for(|p| p.done >= submitted || p.stopped).await;
    }
}

impl StageHandle {
    /// A watcher of the stage's progress, for the loop to wake on.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The offsets finished since the last call.
    pub fn take_written(&self) -> Offsets {
        std::mem::take(&mut *lock(&self.shared.written))
    }

    /// Why the sink must stop, if it must; taken once.
    pub fn take_failure(&self) -> Option<ConsumeError> {
        lock(&self.shared.failure).take()
    }

    /// Records why the sink must stop (the first reason wins).
    pub fn fail(&self, error: ConsumeError) {
        self.shared.fail(error);
    }
}

impl Shared {
    /// Records why the sink must stop (the first reason wins).
    fn fail(&self, error: ConsumeError) {
        lock(&self.failure).get_or_insert(error);
    }

    /// Records `entries` as written: each partition's next offset to commit moves past them.
    fn record(&self, entries: &[Envelope]) {
        // Maxima first, by borrowed name: the shared map (and a clone of the topic's name) is
        // touched once per partition, not once per record.
        let mut next: BTreeMap<(&Arc<str>, i32), i64> = BTreeMap::new();
        for envelope in entries {
            let slot = next
                .entry((&envelope.topic, envelope.partition))
                .or_insert(0);
            *slot = (*slot).max(envelope.offset + 1);
        }
        let mut written = lock(&self.written);
        for ((topic, partition), offset) in next {
            let slot = written.entry((topic.clone(), partition)).or_insert(0);
            *slot = (*slot).max(offset);
        }
    }
}

/// Runs the stage's `task`; should it panic, records the panic's message as the sink's failure
/// and marks the stage stopped, so that the loop stops saying why rather than that the stage
/// ended.
async fn supervise(
    task: impl Future<Output = ()>,
    shared: Arc<Shared>,
    progress: watch::Sender<Progress>,
) {
    if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
        let message = panic_message(panic.as_ref());
        tracing::error!(panic = message, "Write stage panicked.");
        shared.fail(ConsumeError::Panicked(message.to_owned()));
        progress.send_modify(|p| p.stopped = true);
    }
}

/// The text a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Now, in epoch milliseconds (the clock record timestamps are on).
fn epoch_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds from each record's timestamp to `committed_ms`, when its transaction committed, in
/// batch order: the records `dead` set aside (whose rows were never written) and records without
/// a timestamp are left out; a timestamp ahead of the sink's clock counts as 0.
fn end_to_end_seconds<'a>(
    timestamps: impl Iterator<Item = Option<i64>> + 'a,
    dead: &'a [DeadLetter],
    committed_ms: i64,
) -> impl Iterator<Item = f64> + 'a {
    let mut dead = dead.iter().map(|d| d.index).peekable();
    timestamps
        .enumerate()
        .filter_map(move |(index, timestamp)| {
            while dead.next_if(|&d| d < index).is_some() {}
            if dead.next_if_eq(&index).is_some() {
                return None;
            }
            let millis = committed_ms.saturating_sub(timestamp.filter(|&t| t >= 0)?);
            #[allow(clippy::cast_precision_loss)] // exact below 2^53 ms, some 285,000 years
            Some(millis.max(0) as f64 / 1000.0)
        })
}

/// The stage's task.
struct Worker {
    settings: Arc<Settings>,
    writer: Writer,
    dead_letters: Option<DeadLetters>,
    board: Board,
    shutdown: CancellationToken,
    progress: watch::Sender<Progress>,
    shared: Arc<Shared>,
    /// Where the batches' memory is freed (see [`Worker::write`]).
    tracker: TaskTracker,
}

impl Worker {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let result = self.write(job).await;
            let stopped = match result {
                Ok(None) => false,
                Ok(Some(error)) | Err(error) => {
                    self.shared.fail(error);
                    true
                }
            };
            self.progress.send_modify(|p| {
                p.done += 1;
                p.stopped = stopped;
            });
            if stopped {
                // Nothing after a failure is written; the loop stops on it.
                return;
            }
        }
    }

    /// Writes one batch, sends its dead letters, publishes its figures and records its
    /// offsets. `Ok(Some(_))`: the batch stopped at a record that cannot be written (tolerance
    /// none); what came before it is written and recorded.
    async fn write(&mut self, job: Job) -> Result<Option<ConsumeError>, ConsumeError> {
        let Job {
            entries,
            mut prepared,
        } = job;
        let started = Instant::now();
        let progress = &self.progress;
        let mut hold = |on: bool| progress.send_modify(|p| p.holding = on);
        let mut retry = Retry::new(&self.settings, &self.board, &self.shutdown);
        loop {
            match self.writer.write(&mut prepared).await {
                Ok(()) => break retry.through(&mut hold, ()),
                Err(e) => retry.wait(&mut hold, e).await?,
            }
        }
        let committed_ms = epoch_millis();
        let outcome = prepared.outcome(self.settings.sink.errors_tolerance);
        let latency = metrics::histogram!(metric::sink::END_TO_END_SECONDS);
        let done = entries[..outcome.done].iter().map(|e| e.timestamp);
        for seconds in end_to_end_seconds(done, &outcome.dead, committed_ms) {
            latency.record(seconds);
        }
        self.send_dead_letters(&entries, &outcome).await?;
        self.shared.record(&entries[..outcome.done]);
        self.publish(&outcome, started);
        tracing::debug!(rows = outcome.rows.values().sum::<u64>(), records = entries.len(), elapsed = ?started.elapsed(), "Batch written.");
        let stop = outcome.stopped_at.map(|d| ConsumeError::Stopped {
            coordinates: entries[d.index].coordinates(),
            class: d.poison.class.to_owned(),
            message: d.poison.message,
        });
        // Freeing a batch's records and rows takes a while; this task is what the database
        // waits for, so another thread does it.
        self.tracker
            .spawn_blocking(move || drop((entries, prepared)));
        Ok(stop)
    }

    async fn send_dead_letters(
        &self,
        entries: &[Envelope],
        outcome: &Outcome,
    ) -> Result<(), ConsumeError> {
        if outcome.dead.is_empty() {
            return Ok(());
        }
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
            metrics::counter!(metric::sink::DEAD_LETTERED, "topic" => envelope.topic.to_string())
                .increment(1);
        }
        Ok(())
    }

    fn publish(&self, outcome: &Outcome, started: Instant) {
        metrics::counter!(metric::sink::BATCHES).increment(1);
        metrics::histogram!(metric::sink::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        let mut status = self.board.lock();
        status.batches += 1;
        status.dead_lettered += outcome.dead.len() as u64;
        for (table, rows) in &outcome.rows {
            metrics::counter!(metric::sink::ROWS_WRITTEN, "table" => table.clone())
                .increment(*rows);
            status.rows_written += rows;
            *status
                .rows_written_by_table
                .entry(table.clone())
                .or_default() += rows;
        }
        for (table, rows) in &outcome.deleted {
            metrics::counter!(metric::sink::ROWS_DELETED, "table" => table.clone())
                .increment(*rows);
            status.rows_deleted += rows;
        }
        for (table, records) in &outcome.redelivered {
            metrics::counter!(metric::sink::REDELIVERED, "table" => table.clone())
                .increment(*records);
            status.records_redelivered += records;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Poison;

    fn dead(index: usize) -> DeadLetter {
        DeadLetter {
            index,
            poison: Poison {
                class: "test",
                message: String::new(),
            },
        }
    }

    #[test]
    fn latency_runs_from_each_written_records_timestamp_to_the_commit() {
        let timestamps = [
            Some(1_000),
            Some(2_000),
            None,
            Some(3_500),
            Some(9_000),
            Some(-1),
        ];
        let seconds: Vec<f64> =
            end_to_end_seconds(timestamps.into_iter(), &[dead(1), dead(3)], 5_000).collect();
        // Record 1 and 3 were dead-lettered, 2 has no timestamp, 4 is ahead of our clock, 5
        // has none either (librdkafka's -1).
        assert_eq!(seconds, [4.0, 0.0]);
        let all: Vec<f64> = end_to_end_seconds([Some(4_750)].into_iter(), &[], 5_000).collect();
        assert_eq!(all, [0.25]);
    }

    #[test]
    fn offsets_move_past_the_last_record_written_of_each_partition() {
        let shared = Shared::default();
        let batch = [
            Envelope::poison_for_test("a", 0, 7),
            Envelope::poison_for_test("a", 1, 3),
            Envelope::poison_for_test("a", 0, 5),
        ];
        shared.record(&batch);
        shared.record(&[Envelope::poison_for_test("a", 1, 4)]);
        let written = std::mem::take(&mut *lock(&shared.written));
        let expected: Offsets = [((Arc::from("a"), 0), 8), ((Arc::from("a"), 1), 5)].into();
        assert_eq!(written, expected);
    }

    #[test]
    fn the_first_failure_is_the_one_reported() {
        let shared = Shared::default();
        shared.fail(ConsumeError::DeadLetter("first".into()));
        shared.fail(ConsumeError::DeadLetter("second".into()));
        let failure = lock(&shared.failure).take().map(|e| e.to_string());
        assert!(failure.is_some_and(|f| f.starts_with("first")));
    }

    #[tokio::test]
    async fn a_panicking_stage_stops_the_sink_with_its_message() {
        let shared = Arc::new(Shared::default());
        let (progress, mut watcher) = watch::channel(Progress::default());
        let tracker = TaskTracker::new();
        let code = 42;
        tracker.spawn(supervise(
            async move { panic!("row {code} has no column") },
            shared.clone(),
            progress,
        ));
        tracker.close();
        tracker.wait().await;
        assert!(watcher.borrow_and_update().stopped);
        let failure = lock(&shared.failure).take().map(|e| e.to_string());
        assert_eq!(
            failure.as_deref(),
            Some(
                "the write stage panicked: row 42 has no column; nothing past the last written \
                 batch was committed, so a restart resumes there"
            )
        );
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&7_u8), "a panic without a message");
    }

    #[tokio::test]
    async fn a_stage_that_ends_normally_reports_nothing() {
        let shared = Arc::new(Shared::default());
        let (progress, watcher) = watch::channel(Progress::default());
        supervise(async {}, shared.clone(), progress).await;
        assert!(!watcher.borrow().stopped);
        assert!(lock(&shared.failure).is_none());
    }
}
