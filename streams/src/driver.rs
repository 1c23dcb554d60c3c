//! The poll loop both stages run on, the aggregation ([`crate::worker`]) and the merge
//! ([`crate::merge`]): one consumer in a group, a record at a time, a flush every commit
//! interval (and as soon as the input runs dry, see [`IDLE_SHARE`]), the operator's pause and
//! resume, the rebalance callback and one fatal slot.
//!
//! A stage says what to do with a record, at a flush, when partitions are assigned or taken
//! away, and when it stops ([`Stage`]); the driver decides when. Each runs on a thread of its own
//! with a `BaseConsumer`, so that the rebalance callback, which runs inside `poll` on that
//! thread, can restore a partition before its first record is read and make everything durable
//! before a partition is given away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use marketflow_core::sync::lock;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// How long one poll waits for a record: also how soon a pause, a shutdown or a due flush is
/// seen when no record comes.
const POLL: Duration = Duration::from_millis(50);

/// A stage whose input runs dry (a poll brings nothing) flushes what it processed without
/// waiting for the rest of the interval, once this share of it has passed: a burst's last
/// results are out at once, and a trickle of input costs at most this many flushes (under
/// `exactly_once`, transactions) per interval.
const IDLE_SHARE: u32 = 5;

/// The consumer a stage is driven by.
pub type StageConsumer<S> = BaseConsumer<Driven<S>>;

/// What a stage does; the driver calls it from its poll loop and its rebalance callback.
pub trait Stage: Send + Sized + 'static {
    /// What stops the stage.
    type Error: std::fmt::Display;

    /// The stage's name in logs, e.g. "Merge stage".
    const NAME: &'static str;

    /// The topic it reads.
    fn topic(&self) -> &str;

    /// The stage's error for a consumer call that failed.
    fn consume_error(&self, source: KafkaError) -> Self::Error;

    /// Where the stage keeps its first fatal error, for the poll loop to stop with.
    fn fatal_slot(&mut self) -> &mut Option<Self::Error>;

    /// Keeps `error` (logged) unless an earlier one is kept.
    fn fail(&mut self, error: Self::Error) {
        tracing::error!(%error, "{} failing.", Self::NAME);
        self.fatal_slot().get_or_insert(error);
    }

    /// The fatal error, if one was kept.
    fn take_fatal(&mut self) -> Option<Self::Error> {
        self.fatal_slot().take()
    }

    /// Whether a fatal error was kept: a failed stage takes no partition on.
    fn failed(&mut self) -> bool {
        self.fatal_slot().is_some()
    }

    /// Processes one record.
    ///
    /// # Errors
    /// Its fatal error.
    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), Self::Error>;

    /// Makes durable what is due; called every commit interval, and earlier when the input runs
    /// dry after records were processed (at most [`IDLE_SHARE`] times per interval).
    ///
    /// # Errors
    /// Its fatal error.
    fn flush(&mut self, consumer: &StageConsumer<Self>) -> Result<(), Self::Error>;

    /// Takes partitions `tpl` on, and returns the assignment with the offsets to read them from.
    /// Errors go to [`Stage::fail`].
    fn assigned(
        &mut self,
        consumer: &StageConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> TopicPartitionList;

    /// Gives every partition up (`err` is the rebalance's reason). Errors go to [`Stage::fail`].
    fn revoked(&mut self, consumer: &StageConsumer<Self>, err: RDKafkaRespErr);

    /// Ends the stage before it leaves the group: `clean` unless the poll loop failed.
    ///
    /// # Errors
    /// Its fatal error.
    fn stop(&mut self, consumer: &StageConsumer<Self>, clean: bool) -> Result<(), Self::Error>;

    /// Whether the operator wants the stage's input paused.
    fn wants_paused(&self) -> bool {
        false
    }

    /// The outcome of an asynchronous offset commit.
    fn committed(&self, _result: KafkaResult<()>, _offsets: &TopicPartitionList) {}
}

/// A stage behind its consumer's context, so that the rebalance callback reaches it.
pub struct Driven<S> {
    stage: Mutex<S>,
    paused: AtomicBool,
}

impl<S> Driven<S> {
    fn stage(&self) -> MutexGuard<'_, S> {
        lock(&self.stage)
    }
}

impl<S: Stage> ClientContext for Driven<S> {}

