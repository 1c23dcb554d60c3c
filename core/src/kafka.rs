//! Kafka client builders: an idempotent producer (`acks=all`) and a consumer that never commits by
//! itself, both from [`KafkaConfig`], with the `[kafka.properties]` passthrough checked so that no
//! override can quietly break a delivery guarantee.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;

/// What failed building or using a Kafka client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A `[kafka.properties]` entry would break a guarantee the program relies on.
    #[error("kafka property {key}={value} is refused: {why}")]
    Refused {
        /// The property.
        key: String,
        /// The value given.
        value: String,
        /// The guarantee it would break.
        why: &'static str,
    },
    /// No broker answered within the connect timeout.
    #[error(
        "no Kafka broker answered at {servers} within {timeout:?}: {detail}; is the cluster up? \
         (scripts/cluster.sh up)"
    )]
    Unreachable {
        /// The bootstrap list tried.
        servers: String,
        /// How long it waited.
        timeout: Duration,
        /// What librdkafka said.
        detail: String,
    },
    /// The cluster refused to create a topic the program needs.
    #[error(
        "the Kafka cluster at {servers} refused to create topic {topic}: {code}; create it by \
         hand (scripts/cluster.sh up creates the project's topics) or check the brokers' logs"
    )]
    TopicRefused {
        /// The topic.
        topic: String,
        /// The bootstrap list.
        servers: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// librdkafka refused the configuration or a request.
    #[error("kafka client error: {0}")]
    Kafka(#[from] KafkaError),
}

/// The largest record batch a broker takes by default: Kafka's `message.max.bytes` (1 MiB plus
/// the 12 bytes of a batch's log overhead, unchanged through Kafka 4.1; `local/kafka` and the
/// compose file keep it), which is also every topic's `max.message.bytes` unless set.
/// librdkafka's own default is 1,000,000 bytes, so without this a record the broker accepted
/// from another client (a Java producer's limit is 1,048,576) could be consumed but never sent
/// again: not to the dead-letter topic, not onward. The producer takes the broker's limit; a
/// cluster with another one sets `[kafka.properties] "message.max.bytes"` to match. Consumers
/// need nothing: a fetch returns at least one whole batch whatever `max.partition.fetch.bytes`
/// says (KIP-74), and librdkafka raises `fetch.max.bytes` to `message.max.bytes` by itself.
pub const BROKER_MESSAGE_MAX_BYTES: usize = 1_048_588;

/// Room a record needs beyond its key, value and headers on the wire: a record batch's header
/// (61 bytes) and the record's own framing (at most 36), rounded up.
pub const RECORD_OVERHEAD: usize = 128;

/// librdkafka's `message.max.bytes` and `batch.size` when none is configured.
const LIBRDKAFKA_DEFAULT_MAX: usize = 1_000_000;

/// The largest record a producer can send to a topic: the producer's `message.max.bytes` and the
/// topic's `max.message.bytes`, whichever is smaller. A record over it is that record's failure
/// (the caller's per-record outcome), checked before sending, never a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimit {
    bytes: usize,
}

impl SendLimit {
    /// The limit of a producer built from `kafka` writing to a topic that takes records of
    /// `topic_max` bytes (`None` when unknown: the producer's limit alone; see
    /// [`max_message_bytes`]).
    pub fn new(kafka: &KafkaConfig, topic_max: Option<usize>) -> Self {
        let producer_max = producer_config(kafka)
            .ok()
            .and_then(|c| c.get("message.max.bytes").and_then(|v| v.parse().ok()))
            .unwrap_or(LIBRDKAFKA_DEFAULT_MAX);
        Self {
            bytes: topic_max.map_or(producer_max, |t| t.min(producer_max)),
        }
    }

    /// The limit in bytes, framing included.
    pub fn bytes(self) -> usize {
        self.bytes
    }

    /// Whether a record of `size` bytes (key, value and headers) fits, with room for its framing.
    pub fn fits(self, size: usize) -> bool {
        size.saturating_add(RECORD_OVERHEAD) <= self.bytes
    }

