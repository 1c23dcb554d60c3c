//! The `sink` program: Writes listings from Kafka into MySQL, like Kafka Connect's JDBC sink.
//!
//! Its logic arrives with issue #4; until then `run` says so.

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
