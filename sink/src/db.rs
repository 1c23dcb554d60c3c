//! The database connection: one connection, opened lazily with a time limit, strict SQL mode,
//! dropped after any failure so that the next attempt starts clean; and the classification of
//! MySQL errors into transient (retry), data (this row can never be written) and fatal.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::ConnectOptions;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};

/// What went wrong talking to the database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// Unreachable, timed out, deadlocked, restarting: the same write may succeed later.
    #[error("database unavailable: {0}")]
    Transient(String),
    /// This row can never be written as it is (too long, out of range, constraint violated).
    #[error("row refused by the database (MySQL error {code}): {message}")]
    Data {
        /// The MySQL error number.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// Anything else: retrying will not help, and neither will skipping the row.
    #[error("database error: {0}")]
    Fatal(String),
}

impl DbError {
    /// A short, stable name of the error's class, for dead-letter headers.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Transient(_) => "database_unavailable",
            Self::Data { .. } => "row_refused",
            Self::Fatal(_) => "database_error",
        }
    }
}

/// MySQL's "Duplicate entry" error number: the row's key is already in the table.
pub const DUPLICATE_ENTRY: u16 = 1062;

/// MySQL error numbers that say a row's data is at fault, not the database.
const DATA_ERRORS: &[u16] = &[
    1048, // column cannot be null
    1062, // duplicate entry
    1264, // out of range
    1292, // incorrect datetime/number value
    1366, // incorrect string value
    1406, // data too long for column
    1451, // foreign key: row is referenced
    1452, // foreign key: parent missing
    1364, // field has no default
    3819, // check constraint violated (MySQL)
    4025, // check constraint violated (MariaDB)
];

/// MySQL error numbers worth retrying.
const TRANSIENT_ERRORS: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1060, // duplicate column: another sink instance evolved the table first
    1050, // table exists: another sink instance created it first
    2006, // server has gone away
    2013, // lost connection
    1927, // connection was killed (MariaDB)
];

/// MySQL error numbers with which the database refuses a table definition: the schema that asked
/// for it (or the table as someone made it) is at fault, not the database, and retrying the same
/// statement gets the same answer.
const DEFINITION_ERRORS: &[u16] = &[
    1005, // cannot create table (MariaDB: too many columns, a bad foreign key)
    1059, // identifier too long
    1063, // incorrect column specifier
    1064, // syntax error (the statement's names and defaults come from the schema)
    1067, // invalid default value
    1068, // multiple primary keys
    1070, // too many key parts
    1071, // key too long
    1074, // column length too big
    1101, // BLOB/TEXT/JSON column cannot have a (literal) default
    1103, // incorrect table name
    1113, // a table must have at least one column
    1117, // too many columns
    1118, // row size too large
    1166, // incorrect column name
    1170, // BLOB/TEXT column in a key without a length
    1171, // every part of a primary key must be NOT NULL
    1347, // the table is a view
];

/// The MySQL error number and message when `error` is the database refusing a table definition
/// (see [`DEFINITION_ERRORS`]); `None` for any other error, which [`classify`] sorts.
pub fn refused_definition(error: &sqlx::Error) -> Option<(u16, String)> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    let code = db
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(sqlx::mysql::MySqlDatabaseError::number)?;
    let message = db.message();
    // "Can't create table ... (errno: 28 ...)" is a full disk, the database's problem.
    let disk_full = code == 1005 && message.contains("errno: 28");
    (DEFINITION_ERRORS.contains(&code) && !disk_full).then(|| (code, message.to_owned()))
}

