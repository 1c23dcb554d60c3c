//! Tables: the columns a record's schemas call for, the table as the database has it, creating it
//! (`auto_create`), adding columns for new fields (`auto_evolve`: never a drop or a retype, and
//! nothing applied when any part of a change cannot be), and the plan that turns a record into a
//! row.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use sqlx::mysql::MySqlConnection;

use crate::db::{Database, DbError, classify};
use crate::settings::{PkMode, Settings};
use crate::sql::{self, ColumnDef};
use crate::typemap::{self, Family, SqlType, SqlValue, Unbindable};

/// Column names of `pk_mode = "kafka"`, as Kafka Connect names them.
pub const KAFKA_COLUMNS: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

/// Column of a primitive record key when `pk_fields` names none.
pub const RECORD_KEY_COLUMN: &str = "__record_key";

/// Why a record's schemas cannot become a table's rows.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TableError {
    /// The database failed (see [`DbError`] for which kind).
    #[error(transparent)]
    Database(#[from] DbError),
    /// The schemas cannot be mapped under the settings (unmapped type, missing pk field, ...).
    #[error("schema {schema} cannot be written to table {table}: {detail}")]
    Unsupported {
        /// The table.
        table: String,
        /// Which schema ids.
        schema: String,
        /// What is wrong.
        detail: String,
    },
    /// The table exists but does not fit the schema, and the sink will not change it; nothing of
    /// the change was applied.
    #[error(
        "schema {schema} is incompatible with table {table}, so nothing was changed: {}; change \
         the table by hand or write to another table",
        problems.join("; ")
    )]
    Incompatible {
        /// The table.
        table: String,
        /// Which schema ids.
        schema: String,
        /// Each problem found.
        problems: Vec<String>,
    },
}

impl TableError {
    /// A short, stable name of the error's class, for dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Database(e) => e.class(),
            Self::Unsupported { .. } => "schema_unsupported",
            Self::Incompatible { .. } => "schema_incompatible",
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Topic,
    Partition,
    Offset,
    WholeKey,
    KeyField(String),
    ValueField(String),
}

/// A column the schemas call for.
#[derive(Debug, Clone)]
struct Wanted {
    def: ColumnDef,
    source: Source,
    /// Whether the Avro field has a default (which new columns may take).
    has_default: bool,
}

/// The coordinates and decoded halves of one record, as a plan takes them apart.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its decoded key, when decoded.
    pub key: Option<Value>,
    /// Its decoded value; `None` for a tombstone.
    pub value: Option<Value>,
}

/// How the records of one (table, key schema, value schema) become rows.
#[derive(Debug)]
pub struct Plan {
    /// The table.
    pub table: String,
    /// The columns written, in order.
    pub columns: Vec<String>,
    /// The primary key columns (a subset of `columns`).
    pub key: Vec<String>,
    sources: Vec<Source>,
}

impl Plan {
    /// The row of a record, in the order of [`Plan::columns`]; its strings move into the row.
    ///
    /// # Errors
    /// [`Unbindable`] when a field is missing or has no bound form.
    pub fn row(&self, record: Record<'_>) -> Result<Vec<SqlValue>, Unbindable> {
        self.values(record, |_| true)
    }

    /// The primary key values of a record, in the order of [`Plan::key`].
    ///
    /// # Errors
    /// As [`Plan::row`].
    pub fn key_row(&self, record: Record<'_>) -> Result<Vec<SqlValue>, Unbindable> {
        self.values(record, |column| self.key.iter().any(|k| k == column))
    }

    fn values(
        &self,
        mut record: Record<'_>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<SqlValue>, Unbindable> {
        let mut row = Vec::with_capacity(self.columns.len());
        // Columns come in the schema's field order, so each field is looked for first where
        // the one before it was found.
        let (mut key_at, mut value_at) = (0, 0);
        for (source, column) in self.sources.iter().zip(&self.columns) {
            if !wanted(column) {
                continue;
            }
            let missing = |what: &str| Unbindable {
                field: column.clone(),
                detail: format!("the record has no {what}"),
            };
            let value = match source {
                Source::Topic => SqlValue::Text(record.topic.to_owned()),
                Source::Partition => SqlValue::Int(i64::from(record.partition)),
                Source::Offset => SqlValue::Int(record.offset),
                Source::WholeKey => {
                    typemap::to_sql(record.key.take().ok_or_else(|| missing("key"))?, column)?
                }
                Source::KeyField(name) => {
                    let key = record.key.as_mut().ok_or_else(|| missing("key"))?;
                    let field = take_field(key, name, &mut key_at)
                        .ok_or_else(|| missing("such key field"))?;
                    typemap::to_sql(field, column)?
                }
                Source::ValueField(name) => {
                    let value = record.value.as_mut().ok_or_else(|| missing("value"))?;
                    let field = take_field(value, name, &mut value_at)
                        .ok_or_else(|| missing("such field"))?;
                    typemap::to_sql(field, column)?
                }
            };
            row.push(value);
        }
        Ok(row)
    }
}

