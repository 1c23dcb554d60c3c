//! The sink's settings, parsed once at start-up from `[sink]` so that a bad combination (e.g.
//! `delete_enabled` without `pk_mode = "record_key"`) stops the program before it reads a record.

use std::time::Duration;

use marketflow_core::Config;
use marketflow_core::config::SinkConfig;
pub use marketflow_core::config::{InsertMode, PkMode, Tolerance};

/// A `[sink]` setting or combination that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid [sink] configuration: {0}")]
pub struct SettingsError(String);

/// The `[sink]` section, checked (its modes were typed when the configuration loaded), and what
/// follows from it. The database URL stays behind its secret.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The section as configured.
    pub sink: SinkConfig,
    /// The dead-letter topic: `sink.dead_letter_topic`, or `topics.dead_letter` when empty.
    pub dead_letter_topic: String,
    /// Longest time between offset commits under load: `sink.commit_interval`, but zero for
    /// inserts not keyed by offset.
    pub commit_interval: Duration,
}

impl Settings {
    /// Checks the `[sink]` section (and the dead-letter topic of `[topics]`): the one place a
    /// combination of sink settings is refused.
    ///
    /// # Errors
    /// [`SettingsError`] naming the key, the value and what would work.
    pub fn parse(config: &Config) -> Result<Self, SettingsError> {
        let sink = &config.sink;
        check_sizes(sink)?;
        check_key(sink)?;
        check_tables(sink)?;
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
        // A plain INSERT keyed by anything but the offset turns a re-delivered record into a
        // duplicate (a refused row or a second row), so there a re-delivery after a crash is
        // kept to one batch.
        let commit_interval =
            if sink.insert_mode == InsertMode::Insert && sink.pk_mode != PkMode::Kafka {
                Duration::ZERO
            } else {
                sink.commit_interval
            };
        Ok(Self {
            sink: sink.clone(),
            dead_letter_topic,
            commit_interval,
        })
    }

    /// The table a topic's rows go to: the format with `${topic}` replaced, every character
    /// other than ASCII letters, digits and `_` mapped to `_` (so `a.b` is never read as schema
    /// `a`, table `b`), cut to MySQL's 64 characters.
    pub fn table_name(&self, topic: &str) -> String {
        table_name(&self.sink.table_name_format, topic)
    }

    /// Whether a value field is written as a column.
    pub fn includes_field(&self, field: &str) -> bool {
        let sink = &self.sink;
        (sink.fields_include.is_empty() || sink.fields_include.iter().any(|f| f == field))
            && !sink.fields_exclude.iter().any(|f| f == field)
    }

    /// The retry schedule of transient database errors.
    pub fn backoff(&self) -> backon::ExponentialBuilder {
        let sink = &self.sink;
        backon::ExponentialBuilder::new()
            .with_min_delay(sink.retry_backoff)
            .with_max_delay(sink.retry_backoff_max.max(sink.retry_backoff))
            .with_max_times(sink.max_retries)
            .with_jitter()
    }
}

fn fail<T>(message: String) -> Result<T, SettingsError> {
    Err(SettingsError(message))
}

/// Topics, group, batch and timeouts: nothing empty or zero that must not be.
fn check_sizes(sink: &SinkConfig) -> Result<(), SettingsError> {
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
    Ok(())
}

/// The primary key: its mode, its fields, and what the insert mode and deletes need of it.
fn check_key(sink: &SinkConfig) -> Result<(), SettingsError> {
    let pk_mode = sink.pk_mode;
    if sink.delete_enabled && pk_mode != PkMode::RecordKey {
        return fail(format!(
            "sink.delete_enabled = true needs sink.pk_mode = \"record_key\" (a tombstone has \
             only its key to say which row to delete), not \"{}\"; set delete_enabled = false \
             or pk_mode = \"record_key\"",
            name_of_pk(pk_mode)
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
            name_of_pk(pk_mode)
        ));
    }
    if sink.insert_mode != InsertMode::Insert && pk_mode == PkMode::None {
        return fail(format!(
            "sink.insert_mode = \"{}\" needs a primary key to find rows by; set pk_mode to \
             kafka, record_key or record_value",
            name_of_insert(sink.insert_mode)
        ));
    }
    if pk_mode == PkMode::RecordValue {
        for field in &sink.pk_fields {
            let included = sink.fields_include.is_empty() || sink.fields_include.contains(field);
            if !included || sink.fields_exclude.contains(field) {
                return fail(format!(
                    "sink.pk_fields names {field}, which fields_include/fields_exclude leave out"
                ));
            }
        }
    }
    Ok(())
}

