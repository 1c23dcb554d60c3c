//! The type map: which MySQL column type an Avro field becomes, and which bound value an Avro
//! value becomes. long → BIGINT, int → INT, string → VARCHAR(n) in a key or when declared short
//! (`"max_length"` on the field), else TEXT; boolean → TINYINT(1); timestamp-millis → DATETIME(3);
//! nullable unions → NULL columns; arrays, maps and records → JSON text.

use apache_avro::Schema;
use apache_avro::schema::RecordField;
use apache_avro::types::Value;
use sqlx::types::chrono::{DateTime, NaiveDate, NaiveDateTime};

/// A MySQL column type the sink creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `TINYINT(1)`, from boolean.
    Bool,
    /// `INT`, from int and time-millis.
    Int,
    /// `BIGINT`, from long, time-micros and nanosecond timestamps.
    BigInt,
    /// `FLOAT`, from float.
    Float,
    /// `DOUBLE`, from double.
    Double,
    /// `VARCHAR(n)`, from a short or key string, an enum or a uuid.
    Varchar(u32),
    /// `TEXT`, from string, and from arrays, maps and records as JSON.
    Text,
    /// `VARBINARY(n)`, from bytes in a key.
    Varbinary(u32),
    /// `BLOB`, from bytes and fixed.
    Blob,
    /// `DATE`, from date.
    Date,
    /// `DATETIME(p)`, from timestamp-millis (3) and timestamp-micros (6).
    DateTime(u8),
}

/// Broad classes of MySQL types: a column may be widened within its family by hand, but a field
/// whose family changed needs a retype, which the sink never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Integers (TINYINT … BIGINT).
    Integer,
    /// FLOAT, DOUBLE, DECIMAL.
    Real,
    /// CHAR, VARCHAR, the TEXTs.
    Text,
    /// BINARY, VARBINARY, the BLOBs.
    Binary,
    /// DATE.
    Date,
    /// DATETIME, TIMESTAMP.
    DateTime,
    /// Anything else (JSON, ENUM, ...).
    Other,
}

impl SqlType {
    /// The type as written in DDL.
    pub fn ddl(self) -> String {
        match self {
            Self::Bool => "TINYINT(1)".into(),
            Self::Int => "INT".into(),
            Self::BigInt => "BIGINT".into(),
            Self::Float => "FLOAT".into(),
            Self::Double => "DOUBLE".into(),
            Self::Varchar(n) => format!("VARCHAR({n})"),
            Self::Text => "TEXT".into(),
            Self::Varbinary(n) => format!("VARBINARY({n})"),
            Self::Blob => "BLOB".into(),
            Self::Date => "DATE".into(),
            Self::DateTime(p) => format!("DATETIME({p})"),
        }
    }

    /// The type's family.
    pub fn family(self) -> Family {
        match self {
            Self::Bool | Self::Int | Self::BigInt => Family::Integer,
            Self::Float | Self::Double => Family::Real,
            Self::Varchar(_) | Self::Text => Family::Text,
            Self::Varbinary(_) | Self::Blob => Family::Binary,
            Self::Date => Family::Date,
            Self::DateTime(_) => Family::DateTime,
        }
    }
}

/// The family of a column as `information_schema.COLUMNS.DATA_TYPE` names it.
pub fn family_of(data_type: &str) -> Family {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit" => {
            Family::Integer
        }
        "float" | "double" | "real" | "decimal" | "numeric" => Family::Real,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Family::Text,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Family::Binary,
        "date" => Family::Date,
        "datetime" | "timestamp" => Family::DateTime,
        _ => Family::Other,
    }
}

/// A field's column: its type and whether it takes NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// The column type.
    pub ty: SqlType,
    /// Whether the Avro type admits null (a union with `null`).
    pub nullable: bool,
}

