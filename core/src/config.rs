//! Configuration of every marketflow program: serde structs with defaults that point at the local
//! cluster, layered as built-in defaults, then a TOML file (`--config PATH`), then environment
//! variables `MARKETFLOW__<SECTION>__<KEY>`. Unknown keys are an error that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Prefix of the environment variables that override the file, e.g.
/// `MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS`.
pub const ENV_PREFIX: &str = "MARKETFLOW__";

/// The whole configuration; one file serves every program, each reads its own section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Kafka cluster.
    pub kafka: KafkaConfig,
    /// The schema registry.
    pub registry: RegistryConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The `scraper` program.
    pub scraper: ScraperConfig,
    /// The `sink` program.
    pub sink: SinkConfig,
    /// The `streams` program.
    pub streams: StreamsConfig,
}

/// What failed loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist.
    #[error("config file {path} not found")]
    FileNotFound {
        /// The path given.
        path: String,
    },
    /// A key is unknown, a value has the wrong type, or the TOML does not parse. The message
    /// names the key and where it came from (file or environment variable).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then the TOML file at `path` (if given), then `MARKETFLOW__…` variables.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is missing, does not parse, or any layer has an unknown key
    /// or a value of the wrong type.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound {
                    path: path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    /// Extracts the configuration from an assembled figment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending key.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.registry.credentials()?;
        Ok(config)
    }
}

/// Each of figment's errors as `<where>: <what>`, where `<where>` is the environment variable as
/// the user spelt it, or the key and the file it is in.
fn describe(error: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in error {
        let mut path = e.path.clone();
        if let figment::error::Kind::UnknownField(field, _) = &e.kind
            && path.last() != Some(field)
        {
            path.push(field.clone());
        }
        let source = e.metadata.as_ref().and_then(|m| m.source.as_ref());
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains(ENV_PREFIX));
        let place = match source {
            Some(figment::Source::File(file)) => {
                format!("key `{}` in {}", path.join("."), file.display())
            }
            _ if from_env => {
                let upper: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
                format!("environment variable {ENV_PREFIX}{}", upper.join("__"))
            }
            _ => format!("key `{}`", path.join(".")),
        };
        lines.push(format!("{place}: {}", e.kind));
    }
    lines.join("; ")
}

/// The Kafka cluster and client settings shared by every program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// How long to wait for the brokers' metadata at start-up before giving up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// librdkafka properties passed through as they are (the escape hatch), e.g.
    /// `"linger.ms" = 20`. Settings that would break a guarantee are refused at start-up. In
    /// environment variables write the dots as underscores:
    /// `MARKETFLOW__KAFKA__PROPERTIES__LINGER_MS=20`.
    #[serde(deserialize_with = "property_values")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094".to_owned(),
            connect_timeout: Duration::from_secs(10),
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka takes every property as text; TOML and environment variables give numbers and
/// booleans as such, so each is taken as it is written.
fn property_values<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Integer(i64),
        Unsigned(u64),
        Float(f64),
        Bool(bool),
    }
    let map = BTreeMap::<String, Value>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::Text(text) => text,
                Value::Integer(n) => n.to_string(),
                Value::Unsigned(n) => n.to_string(),
                Value::Float(x) => x.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// The schema registry (Confluent REST API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Base URL of the registry.
    pub url: String,
    /// Timeout of one registry request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest size, in bytes, one record's key or value may take once decoded; a record over it
    /// is refused (`too_large`) before it is built, whatever its schema says.
    pub max_decoded_bytes: usize,
    /// HTTP basic auth for every registry request, `USER:PASSWORD` (Confluent's
    /// `basic.auth.user.info`; the password may hold colons). Unset: no credentials are sent.
    /// Never logged.
    pub basic_auth: Option<SecretString>,
}

