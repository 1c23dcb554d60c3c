//! The store's wire types: what clients send (a schema with its references, a version selector)
//! and what the registry answers (a subject's version, a schema by id, a registration), in
//! Confluent's JSON shapes and media type.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::schema::Reference;

/// The media type of every answer, as Confluent's.
pub const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A schema as submitted for registration, lookup or a compatibility test: the body of
/// Confluent's `POST /subjects/{subject}/versions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    /// The schema's JSON text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub schema: String,
    /// `AVRO` or absent; anything else is refused.
    #[serde(default)]
    pub schema_type: Option<String>,
    /// Named types this schema uses from other subjects.
    #[serde(default, deserialize_with = "null_as_default")]
    pub references: Vec<Reference>,
}

/// Reads `null` as the default value, as Confluent's Jackson-based server does.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl SchemaRequest {
    /// A request for a schema without references.
    pub fn avro(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }
}

/// Which version of a subject a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The latest version (`latest` or `-1`).
    Latest,
    /// A version number.
    Number(u32),
}

impl FromStr for VersionSelector {
    type Err = RegistryError;

    /// Parses `latest`, `-1` or a number from 1 to 2^31-1; anything else is a 42202 error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" || s == "-1" {
            return Ok(Self::Latest);
        }
        match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(Self::Number(n.unsigned_abs())),
            _ => Err(RegistryError::InvalidVersion(s.to_owned())),
        }
    }
}

/// One version of a subject, as `GET /subjects/{subject}/versions/{version}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number.
    pub version: u32,
    /// The schema's global id.
    pub id: u32,
    /// The schema's text, as first registered.
    pub schema: String,
    /// The schema's references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A schema found by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaById {
    /// The schema's text, as first registered.
    pub schema: String,
    /// The schema's references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The schema's global id.
    pub id: u32,
    /// The version of the subject that holds it.
    pub version: u32,
    /// Whether a new version was added (false: the subject already had this schema).
    pub created: bool,
}
