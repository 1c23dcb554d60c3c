//! How much streams' Kafka clients hold in memory. librdkafka's defaults are sized for a
//! client with the machine to itself: each consumer prefetches up to 64 MiB
//! (`queued.max.messages.kbytes`) and each producer queues up to 1 GiB
//! (`queue.buffering.max.kbytes`). A stage that reads and writes in one loop needs neither: a
//! few MiB ahead of the loop keeps it fed, and a full producer queue only makes the loop wait
//! for the brokers (see `kafka::send_until_queued`). Measured over 1,000,000 listings
//! (`scripts/bench.sh streams`, README): with these, 100 MiB max RSS and 78,800 listings/s;
//! with the defaults, 163 MiB and 71,400. A value in `[kafka.properties]` wins over these.

use rdkafka::ClientConfig;

/// What a consumer prefetches: 8 MiB, and when that is full it fetches again 20 ms after the loop
/// has made room (librdkafka waits 1 s by default, which starves a loop faster than that).
const CONSUMER: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "8192"),
    ("fetch.queue.backoff.ms", "20"),
];

/// What a producer queues before `send` waits: 16 MiB, room for 16 of the largest records.
const PRODUCER: &[(&str, &str)] = &[("queue.buffering.max.kbytes", "16384")];

/// Sets a stage consumer's buffers, where `[kafka.properties]` did not.
pub(crate) fn consumer(config: &mut ClientConfig) {
    set_defaults(config, CONSUMER);
}

/// Sets a stage producer's buffers, where `[kafka.properties]` did not.
pub(crate) fn producer(config: &mut ClientConfig) {
    set_defaults(config, PRODUCER);
}

fn set_defaults(config: &mut ClientConfig, defaults: &[(&str, &str)]) {
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(*key, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_property_wins_over_the_stage_default() {
        let mut config = ClientConfig::new();
        config.set("queued.max.messages.kbytes", "65536");
        consumer(&mut config);
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("20"));
        let mut config = ClientConfig::new();
        producer(&mut config);
        assert_eq!(config.get("queue.buffering.max.kbytes"), Some("16384"));
    }
}
