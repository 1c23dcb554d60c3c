//! Tables: the columns a record's schemas call for, the table as the database has it, creating it
//! (`auto_create`), adding columns for new fields (`auto_evolve`: never a drop or a retype, and
//! nothing applied when any part of a change cannot be), and the plan that turns a record into a
//! row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use sqlx::mysql::MySqlConnection;
use tokio::time::Instant;

use crate::db::{Database, DbError, classify, refused_definition};
use crate::limits::{self, Usage};
use crate::settings::{PkMode, Settings};
use crate::sql::{self, ColumnDef};
use crate::typemap::{self, Family, SqlType, SqlValue, Unbindable};

/// Column names of `pk_mode = "kafka"`, as Kafka Connect names them.
pub const KAFKA_COLUMNS: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

/// Column of a primitive record key when `pk_fields` names none.
pub const RECORD_KEY_COLUMN: &str = "__record_key";

/// How long a table definition the database refused is not asked for again (the records of its
/// schema are refused meanwhile without a round trip each): long enough that a batch of them
/// costs one refusal, short enough that a table fixed by hand is soon used.
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

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
    /// The database refused the table definition the schemas need (a limit of the database, or
    /// a table made by hand that cannot take the change); nothing of it was applied.
    #[error(
        "the database refused the definition of table {table} that schema {schema} needs (MySQL \
         error {code}: {message}); change the schema (or leave fields out with \
         sink.fields_exclude), or create the table by hand"
    )]
    Refused {
        /// The table.
        table: String,
        /// Which schema ids.
        schema: String,
        /// The MySQL error number.
        code: u16,
        /// The database's message.
        message: String,
    },
}

impl TableError {
    /// A short, stable name of the error's class, for dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Database(e) => e.class(),
            Self::Unsupported { .. } => "schema_unsupported",
            Self::Incompatible { .. } => "schema_incompatible",
            Self::Refused { .. } => "schema_refused",
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
    /// `CHARACTER_OCTET_LENGTH`: most bytes of a string column.
    octet_length: Option<u64>,
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
    /// Definitions the database refused, by topic and schema ids, and when (see
    /// [`REFUSAL_MEMORY`]).
    refused: HashMap<(String, SchemaIds), (Instant, TableError)>,
}

