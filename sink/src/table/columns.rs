//! From schemas to columns: the columns a record's key and value schemas call for under the
//! settings (key columns first, by `pk_mode`), and which of them make the primary key.

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;

use crate::settings::{PkMode, Settings};
use crate::sql::ColumnDef;
use crate::typemap::{self, SqlType};

/// Column names of `pk_mode = "kafka"`, as Kafka Connect names them.
pub const KAFKA_COLUMNS: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

/// Column of a primitive record key when `pk_fields` names none.
pub const RECORD_KEY_COLUMN: &str = "__record_key";

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Topic,
    Partition,
    Offset,
    WholeKey,
    KeyField(String),
    ValueField(String),
}

/// A column the schemas call for.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    pub(super) def: ColumnDef,
    pub(super) source: Source,
    /// Whether the Avro field has a default (which new columns may take).
    pub(super) has_default: bool,
}

/// The columns of the primary key among `wanted`, in order.
pub(super) fn key_columns(settings: &Settings, wanted: &[Wanted]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| match (&w.source, settings.sink.pk_mode) {
            (Source::Topic | Source::Partition | Source::Offset, PkMode::Kafka) => true,
            (Source::WholeKey | Source::KeyField(_), PkMode::RecordKey) => true,
            (Source::ValueField(f), PkMode::RecordValue) => settings.sink.pk_fields.contains(f),
            _ => false,
        })
        .map(|w| w.def.name.clone())
        .collect()
}

/// The columns the schemas call for, key columns first.
pub(super) fn wanted_columns(
    settings: &Settings,
    key: Option<&Schema>,
    value: Option<&Schema>,
) -> Result<Vec<Wanted>, String> {
    let mut wanted = match settings.sink.pk_mode {
        PkMode::Kafka => kafka_columns(settings.sink.key_varchar_length),
        PkMode::RecordKey => {
            let key = key.ok_or("pk_mode = \"record_key\" but the record has no key")?;
            match key {
                Schema::Record(record) => key_field_columns(settings, record)?,
                primitive => vec![whole_key_column(settings, primitive)?],
            }
        }
        PkMode::None | PkMode::RecordValue => Vec::new(),
    };
    let Some(value) = value else {
        return Ok(wanted);
    };
    let Schema::Record(record) = value else {
        return Err("the value schema is not a record; only records become rows".into());
    };
    value_columns(settings, record, &mut wanted)?;
    Ok(wanted)
}

/// A column of the primary key, which is never nullable and never takes a default.
fn key_column(name: &str, ty: SqlType, source: Source) -> Wanted {
    Wanted {
        def: ColumnDef {
            name: name.to_owned(),
            ty,
            nullable: false,
            default: None,
        },
        source,
        has_default: false,
    }
}

/// `pk_mode = "kafka"`: the record's topic, partition and offset.
fn kafka_columns(length: u32) -> Vec<Wanted> {
    let types = [SqlType::Varchar(length), SqlType::Int, SqlType::BigInt];
    let sources = [Source::Topic, Source::Partition, Source::Offset];
    KAFKA_COLUMNS
        .iter()
        .zip(types)
        .zip(sources)
        .map(|((name, ty), source)| key_column(name, ty, source))
        .collect()
}

/// `pk_mode = "record_key"` with a record key: the fields `pk_fields` names, or every field.
fn key_field_columns(settings: &Settings, record: &RecordSchema) -> Result<Vec<Wanted>, String> {
    let names: Vec<&str> = if settings.sink.pk_fields.is_empty() {
        record.fields.iter().map(|f| f.name.as_str()).collect()
    } else {
        settings.sink.pk_fields.iter().map(String::as_str).collect()
    };
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let field = record
            .fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| {
                format!(
                    "sink.pk_fields names {name}, which the key schema {} lacks",
                    record.name.fullname(None)
                )
            })?;
        let mapped = typemap::map_field(field, true, settings.sink.key_varchar_length)
            .map_err(|e| e.to_string())?;
        if mapped.nullable {
            return Err(format!(
                "key field {name} is nullable; a primary key cannot be"
            ));
        }
        columns.push(key_column(
            name,
            mapped.ty,
            Source::KeyField(name.to_owned()),
        ));
    }
    Ok(columns)
}