impl RegistryConfig {
    /// The user and password of `basic_auth`, if set.
    ///
    /// # Errors
    /// When `basic_auth` is not `USER:PASSWORD` with neither empty.
    pub fn credentials(&self) -> Result<Option<(&str, &str)>, ConfigError> {
        let Some(secret) = &self.basic_auth else {
            return Ok(None);
        };
        match secret.expose_secret().split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Some((user, password)))
            }
            _ => Err(ConfigError::Invalid(
                "registry.basic_auth must be USER:PASSWORD with neither empty (the value is not \
                 shown: it is a secret)"
                    .to_owned(),
            )),
        }
    }

    /// An HTTP client for the registry, its requests timed out after `timeout`, sending the
    /// credentials with every request (an `Authorization` header marked sensitive, so never
    /// logged); every registry request but the codec's encoder's goes through one.
    ///
    /// # Errors
    /// When the client cannot be built.
    pub fn http_client(&self, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        use base64::Engine;
        let mut headers = reqwest::header::HeaderMap::new();
        // `credentials` was checked at load; a value it refuses sends nothing.
        if let Ok(Some((user, password))) = self.credentials() {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            if let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
            {
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .build()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:18081".to_owned(),
            timeout: Duration::from_secs(10),
            max_decoded_bytes: 4 * 1024 * 1024,
            basic_auth: None,
        }
    }
}

/// Topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Listings as scraped (key `ListingKey`, value `Listing`).
    pub listings: String,
    /// Listings accepted by the streams filter (same key and value).
    pub listings_affordable: String,
    /// Running sums (key `ListingSumKey`, value `ListingSum`).
    pub listing_sums: String,
    /// The scraper's lifecycle events.
    pub scraper_events: String,
    /// Records the sink could not write, with headers saying why.
    pub dead_letter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            listings: "listings".to_owned(),
            listings_affordable: "listings-affordable".to_owned(),
            listing_sums: "listing-sums".to_owned(),
            scraper_events: "scraper-events".to_owned(),
            dead_letter: "listings-dlq".to_owned(),
        }
    }
}

/// How logs are written (to standard error).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,marketflow_sink=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// The `scraper` program. The defaults crawl the local `market` fast; `scraper/joongna.toml` is
/// the polite profile for the real site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScraperConfig {
    /// The marketplace to crawl: the local `market` by default; `https://web.joongna.com` is the
    /// real site.
    pub base_url: String,
    /// Address of the admin server (`/metrics`, `/healthz`).
    pub admin_addr: SocketAddr,
    /// Bearer token the admin server's mutating requests must carry; unset: none needed. Never
    /// logged.
    pub admin_token: Option<SecretString>,
    /// The User-Agent sent with every request: says who crawls and how to reach them.
    pub user_agent: String,
    /// Product pages fetched (and produced) at once.
    pub concurrency: usize,
    /// Requests a second across all fetches, retries included (a global rate limit).
    pub max_requests_per_sec: f64,
    /// Timeout of one HTTP request, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of one page after a timeout, a connection error, a 429 or a 5xx; then the id is
    /// recorded as failed.
    pub max_retries: usize,
    /// First backoff between retries (doubling, with jitter).
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest backoff between retries, and the longest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Longest robots.txt `Crawl-delay` honoured; a longer (or infinite) one is lowered to it.
    #[serde(with = "humantime_serde")]
    pub max_crawl_delay: Duration,
    /// Largest response body read, in bytes; a larger page is malformed (`too_large`) and is
    /// not read past this size, whether or not it sends a Content-Length.
    pub max_page_bytes: u64,
    /// Continuous mode: how often the recent list is polled for new ids.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How many ids below the newest one a crawl visits when no range (or checkpoint) says.
    pub window: u64,
    /// Key of the HMAC-SHA256 that pseudonymises sellers. Required; never logged. Keep it stable:
    /// the same seller maps to the same pseudonym only under the same key.
    pub seller_hmac_key: Option<SecretString>,
    /// Compacted topic holding the crawl checkpoints, one key per crawl.
    pub checkpoint_topic: String,
    /// How often the checkpoint is written while it moves.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// After SIGINT/SIGTERM, how long in-flight pages may take to finish before a hard stop.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `linger.ms` of the scraper's producer, unless `[kafka.properties]` sets `linger.ms`: each
    /// page awaits its own delivery, so batching for a few ms more costs no throughput (the
    /// concurrency hides it) and halves the producer's CPU per record.
    #[serde(with = "humantime_serde")]
    pub producer_linger: Duration,
}

