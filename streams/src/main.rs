//! `streams`: Drops listings over the price limit and keeps running sums, back to Kafka as Avro.

use std::process::ExitCode;

use marketflow_core::program::{self, ConfigFile};

/// See the workspace's Cargo.toml: every record's fields are allocated and freed.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let about =
        "Drops listings over the price limit and keeps running sums, back to Kafka as Avro.";
    let config = ConfigFile::parse_command_line("streams", about, env!("CARGO_PKG_VERSION"));
    program::run("streams", config.path.as_deref(), marketflow_streams::run).await
}
