//! The write stage: prepared batches written in order on a task of their own, so that the
//! consumer loop reads, decodes and prepares the next batch while the database writes this one.
//! After each batch its dead letters are sent, the figures published and the offsets it finished
//! recorded for the loop to commit. The first failure stops the stage: nothing after it is
//! written, and the loop stops with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use backon::BackoffBuilder;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::consume::ConsumeError;
use crate::dlq::DeadLetters;
use crate::envelope::Envelope;
use crate::settings::Settings;
use crate::stats::{self, Board, State};
use crate::writer::{Outcome, Prepared, WriteError, Writer};

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
    /// Starts the stage's task, writing through `writer`, dead letters to `dead_letters`.
    pub fn spawn(
        settings: Arc<Settings>,
        writer: Writer,
        dead_letters: Option<DeadLetters>,
        board: Board,
        shutdown: CancellationToken,
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
            progress,
            shared: shared.clone(),
        };
        tokio::spawn(worker.run(receiver));
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Retries of work that fails while the database is unavailable, with the settings' backoff:
/// `hold(true)` before the first retry and `hold(false)` once through, the board showing
/// `backing_off` meanwhile.
///
/// ```ignore
/// let mut retry = Retry::new(&settings, &board, &shutdown);
/// let done = loop {
///     match work().await {
///         Ok(done) => break retry.through(hold, done),
///         Err(e) => retry.wait(hold, e).await?,
///     }
/// };
/// ```
pub struct Retry<'a> {
    board: &'a Board,
    shutdown: &'a CancellationToken,
    delays: backon::ExponentialBackoff,
    retries: usize,
}

impl<'a> Retry<'a> {
    /// No retry made yet.
    pub fn new(settings: &Settings, board: &'a Board, shutdown: &'a CancellationToken) -> Self {
        Self {
            board,
            shutdown,
            delays: settings.backoff().build(),
            retries: 0,
        }
    }

    /// The work went through: `done`, after resuming consumption if it was held.
    pub fn through<T>(&mut self, hold: &mut (dyn FnMut(bool) + Send), done: T) -> T {
        if self.retries > 0 {
            hold(false);
            tracing::info!(
                retries = self.retries,
                "Database back; consumption resumed."
            );
            let mut status = self.board.lock();
            status.last_error = None;
            status.state = State::Running;
            self.retries = 0;
        }
        done
    }

    /// The work failed with `error`: waits before the next attempt if it is worth one.
    ///
    /// # Errors
    /// [`ConsumeError::GaveUp`] after the last retry or at shutdown, [`ConsumeError::Database`]
    /// when retrying cannot help.
    pub async fn wait(
        &mut self,
        hold: &mut (dyn FnMut(bool) + Send),
        error: WriteError,
    ) -> Result<(), ConsumeError> {
        let e = match error {
            WriteError::Transient(e) => e,
            WriteError::Fatal(e) => return Err(ConsumeError::Database(e)),
        };
        self.board.lock().last_error = Some(e.to_string());
        let Some(delay) = self.delays.next() else {
            return Err(ConsumeError::GaveUp {
                retries: self.retries,
                last: e.to_string(),
            });
        };
        if self.retries == 0 {
            hold(true);
            self.board.set_state(State::BackingOff);
        }
        self.retries += 1;
        metrics::counter!(stats::DB_RETRIES).increment(1);
        tracing::warn!(error = %e, retry = self.retries, ?delay, "Database write failed; consumption paused, retrying.");
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.shutdown.cancelled() => Err(ConsumeError::GaveUp {
                retries: self.retries,
                last: format!("shutdown while retrying: {e}"),
            }),
        }
    }
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
        let outcome = prepared.outcome(self.settings.tolerance);
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
        tokio::task::spawn_blocking(move || drop((entries, prepared)));
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
            metrics::counter!(stats::DEAD_LETTERED, "topic" => envelope.topic.to_string())
                .increment(1);
        }
        Ok(())
    }

    fn publish(&self, outcome: &Outcome, started: Instant) {
        metrics::counter!(stats::BATCHES).increment(1);
        metrics::histogram!(stats::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
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
        for (table, records) in &outcome.redelivered {
            metrics::counter!(stats::REDELIVERED, "table" => table.clone()).increment(*records);
            status.records_redelivered += records;
        }
    }
}