    /// Caps the producer's batches at the limit when it is below the configured `batch.size`
    /// (librdkafka's default when none is), so that records that each fit never fail together
    /// in a batch the topic refuses as too large.
    pub fn apply(self, config: &mut ClientConfig) {
        let configured = config
            .get("batch.size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_DEFAULT_MAX);
        let cap = self.bytes.saturating_sub(RECORD_OVERHEAD).max(1);
        if cap < configured {
            config.set("batch.size", cap.to_string());
        }
    }
}

/// The `max.message.bytes` of `topic` (the largest record batch its brokers take); `None`,
/// logged, when it cannot be read: then only the producer's limit is checked.
pub async fn max_message_bytes(kafka: &KafkaConfig, topic: &str) -> Option<usize> {
    let read = async {
        let admin = create_admin(kafka).map_err(|e| e.to_string())?;
        let options = AdminOptions::new().request_timeout(Some(kafka.connect_timeout));
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .map_err(|e| e.to_string())?;
        let resource = results
            .into_iter()
            .next()
            .ok_or("no answer")?
            .map_err(|code| code.to_string())?;
        resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.as_deref())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| "no max.message.bytes".to_owned())
    };
    match read.await {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(
                topic,
                %error,
                "Cannot read the topic's max.message.bytes; only the producer's limit is checked."
            );
            None
        }
    }
}

/// Properties a producer must keep as they are: idempotence and full acknowledgement are what make
/// retries safe (no duplicates, no loss when a broker fails).
const PRODUCER_GUARDS: &[(&str, &[&str], &str)] = &[
    (
        "enable.idempotence",
        &["true"],
        "the producer must be idempotent so retries never duplicate",
    ),
    (
        "acks",
        &["all", "-1"],
        "records are acknowledged only once every in-sync replica has them",
    ),
    (
        "request.required.acks",
        &["all", "-1"],
        "records are acknowledged only once every in-sync replica has them",
    ),
];

/// Properties a consumer must keep as they are: offsets move only after the effect is durable.
const CONSUMER_GUARDS: &[(&str, &[&str], &str)] = &[
    (
        "enable.auto.commit",
        &["false"],
        "offsets are committed only after the data they stand for is durable",
    ),
    (
        "enable.auto.offset.store",
        &["false"],
        "offsets are stored only after the data they stand for is durable",
    ),
];

/// librdkafka's other names for properties the programs set defaults for, with the name the
/// defaults use: given under either, a value replaces the default instead of being set beside
/// it (librdkafka would then apply whichever of the two it happened to be handed last).
const ALIASES: &[(&str, &str)] = &[("queue.buffering.max.ms", "linger.ms")];

/// A librdkafka property name as given: environment variables cannot hold dots, so
/// `MARKETFLOW__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS` arrives as `session_timeout_ms` and means
/// `session.timeout.ms` (no librdkafka property has an underscore in its name); an alias in
/// [`ALIASES`] becomes the name the defaults use.
fn property_name(key: &str) -> String {
    let name = key.replace('_', ".");
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, canonical)| (*canonical).to_owned())
}

/// Whether `[kafka.properties]` sets librdkafka property `property` (named with dots), given
/// with dots or, from the environment, with underscores, or under an alias in [`ALIASES`].
pub fn configures(kafka: &KafkaConfig, property: &str) -> bool {
    kafka
        .properties
        .keys()
        .any(|key| property_name(key) == property)
}