impl Default for ScraperConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:18080".to_owned(),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 19301)),
            admin_token: None,
            user_agent: concat!(
                "marketflow-scraper/",
                env!("CARGO_PKG_VERSION"),
                " (+https://example.invalid/marketflow; polite crawler of public listings)"
            )
            .to_owned(),
            concurrency: 64,
            max_requests_per_sec: 2000.0,
            request_timeout: Duration::from_secs(10),
            max_retries: 8,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_crawl_delay: Duration::from_secs(60),
            max_page_bytes: 5 * 1024 * 1024,
            poll_interval: Duration::from_secs(10),
            window: 2000,
            seller_hmac_key: None,
            checkpoint_topic: "scraper-checkpoints".to_owned(),
            checkpoint_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            producer_linger: Duration::from_millis(20),
        }
    }
}

/// The `sink` program: a JDBC-like Kafka → MySQL sink. The Kafka Connect JDBC sink's settings map
/// to these keys (`insert.mode` → `insert_mode`, `pk.mode` → `pk_mode`, ...); see the README.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// MySQL URL, `mysql://user:password@host:port/database`. Never logged.
    pub database_url: SecretString,
    /// Address of the admin server (`/metrics`, `/healthz`, `/status`, `/pause`, `/resume`,
    /// `/replay`).
    pub admin_addr: SocketAddr,
    /// Bearer token `/pause`, `/resume` and `/replay` must carry; unset: none needed. Never
    /// logged.
    pub admin_token: Option<SecretString>,
    /// Topics to read (Avro key and value through the registry).
    pub topics: Vec<String>,
    /// The consumer group; its committed offsets say how far the tables are written.
    pub group_id: String,
    /// Table name of a topic's rows; `${topic}` is replaced by the topic name, and every
    /// character other than ASCII letters, digits and `_` (dots, dashes) becomes `_`.
    pub table_name_format: String,
    /// `insert`, `upsert` (`INSERT ... ON DUPLICATE KEY UPDATE`) or `update`.
    pub insert_mode: InsertMode,
    /// Where the primary key comes from: `none`, `kafka` (topic, partition, offset),
    /// `record_key` or `record_value`.
    pub pk_mode: PkMode,
    /// The primary key's fields: of the key with `record_key` (empty: every key field, or
    /// `__record_key` for a primitive key), of the value with `record_value` (required).
    pub pk_fields: Vec<String>,
    /// Value fields written as columns; empty means every field.
    pub fields_include: Vec<String>,
    /// Value fields never written as columns.
    pub fields_exclude: Vec<String>,
    /// A batch is written when it holds this many records...
    pub batch_size: usize,
    /// ... or when its first record is this old, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Longest time between offset commits while records keep coming (a caught-up sink commits
    /// as soon as a batch is written; so does a stop, a pause and a rebalance). `"0s"` commits
    /// after every batch. Only written rows are ever committed; a crash re-delivers at most this
    /// much, which the writes absorb (upserts, `pk_mode = "kafka"` keeps the row).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Whether a tombstone (a record whose value is null) deletes its row; needs
    /// `pk_mode = "record_key"`. When off, a tombstone is a record that cannot be written.
    pub delete_enabled: bool,
    /// Whether a missing table is created from the value schema.
    pub auto_create: bool,
    /// Whether a field new to the schema adds a column (never drops or retypes one).
    pub auto_evolve: bool,
    /// `none`: stop at the first record that cannot be written; `all`: send it to the dead-letter
    /// topic and go on.
    pub errors_tolerance: Tolerance,
    /// Dead-letter topic; empty means `topics.dead_letter`.
    pub dead_letter_topic: String,
    /// Retries of a batch the database refused for a transient reason (unreachable, deadlock),
    /// before the sink stops.
    pub max_retries: usize,
    /// First wait between retries; it doubles (with jitter) up to `retry_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// How long one database transaction (or connection attempt) may take before it counts as
    /// failed and is retried.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Length of the `VARCHAR` columns made from string key fields.
    pub key_varchar_length: u32,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from(
                "mysql://marketflow:marketflow@127.0.0.1:13306/marketflow",
            ),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 19302)),
            admin_token: None,
            topics: vec!["listings".to_owned()],
            group_id: "marketflow-sink".to_owned(),
            table_name_format: "${topic}".to_owned(),
            insert_mode: InsertMode::Upsert,
            pk_mode: PkMode::RecordKey,
            pk_fields: vec!["product_id".to_owned()],
            fields_include: Vec::new(),
            fields_exclude: Vec::new(),
            batch_size: 500,
            batch_max_age: Duration::from_millis(100),
            commit_interval: Duration::from_secs(1),
            delete_enabled: true,
            auto_create: true,
            auto_evolve: true,
            errors_tolerance: Tolerance::All,
            dead_letter_topic: String::new(),
            max_retries: 10,
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            key_varchar_length: 255,
        }
    }
}

