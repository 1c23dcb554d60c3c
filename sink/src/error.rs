//! Why the consumer loop stops: the one error type the loop, the rebalance callback, the write
//! stage and the retries all report through.

use rdkafka::error::KafkaError;

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
    /// The write stage panicked (a bug: please report it with this message).
    #[error(
        "the write stage panicked: {0}; nothing past the last written batch was committed, so a \
         restart resumes there"
    )]
    Panicked(String),
    /// The consumer failed.
    #[error("Kafka consumer error: {0}")]
    Kafka(#[from] KafkaError),
}
