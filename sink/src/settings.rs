//! The sink's settings, parsed once at start-up from `[sink]` so that a bad combination (e.g.
//! `delete_enabled` without `pk_mode = "record_key"`) stops the program before it reads a record.

use std::time::Duration;

use marketflow_core::Config;
use marketflow_core::config::SinkConfig;

/// How records become rows (`insert.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// `INSERT`: a key already in the table is a record that cannot be written (with
    /// `pk_mode = "kafka"` a re-delivered record is recognised by its offset and skipped).
    Insert,
    /// `INSERT ... ON DUPLICATE KEY UPDATE`: the latest record of a key wins.
    Upsert,
    /// `UPDATE ... WHERE <key>`: rows are never created.
    Update,
}

/// Where the primary key comes from (`pk.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// What to do with a record that cannot be written (`errors.tolerance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// Stop at the first one, committing nothing past it.
    None,
    /// Send it to the dead-letter topic and go on.
    All,
}

/// A `[sink]` setting or combination that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid [sink] configuration: {0}")]
pub struct SettingsError(String);

/// The validated `[sink]` section (the database URL stays in the config, behind its secret).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Topics to read.
    pub topics: Vec<String>,
    /// The consumer group.
    pub group_id: String,
    /// Table name format, `${topic}` replaced.
    pub table_name_format: String,
    /// Insert mode.
    pub insert_mode: InsertMode,
    /// Primary key mode.
    pub pk_mode: PkMode,
    /// Primary key fields.
    pub pk_fields: Vec<String>,
    /// Value fields written (empty: all).
    pub fields_include: Vec<String>,
    /// Value fields never written.
    pub fields_exclude: Vec<String>,
    /// Records per batch.
    pub batch_size: usize,
    /// Oldest a batch gets before it is written.
    pub batch_max_age: Duration,
    /// Longest time between offset commits under load (zero for inserts not keyed by offset).
    pub commit_interval: Duration,
    /// Whether tombstones delete.
    pub delete_enabled: bool,
    /// Whether missing tables are created.
    pub auto_create: bool,
    /// Whether new fields add columns.
    pub auto_evolve: bool,
    /// Error tolerance.
    pub tolerance: Tolerance,
    /// The dead-letter topic.
    pub dead_letter_topic: String,
    /// Retries of a transient database error.
    pub max_retries: usize,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Longest retry delay.
    pub retry_backoff_max: Duration,
    /// Time limit of one transaction or connection attempt.
    pub write_timeout: Duration,
    /// `VARCHAR` length of string key columns.
    pub key_varchar_length: u32,
}

