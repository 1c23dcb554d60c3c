//! The tables the sink writes, as far as it knows them: each table's shape (read from
//! `information_schema`, cached until a failure), the DDL that creates it (`auto_create`) or adds
//! columns (`auto_evolve`: nothing applied when any part of a change cannot be), definitions the
//! database refused (remembered a while), and the plans made for each topic's schemas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use sqlx::mysql::MySqlConnection;
use tokio::time::Instant;

use super::columns::{Wanted, key_columns, wanted_columns};
use super::error::TableError;
use super::evolution::{Existing, evolution};
use super::plan::Plan;
use crate::db::{Database, DbError, classify, refused_definition};
use crate::limits::{self, Usage};
use crate::settings::Settings;
use crate::sql::{self, ColumnDef};

/// How long a table definition the database refused is not asked for again (the records of its
/// schema are refused meanwhile without a round trip each): long enough that a batch of them
/// costs one refusal, short enough that a table fixed by hand is soon used.
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

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
        if let Some(known) = self.known(topic, ids) {
            return known.map(Some);
        }
        let refusal = (topic.to_owned(), ids);
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
            (None, true) if !self.settings.sink.auto_create => {
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
        let plan = Arc::new(Plan::new(table, wanted, key_columns));
        self.plans
            .entry(topic.to_owned())
            .or_default()
            .insert(ids, plan.clone());
        Ok(Some(plan))
    }

    /// The plan already made for `topic` and these schema ids, or the refusal of their table's
    /// definition while it is remembered.
    fn known(&mut self, topic: &str, ids: SchemaIds) -> Option<Result<Arc<Plan>, TableError>> {
        if let Some(plan) = self.plans.get(topic).and_then(|plans| plans.get(&ids)) {
            return Some(Ok(plan.clone()));
        }
        let refusal = (topic.to_owned(), ids);
        let (at, error) = self.refused.get(&refusal)?;
        if at.elapsed() < REFUSAL_MEMORY {
            return Some(Err(error.clone()));
        }
        self.refused.remove(&refusal);
        None
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

#[cfg(test)]
mod tests {
    use super::super::testing::{by_value, existing, listing_key, listing_schema, settings};
    use super::*;

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
