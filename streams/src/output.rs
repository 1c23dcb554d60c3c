//! The producer both stages write through: idempotent with `acks=all` (from `core::kafka`),
//! transactional under `exactly_once` (one per input partition, under an id derived from the
//! group and the partition, so that a partition's next owner fences its last one), waiting on a
//! full queue rather than dropping a record, and keeping the first failed delivery so that the
//! stage stops instead of writing past a gap.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{self, ClientError, SendLimit, producer_config};
use marketflow_core::metric;
use marketflow_core::sync::lock;
use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};

/// How long a flush, or a transaction step, may take before the stage gives up.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a transaction step that librdkafka calls retriable (it timed out, say while
/// a broker restarts) is tried before the stage gives up.
const TRANSACTION_ATTEMPTS: u32 = 5;

/// The transactional id of input partition `partition`'s producer in consumer group `group_id`.
///
/// It is the same in every instance and every run: whichever instance is assigned the partition
/// next initialises it, which makes the brokers abort what the last owner left open (so that its
/// state can be restored from committed records only) and fence the last owner, should it still
/// be alive, from committing anything more.
pub fn transactional_id(group_id: &str, partition: i32) -> String {
    format!("{group_id}-partition-{partition}")
}

/// What failed writing to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The producer could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A record could not be handed to the producer, or a flush or transaction step failed.
    #[error("writing to topic {topic} failed: {source}")]
    Send {
        /// The topic written to (or `(transaction)`).
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The producer refused a record as over its size limit: a per-record outcome.
    #[error("a record of {size} bytes for topic {topic} is over the producer's size limit")]
    TooLarge {
        /// The topic of the record.
        topic: String,
        /// Key and value, in bytes.
        size: usize,
    },
    /// A record was not delivered: the stage stops so that nothing is written past the gap, and
    /// a restart resumes from the durable state.
    #[error(
        "a record for topic {topic} was not delivered: {detail}; restarting resumes from the durable state"
    )]
    Delivery {
        /// The topic of the record.
        topic: String,
        /// What librdkafka said.
        detail: String,
    },
    /// The brokers refuse Kafka transactions.
    #[error(
        "streams.guarantee = \"exactly_once\" needs Kafka transactions, but the brokers at \
         {servers} refuse them ({detail}); use streams.guarantee = \"changelog\" (the default: \
         exact sums without transactions) with these brokers"
    )]
    TransactionsRefused {
        /// The bootstrap list.
        servers: String,
        /// What the brokers answered.
        detail: String,
    },
    /// A partition's transactional producer could not be initialised; retrying may help.
    #[error(
        "initialising transactional id {transactional_id} failed: {source}; is the cluster up? \
         (scripts/cluster.sh up)"
    )]
    Init {
        /// The transactional id.
        transactional_id: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// Another producer initialised this producer's transactional id: fatal.
    #[error(
        "the producer of transactional id {transactional_id} was fenced: another instance of \
         the group took its input partition over, so this one was stalled or cut off past the \
         group's session timeout (or its transaction outlived transaction.timeout.ms). Its open \
         transaction is aborted, so nothing it wrote since its last commit counts; it stops, \
         and the other instance carries on. Restart this one to rejoin the group ({detail})"
    )]
    Fenced {
        /// The transactional id.
        transactional_id: String,
        /// What librdkafka said.
        detail: String,
    },
}

impl OutputError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Init {
                source: KafkaError::Transaction(e),
                ..
            } => e.is_retriable(),
            _ => false,
        }
    }
}

/// Remembers the first failed delivery, and records each delivered effect's end-to-end latency.
pub struct Deliveries {
    failed: Mutex<Option<OutputError>>,
    /// Looked up once: a delivery report is served per record.
    latency: metrics::Histogram,
}

