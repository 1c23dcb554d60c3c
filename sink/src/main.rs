//! `sink`: Writes listings from Kafka into MySQL, like Kafka Connect's JDBC sink.

use std::process::ExitCode;

use clap::Parser;
use marketflow_core::program::{self, ConfigFile};

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
    #[command(flatten)]
    config: ConfigFile,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    program::run("sink", args.config.path.as_deref(), marketflow_sink::run).await
}