/// Table names and key columns: each topic its own table, keys within InnoDB's limit.
fn check_tables(sink: &SinkConfig) -> Result<(), SettingsError> {
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
    Ok(())
}

/// A key mode as the configuration spells it.
fn name_of_pk(mode: PkMode) -> &'static str {
    match mode {
        PkMode::None => "none",
        PkMode::Kafka => "kafka",
        PkMode::RecordKey => "record_key",
        PkMode::RecordValue => "record_value",
    }
}

/// An insert mode as the configuration spells it.
fn name_of_insert(mode: InsertMode) -> &'static str {
    match mode {
        InsertMode::Insert => "insert",
        InsertMode::Upsert => "upsert",
        InsertMode::Update => "update",
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
        assert_eq!(settings.sink.insert_mode, InsertMode::Upsert);
        assert_eq!(settings.sink.pk_mode, PkMode::RecordKey);
        assert_eq!(settings.sink.pk_fields, ["product_id"]);
        assert_eq!(settings.table_name("listings"), "listings");
        assert_eq!(settings.dead_letter_topic, "listings-dlq");
        assert_eq!(settings.sink.errors_tolerance, Tolerance::All);
    }

    #[test]
    fn inserts_not_keyed_by_offset_commit_after_every_batch() {
        assert_eq!(
            with(|_| {}).unwrap().commit_interval,
            Duration::from_secs(1)
        );
        let keyed_by_value = with(|s| {
            s.insert_mode = InsertMode::Insert;
            s.pk_mode = PkMode::RecordValue;
            s.delete_enabled = false;
        })
        .unwrap();
        assert_eq!(keyed_by_value.commit_interval, Duration::ZERO);
        let keyed_by_offset = with(|s| {
            s.insert_mode = InsertMode::Insert;
            s.pk_mode = PkMode::Kafka;
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
            s.pk_mode = PkMode::Kafka;
            s.pk_fields = vec![];
        })
        .unwrap_err();
        assert!(err.contains("delete_enabled = true needs"), "{err}");
    }

    /// The `[sink]` section of a TOML file, loaded as the program loads it.
    fn load(section: &str) -> Result<Config, String> {
        let path = std::env::temp_dir().join(format!(
            "marketflow-sink-settings-{}-{}.toml",
            std::process::id(),
            section.len()
        ));
        std::fs::write(&path, format!("[sink]\n{section}\n")).unwrap();
        let loaded = Config::load(Some(&path)).map_err(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        loaded
    }

    #[test]
    fn unknown_modes_name_the_key_and_the_allowed_values() {
        let err = load("insert_mode = \"merge\"").unwrap_err();
        assert!(err.contains("sink.insert_mode"), "{err}");
        assert!(err.contains("`insert`, `upsert`, `update`"), "{err}");
        let err = load("errors_tolerance = \"some\"").unwrap_err();
        assert!(err.contains("sink.errors_tolerance"), "{err}");
        assert!(err.contains("`none` or `all`"), "{err}");
        let config = load("pk_mode = \"kafka\"\npk_fields = []\ndelete_enabled = false").unwrap();
        assert_eq!(config.sink.pk_mode, PkMode::Kafka);
        assert!(Settings::parse(&config).is_ok());
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(
            with(|s| {
                s.pk_mode = PkMode::None;
                s.pk_fields = vec![];
                s.delete_enabled = false;
            })
            .unwrap_err()
            .contains("needs a primary key")
        );
        assert!(
            with(|s| {
                s.pk_mode = PkMode::RecordValue;
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
