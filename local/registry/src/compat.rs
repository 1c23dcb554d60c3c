//! Compatibility levels, and the checks that hold a new schema to one against earlier versions.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// A compatibility level, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema can read data written with the latest one.
    #[default]
    Backward,
    /// The new schema can read data written with every live version.
    BackwardTransitive,
    /// The latest schema can read data written with the new one.
    Forward,
    /// Every live version can read data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every live version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// The level's name, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the level checks against every live version rather than the latest only.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no compatibility level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compatibility level '{0}'")]
pub struct UnknownLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;

    /// Parses a level name in any case, as Confluent does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            Self::None,
            Self::Backward,
            Self::BackwardTransitive,
            Self::Forward,
            Self::ForwardTransitive,
            Self::Full,
            Self::FullTransitive,
        ];
        all.into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// An earlier live version a new schema is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Earlier<'a> {
    /// Its version number.
    pub version: u32,
    /// Its text, quoted in the messages.
    pub text: &'a str,
    /// Its parsed, self-contained schema.
    pub schema: &'a Schema,
}

/// Checks `new` against `earlier` (oldest first) under `level`, the way Confluent does:
/// a non-transitive level looks at the last version only, a transitive one at all of them,
/// latest first, stopping at the first that fails.
///
/// Returns Confluent-style messages about the failing version; empty when compatible.
pub fn check(level: CompatibilityLevel, new: &Schema, earlier: &[Earlier<'_>]) -> Vec<String> {
    if level == CompatibilityLevel::None {
        return Vec::new();
    }
    let against: Vec<&Earlier<'_>> = if level.is_transitive() {
        earlier.iter().rev().collect()
    } else {
        earlier.last().into_iter().collect()
    };
    for old in against {
        let mut messages = Vec::new();
        if level.backward() {
            messages.extend(problem(old.schema, new, "new", "old"));
        }
        if level.forward() {
            messages.extend(problem(new, old.schema, "old", "new"));
        }
        if !messages.is_empty() {
            messages.push(format!("{{oldSchemaVersion: {}}}", old.version));
            messages.push(format!("{{oldSchema: '{}'}}", old.text));
            messages.push(format!(
                "{{validateFields: 'false', compatibility: '{}'}}",
                level.as_str()
            ));
            return messages;
        }
    }
    Vec::new()
}

/// Why `reader` cannot read everything `writer` writes, if it cannot; the labels say which
/// of the two is the new schema and which the old.
fn problem(writer: &Schema, reader: &Schema, reader_is: &str, writer_is: &str) -> Option<String> {
    let (error_type, description, info) = match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => return None,
        Ok(Compatibility::Partial) => (
            "PARTIAL_MATCH",
            format!(
                "The {reader_is} schema cannot read all data of the {writer_is} schema: a union \
                 branch or an enum symbol of the {writer_is} schema is missing from the \
                 {reader_is} schema"
            ),
            String::new(),
        ),
        Err(e) => describe(&e, reader_is, writer_is, ""),
    };
    Some(format!(
        "{{errorType:'{error_type}', description:'{description}', additionalInfo:'{info}'}}"
    ))
}

/// The Confluent error type, a description and the additional info for an Avro
/// incompatibility; `path` names the enclosing fields, e.g. `/user/name`.
fn describe(
    error: &CompatibilityError,
    reader_is: &str,
    writer_is: &str,
    path: &str,
) -> (&'static str, String, String) {
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" at path '{path}'")
    };
    match error {
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            describe(inner, reader_is, writer_is, &format!("{path}/{field}"))
        }
        CompatibilityError::MissingDefaultValue(field) => (
            "READER_FIELD_MISSING_DEFAULT_VALUE",
            format!(
                "The field '{field}'{at} in the {reader_is} schema has no default value and is \
                 missing in the {writer_is} schema"
            ),
            field.clone(),
        ),
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => {
            let sides = (reader_is, writer_is);
            wrong_type(writer_schema_type, reader_schema_type, &at, sides)
        }
        CompatibilityError::TypeExpected {
            schema_type,
            expected_type,
        } => (
            "TYPE_MISMATCH",
            format!(
                "The type{at} in the {reader_is} schema does not match the {writer_is} schema: \
                 the {schema_type} should have been {expected_type:?}"
            ),
            String::new(),
        ),
        CompatibilityError::MissingSymbols => (
            "MISSING_ENUM_SYMBOLS",
            format!("The {reader_is} schema is missing enum symbols{at} of the {writer_is} schema"),
            String::new(),
        ),
        CompatibilityError::MissingUnionElements
        | CompatibilityError::SchemaMismatchAllUnionElements => (
            "MISSING_UNION_BRANCH",
            format!(
                "The {reader_is} schema is missing a type inside a union field{at} of the \
                 {writer_is} schema"
            ),
            String::new(),
        ),
        CompatibilityError::FixedMismatch => (
            "FIXED_SIZE_MISMATCH",
            format!(
                "The size of FIXED type{at} in the {reader_is} schema does not match the size in \
                 the {writer_is} schema"
            ),
            String::new(),
        ),
        CompatibilityError::NameMismatch {
            writer_name,
            reader_name,
        } => (
            "NAME_MISMATCH",
            format!(
                "The name of the schema{at} has changed from '{writer_name}' in the {writer_is} \
                 schema to '{reader_name}' in the {reader_is} schema"
            ),
            format!("expected: {writer_name}"),
        ),
        other => ("TYPE_MISMATCH", format!("{other}{at}"), String::new()),
    }
}

