//! `sink`: Writes listings from Kafka into MySQL, like Kafka Connect's JDBC sink.

use std::process::ExitCode;

use marketflow_core::program::{self, ConfigFile};

/// See the workspace's Cargo.toml: the sink allocates and frees every record's fields.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let about = "Writes listings from Kafka into MySQL, like Kafka Connect's JDBC sink.";
    let config = ConfigFile::parse_command_line("sink", about, env!("CARGO_PKG_VERSION"));
    program::run("sink", config.path.as_deref(), marketflow_sink::run).await
}
