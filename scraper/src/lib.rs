//! The `scraper` program: Crawls marketplace listings (the local market or web.joongna.com) into Kafka as Avro.
//!
//! Its logic arrives with issue #3; until then `run` says so.

use marketflow_core::Config;
use tokio_util::sync::CancellationToken;

/// What stopped the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is a placeholder so far.
    #[error("scraper is not built yet (issue #3)")]
    NotBuilt,
}

/// Runs the program until it is done or `shutdown` is cancelled.
///
/// # Errors
/// [`Error::NotBuilt`], until issue #3 lands.
pub async fn run(_config: Config, _shutdown: CancellationToken) -> Result<(), Error> {
    Err(Error::NotBuilt)
}
