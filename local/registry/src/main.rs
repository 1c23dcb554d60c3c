//! The `registry` binary: a Confluent-compatible Avro schema registry on one JSON file.

use clap::Parser;
use marketflow_registry::cli::{self, Args};
use tracing::error;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_logging(args.log_format);
    if let Err(e) = cli::run(args).await {
        error!(error = %e, "Registry failed.");
        return Err(e.into());
    }
    Ok(())
}