impl Settings {
    /// Parses and checks the `[sink]` section (and the dead-letter topic of `[topics]`).
    ///
    /// # Errors
    /// [`SettingsError`] naming the key, the value and what would work.
    pub fn parse(config: &Config) -> Result<Self, SettingsError> {
        let sink: &SinkConfig = &config.sink;
        let insert_mode = match sink.insert_mode.as_str() {
            "insert" => InsertMode::Insert,
            "upsert" => InsertMode::Upsert,
            "update" => InsertMode::Update,
            other => return Err(bad("insert_mode", other, "insert, upsert or update")),
        };
        let pk_mode = match sink.pk_mode.as_str() {
            "none" => PkMode::None,
            "kafka" => PkMode::Kafka,
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            other => {
                return Err(bad(
                    "pk_mode",
                    other,
                    "none, kafka, record_key or record_value",
                ));
            }
        };
        let tolerance = match sink.errors_tolerance.as_str() {
            "none" => Tolerance::None,
            "all" => Tolerance::All,
            other => return Err(bad("errors_tolerance", other, "none or all")),
        };
        let fail = |msg: String| Err(SettingsError(msg));
        if sink.topics.is_empty() || sink.topics.iter().any(String::is_empty) {
            return fail("sink.topics must name at least one topic, and no empty one".into());
        }
        if sink.group_id.is_empty() {
            return fail("sink.group_id must not be empty".into());
        }
        if sink.batch_size == 0 {
            return fail("sink.batch_size must be at least 1".into());
        }
        if sink.batch_max_age.is_zero() {
            return fail("sink.batch_max_age must be longer than 0 (e.g. \"500ms\")".into());
        }
        if sink.write_timeout.is_zero() {
            return fail("sink.write_timeout must be longer than 0 (e.g. \"30s\")".into());
        }
        if sink.delete_enabled && pk_mode != PkMode::RecordKey {
            return fail(format!(
                "sink.delete_enabled = true needs sink.pk_mode = \"record_key\" (a tombstone has \
                 only its key to say which row to delete), not \"{}\"; set delete_enabled = false \
                 or pk_mode = \"record_key\"",
                sink.pk_mode
            ));
        }
        if pk_mode == PkMode::RecordValue && sink.pk_fields.is_empty() {
            return fail(
                "sink.pk_mode = \"record_value\" needs sink.pk_fields, the value fields of the key"
                    .into(),
            );
        }
        if matches!(pk_mode, PkMode::None | PkMode::Kafka) && !sink.pk_fields.is_empty() {
            return fail(format!(
                "sink.pk_fields is not used with sink.pk_mode = \"{}\"; set pk_fields = []",
                sink.pk_mode
            ));
        }
        if insert_mode != InsertMode::Insert && pk_mode == PkMode::None {
            return fail(format!(
                "sink.insert_mode = \"{}\" needs a primary key to find rows by; set pk_mode to \
                 kafka, record_key or record_value",
                sink.insert_mode
            ));
        }
        if pk_mode == PkMode::RecordValue {
            for field in &sink.pk_fields {
                let included =
                    sink.fields_include.is_empty() || sink.fields_include.contains(field);
                if !included || sink.fields_exclude.contains(field) {
                    return fail(format!(
                        "sink.pk_fields names {field}, which fields_include/fields_exclude leave out"
                    ));
                }
            }
        }
        if !sink.table_name_format.contains("${topic}") && sink.topics.len() > 1 {
            return fail(format!(
                "sink.table_name_format \"{}\" has no ${{topic}} but {} topics are read: their \
                 rows would mix in one table",
                sink.table_name_format,
                sink.topics.len()
            ));
        }
        if sink.key_varchar_length == 0 || sink.key_varchar_length > 768 {
            return fail(format!(
                "sink.key_varchar_length = {} is out of range: 1..=768 (InnoDB's key limit of \
                 3072 bytes over 4-byte utf8mb4 characters)",
                sink.key_varchar_length
            ));
        }
        let dead_letter_topic = if sink.dead_letter_topic.is_empty() {
            config.topics.dead_letter.clone()
        } else {
            sink.dead_letter_topic.clone()
        };
        if sink.topics.contains(&dead_letter_topic) {
            return fail(format!(
                "the dead-letter topic {dead_letter_topic} is also an input topic"
            ));
        }
        Ok(Self {
            topics: sink.topics.clone(),
            group_id: sink.group_id.clone(),
            table_name_format: sink.table_name_format.clone(),
            insert_mode,
            pk_mode,
            pk_fields: sink.pk_fields.clone(),
            fields_include: sink.fields_include.clone(),
            fields_exclude: sink.fields_exclude.clone(),
            batch_size: sink.batch_size,
            batch_max_age: sink.batch_max_age,
            // A plain INSERT keyed by anything but the offset turns a re-delivered record into a
            // duplicate (a refused row or a second row), so there a re-delivery after a crash is
            // kept to one batch.
            commit_interval: if insert_mode == InsertMode::Insert && pk_mode != PkMode::Kafka {
                Duration::ZERO
            } else {
                sink.commit_interval
            },
            delete_enabled: sink.delete_enabled,
            auto_create: sink.auto_create,
            auto_evolve: sink.auto_evolve,
            tolerance,
            dead_letter_topic,
            max_retries: sink.max_retries,
            retry_backoff: sink.retry_backoff,
            retry_backoff_max: sink.retry_backoff_max.max(sink.retry_backoff),
            write_timeout: sink.write_timeout,
            key_varchar_length: sink.key_varchar_length,
        })
    }

    /// The table a topic's rows go to: the format with `${topic}` replaced, every character
    /// other than ASCII letters, digits and `_` mapped to `_` (so `a.b` is never read as schema
    /// `a`, table `b`), cut to MySQL's 64 characters.
    pub fn table_name(&self, topic: &str) -> String {
        table_name(&self.table_name_format, topic)
    }