/// The `TYPE_MISMATCH` of a reader type that is not the writer's (both as debug dumps); `at`
/// names where, `sides` which schema is the reader and which the writer.
fn wrong_type(
    writer: &str,
    reader: &str,
    at: &str,
    (reader_is, writer_is): (&str, &str),
) -> (&'static str, String, String) {
    let (w, r) = (kind(writer), kind(reader));
    (
        "TYPE_MISMATCH",
        format!(
            "The type{at} in the {reader_is} schema is {r}, which does not match the type {w} \
             in the {writer_is} schema"
        ),
        format!("reader type: {r} not compatible with writer type: {w}"),
    )
}

/// The kind of a schema from its debug dump, e.g. `Record` from `Record(RecordSchema { ..`.
fn kind(debug: &str) -> &str {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .filter(|k| !k.is_empty())
        .unwrap_or(debug)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    fn earlier(schemas: &[Schema]) -> Vec<Earlier<'_>> {
        schemas
            .iter()
            .zip(1..)
            .map(|(schema, version)| Earlier {
                version,
                text: "{}",
                schema,
            })
            .collect()
    }

    #[test]
    fn levels_parse_in_any_case_and_print_upper_case() {
        assert_eq!(
            "full_transitive".parse::<CompatibilityLevel>().unwrap(),
            CompatibilityLevel::FullTransitive
        );
        assert_eq!(
            "NONE".parse::<CompatibilityLevel>().unwrap(),
            CompatibilityLevel::None
        );
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
        assert_eq!(CompatibilityLevel::default().to_string(), "BACKWARD");
        assert_eq!(
            serde_json::to_string(&CompatibilityLevel::ForwardTransitive).unwrap(),
            r#""FORWARD_TRANSITIVE""#
        );
    }

    #[test]
    fn backward_refuses_a_new_field_without_default_and_takes_one_with() {
        let v1 = [record(r#"{"name":"a","type":"int"}"#)];
        let bad = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
        let good = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);
        let messages = check(CompatibilityLevel::Backward, &bad, &earlier(&v1));
        assert!(
            messages[0].contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
            "{messages:?}"
        );
        assert!(messages.contains(&"{oldSchemaVersion: 1}".to_owned()));
        assert!(check(CompatibilityLevel::Backward, &good, &earlier(&v1)).is_empty());
        assert!(check(CompatibilityLevel::None, &bad, &earlier(&v1)).is_empty());
    }

    #[test]
    fn forward_refuses_removing_a_field_the_old_schema_needs() {
        let v1 = [record(
            r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#,
        )];
        let removed = record(r#"{"name":"a","type":"int"}"#);
        assert!(check(CompatibilityLevel::Backward, &removed, &earlier(&v1)).is_empty());
        assert!(!check(CompatibilityLevel::Forward, &removed, &earlier(&v1)).is_empty());
        assert!(!check(CompatibilityLevel::Full, &removed, &earlier(&v1)).is_empty());
        let added = record(
            r#"{"name":"a","type":"int"},{"name":"b","type":"int"},{"name":"c","type":"int"}"#,
        );
        assert!(check(CompatibilityLevel::Forward, &added, &earlier(&v1)).is_empty());
        assert!(!check(CompatibilityLevel::Full, &added, &earlier(&v1)).is_empty());
    }

    #[test]
    fn transitive_levels_look_past_the_latest_version() {
        let history = [record(r#"{"name":"a","type":"string"}"#), record("")];
        let new = record(r#"{"name":"a","type":"int","default":0}"#);
        assert!(check(CompatibilityLevel::Backward, &new, &earlier(&history)).is_empty());
        let messages = check(
            CompatibilityLevel::BackwardTransitive,
            &new,
            &earlier(&history),
        );
        assert!(
            messages.iter().any(|m| m.contains("TYPE_MISMATCH")),
            "{messages:?}"
        );
        assert!(messages.contains(&"{oldSchemaVersion: 1}".to_owned()));
    }

    #[test]
    fn partial_matches_are_incompatible() {
        let enum_of = |symbols: &str| {
            Schema::parse_str(&format!(
                r#"{{"type":"enum","name":"E","symbols":[{symbols}]}}"#
            ))
            .unwrap()
        };
        let v1 = [enum_of(r#""A","B""#)];
        assert!(
            !check(
                CompatibilityLevel::Backward,
                &enum_of(r#""A""#),
                &earlier(&v1)
            )
            .is_empty()
        );
        assert!(
            check(
                CompatibilityLevel::Backward,
                &enum_of(r#""A","B","C""#),
                &earlier(&v1)
            )
            .is_empty()
        );
        let union = [Schema::parse_str(r#"["null","int","string"]"#).unwrap()];
        let narrower = Schema::parse_str(r#"["null","int"]"#).unwrap();
        assert!(!check(CompatibilityLevel::Backward, &narrower, &earlier(&union)).is_empty());
    }

    #[test]
    fn a_type_change_is_described_briefly() {
        let v1 = [record(r#"{"name":"a","type":"string"}"#)];
        let new = record(r#"{"name":"a","type":"int"}"#);
        let messages = check(CompatibilityLevel::Backward, &new, &earlier(&v1));
        assert!(messages[0].contains("at path '/a'"), "{messages:?}");
        assert!(messages[0].contains("reader type: Int not compatible with writer type: String"));
        assert!(!messages[0].contains('\n'));
    }
}