/// The bootstrap list and the passthrough properties, checked against `guards`.
fn base_config(
    kafka: &KafkaConfig,
    guards: &[(&str, &[&str], &'static str)],
) -> Result<ClientConfig, ClientError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in &kafka.properties {
        let key = &property_name(key);
        if let Some((_, allowed, why)) = guards.iter().find(|(k, ..)| k == key)
            && !allowed.contains(&value.as_str())
        {
            return Err(ClientError::Refused {
                key: key.clone(),
                value: value.clone(),
                why,
            });
        }
        config.set(key, value);
    }
    Ok(config)
}

/// The producer's configuration: idempotent, `acks=all`, records up to the broker's size limit
/// ([`BROKER_MESSAGE_MAX_BYTES`]), then the passthrough properties.
///
/// # Errors
/// [`ClientError::Refused`] when a property would turn idempotence or full acks off.
pub fn producer_config(kafka: &KafkaConfig) -> Result<ClientConfig, ClientError> {
    let mut config = ClientConfig::new();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", BROKER_MESSAGE_MAX_BYTES.to_string());
    for (key, value) in base_config(kafka, PRODUCER_GUARDS)?.config_map() {
        config.set(key, value);
    }
    Ok(config)
}

/// An idempotent producer with `acks=all`.
///
/// # Errors
/// [`ClientError`] when a property is refused or librdkafka rejects the configuration.
pub fn create_producer(kafka: &KafkaConfig) -> Result<FutureProducer, ClientError> {
    Ok(producer_config(kafka)?.create()?)
}

/// A partition's consumer lag: the records from `next` (the next offset to process, `None`
/// before the first: the partition's start) to its end `high`. Retention can move the start
/// `low` past `next`, and an end read before a commit can be behind it: neither makes it
/// count records that are not there.
pub fn lag(low: i64, high: i64, next: Option<i64>) -> i64 {
    (high - next.unwrap_or(low).max(low)).max(0)
}

/// How long a producer waits before offering a record again to its full queue
/// (`queue.buffering.max.messages` / `queue.buffering.max.kbytes`): librdkafka makes room as
/// the brokers acknowledge what it holds.
pub const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// Offers `record` to `send` (a `BaseProducer`'s or `ThreadedProducer`'s `send`) until its
/// queue has room, waiting [`QUEUE_FULL_WAIT`] on this thread between offers, so a burst waits
/// instead of failing. Any other refusal is returned with the record. (An async caller has
/// rdkafka's own wait: `FutureProducer::send` with `Timeout::Never`.)
///
/// # Errors
/// What `send` refused the record with, other than a full queue.
pub fn send_until_queued<R, T>(
    mut record: R,
    mut send: impl FnMut(R) -> Result<T, (KafkaError, R)>,
) -> Result<T, (KafkaError, R)> {
    loop {
        match send(record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(QUEUE_FULL_WAIT);
            }
            done => return done,
        }
    }
}

/// The consumer's configuration: group `group_id`, no automatic commits or offset stores,
/// starting from the earliest offset of a new group, then the passthrough properties.
///
/// # Errors
/// [`ClientError::Refused`] when a property would let offsets move by themselves.
pub fn consumer_config(kafka: &KafkaConfig, group_id: &str) -> Result<ClientConfig, ClientError> {
    let mut config = ClientConfig::new();
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in base_config(kafka, CONSUMER_GUARDS)?.config_map() {
        config.set(key, value);
    }
    Ok(config)
}

/// A consumer in group `group_id` that commits only when told to.
///
/// # Errors
/// [`ClientError`] when a property is refused or librdkafka rejects the configuration.
pub fn create_consumer(kafka: &KafkaConfig, group_id: &str) -> Result<StreamConsumer, ClientError> {
    Ok(consumer_config(kafka, group_id)?.create()?)
}

/// An admin client for the cluster.
///
/// # Errors
/// [`ClientError`] when librdkafka rejects the configuration.
pub fn create_admin(kafka: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, ClientError> {
    Ok(base_config(kafka, &[])?.create()?)
}

/// Waits for the cluster's metadata, so that a program fails at start-up, with a message naming
/// the brokers, rather than retrying silently forever.
///
/// # Errors
/// [`ClientError::Unreachable`] when no broker answers within `kafka.connect_timeout`.
pub async fn check_reachable(kafka: &KafkaConfig) -> Result<(), ClientError> {
    let consumer: rdkafka::consumer::BaseConsumer = base_config(kafka, &[])?.create()?;
    let timeout = kafka.connect_timeout;
    tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, timeout))
        .await
        .map_err(|e| ClientError::Unreachable {
            servers: kafka.bootstrap_servers.clone(),
            timeout,
            detail: e.to_string(),
        })?
        .map(drop)
        .map_err(|e| ClientError::Unreachable {
            servers: kafka.bootstrap_servers.clone(),
            timeout,
            detail: e.to_string(),
        })
}

