//! SQL generation: identifiers always quoted, values always bound. DDL for creating and evolving
//! tables, and the multi-row statements a batch is written with (`INSERT`, `INSERT ... ON
//! DUPLICATE KEY UPDATE`, `UPDATE`, `DELETE`), as `sqlx::QueryBuilder`s.

use sqlx::query_builder::Separated;
use sqlx::{MySql, QueryBuilder};

use crate::typemap::{SqlType, SqlValue};

/// MySQL's limit of bound parameters in one statement.
pub const MAX_PARAMS: usize = 65_535;

/// An identifier in backticks, inner backticks doubled: safe whatever the name holds.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A column to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: SqlType,
    /// Whether it takes NULL.
    pub nullable: bool,
    /// Its `DEFAULT` literal (see [`crate::typemap::default_literal`]).
    pub default: Option<String>,
}

impl ColumnDef {
    fn ddl(&self) -> String {
        let mut sql = format!(
            "{} {} {}",
            quote(&self.name),
            self.ty.ddl(),
            if self.nullable { "NULL" } else { "NOT NULL" }
        );
        let lob = matches!(self.ty, SqlType::Text | SqlType::Blob);
        match self.default.as_deref() {
            None => {}
            // A nullable column defaults to NULL anyway.
            Some("NULL") if lob => {}
            // MySQL 8 refuses a literal default on TEXT and BLOB (error 1101) but takes it
            // written as an expression (8.0.13 on), as MariaDB does (10.2.1 on).
            Some(default) if lob => {
                sql.push_str(" DEFAULT (");
                sql.push_str(default);
                sql.push(')');
            }
            Some(default) => {
                sql.push_str(" DEFAULT ");
                sql.push_str(default);
            }
        }
        sql
    }
}

/// `CREATE TABLE IF NOT EXISTS`, utf8mb4 with a binary collation (so keys compare as Kafka
/// does, byte for byte), primary key `pk` when not empty.
pub fn create_table(table: &str, columns: &[ColumnDef], pk: &[String]) -> String {
    let mut parts: Vec<String> = columns.iter().map(ColumnDef::ddl).collect();
    if !pk.is_empty() {
        let keys: Vec<String> = pk.iter().map(|k| quote(k)).collect();
        parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        quote(table),
        parts.join(",\n  ")
    )
}

/// One `ALTER TABLE` adding every column at once, so that it applies wholly or not at all.
pub fn add_columns(table: &str, columns: &[ColumnDef]) -> String {
    let adds: Vec<String> = columns
        .iter()
        .map(|c| format!("ADD COLUMN {}", c.ddl()))
        .collect();
    format!("ALTER TABLE {} {}", quote(table), adds.join(", "))
}

/// How an `INSERT` treats a key already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// It is an error (plain `INSERT`).
    Fail,
    /// The row is left as it is: the same record written again (`pk_mode = "kafka"`).
    Keep,
    /// The row takes the new values (upsert).
    Update,
}

/// How many rows of `columns` columns fit in one statement.
pub fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns.max(1)).max(1)
}

/// A multi-row `INSERT` of `rows` (each as long as `columns`), with `ON DUPLICATE KEY UPDATE`
/// per `on_duplicate`. The caller keeps `rows.len() * columns.len()` within [`MAX_PARAMS`].
pub fn insert(
    table: &str,
    columns: &[String],
    key: &[String],
    on_duplicate: OnDuplicate,
    rows: &[&[SqlValue]],
) -> QueryBuilder<MySql> {
    let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let mut builder = QueryBuilder::new(format!(
        "INSERT INTO {} ({}) ",
        quote(table),
        names.join(", ")
    ));
    builder.push_values(rows, |mut separated, row| {
        for value in *row {
            bind(&mut separated, value);
        }
    });
    match on_duplicate {
        OnDuplicate::Fail => {}
        OnDuplicate::Keep => {
            if let Some(first) = key.first() {
                let first = quote(first);
                builder.push(format!(" ON DUPLICATE KEY UPDATE {first} = {first}"));
            }
        }
        OnDuplicate::Update => {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !key.contains(c))
                .map(|c| {
                    let c = quote(c);
                    format!("{c} = VALUES({c})")
                })
                .collect();
            if updates.is_empty() {
                if let Some(first) = key.first() {
                    let first = quote(first);
                    builder.push(format!(" ON DUPLICATE KEY UPDATE {first} = {first}"));
                }
            } else {
                builder.push(format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", ")));
            }
        }
    }
    builder
}

