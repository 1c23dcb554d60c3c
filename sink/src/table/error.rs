//! Why a record's schemas cannot become a table's rows, in classes a dead letter names.

use crate::db::DbError;

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
