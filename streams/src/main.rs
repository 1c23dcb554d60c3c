//! `streams`: Drops listings over the price limit and keeps running sums, back to Kafka as Avro.

use std::process::ExitCode;

use clap::Parser;
use marketflow_core::program::{self, ConfigFile};

/// Drops listings over the price limit and keeps running sums, back to Kafka as Avro.
///
/// Configuration: built-in defaults (the local cluster), then the TOML file given with --config,
/// then environment variables `MARKETFLOW__<SECTION>__<KEY>`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: ConfigFile,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    program::run(
        "streams",
        args.config.path.as_deref(),
        marketflow_streams::run,
    )
    .await
}