/// `pk_mode = "record_key"` with a primitive key: one column, named by `pk_fields` or
/// [`RECORD_KEY_COLUMN`].
fn whole_key_column(settings: &Settings, primitive: &Schema) -> Result<Wanted, String> {
    let name = match settings.sink.pk_fields.as_slice() {
        [] => RECORD_KEY_COLUMN,
        [one] => one.as_str(),
        _ => {
            return Err(
                "a primitive key makes one column: sink.pk_fields may name at most one".into(),
            );
        }
    };
    let mapped = typemap::map_schema(
        primitive,
        name,
        true,
        settings.sink.key_varchar_length,
        None,
    )
    .map_err(|e| e.to_string())?;
    if mapped.nullable {
        return Err("the key schema is nullable; a primary key cannot be".into());
    }
    Ok(key_column(name, mapped.ty, Source::WholeKey))
}

/// The value's fields the settings include, after the key columns already in `wanted` (a field
/// named like one of them is not written twice).
fn value_columns(
    settings: &Settings,
    record: &RecordSchema,
    wanted: &mut Vec<Wanted>,
) -> Result<(), String> {
    let sink = &settings.sink;
    if sink.pk_mode == PkMode::RecordValue {
        for name in &sink.pk_fields {
            if !record.fields.iter().any(|f| &f.name == name) {
                return Err(format!(
                    "sink.pk_fields names {name}, which the value schema {} lacks",
                    record.name.fullname(None)
                ));
            }
        }
    }
    for field in &record.fields {
        let taken = wanted
            .iter()
            .any(|w| w.def.name.eq_ignore_ascii_case(&field.name));
        if taken || !settings.includes_field(&field.name) {
            continue;
        }
        let in_key = sink.pk_mode == PkMode::RecordValue && sink.pk_fields.contains(&field.name);
        let mapped = typemap::map_field(field, in_key, sink.key_varchar_length)
            .map_err(|e| e.to_string())?;
        if in_key && mapped.nullable {
            return Err(format!(
                "key field {} is nullable; a primary key cannot be",
                field.name
            ));
        }
        let default = field
            .default
            .as_ref()
            .and_then(|d| typemap::default_literal(d, mapped.ty))
            .filter(|d| d != "NULL" || mapped.nullable);
        wanted.push(Wanted {
            def: ColumnDef {
                name: field.name.clone(),
                ty: mapped.ty,
                nullable: mapped.nullable,
                default,
            },
            source: Source::ValueField(field.name.clone()),
            has_default: field.default.is_some(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{listing_key, listing_schema, settings};
    use super::*;

    #[test]
    fn the_default_listing_table_is_keyed_by_product_id_with_category_columns() {
        let s = settings(|_| {});
        let wanted = wanted_columns(&s, Some(&listing_key()), Some(&listing_schema())).unwrap();
        let names: Vec<&str> = wanted.iter().map(|w| w.def.name.as_str()).collect();
        assert_eq!(names[0], "product_id");
        assert_eq!(names.iter().filter(|n| **n == "product_id").count(), 1);
        for level in 1..=4 {
            assert!(names.contains(&format!("category_level{level}").as_str()));
        }
        assert_eq!(key_columns(&s, &wanted), ["product_id"]);
        assert_eq!(wanted[0].def.ty, SqlType::BigInt);
    }

    #[test]
    fn kafka_keys_come_first_and_value_fields_can_be_excluded() {
        let s = settings(|c| {
            c.pk_mode = PkMode::Kafka;
            c.pk_fields = vec![];
            c.delete_enabled = false;
            c.fields_exclude = vec!["description".into()];
        });
        let wanted = wanted_columns(&s, None, Some(&listing_schema())).unwrap();
        assert_eq!(key_columns(&s, &wanted), KAFKA_COLUMNS);
        assert!(!wanted.iter().any(|w| w.def.name == "description"));
    }
}