/// Sorts a sqlx error into [`DbError`].
pub fn classify(error: &sqlx::Error) -> DbError {
    match error {
        sqlx::Error::Database(db) => {
            let code = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(sqlx::mysql::MySqlDatabaseError::number);
            let message = db.message().to_owned();
            match code {
                Some(code) if DATA_ERRORS.contains(&code) => DbError::Data { code, message },
                Some(code) if TRANSIENT_ERRORS.contains(&code) => {
                    DbError::Transient(format!("MySQL error {code}: {message}"))
                }
                Some(code) => DbError::Fatal(format!("MySQL error {code}: {message}")),
                None => DbError::Fatal(message),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbError::Transient(error.to_string()),
        other => DbError::Fatal(other.to_string()),
    }
}

/// The sink's one database connection.
pub struct Database {
    options: MySqlConnectOptions,
    timeout: Duration,
    connection: Option<MySqlConnection>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the password: only where the database is.
        f.debug_struct("Database")
            .field("at", &self.describe())
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl Database {
    /// A database at `url` (not connected yet); each connection attempt and each transaction
    /// gets `timeout`.
    ///
    /// # Errors
    /// [`DbError::Fatal`] when the URL does not parse (the message never repeats the URL, which
    /// holds the password).
    pub fn new(url: &SecretString, timeout: Duration) -> Result<Self, DbError> {
        let options = MySqlConnectOptions::from_str(url.expose_secret())
            .map_err(|_| {
                DbError::Fatal(
                    "sink.database_url is not a MySQL URL (mysql://user:password@host:port/database)"
                        .into(),
                )
            })?
            .charset("utf8mb4")
            .log_statements(tracing::log::LevelFilter::Trace);
        Ok(Self {
            options,
            timeout,
            connection: None,
        })
    }

    /// Another, unconnected handle on the same database.
    pub fn sibling(&self) -> Self {
        Self {
            options: self.options.clone(),
            timeout: self.timeout,
            connection: None,
        }
    }

    /// `host:port/database`, for messages (never the user or password).
    pub fn describe(&self) -> String {
        format!(
            "{}:{}/{}",
            self.options.get_host(),
            self.options.get_port(),
            self.options.get_database().unwrap_or("")
        )
    }

    /// The time limit of one transaction.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The open connection, connecting first when there is none.
    ///
    /// # Errors
    /// [`DbError::Transient`] when the database does not answer in time.
    pub async fn connection(&mut self) -> Result<&mut MySqlConnection, DbError> {
        if self.connection.is_none() {
            let connect = async {
                let mut connection = self.options.connect().await?;
                sqlx::query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
                    .execute(&mut connection)
                    .await?;
                Ok::<_, sqlx::Error>(connection)
            };
            let connection = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| {
                    DbError::Transient(format!(
                        "no answer from {} within {:?}",
                        self.describe(),
                        self.timeout
                    ))
                })?
                .map_err(|e| match classify(&e) {
                    DbError::Fatal(m) => DbError::Fatal(format!(
                        "cannot connect to {}: {m}; check sink.database_url",
                        self.describe()
                    )),
                    other => other,
                })?;
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| DbError::Transient("connection lost".into()))
    }

    /// Forgets the connection after a failure (a timed-out one may be mid-statement).
    pub fn discard(&mut self) {
        self.connection = None;
    }

    /// Runs `work` on the connection within the time limit; on a transient failure or timeout the
    /// connection is discarded.
    ///
    /// # Errors
    /// The work's [`DbError`], or [`DbError::Transient`] on timeout.
    pub async fn with_timeout<T, F>(&mut self, work: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&mut MySqlConnection) -> Result<T, DbError>,
    {
        let timeout = self.timeout;
        let connection = self.connection().await?;
        let attempt = tokio::time::timeout(timeout, work(connection)).await;
        self.settle(attempt)
    }

    /// The result of work on the connection under [`Database::timeout`]: a timeout becomes
    /// [`DbError::Transient`], and after a transient or fatal failure the connection is
    /// discarded.
    ///
    /// # Errors
    /// The work's [`DbError`], or [`DbError::Transient`] on timeout.
    pub fn settle<T>(
        &mut self,
        attempt: Result<Result<T, DbError>, tokio::time::error::Elapsed>,
    ) -> Result<T, DbError> {
        let result = attempt.unwrap_or_else(|_| {
            Err(DbError::Transient(format!(
                "no answer from {} within {:?}",
                self.describe(),
                self.timeout
            )))
        });
        if matches!(result, Err(DbError::Transient(_) | DbError::Fatal(_))) {
            self.discard();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let err = Database::new(
            &SecretString::from("mysql://u:hunter2@h:notaport/d"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_description_names_no_credentials() {
        let db = Database::new(
            &SecretString::from("mysql://marketflow:hunter2@127.0.0.1:13306/shop"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(db.describe(), "127.0.0.1:13306/shop");
        assert!(!format!("{db:?}").contains("hunter2"));
    }

    #[test]
    fn io_errors_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::other("refused"));
        assert!(matches!(classify(&io), DbError::Transient(_)));
        assert!(matches!(
            classify(&sqlx::Error::RowNotFound),
            DbError::Fatal(_)
        ));
    }
}