/// How the sink turns records into rows (`insert.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertMode {
    /// `INSERT`: a key already in the table is a record that cannot be written (with
    /// `pk_mode = "kafka"` a re-delivered record is recognised by its offset and skipped).
    Insert,
    /// `INSERT ... ON DUPLICATE KEY UPDATE`: the latest record of a key wins.
    Upsert,
    /// `UPDATE ... WHERE <key>`: rows are never created.
    Update,
}

/// Where the sink's primary key comes from (`pk.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PkMode {
    /// No primary key: every record is a new row.
    None,
    /// The record's coordinates: `__connect_topic`, `__connect_partition`, `__connect_offset`.
    Kafka,
    /// Fields of the record's key.
    RecordKey,
    /// Fields of the record's value.
    RecordValue,
}

/// What the sink does with a record that cannot be written (`errors.tolerance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    /// Stop at the first one, committing nothing past it.
    None,
    /// Send it to the dead-letter topic and go on.
    All,
}

/// The `streams` program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Listings priced above this many KRW are dropped; exactly this much passes.
    pub max_price: i64,
    /// Address of the admin server (`/metrics`, `/healthz`, `/status`, `/pause`, `/resume`,
    /// `/replay`).
    pub admin_addr: SocketAddr,
    /// Bearer token `/pause`, `/resume` and `/replay` must carry; unset: none needed. Never
    /// logged.
    pub admin_token: Option<SecretString>,
    /// What a sum counts: `distinct` (each product id once, in its latest version) or `append`
    /// (every accepted record).
    pub semantics: StreamsSemantics,
    /// How sums stay exact across crashes: `changelog` (no transactions needed) or
    /// `exactly_once` (Kafka transactions; the brokers must support them).
    pub guarantee: StreamsGuarantee,
    /// The category level (1-4) summed per value, beside the global `all`.
    pub category_level: u8,
    /// Consumer group of the workers; instances in one group split the input partitions.
    pub group_id: String,
    /// Compacted topic holding each input partition's state and the input offsets it reflects.
    pub changelog_topic: String,
    /// Compacted topic of per-input-partition partial sums, keyed so that each sum has one owner.
    pub partials_topic: String,
    /// How often state is made durable and changed sums are emitted, e.g. `"500ms"`.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_price: 1_000_000,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 19303)),
            admin_token: None,
            semantics: StreamsSemantics::Distinct,
            guarantee: StreamsGuarantee::Changelog,
            category_level: 1,
            group_id: "marketflow-streams".to_owned(),
            changelog_topic: "marketflow-streams-changelog".to_owned(),
            partials_topic: "marketflow-streams-partials".to_owned(),
            commit_interval: Duration::from_millis(500),
        }
    }
}

