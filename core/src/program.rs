//! What the `main` of every long-running program (`scraper`, `sink`, `streams`) shares: the
//! `--config` flag, loading the configuration, telemetry, the SIGINT/SIGTERM handlers, and a
//! failure printed as one line (`sink: <error>: <cause>…`) with exit code 1.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{shutdown, telemetry};

/// The `--config` flag, flattened into each program's own arguments.
#[derive(Debug, clap::Args)]
pub struct ConfigFile {
    /// A TOML configuration file.
    #[arg(long = "config", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

/// Runs `job` as program `name`: loads the configuration (defaults, then the file at `path`,
/// then `MARKETFLOW__<SECTION>__<KEY>` variables), starts telemetry, installs the signal handlers
/// whose token `job` stops on, and reports its outcome as the process's exit code (what a
/// successful `job` returns is its own to report: the scraper prints its summary itself).
pub async fn run<F, Fut, T, E>(name: &str, path: Option<&Path>, job: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    anyhow::Error: From<E>,
{
    match start(path, job).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start<F, Fut, T, E>(path: Option<&Path>, job: F) -> anyhow::Result<()>
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    anyhow::Error: From<E>,
{
    let config = Config::load(path)?;
    telemetry::init(&config.telemetry).map_err(|e| anyhow::anyhow!(e))?;
    let shutdown = shutdown::on_signals().context("installing signal handlers")?;
    job(config, shutdown).await?;
    Ok(())
}
