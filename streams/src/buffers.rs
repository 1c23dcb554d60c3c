//! How much streams' Kafka clients hold in memory, and how long its producers wait to fill a
//! batch.
//!
//! Memory: librdkafka's defaults are sized for a client with the machine to itself: each
//! consumer prefetches up to 64 MiB (`queued.max.messages.kbytes`) and each producer queues up
//! to 1 GiB (`queue.buffering.max.kbytes`). A stage that reads and writes in one loop needs
//! neither: a few MiB ahead of the loop keeps it fed, and a full producer queue only makes the
//! loop wait for the brokers (see `kafka::send_until_queued`). Measured over 1,000,000 listings
//! (`scripts/bench.sh streams`, README): with these, 89 MiB max RSS (a consumer prefetching
//! 8 MiB: 105-108); with the defaults, 163 MiB, at a lower rate.
//!
//! Batches: a broker's work is mostly per batch, not per byte (each batch is appended,
//! replicated to two followers and acknowledged). The aggregation stage writes each accepted
//! listing twice, to six partitions (its forward and its changelog record, 19 bytes), so lingering
//! librdkafka's default 5 ms its batches held a few dozen records each, and the brokers
//! spent 17 CPU-s on a million listings against the raw copy loop's 6 (same topic, one run).
//! Lingering 50 ms fills batches ten times larger: 6 CPU-s, and the stage finished in 12.1 s
//! instead of 18.3 s on the 2-core machine. Nothing waits on a single delivery in between:
//! under `changelog` a change only has to be durable before the offsets after it are
//! committed, and under `exactly_once` each transaction's commit flushes whatever lingers; the
//! price is up to 50 ms more end-to-end latency (`scripts/bench.sh e2e`). Kafka Streams
//! lingers its producers 100 ms by default for the same reason.
//!
//! A value in `[kafka.properties]` wins over each of these.

use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka;
use rdkafka::ClientConfig;

/// What a consumer prefetches: 2 MiB (over 100 ms of input at the stage's rate), and when that
/// is full it fetches again 20 ms after the loop has made room (librdkafka waits 1 s by default,
/// which starves a loop faster than that).
const CONSUMER: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "2048"),
    ("fetch.queue.backoff.ms", "20"),
];

/// What a producer queues before `send` waits: 16 MiB, room for 16 of the largest records; and
/// how long it lingers to fill a batch (librdkafka's default is 5 ms).
const PRODUCER: &[(&str, &str)] = &[("queue.buffering.max.kbytes", "16384"), ("linger.ms", "50")];

/// Sets a stage consumer's buffers, where `[kafka.properties]` did not.
pub(crate) fn consumer(config: &mut ClientConfig, kafka: &KafkaConfig) {
    set_defaults(config, kafka, CONSUMER);
}

/// Sets a stage producer's buffers and linger, where `[kafka.properties]` did not.
pub(crate) fn producer(config: &mut ClientConfig, kafka: &KafkaConfig) {
    set_defaults(config, kafka, PRODUCER);
}

fn set_defaults(config: &mut ClientConfig, kafka: &KafkaConfig, defaults: &[(&str, &str)]) {
    for (property, value) in defaults {
        if !kafka::configures(kafka, property) {
            config.set(*property, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_property_wins_over_the_stage_default() {
        let mut kafka = KafkaConfig::default();
        kafka
            .properties
            .insert("queued.max.messages.kbytes".into(), "65536".into());
        let mut config = kafka::consumer_config(&kafka, "group").unwrap();
        consumer(&mut config, &kafka);
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("20"));

        let mut config = kafka::producer_config(&KafkaConfig::default()).unwrap();
        producer(&mut config, &KafkaConfig::default());
        assert_eq!(config.get("queue.buffering.max.kbytes"), Some("16384"));
        assert_eq!(
            config.get("linger.ms"),
            Some("50"),
            "over librdkafka's 5 ms"
        );

        // From the environment, with underscores.
        kafka.properties.insert("linger_ms".into(), "7".into());
        let mut config = kafka::producer_config(&kafka).unwrap();
        producer(&mut config, &kafka);
        assert_eq!(config.get("linger.ms"), Some("7"));
    }
}