/// Takes field `name` out of a record (leaving null), looking at position `*at` first and
/// leaving `*at` just past where it was found.
fn take_field(record: &mut Value, name: &str, at: &mut usize) -> Option<Value> {
    match record {
        Value::Record(fields) => {
            let position = match fields.get(*at) {
                Some((n, _)) if n == name => *at,
                _ => fields.iter().position(|(n, _)| n == name)?,
            };
            *at = position + 1;
            Some(std::mem::replace(&mut fields[position].1, Value::Null))
        }
        Value::Union(_, inner) => take_field(inner, name, at),
        _ => None,
    }
}

/// A column as the database has it.
#[derive(Debug, Clone)]
struct Existing {
    name: String,
    data_type: String,
    nullable: bool,
    has_default: bool,
}

/// A record's key and value schema ids (`None`: no key decoded, or a tombstone).
type SchemaIds = (Option<u32>, Option<u32>);

/// The tables the sink writes, as far as it knows them, and the plans made for them.
#[derive(Debug)]
pub struct Tables {
    settings: Arc<Settings>,
    /// Lower-cased column name → column, per table; absent: not looked up yet.
    shapes: HashMap<String, Option<HashMap<String, Existing>>>,
    /// Topic → plans by schema ids: looked up per record, so by the topic as it arrives,
    /// without building the table name.
    plans: HashMap<String, HashMap<SchemaIds, Arc<Plan>>>,
}

impl Tables {
    /// No table known yet.
    pub fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            shapes: HashMap::new(),
            plans: HashMap::new(),
        }
    }

    /// Forgets what was learnt about the tables (after a failure, or when someone else may have
    /// changed them).
    pub fn forget(&mut self) {
        self.shapes.clear();
        self.plans.clear();
    }

    /// The plan for records of `topic` with these key and value schemas (`value` is `None` for
    /// tombstones), creating or evolving the table first when the settings allow. `Ok(None)` for a
    /// tombstone whose table does not exist (nothing to delete).
    ///
    /// # Errors
    /// [`TableError`]; with [`TableError::Incompatible`] nothing was changed.
    pub async fn plan(
        &mut self,
        db: &mut Database,
        topic: &str,
        key: Option<(u32, &Schema)>,
        value: Option<(u32, &Schema)>,
    ) -> Result<Option<Arc<Plan>>, TableError> {
        let ids = (key.map(|k| k.0), value.map(|v| v.0));
        if let Some(plan) = self.plans.get(topic).and_then(|plans| plans.get(&ids)) {
            return Ok(Some(plan.clone()));
        }
        let table = self.settings.table_name(topic);
        let schema_ids = format!(
            "key id {} / value id {}",
            key.map_or("-".into(), |k| k.0.to_string()),
            value.map_or("tombstone".into(), |v| v.0.to_string())
        );
        let unsupported = |detail: String| TableError::Unsupported {
            table: table.clone(),
            schema: schema_ids.clone(),
            detail,
        };
        let wanted = wanted_columns(&self.settings, key.map(|k| k.1), value.map(|v| v.1))
            .map_err(unsupported)?;
        let shape = self.shape(db, &table).await?;
        match (shape, value.is_some()) {
            (None, false) => return Ok(None),
            (None, true) if !self.settings.auto_create => {
                return Err(TableError::Incompatible {
                    table: table.clone(),
                    schema: schema_ids,
                    problems: vec![format!(
                        "table {table} does not exist and sink.auto_create is off"
                    )],
                });
            }
            (None, true) => {
                let defs: Vec<ColumnDef> = wanted.iter().map(|w| w.def.clone()).collect();
                let key_columns = key_columns(&self.settings, &wanted);
                let ddl = sql::create_table(&table, &defs, &key_columns);
                execute_ddl(db, ddl).await.inspect_err(|_| self.forget())?;
                tracing::info!(table, columns = defs.len(), "Table created.");
                self.shapes.remove(&table);
            }
            (Some(existing), is_value) => {
                let adds = evolution(
                    &self.settings,
                    &table,
                    &schema_ids,
                    &existing,
                    &wanted,
                    is_value,
                )?;
                if !adds.is_empty() {
                    let names: Vec<&str> = adds.iter().map(|c| c.name.as_str()).collect();
                    execute_ddl(db, sql::add_columns(&table, &adds))
                        .await
                        .inspect_err(|_| self.forget())?;
                    tracing::info!(table, columns = ?names, "Columns added.");
                    self.shapes.remove(&table);
                }
            }
        }
        let key_columns = key_columns(&self.settings, &wanted);
        let plan = Arc::new(Plan {
            table,
            columns: wanted.iter().map(|w| w.def.name.clone()).collect(),
            key: key_columns,
            sources: wanted.into_iter().map(|w| w.source).collect(),
        });
        self.plans
            .entry(topic.to_owned())
            .or_default()
            .insert(ids, plan.clone());
        Ok(Some(plan))
    }

    async fn shape(
        &mut self,
        db: &mut Database,
        table: &str,
    ) -> Result<Option<HashMap<String, Existing>>, DbError> {
        if let Some(shape) = self.shapes.get(table) {
            return Ok(shape.clone());
        }
        let name = table.to_owned();
        let rows: Vec<(String, String, String, Option<String>)> = db
            .with_timeout(async |c: &mut MySqlConnection| {
                sqlx::query_as(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
                     CAST(IS_NULLABLE AS CHAR), CAST(COLUMN_DEFAULT AS CHAR) \
                     FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                )
                .bind(name)
                .fetch_all(c)
                .await
                .map_err(|e| classify(&e))
            })
            .await?;
        let shape = (!rows.is_empty()).then(|| {
            rows.into_iter()
                .map(|(name, data_type, nullable, default)| {
                    let existing = Existing {
                        nullable: nullable.eq_ignore_ascii_case("YES"),
                        has_default: default.is_some(),
                        name: name.clone(),
                        data_type,
                    };
                    (name.to_ascii_lowercase(), existing)
                })
                .collect()
        });
        self.shapes.insert(table.to_owned(), shape.clone());
        Ok(shape)
    }
}