    /// Whether a value field is written as a column.
    pub fn includes_field(&self, field: &str) -> bool {
        (self.fields_include.is_empty() || self.fields_include.iter().any(|f| f == field))
            && !self.fields_exclude.iter().any(|f| f == field)
    }

    /// The retry schedule of transient database errors.
    pub fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.retry_backoff)
            .with_max_delay(self.retry_backoff_max)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// See [`Settings::table_name`].
pub fn table_name(format: &str, topic: &str) -> String {
    let name: String = format
        .replace("${topic}", topic)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "_".to_owned()
    } else {
        name
    }
}

fn bad(key: &str, value: &str, allowed: &str) -> SettingsError {
    SettingsError(format!("sink.{key} = \"{value}\" is not one of {allowed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut SinkConfig)) -> Result<Settings, String> {
        let mut config = Config::default();
        edit(&mut config.sink);
        Settings::parse(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_upsert_listings_by_product_id() {
        let settings = with(|_| {}).unwrap();
        assert_eq!(settings.insert_mode, InsertMode::Upsert);
        assert_eq!(settings.pk_mode, PkMode::RecordKey);
        assert_eq!(settings.pk_fields, ["product_id"]);
        assert_eq!(settings.table_name("listings"), "listings");
        assert_eq!(settings.dead_letter_topic, "listings-dlq");
        assert_eq!(settings.tolerance, Tolerance::All);
    }

    #[test]
    fn inserts_not_keyed_by_offset_commit_after_every_batch() {
        assert_eq!(
            with(|_| {}).unwrap().commit_interval,
            Duration::from_secs(1)
        );
        let keyed_by_value = with(|s| {
            s.insert_mode = "insert".into();
            s.pk_mode = "record_value".into();
            s.delete_enabled = false;
        })
        .unwrap();
        assert_eq!(keyed_by_value.commit_interval, Duration::ZERO);
        let keyed_by_offset = with(|s| {
            s.insert_mode = "insert".into();
            s.pk_mode = "kafka".into();
            s.pk_fields = vec![];
            s.delete_enabled = false;
        })
        .unwrap();
        assert_eq!(keyed_by_offset.commit_interval, Duration::from_secs(1));
    }

    #[test]
    fn dots_and_dashes_never_reach_sql_as_such() {
        assert_eq!(
            table_name("${topic}", "shop.listings-v2"),
            "shop_listings_v2"
        );
        assert_eq!(table_name("kafka_${topic}", "a`b; DROP"), "kafka_a_b__DROP");
        assert_eq!(table_name("${topic}", &"x".repeat(80)).len(), 64);
    }

    #[test]
    fn delete_needs_record_key() {
        let err = with(|s| {
            s.pk_mode = "kafka".into();
            s.pk_fields = vec![];
        })
        .unwrap_err();
        assert!(err.contains("delete_enabled = true needs"), "{err}");
    }

    #[test]
    fn unknown_modes_name_the_allowed_values() {
        let err = with(|s| s.insert_mode = "merge".into()).unwrap_err();
        assert!(err.contains("insert, upsert or update"), "{err}");
        let err = with(|s| s.errors_tolerance = "some".into()).unwrap_err();
        assert!(err.contains("none or all"), "{err}");
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(
            with(|s| {
                s.pk_mode = "none".into();
                s.pk_fields = vec![];
                s.delete_enabled = false;
            })
            .unwrap_err()
            .contains("needs a primary key")
        );
        assert!(
            with(|s| {
                s.pk_mode = "record_value".into();
                s.pk_fields = vec![];
                s.delete_enabled = false;
            })
            .unwrap_err()
            .contains("needs sink.pk_fields")
        );
        assert!(with(|s| s.batch_size = 0).is_err());
        assert!(
            with(|s| s.topics = vec!["listings-dlq".into()])
                .unwrap_err()
                .contains("also an input topic")
        );
    }

    #[test]
    fn fields_include_and_exclude_select_columns() {
        let settings = with(|s| {
            s.fields_include = vec!["a".into(), "b".into()];
            s.fields_exclude = vec!["b".into()];
        })
        .unwrap();
        assert!(settings.includes_field("a"));
        assert!(!settings.includes_field("b"));
        assert!(!settings.includes_field("c"));
    }
}