/// What a running sum counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamsSemantics {
    /// The sum over the current set: a product id counts once, in its latest version; a newer
    /// version replaces the old contribution and a tombstone removes it.
    Distinct,
    /// Every accepted record counts, repeats included.
    Append,
}

/// How the `streams` program keeps its sums exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamsGuarantee {
    /// Exact without transactions: state and input offsets in a changelog topic, idempotent
    /// partial sums.
    Changelog,
    /// Kafka transactions: changelog, outputs and input offsets committed atomically.
    ExactlyOnce,
}

#[cfg(test)]
// figment::Jail's closures return figment's large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_point_at_the_local_cluster() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.kafka.bootstrap_servers,
                "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
            );
            assert_eq!(config.registry.url, "http://127.0.0.1:18081");
            assert_eq!(config.topics.listings, "listings");
            assert_eq!(config.streams.max_price, 1_000_000);
            Ok(())
        });
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "marketflow.toml",
                r#"
                [kafka]
                bootstrap_servers = "file:9092"
                connect_timeout = "250ms"
                [kafka.properties]
                "linger.ms" = 20
                [registry]
                url = "http://file:8081"
                [topics]
                listings = "from-file"
                "#,
            )?;
            jail.set_env("MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS", "env:9092");
            jail.set_env("MARKETFLOW__TOPICS__LISTINGS", "from-env");
            jail.set_env(
                "MARKETFLOW__SINK__DATABASE_URL",
                "mysql://u:hunter2@db:3306/x",
            );
            let config =
                Config::load(Some(Path::new("marketflow.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.bootstrap_servers, "env:9092");
            assert_eq!(config.kafka.connect_timeout, Duration::from_millis(250));
            assert_eq!(
                config.kafka.properties.get("linger.ms").map(String::as_str),
                Some("20")
            );
            assert_eq!(config.registry.url, "http://file:8081");
            assert_eq!(config.topics.listings, "from-env");
            assert_eq!(config.topics.listing_sums, "listing-sums");
            assert_eq!(
                config.sink.database_url.expose_secret(),
                "mysql://u:hunter2@db:3306/x"
            );
            assert!(
                !format!("{config:?}").contains("hunter2"),
                "the password leaked into Debug"
            );
            Ok(())
        });
    }

    #[test]
    fn kafka_properties_can_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("MARKETFLOW__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000");
            jail.set_env("MARKETFLOW__KAFKA__PROPERTIES__CLIENT_ID", "demo");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let properties = &config.kafka.properties;
            assert_eq!(
                properties.get("session_timeout_ms").map(String::as_str),
                Some("6000")
            );
            assert_eq!(
                properties.get("client_id").map(String::as_str),
                Some("demo")
            );
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("marketflow.toml", "[kafka]\nbootstrap_server = \"x:1\"\n")?;
            let err = Config::load(Some(Path::new("marketflow.toml")))
                .err()
                .ok_or("an unknown key was accepted")?
                .to_string();
            assert!(err.contains("key `kafka.bootstrap_server` in "), "{err}");
            assert!(err.contains("marketflow.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_environment_variable_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("MARKETFLOW__REGISTRY__ULR", "http://typo:8081");
            let err = Config::load(None)
                .err()
                .ok_or("an unknown key was accepted")?
                .to_string();
            assert!(err.contains("ulr"), "{err}");
            assert!(err.contains("MARKETFLOW__REGISTRY__ULR"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let err = Config::load(Some(Path::new("/nonexistent/marketflow.toml")))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("config file /nonexistent/marketflow.toml not found")
        );
    }

    #[test]
    fn sink_lists_and_durations_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("MARKETFLOW__SINK__TOPICS", "[a-topic, b.topic]");
            jail.set_env("MARKETFLOW__SINK__PK_FIELDS", "[product_id]");
            jail.set_env("MARKETFLOW__SINK__BATCH_MAX_AGE", "250ms");
            jail.set_env("MARKETFLOW__SINK__INSERT_MODE", "insert");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.sink.topics, ["a-topic", "b.topic"]);
            assert_eq!(config.sink.pk_fields, ["product_id"]);
            assert_eq!(config.sink.batch_max_age, Duration::from_millis(250));
            assert_eq!(config.sink.insert_mode, InsertMode::Insert);
            assert_eq!(config.sink.pk_mode, PkMode::RecordKey);
            assert_eq!(SinkConfig::default().topics, ["listings"]);
            Ok(())
        });
    }

    #[test]
    fn streams_options_load_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let defaults = Config::load(None).map_err(|e| e.to_string())?.streams;
            assert_eq!(defaults.semantics, StreamsSemantics::Distinct);
            assert_eq!(defaults.guarantee, StreamsGuarantee::Changelog);
            assert_eq!(defaults.category_level, 1);
            jail.set_env("MARKETFLOW__STREAMS__SEMANTICS", "append");
            jail.set_env("MARKETFLOW__STREAMS__GUARANTEE", "exactly_once");
            jail.set_env("MARKETFLOW__STREAMS__COMMIT_INTERVAL", "200ms");
            jail.set_env("MARKETFLOW__STREAMS__CATEGORY_LEVEL", "2");
            let streams = Config::load(None).map_err(|e| e.to_string())?.streams;
            assert_eq!(streams.semantics, StreamsSemantics::Append);
            assert_eq!(streams.guarantee, StreamsGuarantee::ExactlyOnce);
            assert_eq!(streams.commit_interval, Duration::from_millis(200));
            assert_eq!(streams.category_level, 2);
            jail.set_env("MARKETFLOW__STREAMS__SEMANTICS", "unique");
            let err = Config::load(None).err().ok_or("a bad value was accepted")?;
            assert!(
                err.to_string().contains("MARKETFLOW__STREAMS__SEMANTICS"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_badly_typed_value_is_an_error_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("MARKETFLOW__STREAMS__MAX_PRICE", "a lot");
            let err = Config::load(None)
                .err()
                .ok_or("a bad value was accepted")?
                .to_string();
            assert!(
                err.contains("environment variable MARKETFLOW__STREAMS__MAX_PRICE"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn scraper_settings_read_durations_and_keep_the_key_secret() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "marketflow.toml",
                "[scraper]\nrequest_timeout = \"250ms\"\nconcurrency = 4\nmax_requests_per_sec = 1.5\n",
            )?;
            jail.set_env("MARKETFLOW__SCRAPER__SELLER_HMAC_KEY", "s3cret-key");
            jail.set_env("MARKETFLOW__SINK__ADMIN_TOKEN", "s3cret-token");
            jail.set_env("MARKETFLOW__SCRAPER__MAX_PAGE_BYTES", "1024");
            jail.set_env("MARKETFLOW__SCRAPER__MAX_CRAWL_DELAY", "5s");
            let config =
                Config::load(Some(Path::new("marketflow.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.scraper.max_page_bytes, 1024);
            assert_eq!(config.scraper.max_crawl_delay, Duration::from_secs(5));
            let token = config.sink.admin_token.as_ref().ok_or("no token")?;
            assert_eq!(token.expose_secret(), "s3cret-token");
            assert!(config.streams.admin_token.is_none());
            assert_eq!(config.scraper.request_timeout, Duration::from_millis(250));
            assert_eq!(config.scraper.concurrency, 4);
            assert!((config.scraper.max_requests_per_sec - 1.5).abs() < f64::EPSILON);
            assert_eq!(config.scraper.window, 2000);
            let key = config.scraper.seller_hmac_key.as_ref().ok_or("no key")?;
            assert_eq!(key.expose_secret(), "s3cret-key");
            assert!(!format!("{config:?}").contains("s3cret"), "the key leaked");
            Ok(())
        });
    }
}
