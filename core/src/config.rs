//! Configuration of every marketflow program: serde structs with defaults that point at the local
//! cluster, layered as built-in defaults, then a TOML file (`--config PATH`), then environment
//! variables `MARKETFLOW__<SECTION>__<KEY>`. Unknown keys are an error that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
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
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))
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
    /// `"linger.ms" = "20"`. Settings that would break a guarantee are refused at start-up.
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

/// The schema registry (Confluent REST API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Base URL of the registry.
    pub url: String,
    /// Timeout of one registry request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:18081".to_owned(),
            timeout: Duration::from_secs(10),
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

/// The `scraper` program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScraperConfig {
    /// The marketplace to crawl: the local `market` by default; `https://web.joongna.com` is the
    /// real site.
    pub base_url: String,
    /// Address of the admin server (`/metrics`, `/healthz`).
    pub admin_addr: SocketAddr,
}

impl Default for ScraperConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:18080".to_owned(),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 19301)),
        }
    }
}

/// The `sink` program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// MySQL URL, `mysql://user:password@host:port/database`. Never logged.
    pub database_url: SecretString,
    /// Address of the admin server (`/metrics`, `/healthz`).
    pub admin_addr: SocketAddr,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from(
                "mysql://marketflow:marketflow@127.0.0.1:13306/marketflow",
            ),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 19302)),
        }
    }
}

/// The `streams` program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Listings priced above this many KRW are dropped; exactly this much passes.
    pub max_price: i64,
    /// Address of the admin server (`/metrics`, `/healthz`).
    pub admin_addr: SocketAddr,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_price: 1_000_000,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 19303)),
        }
    }
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
                "linger.ms" = "20"
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
}