impl Deliveries {
    fn new() -> Self {
        Self {
            failed: Mutex::default(),
            latency: metrics::histogram!(metric::streams::END_TO_END_SECONDS),
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The input timestamp whose effect the record makes durable (see [`Output::send_effect`]),
    /// 0 for none.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, since: Self::DeliveryOpaque) {
        if result.is_ok()
            && let Ok(since) = i64::try_from(since)
            && let Some(seconds) = end_to_end_seconds(since, epoch_millis())
        {
            self.latency.record(seconds);
        }
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            // Purged by an abort, or by dropping the producer after a failure: on purpose.
            if matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
            ) {
                return;
            }
            let mut failed = lock(&self.failed);
            if failed.is_none() {
                tracing::error!(topic = message.topic(), %error, "Record not delivered.");
                *failed = Some(OutputError::Delivery {
                    topic: message.topic().to_owned(),
                    detail: error.to_string(),
                });
            }
        }
    }
}

/// An idempotent, optionally transactional, producer.
pub struct Output {
    producer: ThreadedProducer<Deliveries>,
    /// Set when transactional.
    transactional_id: Option<String>,
    /// Whether a transaction is open.
    open: AtomicBool,
}

impl Output {
    /// An idempotent producer that never times a record out, its batches within `limit`.
    ///
    /// # Errors
    /// [`OutputError`] when the producer cannot be built.
    pub fn new(kafka: &KafkaConfig, limit: SendLimit) -> Result<Self, OutputError> {
        let mut config: ClientConfig = producer_config(kafka)?;
        crate::buffers::producer(&mut config, kafka);
        limit.apply(&mut config);
        // Never time a record out and stop on any gap: a hole in the changelog would be worse
        // than waiting.
        config.set("message.timeout.ms", "0");
        config.set("enable.gapless.guarantee", "true");
        Ok(Self {
            producer: create(&config)?,
            transactional_id: None,
            open: AtomicBool::new(false),
        })
    }

    /// A transactional producer under `transactional_id`, its batches within `limit`,
    /// initialised: once this returns, any transaction an earlier producer of that id left open
    /// is aborted, and that producer is fenced.
    ///
    /// # Errors
    /// [`OutputError::Init`] (retryable when librdkafka says so) when initialising fails;
    /// other [`OutputError`]s when the producer cannot be built.
    pub fn transactional(
        kafka: &KafkaConfig,
        transactional_id: &str,
        limit: SendLimit,
    ) -> Result<Self, OutputError> {
        let mut config: ClientConfig = producer_config(kafka)?;
        crate::buffers::producer(&mut config, kafka);
        limit.apply(&mut config);
        config.set("transactional.id", transactional_id);
        let producer = create(&config)?;
        producer
            .init_transactions(kafka.connect_timeout.max(FLUSH_TIMEOUT))
            .map_err(|source| OutputError::Init {
                transactional_id: transactional_id.to_owned(),
                source,
            })?;
        Ok(Self {
            producer,
            transactional_id: Some(transactional_id.to_owned()),
            open: AtomicBool::new(false),
        })
    }

    /// Checks that the brokers have transactions, with a producer of its own (id
    /// `<group_id>-probe`, under which no transaction is ever begun, so that initialising it
    /// fences no one).
    ///
    /// # Errors
    /// [`OutputError::TransactionsRefused`] when the brokers refuse transactions.
    pub fn probe_transactions(kafka: &KafkaConfig, group_id: &str) -> Result<(), OutputError> {
        let mut config: ClientConfig = producer_config(kafka)?;
        config.set("transactional.id", format!("{group_id}-probe"));
        let producer = create(&config)?;
        producer
            .init_transactions(kafka.connect_timeout.max(Duration::from_secs(10)))
            .map_err(|e| OutputError::TransactionsRefused {
                servers: kafka.bootstrap_servers.clone(),
                detail: e.to_string(),
            })
    }

