//! The `streams` program: drops listings over the price limit and keeps running sums, back to
//! Kafka as Avro.

pub mod aggregate;
pub mod filter;

use marketflow_core::Config;
use tokio_util::sync::CancellationToken;

/// What stopped the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is a placeholder so far.
    #[error("streams is not built yet (issue #5)")]
    NotBuilt,
}

/// Runs the program until it is done or `shutdown` is cancelled.
///
/// # Errors
/// [`Error::NotBuilt`], until issue #5 lands.
pub async fn run(_config: Config, _shutdown: CancellationToken) -> Result<(), Error> {
    Err(Error::NotBuilt)
}