impl Tables {
    /// No table known yet.
    pub fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            shapes: HashMap::new(),
            plans: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Forgets what was learnt about the tables (after a failure, or when someone else may have
    /// changed them).
    pub fn forget(&mut self) {
        self.shapes.clear();
        self.plans.clear();
        self.refused.clear();
    }

    /// The plan for records of `topic` with these key and value schemas (`value` is `None` for
    /// tombstones), creating or evolving the table first when the settings allow. `Ok(None)` for a
    /// tombstone whose table does not exist (nothing to delete).
    ///
    /// # Errors
    /// [`TableError`]; with [`TableError::Incompatible`], [`TableError::Unsupported`] and
    /// [`TableError::Refused`] nothing was changed.
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
        let refusal = (topic.to_owned(), ids);
        if let Some((at, error)) = self.refused.get(&refusal) {
            if at.elapsed() < REFUSAL_MEMORY {
                return Err(error.clone());
            }
            self.refused.remove(&refusal);
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
                let ddl = create_table(&self.settings, &table, &wanted)
                    .map_err(|problems| unsupported(problems.join("; ")))?;
                let done = execute_ddl(db, ddl).await.inspect_err(|_| self.forget())?;
                if let Err((code, message)) = done {
                    return Err(self.refuse(refusal, &table, schema_ids, code, message));
                }
                tracing::info!(table, columns = wanted.len(), "Table created.");
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
                    let done = execute_ddl(db, sql::add_columns(&table, &adds))
                        .await
                        .inspect_err(|_| self.forget())?;
                    if let Err((code, message)) = done {
                        return Err(self.refuse(refusal, &table, schema_ids, code, message));
                    }
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

    /// Remembers that the database refused the definition `refusal` (topic, schema ids) needs.
    fn refuse(
        &mut self,
        refusal: (String, SchemaIds),
        table: &str,
        schema: String,
        code: u16,
        message: String,
    ) -> TableError {
        let error = TableError::Refused {
            table: table.to_owned(),
            schema,
            code,
            message,
        };
        tracing::warn!(%error, "Table definition refused.");
        self.refused
            .insert(refusal, (Instant::now(), error.clone()));
        error
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
        type Row = (String, String, String, Option<String>, Option<u64>);
        let rows: Vec<Row> = db
            .with_timeout(async |c: &mut MySqlConnection| {
                sqlx::query_as(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
                     CAST(IS_NULLABLE AS CHAR), CAST(COLUMN_DEFAULT AS CHAR), \
                     CAST(CHARACTER_OCTET_LENGTH AS UNSIGNED) \
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
                .map(|(name, data_type, nullable, default, octet_length)| {
                    let existing = Existing {
                        nullable: nullable.eq_ignore_ascii_case("YES"),
                        has_default: default.is_some(),
                        octet_length,
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

/// Runs `ddl`; `Ok(Err((code, message)))` when the database refuses the definition (see
/// [`refused_definition`]).
async fn execute_ddl(db: &mut Database, ddl: String) -> Result<Result<(), (u16, String)>, DbError> {
    db.with_timeout(async move |c: &mut MySqlConnection| {
        // Built only from quoted identifiers, type names and hex or numeric literals (sql.rs).
        match sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(c).await {
            Ok(_) => Ok(Ok(())),
            Err(e) => refused_definition(&e).map(Err).ok_or_else(|| classify(&e)),
        }
    })
    .await
}

/// The `CREATE TABLE` of the `wanted` columns, fitted to MySQL's limits.
fn create_table(
    settings: &Settings,
    table: &str,
    wanted: &[Wanted],
) -> Result<String, Vec<String>> {
    let mut defs: Vec<ColumnDef> = wanted.iter().map(|w| w.def.clone()).collect();
    let key_columns = key_columns(settings, wanted);
    limits::fit(&mut defs, &key_columns, Usage::default())?;
    Ok(sql::create_table(table, &defs, &key_columns))
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
    if !problems.is_empty() {
        return Err(TableError::Incompatible {
            table: table.to_owned(),
            schema: schema.to_owned(),
            problems,
        });
    }
    let usage = existing
        .values()
        .fold(Usage::default(), |usage, column| Usage {
            bytes: usage.bytes + limits::existing_row_bytes(&column.data_type, column.octet_length),
            nullable: usage.nullable + u64::from(column.nullable),
        });
    limits::fit(&mut adds, &[], usage).map_err(|problems| TableError::Unsupported {
        table: table.to_owned(),
        schema: schema.to_owned(),
        detail: problems.join("; "),
    })?;
    Ok(adds)
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
                        octet_length: None,
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

    /// MySQL 8.4's rules for a table definition, written down from its manual with the error
    /// each breaks, independently of `limits.rs`: the sink's DDL must pass them, since the
    /// tests run against MariaDB, which is looser.
    mod mysql8 {
        use super::*;
        use proptest::prelude::*;

        /// A column as the DDL spells it.
        struct Column {
            name: String,
            ty: String,
            nullable: bool,
            default: Option<String>,
        }

        /// The name in backticks at the start of `text`, and the rest.
        fn quoted(text: &str) -> (String, &str) {
            let text = text.trim_start().strip_prefix('`').expect("a quoted name");
            let mut name = String::new();
            let mut chars = text.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if chars.peek().map(|(_, c)| *c) == Some('`') {
                        chars.next();
                    } else {
                        return (name, &text[i + 1..]);
                    }
                }
                name.push(c);
            }
            panic!("unterminated name in {text}")
        }

        fn column(def: &str) -> Column {
            let (name, rest) = quoted(def);
            let rest = rest.trim();
            let (ty, rest) = rest.split_once(' ').expect("a type");
            let (nullable, rest) = if let Some(rest) = rest.strip_prefix("NOT NULL") {
                (false, rest)
            } else {
                (true, rest.strip_prefix("NULL").expect("NULL or NOT NULL"))
            };
            let default = rest.trim().strip_prefix("DEFAULT ").map(str::to_owned);
            Column {
                name,
                ty: ty.to_owned(),
                nullable,
                default,
            }
        }

        /// The table name, columns and primary key of a `CREATE TABLE` or `ALTER TABLE ... ADD
        /// COLUMN` as `sql.rs` writes them.
        fn parse(ddl: &str) -> (String, Vec<Column>, Vec<String>) {
            if let Some(rest) = ddl.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
                let (table, rest) = quoted(rest);
                let body = rest.trim_start().strip_prefix("(\n").unwrap();
                let body = &body[..body.rfind("\n)").unwrap()];
                let mut columns = Vec::new();
                let mut key = Vec::new();
                for line in body.split(",\n") {
                    let line = line.trim();
                    if let Some(parts) = line.strip_prefix("PRIMARY KEY (") {
                        let mut rest = parts.strip_suffix(')').unwrap();
                        while !rest.is_empty() {
                            let (name, after) = quoted(rest);
                            key.push(name);
                            rest = after.trim_start_matches(", ");
                        }
                    } else {
                        columns.push(column(line));
                    }
                }
                (table, columns, key)
            } else {
                let rest = ddl.strip_prefix("ALTER TABLE ").unwrap();
                let (table, rest) = quoted(rest);
                let columns = rest
                    .split(", ADD COLUMN ")
                    .map(|c| column(c.trim().trim_start_matches("ADD COLUMN ")))
                    .collect();
                (table, columns, Vec::new())
            }
        }

        fn length(ty: &str) -> u64 {
            ty[ty.find('(').unwrap() + 1..ty.len() - 1].parse().unwrap()
        }

        /// Bytes towards the row size ("Data Type Storage Requirements"; utf8mb4 is 4 bytes a
        /// character; TEXT and BLOB count 9 to 12 bytes, taken as 12).
        fn storage(ty: &str) -> u64 {
            let var = |n: u64| n + if n > 255 { 2 } else { 1 };
            match ty {
                "TINYINT(1)" => 1,
                "INT" | "FLOAT" => 4,
                "BIGINT" | "DOUBLE" => 8,
                "DATE" => 3,
                "DATETIME(3)" => 7,
                "DATETIME(6)" => 8,
                "TEXT" | "BLOB" | "JSON" | "GEOMETRY" => 12,
                t if t.starts_with("VARCHAR(") => var(4 * length(t)),
                t if t.starts_with("VARBINARY(") => var(length(t)),
                t => panic!("type {t} not in the checker"),
            }
        }

        fn lob(ty: &str) -> bool {
            matches!(ty, "TEXT" | "BLOB" | "JSON" | "GEOMETRY")
        }

        /// The MySQL errors the statement would raise; `existing` is what the table's columns
        /// take of the row already (for an `ALTER TABLE`).
        fn violations(ddl: &str, existing: u64) -> Vec<u16> {
            let (table, columns, key) = parse(ddl);
            let mut errors = Vec::new();
            // 1059: identifiers are at most 64 characters.
            if std::iter::once(&table)
                .chain(columns.iter().map(|c| &c.name))
                .any(|n| n.chars().count() > 64)
            {
                errors.push(1059);
            }
            for c in &columns {
                // 1101: BLOB, TEXT, GEOMETRY and JSON take a default only as an expression
                // (in parentheses), or NULL.
                if lob(&c.ty)
                    && c.default
                        .as_deref()
                        .is_some_and(|d| d != "NULL" && !d.starts_with('('))
                {
                    errors.push(1101);
                }
                // 1074: VARCHAR of utf8mb4 up to 16,383 characters, VARBINARY up to 65,535.
                if (c.ty.starts_with("VARCHAR(") && length(&c.ty) > 16_383)
                    || (c.ty.starts_with("VARBINARY(") && length(&c.ty) > 65_535)
                {
                    errors.push(1074);
                }
            }
            let key_columns: Vec<&Column> = key
                .iter()
                .map(|k| columns.iter().find(|c| &c.name == k).unwrap())
                .collect();
            // 1070: at most 16 key parts.
            if key_columns.len() > 16 {
                errors.push(1070);
            }
            // 1170 / 1171: no TEXT or BLOB (without a prefix) and no NULL in a primary key.
            if key_columns.iter().any(|c| lob(&c.ty)) {
                errors.push(1170);
            }
            if key_columns.iter().any(|c| c.nullable) {
                errors.push(1171);
            }
            // 1071: InnoDB keys are at most 3,072 bytes, all their columns together.
            let key_bytes: u64 = key_columns
                .iter()
                .map(|c| match c.ty.as_str() {
                    t if t.starts_with("VARCHAR(") => 4 * length(t),
                    t if t.starts_with("VARBINARY(") => length(t),
                    t => storage(t),
                })
                .sum();
            if key_bytes > 3_072 {
                errors.push(1071);
            }
            // 1118: a row is at most 65,535 bytes, NULL flags included.
            let nullable = columns.iter().filter(|c| c.nullable).count() as u64;
            let row = existing
                + nullable.div_ceil(8)
                + columns.iter().map(|c| storage(&c.ty)).sum::<u64>();
            if row > 65_535 {
                errors.push(1118);
            }
            errors
        }

        fn value(fields: &str) -> Schema {
            Schema::parse_str(&format!(
                r#"{{"type":"record","name":"V","fields":[{fields}]}}"#
            ))
            .unwrap()
        }

        fn by_value(edit: impl FnOnce(&mut marketflow_core::config::SinkConfig)) -> Settings {
            settings(|c| {
                c.pk_mode = "record_value".into();
                c.pk_fields = vec!["id".into()];
                c.delete_enabled = false;
                edit(c);
            })
        }

        /// The `CREATE TABLE` the sink runs for records of `value` (and `key`).
        fn create(s: &Settings, key: Option<&Schema>, value: &Schema) -> Result<String, String> {
            let wanted = wanted_columns(s, key, Some(value))?;
            super::create_table(s, "t", &wanted).map_err(|p| p.join("; "))
        }

        #[test]
        fn the_checker_catches_what_mysql_refuses() {
            let ddl = "CREATE TABLE IF NOT EXISTS `t` (\n  `id` BIGINT NOT NULL,\n  `c` TEXT NOT \
                       NULL DEFAULT _utf8mb4 X'72',\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB";
            assert_eq!(violations(ddl, 0), [1101]);
            assert!(
                violations(
                    &ddl.replace("DEFAULT _utf8mb4 X'72'", "DEFAULT (_utf8mb4 X'72')"),
                    0
                )
                .is_empty()
            );
            let wide: Vec<String> = (0..5)
                .map(|i| format!("ADD COLUMN `v{i}` VARCHAR(4096) NOT NULL"))
                .collect();
            assert_eq!(
                violations(&format!("ALTER TABLE `t` {}", wide.join(", ")), 0),
                [1118]
            );
            assert_eq!(
                violations("ALTER TABLE `t` ADD COLUMN `e` VARCHAR(20000) NULL", 0),
                [1074, 1118]
            );
            assert_eq!(
                violations(
                    &format!("ALTER TABLE `t` ADD COLUMN `{}` INT NULL", "n".repeat(65)),
                    0
                ),
                [1059]
            );
        }

        #[test]
        fn the_listing_table_passes() {
            let s = settings(|_| {});
            let ddl = create(&s, Some(&listing_key()), &listing_schema()).unwrap();
            assert!(violations(&ddl, 0).is_empty(), "{ddl}");
        }

        #[test]
        fn a_string_default_is_an_expression_on_text() {
            let s = by_value(|_| {});
            let v = value(
                r#"{"name":"id","type":"long"},{"name":"color","type":"string","default":"red"},
                   {"name":"code","type":"string","max_length":8,"default":"x"},
                   {"name":"note","type":["null","string"],"default":null}"#,
            );
            let ddl = create(&s, None, &v).unwrap();
            assert!(violations(&ddl, 0).is_empty(), "{ddl}");
            assert!(
                ddl.contains("`color` TEXT NOT NULL DEFAULT (_utf8mb4 X'726564')"),
                "{ddl}"
            );
            assert!(
                ddl.contains("`code` VARCHAR(8) NOT NULL DEFAULT _utf8mb4 X'78'"),
                "{ddl}"
            );
            assert!(ddl.contains("`note` TEXT NULL,"), "{ddl}");
            // Added to an existing table: the same.
            let wanted = wanted_columns(&s, None, Some(&v)).unwrap();
            let table = existing(&[("id", "bigint", false)]);
            let adds = evolution(&s, "t", "v2", &table, &wanted, true).unwrap();
            let ddl = sql::add_columns("t", &adds);
            assert!(violations(&ddl, 8).is_empty(), "{ddl}");
        }

        #[test]
        fn many_wide_strings_become_text_until_the_row_fits() {
            let s = by_value(|_| {});
            let fields: Vec<String> = (0..20)
                .map(|i| format!(r#"{{"name":"s{i}","type":"string","max_length":4096}}"#))
                .collect();
            let v = value(&format!(
                r#"{{"name":"id","type":"long"}},{}"#,
                fields.join(",")
            ));
            let ddl = create(&s, None, &v).unwrap();
            assert!(violations(&ddl, 0).is_empty(), "{ddl}");
            assert_eq!(ddl.matches("VARCHAR(4096)").count(), 3, "{ddl}");
            // Beside existing wide columns, the new ones go to TEXT sooner.
            let wanted = wanted_columns(&s, None, Some(&v)).unwrap();
            let mut table = existing(&[("id", "bigint", false)]);
            for i in 0..3 {
                table.insert(
                    format!("old{i}"),
                    Existing {
                        name: format!("old{i}"),
                        data_type: "varchar".into(),
                        nullable: true,
                        has_default: false,
                        octet_length: Some(16_384),
                    },
                );
            }
            let adds = evolution(&s, "t", "v2", &table, &wanted, true).unwrap();
            let ddl = sql::add_columns("t", &adds);
            let before = 8 + 3 * (16_384 + 2);
            assert!(violations(&ddl, before).is_empty(), "{ddl}");
            assert!(!ddl.contains("VARCHAR(4096)"), "{ddl}");
        }

        #[test]
        fn a_long_enum_symbol_makes_text_or_a_key_length_varchar() {
            let long = "A".repeat(20_000);
            let s = by_value(|_| {});
            let v = value(&format!(
                r#"{{"name":"id","type":"long"}},
                   {{"name":"e","type":{{"type":"enum","name":"E","symbols":["B","{long}"]}}}}"#
            ));
            let ddl = create(&s, None, &v).unwrap();
            assert!(violations(&ddl, 0).is_empty(), "{ddl}");
            assert!(ddl.contains("`e` TEXT NOT NULL"), "{ddl}");
            let s = settings(|c| c.pk_fields = vec![]);
            let key = Schema::parse_str(&format!(
                r#"{{"type":"record","name":"K","fields":[
                    {{"name":"e","type":{{"type":"enum","name":"E","symbols":["{}"]}}}}]}}"#,
                "A".repeat(1_000)
            ))
            .unwrap();
            let ddl = create(&s, Some(&key), &value(r#"{"name":"x","type":"long"}"#)).unwrap();
            assert!(violations(&ddl, 0).is_empty(), "{ddl}");
            assert!(ddl.contains("`e` VARCHAR(255) NOT NULL"), "{ddl}");
        }

        #[test]
        fn what_no_mapping_fixes_is_refused_saying_what_to_change() {
            let s = by_value(|_| {});
            let name = "n".repeat(65);
            let v = value(&format!(
                r#"{{"name":"id","type":"long"}},{{"name":"{name}","type":"long"}}"#
            ));
            let err = create(&s, None, &v).unwrap_err();
            assert!(
                err.contains("error 1059") && err.contains("sink.fields_exclude"),
                "{err}"
            );

            let s = settings(|c| c.pk_fields = vec![]);
            let fields: Vec<String> = (0..4)
                .map(|i| format!(r#"{{"name":"k{i}","type":"string"}}"#))
                .collect();
            let key = Schema::parse_str(&format!(
                r#"{{"type":"record","name":"K","fields":[{}]}}"#,
                fields.join(",")
            ))
            .unwrap();
            let err = create(&s, Some(&key), &value(r#"{"name":"x","type":"long"}"#)).unwrap_err();
            assert!(
                err.contains("error 1071") && err.contains("sink.key_varchar_length"),
                "{err}"
            );
        }

        /// Fields of random names, types, lengths and defaults.
        fn field() -> impl Strategy<Value = String> {
            let name = (1usize..=80).prop_map(|n| format!("f{}", "x".repeat(n - 1)));
            let ty = prop_oneof![
                (1u32..=6_000)
                    .prop_map(|n| format!(r#""type":"string","max_length":{n},"default":"d""#)),
                Just(r#""type":"string","default":"red""#.to_owned()),
                Just(r#""type":["null","string"],"default":null"#.to_owned()),
                Just(r#""type":"bytes""#.to_owned()),
                Just(r#""type":"long","default":7"#.to_owned()),
                (1usize..=20_000).prop_map(|n| format!(
                    r#""type":{{"type":"enum","name":"E_NAME","symbols":["{}"]}}"#,
                    "S".repeat(n)
                )),
            ];
            (name, ty).prop_map(|(name, ty)| {
                let ty = ty.replace("E_NAME", &format!("E_{name}"));
                format!(r#"{{"name":"{name}",{ty}}}"#)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn every_table_the_sink_creates_passes_or_is_refused_with_the_fix(
                fields in proptest::collection::vec(field(), 1..40),
            ) {
                let mut seen = std::collections::HashSet::new();
                let fields: Vec<String> = fields
                    .into_iter()
                    .filter(|f| seen.insert(f.split('"').nth(3).unwrap().to_owned()))
                    .collect();
                let v = value(&format!(r#"{{"name":"id","type":"long"}},{}"#, fields.join(",")));
                match create(&by_value(|_| {}), None, &v) {
                    Ok(ddl) => prop_assert!(violations(&ddl, 0).is_empty(), "{}", ddl),
                    Err(err) => prop_assert!(err.contains("sink.fields_exclude"), "{}", err),
                }
            }
        }
    }
}
