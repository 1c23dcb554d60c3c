//! Avro schema parsing: validating a submitted schema, resolving its references, and the
//! fingerprint by which the same schema is recognised however it is spelt.

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// A reference from a schema to a named type registered under another subject, as in
/// Confluent's `references` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The name the referencing schema uses for the type (for Avro, its full name).
    pub name: String,
    /// The subject the referenced schema is registered under.
    pub subject: String,
    /// The version of that subject.
    pub version: u32,
}

/// A referenced schema, already looked up: its global id and its text.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The referenced schema's global id.
    pub id: u32,
    /// The referenced schema's text.
    pub text: String,
}

/// A parsed schema.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The schema with every referenced type inlined, ready for compatibility checks.
    pub schema: Schema,
    /// Equal for two submissions exactly when Confluent would take them for the same schema:
    /// blind to whitespace and key order, not to defaults, docs, aliases or references.
    pub fingerprint: String,
}

/// Parses `text` as an Avro schema. `references` are the schema's direct references, and
/// `resolved` the schemas they lead to (directly and transitively), already looked up.
///
/// The error is the message of a Confluent 42201 error.
pub fn parse(
    text: &str,
    references: &[Reference],
    resolved: &[Resolved],
) -> Result<Parsed, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("Invalid schema: {e}");
    let (schema, named) = if resolved.is_empty() {
        (
            Schema::parse_str(text).map_err(|e| invalid(&e))?,
            Vec::new(),
        )
    } else {
        Schema::parse_str_with_list(text, resolved.iter().map(|r| r.text.as_str()))
            .map_err(|e| invalid(&e))?
    };
    // The schema as parsed, external names left as names: the normal form Avro gives it.
    let normal = serde_json::to_string(&schema).map_err(|e| invalid(&e))?;
    let fingerprint = if references.is_empty() {
        normal
    } else {
        let ids: Vec<u32> = resolved.iter().map(|r| r.id).collect();
        let refs = serde_json::to_string(&(references, ids)).map_err(|e| invalid(&e))?;
        format!("{normal}\n{refs}")
    };
    let mut schema = schema;
    if !named.is_empty() {
        schema.denormalize(&named).map_err(|e| invalid(&e))?;
    }
    Ok(Parsed {
        schema,
        fingerprint,
    })
}

/// Checks a submitted `schemaType`: absent or `AVRO` (in any case) is fine, anything else
/// gets the message of a Confluent 42201 error.
pub fn check_type(schema_type: Option<&str>) -> Result<(), String> {
    match schema_type {
        None => Ok(()),
        Some(t) if t.eq_ignore_ascii_case("AVRO") => Ok(()),
        Some(t) => Err(format!(
            "Invalid schema type {t}: this registry supports only AVRO schemas"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const USER: &str =
        r#"{"type":"record","name":"User","namespace":"t","fields":[{"name":"a","type":"int"}]}"#;

    #[test]
    fn whitespace_and_key_order_do_not_change_the_fingerprint() {
        let spaced = r#"{ "name" : "User", "fields": [ {"type": "int", "name": "a"} ],
            "namespace": "t", "type": "record" }"#;
        assert_eq!(
            parse(USER, &[], &[]).unwrap().fingerprint,
            parse(spaced, &[], &[]).unwrap().fingerprint
        );
    }

    #[test]
    fn a_default_or_a_doc_changes_the_fingerprint() {
        let base = parse(USER, &[], &[]).unwrap().fingerprint;
        let with_default = r#"{"type":"record","name":"User","namespace":"t",
            "fields":[{"name":"a","type":"int","default":0}]}"#;
        let with_doc = r#"{"type":"record","name":"User","namespace":"t","doc":"x",
            "fields":[{"name":"a","type":"int"}]}"#;
        assert_ne!(base, parse(with_default, &[], &[]).unwrap().fingerprint);
        assert_ne!(base, parse(with_doc, &[], &[]).unwrap().fingerprint);
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(parse("not json", &[], &[]).is_err());
        assert!(parse(r#"{"type":"record","name":"X"}"#, &[], &[]).is_err());
        assert!(parse(r#"{"type":"nosuchtype"}"#, &[], &[]).is_err());
        assert!(parse(r#""string""#, &[], &[]).is_ok());
    }

    #[test]
    fn references_are_resolved_and_inlined() {
        let outer = r#"{"type":"record","name":"Outer","namespace":"t",
            "fields":[{"name":"user","type":"t.User"}]}"#;
        assert!(parse(outer, &[], &[]).is_err());
        let reference = Reference {
            name: "t.User".into(),
            subject: "user".into(),
            version: 1,
        };
        let resolved = Resolved {
            id: 7,
            text: USER.into(),
        };
        let parsed = parse(outer, std::slice::from_ref(&reference), &[resolved]).unwrap();
        let inlined = serde_json::to_string(&parsed.schema).unwrap();
        assert!(inlined.contains(r#""name":"a""#), "{inlined}");
        assert!(parsed.fingerprint.contains(r#""subject":"user""#));
        let other = Resolved {
            id: 8,
            text: USER.into(),
        };
        let again = parse(outer, &[reference], &[other]).unwrap();
        assert_ne!(parsed.fingerprint, again.fingerprint);
    }

    #[test]
    fn only_avro_is_accepted() {
        assert!(check_type(None).is_ok());
        assert!(check_type(Some("AVRO")).is_ok());
        assert!(check_type(Some("avro")).is_ok());
        let message = check_type(Some("PROTOBUF")).unwrap_err();
        assert!(message.contains("only AVRO"), "{message}");
    }
}
