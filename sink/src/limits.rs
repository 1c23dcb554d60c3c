//! MySQL's limits on a table definition, which the sink's DDL must keep so that MySQL 8 (the
//! compose file's `mysql:8.4`) and MariaDB both take it: identifier length (error 1059), `VARCHAR`
//! length (1074), primary key length and parts (1071, 1070) and row size (1118). Each limit is
//! MySQL 8.4's, from its manual; MariaDB's are the same or looser.

use crate::sql::ColumnDef;
use crate::typemap::SqlType;

/// Longest table or column name, in characters ("Identifier Length Limits"; error 1059).
pub const MAX_IDENTIFIER_CHARS: usize = 64;
/// Longest index key of InnoDB (`DYNAMIC` rows), all its columns together ("Limits on InnoDB
/// Tables"; error 1071).
pub const MAX_KEY_BYTES: u64 = 3_072;
/// Most columns in one index ("Limits on InnoDB Tables"; error 1070).
pub const MAX_KEY_PARTS: usize = 16;
/// Largest row, `TEXT` and `BLOB` counting only their pointers ("Limits on Table Column Count
/// and Row Size"; error 1118).
pub const MAX_ROW_BYTES: u64 = 65_535;

/// What a `TEXT` or `BLOB` column counts towards the row size: its contents live outside the row,
/// and the manual counts "9 to 12 bytes" for it.
const LOB_ROW_BYTES: u64 = 12;

/// Bytes a column of `ty` counts towards [`MAX_ROW_BYTES`] ("Data Type Storage Requirements").
pub fn row_bytes(ty: SqlType) -> u64 {
    let variable = |max: u64| max + if max > 255 { 2 } else { 1 };
    match ty {
        SqlType::Bool => 1,
        SqlType::Int | SqlType::Float => 4,
        SqlType::BigInt | SqlType::Double => 8,
        SqlType::Date => 3,
        SqlType::DateTime(p) => 5 + u64::from(p.div_ceil(2)),
        SqlType::Varchar(n) => variable(4 * u64::from(n)),
        SqlType::Varbinary(n) => variable(u64::from(n)),
        SqlType::Text | SqlType::Blob => LOB_ROW_BYTES,
    }
}

/// Bytes a column of `ty` takes in an index key ([`MAX_KEY_BYTES`]): strings at 4 bytes a
/// character, without their length bytes.
pub fn key_bytes(ty: SqlType) -> u64 {
    match ty {
        SqlType::Varchar(n) => 4 * u64::from(n),
        SqlType::Varbinary(n) => u64::from(n),
        // Never a key column (typemap makes keys VARCHAR/VARBINARY); counted as the largest.
        SqlType::Text | SqlType::Blob => u64::from(u16::MAX),
        other => row_bytes(other),
    }
}

/// Bytes an existing column counts towards [`MAX_ROW_BYTES`], from `information_schema`:
/// its `DATA_TYPE` and, for strings, `CHARACTER_OCTET_LENGTH`. Types the sink never creates are
/// counted generously.
pub fn existing_row_bytes(data_type: &str, octet_length: Option<u64>) -> u64 {
    let variable = |max: u64| max + if max > 255 { 2 } else { 1 };
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "year" => 1,
        "smallint" | "enum" => 2,
        "mediumint" | "date" | "time" => 3,
        "int" | "integer" | "float" => 4,
        "timestamp" => 7,
        "bigint" | "double" | "real" | "datetime" | "bit" | "set" => 8,
        "char" | "binary" => octet_length.unwrap_or(255),
        "varchar" | "varbinary" => variable(octet_length.unwrap_or(u64::from(u16::MAX))),
        "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob"
        | "longblob" | "json" | "geometry" => LOB_ROW_BYTES,
        // DECIMAL(65) takes 30 bytes; anything else unknown is counted as much.
        _ => 32,
    }
}

/// What the columns already in a table take of the row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes towards [`MAX_ROW_BYTES`].
    pub bytes: u64,
    /// Nullable columns (a bit each in the row).
    pub nullable: u64,
}

/// Makes `columns` (to create, or to add beside `existing`) fit MySQL's limits: non-key
/// `VARCHAR`s become `TEXT`, widest first, while the row is over [`MAX_ROW_BYTES`]. `key` names
/// the primary key's columns among `columns` (empty when adding).
///
/// # Errors
/// Every limit that no mapping can keep, each with what to change: a name over
/// [`MAX_IDENTIFIER_CHARS`], a key over [`MAX_KEY_BYTES`] or [`MAX_KEY_PARTS`], a row still over
/// [`MAX_ROW_BYTES`].
pub fn fit(columns: &mut [ColumnDef], key: &[String], existing: Usage) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for column in columns.iter() {
        let chars = column.name.chars().count();
        if chars > MAX_IDENTIFIER_CHARS {
            problems.push(format!(
                "field {} has a name of {chars} characters, over MySQL's {MAX_IDENTIFIER_CHARS} \
                 for a column (error 1059): rename it, or leave it out with sink.fields_exclude",
                column.name
            ));
        }
    }
    let in_key = |c: &ColumnDef| key.iter().any(|k| k == &c.name);
    if key.len() > MAX_KEY_PARTS {
        problems.push(format!(
            "the primary key has {} columns, over InnoDB's {MAX_KEY_PARTS} (error 1070): name \
             fewer in sink.pk_fields",
            key.len()
        ));
    }
    let key_total: u64 = columns
        .iter()
        .filter(|c| in_key(c))
        .map(|c| key_bytes(c.ty))
        .sum();
    if key_total > MAX_KEY_BYTES {
        problems.push(format!(
            "the primary key ({}) takes {key_total} bytes, over InnoDB's {MAX_KEY_BYTES} (error \
             1071): lower sink.key_varchar_length (4 bytes a character) or name fewer string \
             fields in sink.pk_fields",
            key.join(", ")
        ));
    }
    let nullable = existing.nullable + columns.iter().filter(|c| c.nullable).count() as u64;
    let mut total = existing.bytes
        + nullable.div_ceil(8)
        + columns.iter().map(|c| row_bytes(c.ty)).sum::<u64>();
    while total > MAX_ROW_BYTES {
        let widest = columns
            .iter_mut()
            .filter(|c| matches!(c.ty, SqlType::Varchar(_)) && !key.contains(&c.name))
            .max_by_key(|c| row_bytes(c.ty));
        let Some(column) = widest else { break };
        total = total - row_bytes(column.ty) + row_bytes(SqlType::Text);
        column.ty = SqlType::Text;
    }
    if total > MAX_ROW_BYTES {
        problems.push(format!(
            "the row takes {total} bytes even with every non-key string as TEXT, over MySQL's \
             {MAX_ROW_BYTES} (error 1118): leave fields out with sink.fields_exclude"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
