//! The registry's errors, each carrying the HTTP status and Confluent error code it answers with.

use std::path::PathBuf;

/// Why a registry operation failed, worded as Confluent Schema Registry words it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The subject has no (visible) versions: 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// The subject exists but not this version: 40402.
    #[error("Version {0} not found.")]
    VersionNotFound(u32),
    /// No schema has this id: 40403.
    #[error("Schema {0} not found")]
    SchemaIdNotFound(u32),
    /// The schema looked up is not registered under the subject: 40403.
    #[error("Schema not found")]
    SchemaNotFound,
    /// A soft delete of a subject that is already soft-deleted: 40404.
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject that was not soft-deleted first: 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// A soft delete of a version that is already soft-deleted: 40406.
    #[error(
        "Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a version that was not soft-deleted first: 40407.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no compatibility level of its own: 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    /// The schema breaks the subject's compatibility level: HTTP 409, error code 409.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        details.join(", ")
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// Confluent-style detail entries, e.g. `{oldSchemaVersion: 1}`.
        details: Vec<String>,
    },
    /// The schema is not a valid Avro schema, or not Avro at all: 42201.
    #[error("{0}")]
    InvalidSchema(String),
    /// The version in the path is neither a positive number, `latest` nor `-1`: 42202.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// The compatibility level is not one of the seven known: 42203.
    #[error(
        "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
    )]
    InvalidCompatibilityLevel,
    /// The version is still referenced by another schema and cannot be deleted: 42206.
    #[error(
        "One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={subject},version={version}}}."
    )]
    ReferenceExists {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The state could not be saved, or a stored schema no longer parses: 50001.
    #[error("Error in the backend data store: {0}")]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The Confluent `error_code` of the error body.
    pub fn error_code(&self) -> u32 {
        match self {
            Self::SubjectNotFound(_) => 40401,
            Self::VersionNotFound(_) => 40402,
            Self::SchemaIdNotFound(_) | Self::SchemaNotFound => 40403,
            Self::SubjectSoftDeleted(_) => 40404,
            Self::SubjectNotSoftDeleted(_) => 40405,
            Self::VersionSoftDeleted { .. } => 40406,
            Self::VersionNotSoftDeleted { .. } => 40407,
            Self::SubjectCompatibilityNotConfigured(_) => 40408,
            Self::Incompatible { .. } => 409,
            Self::InvalidSchema(_) => 42201,
            Self::InvalidVersion(_) => 42202,
            Self::InvalidCompatibilityLevel => 42203,
            Self::ReferenceExists { .. } => 42206,
            Self::Store(_) => 50001,
        }
    }

    /// The HTTP status the error is answered with.
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            409 => 409,
            code => (code / 100) as u16,
        }
    }
}

/// Why the registry's state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "writing".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The state file exists but is not a registry state.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The state could not be serialised.
    #[error("serialising the state: {0}")]
    Serialise(serde_json::Error),
    /// A schema saved earlier no longer parses.
    #[error("stored schema {id} no longer parses: {reason}")]
    StoredSchema {
        /// The schema id.
        id: u32,
        /// The parser's complaint.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_the_error_code_prefix_except_for_incompatible() {
        assert_eq!(
            RegistryError::SubjectNotFound("s".into()).http_status(),
            404
        );
        assert_eq!(RegistryError::InvalidVersion("x".into()).http_status(), 422);
        let incompatible = RegistryError::Incompatible {
            subject: "s".into(),
            details: vec!["{oldSchemaVersion: 1}".into()],
        };
        assert_eq!(incompatible.http_status(), 409);
        assert_eq!(incompatible.error_code(), 409);
        assert_eq!(
            incompatible.to_string(),
            "Schema being registered is incompatible with an earlier schema for subject \"s\", \
             details: [{oldSchemaVersion: 1}]"
        );
        let store = RegistryError::Store(StoreError::StoredSchema {
            id: 1,
            reason: "x".into(),
        });
        assert_eq!((store.http_status(), store.error_code()), (500, 50001));
    }
}