/// An Avro type the sink has no column type for.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "field {field} has Avro type {avro}, which the sink does not map to a column; leave it out \
     with sink.fields_exclude"
)]
pub struct Unmapped {
    /// The field.
    pub field: String,
    /// The Avro type, as debug text.
    pub avro: String,
}

/// The column of `field`; `in_key` makes strings and bytes `VARCHAR`/`VARBINARY` of
/// `key_length`, since a key cannot be TEXT (kafka-connect-jdbc #996).
///
/// # Errors
/// [`Unmapped`] for unions of several non-null types, decimals, durations and references.
pub fn map_field(field: &RecordField, in_key: bool, key_length: u32) -> Result<Mapped, Unmapped> {
    let declared = declared_length(field);
    map_schema(&field.schema, &field.name, in_key, key_length, declared)
}

/// The column of a schema that is not a record field (a primitive key).
///
/// # Errors
/// As [`map_field`].
pub fn map_schema(
    schema: &Schema,
    field: &str,
    in_key: bool,
    key_length: u32,
    declared: Option<u32>,
) -> Result<Mapped, Unmapped> {
    let unmapped = || Unmapped {
        field: field.to_owned(),
        avro: format!("{schema:?}").chars().take(120).collect(),
    };
    if let Schema::Union(union) = schema {
        let others: Vec<&Schema> = union
            .variants()
            .iter()
            .filter(|s| !matches!(s, Schema::Null))
            .collect();
        return match others.as_slice() {
            [one] => map_schema(one, field, in_key, key_length, declared).map(|m| Mapped {
                nullable: true,
                ..m
            }),
            _ => Err(unmapped()),
        };
    }
    let string = |limit: Option<u32>| match (in_key, limit) {
        (true, Some(n)) => SqlType::Varchar(n.min(key_length)),
        (true, None) => SqlType::Varchar(key_length),
        (false, Some(n)) if n <= 4096 => SqlType::Varchar(n),
        (false, _) => SqlType::Text,
    };
    let ty = match schema {
        Schema::Boolean => SqlType::Bool,
        Schema::Int | Schema::TimeMillis => SqlType::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampNanos => SqlType::BigInt,
        Schema::Float => SqlType::Float,
        Schema::Double => SqlType::Double,
        Schema::String => string(declared),
        // Sized like a declared string: a symbol too long for a VARCHAR makes the column TEXT
        // (MySQL error 1074 otherwise), and in a key it is cut to the key length.
        Schema::Enum(e) => {
            let longest = e
                .symbols
                .iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(1);
            string(Some(u32::try_from(longest).unwrap_or(u32::MAX).max(1)))
        }
        Schema::Uuid(_) => SqlType::Varchar(36),
        Schema::Bytes | Schema::Fixed(_) if in_key => SqlType::Varbinary(key_length),
        Schema::Bytes | Schema::Fixed(_) => SqlType::Blob,
        Schema::Date => SqlType::Date,
        Schema::TimestampMillis | Schema::LocalTimestampMillis => SqlType::DateTime(3),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => SqlType::DateTime(6),
        Schema::Array(_) | Schema::Map(_) | Schema::Record(_) if !in_key => SqlType::Text,
        _ => return Err(unmapped()),
    };
    Ok(Mapped {
        ty,
        nullable: false,
    })
}