    /// Sends one record (under a transactional producer, within the open transaction, begun if
    /// none is), waiting while the producer's queue is full.
    ///
    /// # Errors
    /// [`OutputError::TooLarge`] when the producer refuses the record as over its size limit
    /// (nothing was sent); [`OutputError`] when a delivery has failed or the record is refused
    /// otherwise; [`OutputError::Fenced`] when another producer took the transactional id over.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), OutputError> {
        self.send_with(topic, partition, key, value, 0)
    }

    /// As [`Output::send`], for the record that makes durable the effect of an input record of
    /// timestamp `since` (epoch milliseconds): its delivery is measured in
    /// [`metric::streams::END_TO_END_SECONDS`]. Only for a producer that is not transactional,
    /// where delivered is durable.
    ///
    /// # Errors
    /// As [`Output::send`].
    pub fn send_effect(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
        since: i64,
    ) -> Result<(), OutputError> {
        let since = match &self.transactional_id {
            None => usize::try_from(since).unwrap_or(0),
            Some(_) => 0,
        };
        self.send_with(topic, partition, key, value, since)
    }

    fn send_with(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
        since: usize,
    ) -> Result<(), OutputError> {
        self.check()?;
        self.begin()?;
        let mut record = BaseRecord::with_opaque_to(topic, since)
            .key(key)
            .payload(value);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        #[expect(
            clippy::result_large_err,
            reason = "rdkafka hands a refused record back by value"
        )]
        let sent = kafka::send_until_queued(record, |r| self.producer.send(r));
        match sent {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                Err(OutputError::TooLarge {
                    topic: topic.to_owned(),
                    size: key.len() + value.len(),
                })
            }
            Err((source, _)) => Err(self.error(topic, source)),
        }
    }

    /// The first failed delivery, if any.
    ///
    /// # Errors
    /// [`OutputError::Delivery`], or [`OutputError::Fenced`] when the delivery failed because
    /// another producer took the transactional id over.
    pub fn check(&self) -> Result<(), OutputError> {
        let mut failed = lock(&self.producer.context().failed);
        match failed.take() {
            None => Ok(()),
            Some(error) => Err(self.fenced(None).unwrap_or(error)),
        }
    }

    /// Waits until every record sent so far is delivered.
    ///
    /// # Errors
    /// [`OutputError`] when it takes longer than [`FLUSH_TIMEOUT`] or a delivery failed.
    pub fn flush(&self) -> Result<(), OutputError> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|source| self.error("(flush)", source))?;
        self.check()
    }

    /// Whether another producer took this one's transactional id over.
    ///
    /// # Errors
    /// [`OutputError::Fenced`] when it did.
    pub fn check_fenced(&self) -> Result<(), OutputError> {
        self.fenced(None).map_or(Ok(()), Err)
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Begins a transaction under a transactional producer, unless one is open.
    fn begin(&self) -> Result<(), OutputError> {
        if self.transactional_id.is_none() || self.in_transaction() {
            return Ok(());
        }
        self.producer
            .begin_transaction()
            .map_err(|source| self.error("(transaction)", source))?;
        self.open.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Commits the open transaction (begun if none is) with the consumer offsets `offsets` of
    /// `group`, trying a step again while librdkafka says that may help.
    ///
    /// # Errors
    /// [`OutputError::Fenced`] when another producer took the transactional id over;
    /// [`OutputError::Send`] when the offsets or the commit are refused otherwise. The
    /// transaction is then aborted and the stage stops; a restart resumes from the committed
    /// state.
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), OutputError> {
        self.check()?;
        self.begin()?;
        let committed = retrying(|| {
            if offsets.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(offsets, group, FLUSH_TIMEOUT)
            } else {
                Ok(())
            }
        })
        .and_then(|()| retrying(|| self.producer.commit_transaction(FLUSH_TIMEOUT)));
        if let Err(source) = committed {
            let error = self.error("(transaction)", source);
            // The commit's error is what stops the stage; a failed abort is only told.
            if let Err(abort) = self.abort() {
                tracing::warn!(
                    transactional_id = self.transactional_id.as_deref().unwrap_or_default(),
                    %error,
                    %abort,
                    "The transaction could not be aborted after its commit failed."
                );
            }
            return Err(error);
        }
        self.open.store(false, Ordering::Relaxed);
        self.check()
    }

    /// Aborts the open transaction, if any: nothing sent in it will ever be read.
    ///
    /// # Errors
    /// [`OutputError`] when the brokers could not be told (they abort it themselves when the
    /// transactional id is initialised again, or when the transaction times out).
    pub fn abort(&self) -> Result<(), OutputError> {
        if !self.in_transaction() {
            return Ok(());
        }
        self.open.store(false, Ordering::Relaxed);
        self.producer
            .abort_transaction(FLUSH_TIMEOUT)
            .map_err(|source| self.error("(transaction)", source))
    }

    /// `source`, as [`OutputError::Fenced`] when it (or the producer's fatal error) says that
    /// another producer took the transactional id over.
    fn error(&self, topic: &str, source: KafkaError) -> OutputError {
        let code = match &source {
            KafkaError::Transaction(e) => Some(e.code()),
            other => other.rdkafka_error_code(),
        };
        self.fenced(code.map(|c| (c, source.to_string())))
            .unwrap_or_else(|| OutputError::Send {
                topic: topic.to_owned(),
                source,
            })
    }

    /// [`OutputError::Fenced`] when this producer is transactional and `error`, or its fatal
    /// error, is one that says another producer took the transactional id over.
    fn fenced(&self, error: Option<(RDKafkaErrorCode, String)>) -> Option<OutputError> {
        let transactional_id = self.transactional_id.as_ref()?;
        let is_fencing = |code: &RDKafkaErrorCode| {
            matches!(
                code,
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        };
        let (_, detail) = self
            .producer
            .client()
            .fatal_error()
            .filter(|(code, _)| is_fencing(code))
            .or_else(|| error.filter(|(code, _)| is_fencing(code)))?;
        Some(OutputError::Fenced {
            transactional_id: transactional_id.clone(),
            detail,
        })
    }
}