impl<S: Stage> ConsumerContext for Driven<S> {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.stage().committed(result, offsets);
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut stage = self.stage();
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            if stage.failed() {
                return;
            }
            let assignment = stage.assigned(consumer, tpl);
            let paused = self.paused.load(Ordering::Relaxed);
            let taken = consumer.assign(&assignment).and_then(|()| {
                if paused {
                    consumer.pause(&assignment)
                } else {
                    Ok(())
                }
            });
            if let Err(source) = taken {
                let error = stage.consume_error(source);
                stage.fail(error);
            }
            return;
        }
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
            tracing::warn!(stage = S::NAME, error = ?err, "Rebalance failed; giving up the partitions.");
        }
        stage.revoked(consumer, err);
        // Still reading partitions another instance now owns would process their records
        // without their state.
        if let Err(source) = consumer.unassign() {
            let error = stage.consume_error(source);
            stage.fail(error);
        }
    }
}

/// Runs a stage: its consumer, subscribed to the stage's topic, polled until shutdown or a
/// fatal error.
pub struct Driver<S: Stage> {
    consumer: StageConsumer<S>,
    shutdown: CancellationToken,
    interval: Duration,
}

impl<S: Stage> Driver<S> {
    /// A driver of `stage` through a consumer made from `config`, flushing every `interval`.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(
        config: &ClientConfig,
        stage: S,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> KafkaResult<Self> {
        let consumer = config.create_with_context(Driven {
            stage: Mutex::new(stage),
            paused: AtomicBool::new(false),
        })?;
        Ok(Self {
            consumer,
            shutdown,
            interval,
        })
    }

    /// Runs until `shutdown` is cancelled or a fatal error, then stops the stage and leaves the
    /// group (the revocation served).
    ///
    /// # Errors
    /// The stage's fatal error.
    pub fn run(self) -> Result<(), S::Error> {
        let topic = self.stage().topic().to_owned();
        if let Err(source) = self.consumer.subscribe(&[&topic]) {
            return Err(self.stage().consume_error(source));
        }
        tracing::info!(%topic, "{} started.", S::NAME);
        let outcome = self.work(&topic);
        let ended = {
            let mut stage = self.stage();
            let clean = outcome.is_ok() && !stage.failed();
            stage.stop(&self.consumer, clean)
        };
        self.consumer.unsubscribe();
        serve_revocation(&self.consumer, &topic);
        outcome.and(ended)
    }

    fn stage(&self) -> MutexGuard<'_, S> {
        self.consumer.context().stage()
    }

    fn work(&self, topic: &str) -> Result<(), S::Error> {
        let mut last_flush = Instant::now();
        // Records processed since the last flush.
        let mut unflushed = false;
        while !self.shutdown.is_cancelled() {
            self.follow_control()?;
            // Polled without the stage: the rebalance callback, run inside `poll`, takes it.
            let polled = self.consumer.poll(POLL);
            let mut stage = self.stage();
            let mut idle = false;
            match polled {
                None | Some(Err(KafkaError::PartitionEOF(_))) => idle = true,
                Some(Ok(message)) => {
                    stage.process(&message)?;
                    unflushed = true;
                }
                Some(Err(error)) => tracing::warn!(%topic, %error, "Consumer error; continuing."),
            }
            if let Some(error) = stage.take_fatal() {
                return Err(error);
            }
            let since = last_flush.elapsed();
            if since >= self.interval || (idle && unflushed && since >= self.interval / IDLE_SHARE)
            {
                last_flush = Instant::now();
                unflushed = false;
                stage.flush(&self.consumer)?;
            }
        }
        Ok(())
    }

    /// Pauses or resumes the assigned partitions when the operator asked for it.
    fn follow_control(&self) -> Result<(), S::Error> {
        let paused = &self.consumer.context().paused;
        let wanted = self.stage().wants_paused();
        if wanted == paused.load(Ordering::Relaxed) {
            return Ok(());
        }
        let changed = self.consumer.assignment().and_then(|assignment| {
            if wanted {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            }
        });
        if let Err(source) = changed {
            return Err(self.stage().consume_error(source));
        }
        paused.store(wanted, Ordering::Relaxed);
        Ok(())
    }
}

/// Polls once after unsubscribing, so that the revocation is served. A record polled now is not
/// processed, and its offset not committed: whoever owns its partition next reads it.
fn serve_revocation<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) {
    if let Some(Err(error)) = consumer.poll(Duration::from_millis(100))
        && !matches!(error, KafkaError::PartitionEOF(_))
    {
        tracing::warn!(%topic, %error, "Consumer error while leaving the group; ignored.");
    }
}