/// The partition count of each of `topics`, in order: `None` for one the cluster does not show.
/// A topic just created may take a moment to show: the counts are read again every 20 ms, with
/// the same client, until every topic shows or `wait` has passed. Read with a plain client: an
/// admin client's drop waits out its polling thread, 100 ms each.
///
/// # Errors
/// [`ClientError::Kafka`] when the metadata cannot be read.
pub async fn partition_counts(
    kafka: &KafkaConfig,
    topics: &[&str],
    wait: Duration,
) -> Result<Vec<Option<usize>>, ClientError> {
    let client: rdkafka::consumer::BaseConsumer = base_config(kafka, &[])?.create()?;
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let timeout = kafka.connect_timeout;
    let read = move || -> Result<Vec<Option<usize>>, KafkaError> {
        let started = std::time::Instant::now();
        loop {
            let counts = topics
                .iter()
                .map(|topic| {
                    let metadata = client.fetch_metadata(Some(topic), timeout)?;
                    Ok(metadata
                        .topics()
                        .first()
                        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                        .map(|t| t.partitions().len()))
                })
                .collect::<Result<Vec<_>, KafkaError>>()?;
            if counts.iter().all(Option::is_some) || started.elapsed() >= wait {
                return Ok(counts);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let counts =
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| ClientError::Unreachable {
                servers: kafka.bootstrap_servers.clone(),
                timeout,
                detail: e.to_string(),
            })??;
    Ok(counts)
}

/// Creates each `(name, partitions)` topic that does not exist yet; existing ones are left as
/// they are.
///
/// # Errors
/// [`ClientError::TopicRefused`] when the cluster refuses a creation for another reason than the
/// topic's existence.
pub async fn ensure_topics(kafka: &KafkaConfig, topics: &[(&str, i32)]) -> Result<(), ClientError> {
    create_topics(kafka, topics, false).await
}

/// As [`ensure_topics`], with `cleanup.policy=compact` (topics where only each key's latest
/// record matters: checkpoints, changelogs).
///
/// # Errors
/// [`ClientError::TopicRefused`] as [`ensure_topics`].
pub async fn ensure_compacted_topics(
    kafka: &KafkaConfig,
    topics: &[(&str, i32)],
) -> Result<(), ClientError> {
    create_topics(kafka, topics, true).await
}

async fn create_topics(
    kafka: &KafkaConfig,
    topics: &[(&str, i32)],
    compacted: bool,
) -> Result<(), ClientError> {
    let admin = create_admin(kafka)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(-1));
            if compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(kafka.connect_timeout));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ClientError::TopicRefused {
                    topic,
                    servers: kafka.bootstrap_servers.clone(),
                    code,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_only_the_records_the_partition_holds_past_next() {
        assert_eq!(lag(0, 10, Some(4)), 6);
        assert_eq!(lag(3, 10, None), 7, "nothing processed: all it holds");
        assert_eq!(lag(8, 10, Some(4)), 2, "retention deleted 4..8");
        assert_eq!(lag(0, 10, Some(12)), 0, "an end read before the commit");
    }

    /// A `send` that refuses with `refusals` in turn, then takes the record; counts its calls.
    fn refusing(
        mut refusals: Vec<RDKafkaErrorCode>,
        calls: &mut u32,
    ) -> impl FnMut(&'static str) -> Result<&'static str, (KafkaError, &'static str)> + '_ {
        refusals.reverse();
        move |record| {
            *calls += 1;
            match refusals.pop() {
                Some(code) => Err((KafkaError::MessageProduction(code), record)),
                None => Ok(record),
            }
        }
    }

    #[test]
    fn a_full_queue_is_waited_on_and_any_other_refusal_returned_with_its_record() {
        let full = RDKafkaErrorCode::QueueFull;
        let mut calls = 0;
        let sent = send_until_queued("r", refusing(vec![full, full], &mut calls));
        assert_eq!(sent.map_err(|(e, _)| e), Ok("r"));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let too_large = RDKafkaErrorCode::MessageSizeTooLarge;
        let sent = send_until_queued("r", refusing(vec![full, too_large], &mut calls));
        assert_eq!(
            sent,
            Err((KafkaError::MessageProduction(too_large), "r")),
            "only a full queue is offered again"
        );
        assert_eq!(calls, 2);
    }

    fn with(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn the_producer_is_idempotent_with_full_acks_by_default() {
        let config = producer_config(&KafkaConfig::default()).unwrap();
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(
            config.get("bootstrap.servers"),
            Some("127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094")
        );
    }

    #[test]
    fn the_producer_sends_records_as_large_as_the_broker_takes() {
        let config = producer_config(&KafkaConfig::default()).unwrap();
        assert_eq!(config.get("message.max.bytes"), Some("1048588"));
        let config = producer_config(&with(&[("message.max.bytes", "2097152")])).unwrap();
        assert_eq!(config.get("message.max.bytes"), Some("2097152"));
    }

    #[test]
    fn a_property_counts_as_configured_with_dots_or_underscores() {
        assert!(configures(&with(&[("linger.ms", "50")]), "linger.ms"));
        assert!(configures(&with(&[("linger_ms", "50")]), "linger.ms"));
        assert!(configures(
            &with(&[("queue.buffering.max.ms", "50")]),
            "linger.ms"
        ));
        assert!(configures(
            &with(&[("queue_buffering_max_ms", "50")]),
            "linger.ms"
        ));
        assert!(!configures(&with(&[("linger.ms", "50")]), "batch.size"));
        assert!(!configures(&KafkaConfig::default(), "linger.ms"));
    }

    #[test]
    fn passthrough_properties_reach_the_client() {
        let config = producer_config(&with(&[("linger.ms", "50")])).unwrap();
        assert_eq!(config.get("linger.ms"), Some("50"));
        // Under its alias it replaces the 5 ms default rather than being set beside it.
        let config = producer_config(&with(&[("queue.buffering.max.ms", "40")])).unwrap();
        assert_eq!(config.get("linger.ms"), Some("40"));
        assert_eq!(config.get("queue.buffering.max.ms"), None);
    }

    #[test]
    fn properties_from_the_environment_have_underscores_for_dots() {
        let config = consumer_config(&with(&[("session_timeout_ms", "6000")]), "g").unwrap();
        assert_eq!(config.get("session.timeout.ms"), Some("6000"));
        let err = consumer_config(&with(&[("enable_auto_commit", "true")]), "g").unwrap_err();
        assert!(
            err.to_string()
                .contains("enable.auto.commit=true is refused"),
            "{err}"
        );
    }

    #[test]
    fn overrides_that_break_a_guarantee_are_refused() {
        let err = producer_config(&with(&[("enable.idempotence", "false")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("enable.idempotence=false is refused"),
            "{err}"
        );
        assert!(producer_config(&with(&[("acks", "1")])).is_err());
        let err = consumer_config(&with(&[("enable.auto.commit", "true")]), "g").unwrap_err();
        assert!(err.to_string().contains("enable.auto.commit=true"), "{err}");
    }

    #[test]
    fn the_send_limit_is_the_smaller_of_producer_and_topic_with_room_for_framing() {
        let kafka = with(&[("message.max.bytes", "50000")]);
        let limit = SendLimit::new(&kafka, Some(20_000));
        assert_eq!(limit.bytes(), 20_000);
        assert!(limit.fits(20_000 - RECORD_OVERHEAD));
        assert!(!limit.fits(20_000 - RECORD_OVERHEAD + 1));
        assert!(!limit.fits(usize::MAX));
        assert_eq!(SendLimit::new(&kafka, None).bytes(), 50_000);
        assert_eq!(SendLimit::new(&kafka, Some(90_000)).bytes(), 50_000);
        // Without an override, the broker's limit the producer is given.
        assert_eq!(
            SendLimit::new(&KafkaConfig::default(), None).bytes(),
            BROKER_MESSAGE_MAX_BYTES
        );
    }

    #[test]
    fn batches_are_capped_at_a_send_limit_below_the_configured_batch_size_only() {
        let limit = SendLimit::new(&KafkaConfig::default(), Some(20_000));
        let mut config = ClientConfig::new();
        limit.apply(&mut config);
        assert_eq!(config.get("batch.size"), Some("19872"));
        let mut config = ClientConfig::new();
        config.set("batch.size", "10000");
        limit.apply(&mut config);
        assert_eq!(config.get("batch.size"), Some("10000"));
        let mut config = ClientConfig::new();
        SendLimit::new(&KafkaConfig::default(), Some(2_000_000)).apply(&mut config);
        assert_eq!(config.get("batch.size"), None);
    }

    #[test]
    fn the_consumer_never_commits_by_itself() {
        let config = consumer_config(&KafkaConfig::default(), "group-a").unwrap();
        assert_eq!(config.get("group.id"), Some("group-a"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
    }
}