/// `UPDATE table SET <non-key columns> WHERE <key columns>` for one row (of `columns`). `None`
/// when every column is a key column (nothing to set).
pub fn update(
    table: &str,
    columns: &[String],
    key: &[String],
    row: &[SqlValue],
) -> Option<QueryBuilder<MySql>> {
    let mut builder = QueryBuilder::new(format!("UPDATE {} SET ", quote(table)));
    let mut any = false;
    {
        let mut set = builder.separated(", ");
        for (column, value) in columns.iter().zip(row) {
            if !key.contains(column) {
                set.push(format!("{} = ", quote(column)));
                bind_unseparated(&mut set, value);
                any = true;
            }
        }
    }
    if !any {
        return None;
    }
    builder.push(" WHERE ");
    let mut conditions = builder.separated(" AND ");
    for (column, value) in columns.iter().zip(row) {
        if key.contains(column) {
            conditions.push(format!("{} = ", quote(column)));
            bind_unseparated(&mut conditions, value);
        }
    }
    Some(builder)
}

/// `SELECT COUNT(*) FROM table WHERE <every column> <=> ?` for one row (of `columns`): whether
/// the table holds exactly this row. Strings compare as bytes (the binary collation pads with
/// spaces, so `'a'` would equal `'a '`), NULL equals NULL.
pub fn count_same(table: &str, columns: &[String], row: &[SqlValue]) -> QueryBuilder<MySql> {
    let mut builder = QueryBuilder::new(format!("SELECT COUNT(*) FROM {} WHERE ", quote(table)));
    let mut conditions = builder.separated(" AND ");
    for (column, value) in columns.iter().zip(row) {
        let column = quote(column);
        if matches!(value, SqlValue::Text(_)) {
            conditions.push(format!("CAST({column} AS BINARY) <=> CAST("));
            bind_unseparated(&mut conditions, value);
            conditions.push_unseparated(" AS BINARY)");
        } else {
            conditions.push(format!("{column} <=> "));
            bind_unseparated(&mut conditions, value);
        }
    }
    builder
}

/// `DELETE FROM table WHERE (<key columns>) IN ((?, ...), ...)` for `keys` (each as long as
/// `key`).
pub fn delete(table: &str, key: &[String], keys: &[&[SqlValue]]) -> QueryBuilder<MySql> {
    let names: Vec<String> = key.iter().map(|c| quote(c)).collect();
    let mut builder = QueryBuilder::new(format!(
        "DELETE FROM {} WHERE ({}) IN (",
        quote(table),
        names.join(", ")
    ));
    let mut tuples = builder.separated(", ");
    for values in keys {
        tuples.push("(");
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                tuples.push_unseparated(", ");
            }
            bind_unseparated(&mut tuples, value);
        }
        tuples.push_unseparated(")");
    }
    builder.push(")");
    builder
}

fn bind(separated: &mut Separated<'_, MySql, &str>, value: &SqlValue) {
    match value {
        SqlValue::Null => separated.push_bind(None::<i64>),
        SqlValue::Bool(b) => separated.push_bind(*b),
        SqlValue::Int(i) => separated.push_bind(*i),
        SqlValue::Double(f) => separated.push_bind(*f),
        SqlValue::Text(s) => separated.push_bind(s.as_str()),
        SqlValue::Bytes(b) => separated.push_bind(b.as_slice()),
        SqlValue::Date(d) => separated.push_bind(*d),
        SqlValue::DateTime(t) => separated.push_bind(*t),
    };
}

