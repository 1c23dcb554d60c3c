//! What the table modules' unit tests share: settings, the listing's schemas, table shapes.

use std::collections::HashMap;

use apache_avro::Schema;
use marketflow_core::Config;

use super::evolution::Existing;
use crate::settings::{PkMode, Settings};

pub(super) fn settings(edit: impl FnOnce(&mut marketflow_core::config::SinkConfig)) -> Settings {
    let mut config = Config::default();
    edit(&mut config.sink);
    Settings::parse(&config).unwrap()
}

pub(super) fn listing_schema() -> Schema {
    marketflow_core::schema::LISTING.parse().unwrap()
}

pub(super) fn listing_key() -> Schema {
    marketflow_core::schema::LISTING_KEY.parse().unwrap()
}

pub(super) fn existing(columns: &[(&str, &str, bool)]) -> HashMap<String, Existing> {
    columns
        .iter()
        .map(|(n, t, nullable)| {
            (
                n.to_string(),
                Existing {
                    name: n.to_string(),
                    data_type: t.to_string(),
                    nullable: *nullable,
                    has_default: false,
                    octet_length: None,
                },
            )
        })
        .collect()
}

pub(super) fn schema(fields: &str) -> Schema {
    Schema::parse_str(&format!(
        r#"{{"type":"record","name":"Item","fields":[{fields}]}}"#
    ))
    .unwrap()
}

/// Settings keyed by the value's `id` field, edited further by `edit`.
pub(super) fn by_value(edit: impl FnOnce(&mut marketflow_core::config::SinkConfig)) -> Settings {
    settings(|c| {
        c.pk_mode = PkMode::RecordValue;
        c.pk_fields = vec!["id".into()];
        c.delete_enabled = false;
        edit(c);
    })
}