async fn execute_ddl(db: &mut Database, ddl: String) -> Result<(), DbError> {
    db.with_timeout(async move |c: &mut MySqlConnection| {
        // Built only from quoted identifiers, type names and hex or numeric literals (sql.rs).
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(c)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    })
    .await
}

fn key_columns(settings: &Settings, wanted: &[Wanted]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| match (&w.source, settings.pk_mode) {
            (Source::Topic | Source::Partition | Source::Offset, PkMode::Kafka) => true,
            (Source::WholeKey | Source::KeyField(_), PkMode::RecordKey) => true,
            (Source::ValueField(f), PkMode::RecordValue) => settings.pk_fields.contains(f),
            _ => false,
        })
        .map(|w| w.def.name.clone())
        .collect()
}

/// The columns the schemas call for, key columns first.
fn wanted_columns(
    settings: &Settings,
    key: Option<&Schema>,
    value: Option<&Schema>,
) -> Result<Vec<Wanted>, String> {
    let length = settings.key_varchar_length;
    let mut wanted = Vec::new();
    let key_def = |name: &str, ty: SqlType| ColumnDef {
        name: name.to_owned(),
        ty,
        nullable: false,
        default: None,
    };
    match settings.pk_mode {
        PkMode::Kafka => {
            let types = [SqlType::Varchar(length), SqlType::Int, SqlType::BigInt];
            let sources = [Source::Topic, Source::Partition, Source::Offset];
            for ((name, ty), source) in KAFKA_COLUMNS.iter().zip(types).zip(sources) {
                wanted.push(Wanted {
                    def: key_def(name, ty),
                    source,
                    has_default: false,
                });
            }
        }
        PkMode::RecordKey => {
            let key = key.ok_or("pk_mode = \"record_key\" but the record has no key")?;
            match key {
                Schema::Record(record) => {
                    let names: Vec<&str> = if settings.pk_fields.is_empty() {
                        record.fields.iter().map(|f| f.name.as_str()).collect()
                    } else {
                        settings.pk_fields.iter().map(String::as_str).collect()
                    };
                    for name in names {
                        let field = record.fields.iter().find(|f| f.name == name).ok_or_else(
                            || {
                                format!(
                                    "sink.pk_fields names {name}, which the key schema {} lacks",
                                    record.name.fullname(None)
                                )
                            },
                        )?;
                        let mapped =
                            typemap::map_field(field, true, length).map_err(|e| e.to_string())?;
                        if mapped.nullable {
                            return Err(format!(
                                "key field {name} is nullable; a primary key cannot be"
                            ));
                        }
                        wanted.push(Wanted {
                            def: key_def(name, mapped.ty),
                            source: Source::KeyField(name.to_owned()),
                            has_default: false,
                        });
                    }
                }
                primitive => {
                    let name = match settings.pk_fields.as_slice() {
                        [] => RECORD_KEY_COLUMN,
                        [one] => one.as_str(),
                        _ => return Err(
                            "a primitive key makes one column: sink.pk_fields may name at most one"
                                .into(),
                        ),
                    };
                    let mapped = typemap::map_schema(primitive, name, true, length, None)
                        .map_err(|e| e.to_string())?;
                    if mapped.nullable {
                        return Err("the key schema is nullable; a primary key cannot be".into());
                    }
                    wanted.push(Wanted {
                        def: key_def(name, mapped.ty),
                        source: Source::WholeKey,
                        has_default: false,
                    });
                }
            }
        }
        PkMode::None | PkMode::RecordValue => {}
    }
    let Some(value) = value else {
        return Ok(wanted);
    };
    let Schema::Record(record) = value else {
        return Err("the value schema is not a record; only records become rows".into());
    };
    if settings.pk_mode == PkMode::RecordValue {
        for name in &settings.pk_fields {
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
        let in_key =
            settings.pk_mode == PkMode::RecordValue && settings.pk_fields.contains(&field.name);
        let mapped = typemap::map_field(field, in_key, length).map_err(|e| e.to_string())?;
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
    Ok(wanted)
}

/// The columns to add so that the table fits `wanted`, or every reason it cannot.
fn evolution(
    settings: &Settings,
    table: &str,
    schema: &str,
    existing: &HashMap<String, Existing>,
    wanted: &[Wanted],
    is_value: bool,
) -> Result<Vec<ColumnDef>, TableError> {
    let mut problems = Vec::new();
    let mut adds = Vec::new();
    for w in wanted {
        let name = &w.def.name;
        match existing.get(&name.to_ascii_lowercase()) {
            None if !is_value => problems.push(format!("key column {name} is missing")),
            None if !settings.auto_evolve => problems.push(format!(
                "column {name} is missing and sink.auto_evolve is off"
            )),
            None => {
                // Rows already in the table have no value for it: it takes the Avro default,
                // else NULL (never refused as kafka-connect-jdbc #592 does).
                let keeps_not_null = !w.def.nullable && w.has_default && w.def.default.is_some();
                adds.push(ColumnDef {
                    nullable: !keeps_not_null,
                    ..w.def.clone()
                });
            }
            Some(column) => {
                let found = typemap::family_of(&column.data_type);
                if found != w.def.ty.family() {
                    problems.push(format!(
                        "column {} is {} but field {name} now needs {} (the sink never retypes a column)",
                        column.name,
                        column.data_type,
                        w.def.ty.ddl()
                    ));
                } else if w.def.nullable && !column.nullable && found != Family::Other {
                    problems.push(format!(
                        "field {name} is now nullable but column {} is NOT NULL",
                        column.name
                    ));
                }
            }
        }
    }
    if is_value {
        for column in existing.values() {
            let written = wanted
                .iter()
                .any(|w| w.def.name.eq_ignore_ascii_case(&column.name));
            if !written && !column.nullable && !column.has_default {
                problems.push(format!(
                    "column {} is NOT NULL without a default, and the schema has no field for it",
                    column.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(adds)
    } else {
        Err(TableError::Incompatible {
            table: table.to_owned(),
            schema: schema.to_owned(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketflow_core::Config;

    fn settings(edit: impl FnOnce(&mut marketflow_core::config::SinkConfig)) -> Settings {
        let mut config = Config::default();
        edit(&mut config.sink);
        Settings::parse(&config).unwrap()
    }

    fn listing_schema() -> Schema {
        marketflow_core::schema::LISTING.parse().unwrap()
    }

    fn listing_key() -> Schema {
        marketflow_core::schema::LISTING_KEY.parse().unwrap()
    }

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
            c.pk_mode = "kafka".into();
            c.pk_fields = vec![];
            c.delete_enabled = false;
            c.fields_exclude = vec!["description".into()];
        });
        let wanted = wanted_columns(&s, None, Some(&listing_schema())).unwrap();
        assert_eq!(key_columns(&s, &wanted), KAFKA_COLUMNS);
        assert!(!wanted.iter().any(|w| w.def.name == "description"));
    }

    fn existing(columns: &[(&str, &str, bool)]) -> HashMap<String, Existing> {
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
                    },
                )
            })
            .collect()
    }

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"Item","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_new_field_with_a_default_adds_a_column() {
        let s = settings(|c| {
            c.pk_mode = "record_value".into();
            c.pk_fields = vec!["id".into()];
            c.delete_enabled = false;
        });
        let v2 = schema(
            r#"{"name":"id","type":"long"},{"name":"color","type":"string","default":"red"},
               {"name":"note","type":"string"}"#,
        );
        let wanted = wanted_columns(&s, None, Some(&v2)).unwrap();
        let table = existing(&[("id", "bigint", false)]);
        let adds = evolution(&s, "t", "v2", &table, &wanted, true).unwrap();
        assert_eq!(adds.len(), 2);
        assert_eq!(adds[0].name, "color");
        assert!(!adds[0].nullable);
        assert_eq!(adds[0].default.as_deref(), Some("_utf8mb4 X'726564'"));
        // No default: added as NULL rather than refused.
        assert!(adds[1].nullable);
    }

    #[test]
    fn an_incompatible_change_lists_every_problem_and_adds_nothing() {
        let s = settings(|c| {
            c.pk_mode = "record_value".into();
            c.pk_fields = vec!["id".into()];
            c.delete_enabled = false;
        });
        let v3 = schema(
            r#"{"name":"id","type":"long"},{"name":"price","type":"string"},
               {"name":"extra","type":"long","default":0}"#,
        );
        let wanted = wanted_columns(&s, None, Some(&v3)).unwrap();
        let table = existing(&[
            ("id", "bigint", false),
            ("price", "bigint", true),
            ("gone", "int", false),
        ]);
        let err = evolution(&s, "t", "v3", &table, &wanted, true).unwrap_err();
        let TableError::Incompatible { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(err.to_string().contains("column price is bigint"), "{err}");
        assert!(err.to_string().contains("column gone is NOT NULL"), "{err}");
    }

    #[test]
    fn plans_turn_records_into_rows() {
        let s = settings(|_| {});
        let wanted = wanted_columns(&s, Some(&listing_key()), Some(&listing_schema())).unwrap();
        let plan = Plan {
            table: "listings".into(),
            columns: wanted.iter().map(|w| w.def.name.clone()).collect(),
            key: key_columns(&s, &wanted),
            sources: wanted.into_iter().map(|w| w.source).collect(),
        };
        let listing = marketflow_core::record::Listing {
            product_id: 42,
            title: "'; DROP TABLE listings; --".into(),
            price: None,
            condition: "used".into(),
            sale_status: "sold".into(),
            category_path: None,
            category_level1: Some("디지털".into()),
            category_level2: None,
            category_level3: None,
            category_level4: None,
            description: "🍎".into(),
            seller: None,
            location: None,
            view_count: Some(3),
            wish_count: None,
            chat_count: None,
            image_urls: vec![],
            posted_at: None,
            scraped_at: 1_700_000_000_000,
            source_url: "http://x".into(),
        };
        let value = apache_avro::to_value(&listing)
            .unwrap()
            .resolve(&listing_schema())
            .unwrap();
        let key = apache_avro::to_value(listing.key())
            .unwrap()
            .resolve(&listing_key())
            .unwrap();
        let record = Record {
            topic: "listings",
            partition: 0,
            offset: 9,
            key: Some(key),
            value: Some(value),
        };
        let row = plan.row(record.clone()).unwrap();
        assert_eq!(row.len(), plan.columns.len());
        assert_eq!(row[0], SqlValue::Int(42));
        let at = |c: &str| &row[plan.columns.iter().position(|n| n == c).unwrap()];
        assert_eq!(
            at("title"),
            &SqlValue::Text("'; DROP TABLE listings; --".into())
        );
        assert_eq!(at("price"), &SqlValue::Null);
        assert_eq!(at("category_level1"), &SqlValue::Text("디지털".into()));
        assert_eq!(at("image_urls"), &SqlValue::Text("[]".into()));
        assert_eq!(plan.key_row(record).unwrap(), [SqlValue::Int(42)]);
    }
}