/// A `"max_length": n` (or `"maxLength"`) attribute on the field declares a string short.
fn declared_length(field: &RecordField) -> Option<u32> {
    ["max_length", "maxLength"]
        .iter()
        .find_map(|k| field.custom_attributes.get(*k))
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// A boolean (TINYINT(1)).
    Bool(bool),
    /// Any integer.
    Int(i64),
    /// A float or double.
    Double(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A date.
    Date(NaiveDate),
    /// A date and time, UTC.
    DateTime(NaiveDateTime),
}

/// A value that cannot be bound.
#[derive(Debug, Clone, thiserror::Error)]
#[error("field {field}: {detail}")]
pub struct Unbindable {
    /// The field.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The bound value of an Avro value (of field `field`, for error messages).
///
/// # Errors
/// [`Unbindable`] for timestamps outside chrono's range and types without a mapping.
pub fn to_sql(value: Value, field: &str) -> Result<SqlValue, Unbindable> {
    let fail = |detail: String| Unbindable {
        field: field.to_owned(),
        detail,
    };
    let datetime = |micros: Option<i64>, raw: i64| {
        micros
            .and_then(DateTime::from_timestamp_micros)
            .map(|t| SqlValue::DateTime(t.naive_utc()))
            .ok_or_else(|| fail(format!("timestamp {raw} is out of range")))
    };
    Ok(match value {
        Value::Null => SqlValue::Null,
        Value::Union(_, inner) => return to_sql(*inner, field),
        Value::Boolean(b) => SqlValue::Bool(b),
        Value::Int(i) | Value::TimeMillis(i) => SqlValue::Int(i64::from(i)),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampNanos(i) => SqlValue::Int(i),
        Value::Float(f) => SqlValue::Double(f64::from(f)),
        Value::Double(f) => SqlValue::Double(f),
        Value::String(s) | Value::Enum(_, s) => SqlValue::Text(s),
        Value::Uuid(u) => SqlValue::Text(u.to_string()),
        Value::Bytes(b) | Value::Fixed(_, b) => SqlValue::Bytes(b),
        Value::Date(days) => SqlValue::Date(
            NaiveDate::from_epoch_days(days)
                .ok_or_else(|| fail(format!("date {days} is out of range")))?,
        ),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            datetime(ms.checked_mul(1000), ms)?
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => datetime(Some(us), us)?,
        value @ (Value::Array(_) | Value::Map(_) | Value::Record(_)) => {
            let json = serde_json::Value::try_from(value)
                .map_err(|e| fail(format!("cannot be written as JSON: {e}")))?;
            SqlValue::Text(json.to_string())
        }
        other => return Err(fail(format!("Avro value {other:?} has no column mapping"))),
    })
}

/// A DDL literal for an Avro default of a column of type `ty`: numbers as digits, strings as
/// hex (`_utf8mb4 X'…'`, so no quoting or escaping is ever needed). `None` when the default has
/// no literal (e.g. arrays): the column then defaults to NULL.
pub fn default_literal(default: &serde_json::Value, ty: SqlType) -> Option<String> {
    use serde_json::Value as J;
    match (default, ty.family()) {
        (J::Null, _) => Some("NULL".into()),
        (J::Bool(b), Family::Integer) => Some(if *b { "1" } else { "0" }.into()),
        (J::Number(n), Family::Integer) => n.as_i64().map(|i| i.to_string()),
        (J::Number(n), Family::Real) => n.as_f64().filter(|f| f.is_finite()).map(|f| f.to_string()),
        (J::String(s), Family::Text) => Some(if s.is_empty() {
            "''".into()
        } else {
            let hex: String = s.bytes().map(|b| format!("{b:02X}")).collect();
            format!("_utf8mb4 X'{hex}'")
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Vec<RecordField> {
        match Schema::parse_str(json).unwrap() {
            Schema::Record(r) => r.fields,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn the_listing_schema_maps_as_the_issue_says() {
        let schema = marketflow_core::schema::LISTING.parse().unwrap();
        let Schema::Record(listing) = schema else {
            panic!("not a record")
        };
        let by_name = |n: &str| {
            let field = listing.fields.iter().find(|f| f.name == n).unwrap();
            map_field(field, false, 255).unwrap()
        };
        let col = |ty, nullable| Mapped { ty, nullable };
        assert_eq!(by_name("product_id"), col(SqlType::BigInt, false));
        assert_eq!(by_name("title"), col(SqlType::Text, false));
        assert_eq!(by_name("price"), col(SqlType::BigInt, true));
        assert_eq!(by_name("category_level1"), col(SqlType::Text, true));
        assert_eq!(by_name("image_urls"), col(SqlType::Text, false));
        assert_eq!(by_name("posted_at"), col(SqlType::DateTime(3), true));
        assert_eq!(by_name("scraped_at"), col(SqlType::DateTime(3), false));
    }

    #[test]
    fn key_and_declared_short_strings_are_varchar() {
        let fields = record(
            r#"{"type":"record","name":"R","fields":[
                {"name":"code","type":"string","max_length":32},
                {"name":"name","type":"string"},
                {"name":"flag","type":"boolean"},
                {"name":"n","type":"int"},
                {"name":"d","type":{"type":"int","logicalType":"date"}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A","LONGER"]}},
                {"name":"b","type":"bytes"}
            ]}"#,
        );
        let ty = |i: usize, key: bool| map_field(&fields[i], key, 191).unwrap().ty;
        assert_eq!(ty(0, false), SqlType::Varchar(32));
        assert_eq!(ty(1, false), SqlType::Text);
        assert_eq!(ty(1, true), SqlType::Varchar(191));
        assert_eq!(ty(2, false), SqlType::Bool);
        assert_eq!(ty(3, false), SqlType::Int);
        assert_eq!(ty(4, false), SqlType::Date);
        assert_eq!(ty(5, false), SqlType::Varchar(6));
        assert_eq!(ty(6, false), SqlType::Blob);
        assert_eq!(ty(6, true), SqlType::Varbinary(191));
        assert_eq!(SqlType::Bool.ddl(), "TINYINT(1)");
        assert_eq!(SqlType::DateTime(3).ddl(), "DATETIME(3)");
    }

    #[test]
    fn unions_of_several_types_are_refused_with_the_field_named() {
        let fields = record(
            r#"{"type":"record","name":"R","fields":[
                {"name":"either","type":["null","long","string"]}
            ]}"#,
        );
        let err = map_field(&fields[0], false, 255).unwrap_err();
        assert!(err.to_string().contains("field either"), "{err}");
        assert!(err.to_string().contains("fields_exclude"), "{err}");
    }

    #[test]
    fn values_bind_as_their_column_types() {
        assert_eq!(to_sql(Value::Long(7), "f").unwrap(), SqlValue::Int(7));
        assert_eq!(
            to_sql(Value::Union(0, Box::new(Value::Null)), "f").unwrap(),
            SqlValue::Null
        );
        assert_eq!(
            to_sql(Value::Union(1, Box::new(Value::String("가".into()))), "f").unwrap(),
            SqlValue::Text("가".into())
        );
        let SqlValue::DateTime(t) = to_sql(Value::TimestampMillis(1_700_000_000_123), "f").unwrap()
        else {
            panic!("not a datetime")
        };
        assert_eq!(t.and_utc().timestamp_millis(), 1_700_000_000_123);
        let urls = Value::Array(vec![
            Value::String("a\"b".into()),
            Value::String("🍎".into()),
        ]);
        assert_eq!(
            to_sql(urls, "image_urls").unwrap(),
            SqlValue::Text(r#"["a\"b","🍎"]"#.into())
        );
    }

    #[test]
    fn default_literals_need_no_escaping() {
        let text = default_literal(&serde_json::json!("'; DROP"), SqlType::Text).unwrap();
        assert_eq!(text, "_utf8mb4 X'273B2044524F50'");
        assert_eq!(
            default_literal(&serde_json::json!(5), SqlType::BigInt).as_deref(),
            Some("5")
        );
        assert_eq!(
            default_literal(&serde_json::json!(true), SqlType::Bool).as_deref(),
            Some("1")
        );
        assert_eq!(default_literal(&serde_json::json!([]), SqlType::Text), None);
        assert_eq!(family_of("BIGINT"), Family::Integer);
        assert_eq!(family_of("longtext"), SqlType::Text.family());
    }
}
