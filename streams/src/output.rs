//! The producer both stages write through: idempotent with `acks=all` (from `core::kafka`),
//! transactional when asked, waiting on a full queue rather than dropping a record, and keeping
//! the first failed delivery so that the stage stops instead of writing past a gap.

use std::sync::Mutex;
use std::time::Duration;

use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{ClientError, producer_config};
use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};

/// How long a flush, or a transaction step, may take before the stage gives up.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// Remembers the first failed delivery.
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: Mutex<Option<OutputError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
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

/// An idempotent (optionally transactional) producer.
pub struct Output {
    producer: ThreadedProducer<Deliveries>,
}

impl Output {
    /// An idempotent producer; transactional with `transactional_id`, whose transactions are
    /// initialised here.
    ///
    /// # Errors
    /// [`OutputError::TransactionsRefused`] when the brokers refuse transactions; other
    /// [`OutputError`]s when the producer cannot be built.
    pub fn new(kafka: &KafkaConfig, transactional_id: Option<&str>) -> Result<Self, OutputError> {
        let mut config: ClientConfig = producer_config(kafka)?;
        match transactional_id {
            Some(id) => {
                config.set("transactional.id", id);
            }
            None => {
                // Never time a record out and stop on any gap: a hole in the changelog would be
                // worse than waiting.
                config.set("message.timeout.ms", "0");
                config.set("enable.gapless.guarantee", "true");
            }
        }
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .map_err(|source| OutputError::Send {
                topic: "(producer)".into(),
                source,
            })?;
        if transactional_id.is_some() {
            producer
                .init_transactions(kafka.connect_timeout.max(Duration::from_secs(10)))
                .map_err(|e| OutputError::TransactionsRefused {
                    servers: kafka.bootstrap_servers.clone(),
                    detail: e.to_string(),
                })?;
        }
        Ok(Self { producer })
    }

    /// Sends one record, waiting while the producer's queue is full.
    ///
    /// # Errors
    /// [`OutputError`] when a delivery has failed or the record is refused.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), OutputError> {
        self.check()?;
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, _)) => {
                    return Err(OutputError::Send {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// The first failed delivery, if any.
    ///
    /// # Errors
    /// [`OutputError::Delivery`].
    pub fn check(&self) -> Result<(), OutputError> {
        let mut failed = self
            .producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failed.take().map_or(Ok(()), Err)
    }

    /// Waits until every record sent so far is delivered.
    ///
    /// # Errors
    /// [`OutputError`] when it takes longer than [`FLUSH_TIMEOUT`] or a delivery failed.
    pub fn flush(&self) -> Result<(), OutputError> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|source| OutputError::Send {
                topic: "(flush)".into(),
                source,
            })?;
        self.check()
    }

    /// Starts a transaction.
    ///
    /// # Errors
    /// [`OutputError::Send`] when the transaction cannot begin.
    pub fn begin(&self) -> Result<(), OutputError> {
        self.producer.begin_transaction().map_err(transaction_error)
    }

    /// Commits the open transaction with the consumer offsets `offsets` of `group`.
    ///
    /// # Errors
    /// [`OutputError::Send`] when the offsets or the commit are refused (the transaction is then
    /// aborted and the stage stops; a restart resumes from the committed state).
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), OutputError> {
        let committed = self
            .producer
            .send_offsets_to_transaction(offsets, group, FLUSH_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(FLUSH_TIMEOUT));
        if let Err(error) = committed {
            let _ = self.producer.abort_transaction(FLUSH_TIMEOUT);
            return Err(transaction_error(error));
        }
        self.check()
    }
}

fn transaction_error(source: KafkaError) -> OutputError {
    OutputError::Send {
        topic: "(transaction)".into(),
        source,
    }
}
