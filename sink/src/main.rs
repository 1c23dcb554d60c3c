//! `sink`: Writes listings from Kafka into MySQL, like Kafka Connect's JDBC sink.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use marketflow_core::{Config, shutdown, telemetry};

/// See the workspace's Cargo.toml: the sink allocates and frees every record's fields.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Writes listings from Kafka into MySQL, like Kafka Connect's JDBC sink.
///
/// Configuration: built-in defaults (the local cluster), then the TOML file given with --config,
/// then environment variables `MARKETFLOW__<SECTION>__<KEY>`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A TOML configuration file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match start(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sink: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    telemetry::init(&config.telemetry).map_err(|e| anyhow::anyhow!(e))?;
    let shutdown = shutdown::on_signals().context("installing signal handlers")?;
    marketflow_sink::run(config, shutdown).await?;
    Ok(())
}
