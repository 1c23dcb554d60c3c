//! The evolution diff: the columns to add so that an existing table fits the columns a schema
//! calls for (`auto_evolve`), or every reason it cannot; never a drop or a retype.

use std::collections::HashMap;

use super::columns::Wanted;
use super::error::TableError;
use crate::limits::{self, Usage};
use crate::settings::Settings;
use crate::sql::ColumnDef;
use crate::typemap::{self, Family};

/// A column as the database has it.
#[derive(Debug, Clone)]
pub(super) struct Existing {
    pub(super) name: String,
    pub(super) data_type: String,
    pub(super) nullable: bool,
    pub(super) has_default: bool,
    /// `CHARACTER_OCTET_LENGTH`: most bytes of a string column.
    pub(super) octet_length: Option<u64>,
}

/// The columns to add so that the table fits `wanted`, or every reason it cannot.
pub(super) fn evolution(
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
            None if !settings.sink.auto_evolve => problems.push(format!(
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
    use super::super::columns::wanted_columns;
    use super::super::testing::{by_value, existing, schema};
    use super::*;

    #[test]
    fn a_new_field_with_a_default_adds_a_column() {
        let s = by_value(|_| {});
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
        let s = by_value(|_| {});
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
}