/// Now, in epoch milliseconds (the clock record timestamps are on).
pub fn epoch_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds from an input record's timestamp `since` to `durable`, both in epoch milliseconds;
/// `None` without a timestamp (0 or negative); 0 for a timestamp ahead of our clock.
pub fn end_to_end_seconds(since: i64, durable: i64) -> Option<f64> {
    (since > 0).then(|| {
        #[allow(clippy::cast_precision_loss)] // exact below 2^53 ms, some 285,000 years
        let seconds = durable.saturating_sub(since).max(0) as f64 / 1000.0;
        seconds
    })
}

/// Runs the transaction step `step`, again while it fails with an error librdkafka calls
/// retriable (a flush that timed out included), at most [`TRANSACTION_ATTEMPTS`] times.
fn retrying(step: impl Fn() -> KafkaResult<()>) -> KafkaResult<()> {
    let mut attempt = 1;
    loop {
        match step() {
            Err(error) if is_retriable(&error) && attempt < TRANSACTION_ATTEMPTS => {
                tracing::warn!(%error, attempt, "Transaction step failed; retrying.");
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn is_retriable(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_retriable(),
        KafkaError::Flush(code) => *code == RDKafkaErrorCode::OperationTimedOut,
        _ => false,
    }
}

fn create(config: &ClientConfig) -> Result<ThreadedProducer<Deliveries>, OutputError> {
    config
        .create_with_context(Deliveries::new())
        .map_err(|source| OutputError::Send {
            topic: "(producer)".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_has_the_same_transactional_id_in_every_instance_and_run() {
        assert_eq!(
            transactional_id("marketflow-streams", 2),
            transactional_id("marketflow-streams", 2)
        );
        assert_eq!(
            transactional_id("marketflow-streams", 2),
            "marketflow-streams-partition-2"
        );
        assert_ne!(
            transactional_id("marketflow-streams", 2),
            transactional_id("marketflow-streams", 1)
        );
        assert_ne!(
            transactional_id("marketflow-streams", 2),
            transactional_id("other-group", 2)
        );
    }

    #[test]
    fn latency_runs_from_the_input_timestamp_and_records_without_one_are_left_out() {
        assert_eq!(end_to_end_seconds(4_750, 5_000), Some(0.25));
        assert_eq!(end_to_end_seconds(6_000, 5_000), Some(0.0));
        assert_eq!(end_to_end_seconds(0, 5_000), None);
        assert_eq!(end_to_end_seconds(-1, 5_000), None);
        assert_eq!(end_to_end_seconds(1, 3_600_001), Some(3_600.0));
    }

    #[test]
    fn a_commit_that_timed_out_flushing_is_tried_again_and_a_refused_one_is_not() {
        assert!(is_retriable(&KafkaError::Flush(
            RDKafkaErrorCode::OperationTimedOut
        )));
        assert!(!is_retriable(&KafkaError::Flush(RDKafkaErrorCode::Fenced)));
        assert!(!is_retriable(&KafkaError::MessageProduction(
            RDKafkaErrorCode::ProducerFenced
        )));
    }
}