fn bind_unseparated(separated: &mut Separated<'_, MySql, &str>, value: &SqlValue) {
    match value {
        SqlValue::Null => separated.push_bind_unseparated(None::<i64>),
        SqlValue::Bool(b) => separated.push_bind_unseparated(*b),
        SqlValue::Int(i) => separated.push_bind_unseparated(*i),
        SqlValue::Double(f) => separated.push_bind_unseparated(*f),
        SqlValue::Text(s) => separated.push_bind_unseparated(s.as_str()),
        SqlValue::Bytes(b) => separated.push_bind_unseparated(b.as_slice()),
        SqlValue::Date(d) => separated.push_bind_unseparated(*d),
        SqlValue::DateTime(t) => separated.push_bind_unseparated(*t),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn identifiers_are_always_quoted_and_backticks_doubled() {
        assert_eq!(quote("listings"), "`listings`");
        assert_eq!(quote("a`; DROP TABLE x; --"), "`a``; DROP TABLE x; --`");
    }

    #[test]
    fn create_table_quotes_every_name_and_is_utf8mb4() {
        let columns = [
            ColumnDef {
                name: "product_id".into(),
                ty: SqlType::BigInt,
                nullable: false,
                default: None,
            },
            ColumnDef {
                name: "title".into(),
                ty: SqlType::Text,
                nullable: true,
                default: Some("NULL".into()),
            },
            ColumnDef {
                name: "color".into(),
                ty: SqlType::Text,
                nullable: false,
                default: Some("_utf8mb4 X'726564'".into()),
            },
            ColumnDef {
                name: "size".into(),
                ty: SqlType::Varchar(8),
                nullable: false,
                default: Some("_utf8mb4 X'4D'".into()),
            },
        ];
        let sql = create_table("shop_listings", &columns, &names(&["product_id"]));
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS `shop_listings` (\n  `product_id` BIGINT NOT NULL,\n  \
             `title` TEXT NULL,\n  `color` TEXT NOT NULL DEFAULT (_utf8mb4 X'726564'),\n  \
             `size` VARCHAR(8) NOT NULL DEFAULT _utf8mb4 X'4D',\n  PRIMARY KEY (`product_id`)\n) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
        assert_eq!(
            add_columns("t", &columns[1..3]),
            "ALTER TABLE `t` ADD COLUMN `title` TEXT NULL, ADD COLUMN `color` TEXT NOT NULL \
             DEFAULT (_utf8mb4 X'726564')"
        );
    }

    #[test]
    fn upsert_is_one_multi_row_statement_with_every_value_bound() {
        let rows = [
            vec![
                SqlValue::Int(1),
                SqlValue::Text("'; DROP TABLE listings; --".into()),
            ],
            vec![SqlValue::Int(2), SqlValue::Null],
        ];
        let refs: Vec<&[SqlValue]> = rows.iter().map(Vec::as_slice).collect();
        let columns = names(&["product_id", "title"]);
        let key = names(&["product_id"]);
        let sql = insert("listings", &columns, &key, OnDuplicate::Update, &refs).into_string();
        assert_eq!(
            sql,
            "INSERT INTO `listings` (`product_id`, `title`) VALUES (?, ?), (?, ?) ON DUPLICATE \
             KEY UPDATE `title` = VALUES(`title`)"
        );
        assert!(!sql.contains("DROP"));
    }

    #[test]
    fn inserts_fail_or_keep_on_a_duplicate_key() {
        let rows = [vec![
            SqlValue::Text("t".into()),
            SqlValue::Int(0),
            SqlValue::Int(7),
        ]];
        let refs: Vec<&[SqlValue]> = rows.iter().map(Vec::as_slice).collect();
        let columns = names(&["__connect_topic", "__connect_partition", "__connect_offset"]);
        let plain = insert("t", &columns, &columns, OnDuplicate::Fail, &refs).into_string();
        assert_eq!(
            plain,
            "INSERT INTO `t` (`__connect_topic`, `__connect_partition`, `__connect_offset`) \
             VALUES (?, ?, ?)"
        );
        let keep = insert("t", &columns, &columns, OnDuplicate::Keep, &refs).into_string();
        assert!(keep.ends_with(" ON DUPLICATE KEY UPDATE `__connect_topic` = `__connect_topic`"));
    }

    #[test]
    fn update_and_delete_find_rows_by_their_key() {
        let columns = names(&["id", "name", "n"]);
        let key = names(&["id"]);
        let row = [
            SqlValue::Int(1),
            SqlValue::Text("x".into()),
            SqlValue::Int(2),
        ];
        let sql = update("t", &columns, &key, &row).unwrap().into_string();
        assert_eq!(sql, "UPDATE `t` SET `name` = ?, `n` = ? WHERE `id` = ?");
        assert!(update("t", &key, &key, &row[..1]).is_none());

        let keys = [
            vec![SqlValue::Int(1), SqlValue::Int(2)],
            vec![SqlValue::Int(3), SqlValue::Int(4)],
        ];
        let refs: Vec<&[SqlValue]> = keys.iter().map(Vec::as_slice).collect();
        let sql = delete("t", &names(&["a", "b"]), &refs).into_string();
        assert_eq!(sql, "DELETE FROM `t` WHERE (`a`, `b`) IN ((?, ?), (?, ?))");
    }

    #[test]
    fn a_stored_row_is_compared_column_by_column_strings_as_bytes() {
        let row = [SqlValue::Int(1), SqlValue::Text("a".into()), SqlValue::Null];
        let sql = count_same("t", &names(&["id", "name", "n"]), &row).into_string();
        assert_eq!(
            sql,
            "SELECT COUNT(*) FROM `t` WHERE `id` <=> ? AND CAST(`name` AS BINARY) <=> CAST(? AS \
             BINARY) AND `n` <=> ?"
        );
    }

    #[test]
    fn statements_stay_under_the_parameter_limit() {
        assert_eq!(rows_per_statement(20), 3276);
        assert_eq!(rows_per_statement(0), MAX_PARAMS);
        assert!(rows_per_statement(100_000) >= 1);
    }
}
