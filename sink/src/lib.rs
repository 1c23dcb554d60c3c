//! The `sink` program: writes Avro records from Kafka into MySQL, like Kafka Connect's JDBC sink.

pub mod batch;
pub mod db;
pub mod settings;
pub mod sql;
pub mod table;
pub mod typemap;

use marketflow_core::Config;
use tokio_util::sync::CancellationToken;

/// What stopped the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is a placeholder so far.
    #[error("sink is not built yet (issue #4)")]
    NotBuilt,
}

/// Runs the program until it is done or `shutdown` is cancelled.
///
/// # Errors
/// [`Error::NotBuilt`], until issue #4 lands.
pub async fn run(_config: Config, _shutdown: CancellationToken) -> Result<(), Error> {
    Err(Error::NotBuilt)
}
