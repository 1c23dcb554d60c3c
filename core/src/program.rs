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

/// Where a program's configuration comes from, for its `--help`.
pub const CONFIGURATION_HELP: &str = "Configuration: built-in defaults (the local cluster), then \
    the TOML file given with --config, then environment variables \
    MARKETFLOW__<SECTION>__<KEY> (see the README).";

/// The `--config` flag: the whole command line of a program that takes no other (see
/// [`ConfigFile::parse_command_line`]), or flattened into a program's own arguments.
#[derive(Debug, clap::Args)]
pub struct ConfigFile {
    /// A TOML configuration file.
    #[arg(long = "config", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

impl ConfigFile {
    /// Parses the command line of program `name`, which does what `about` says and takes only
    /// `--config` (and `--help`, `--version`); exits with clap's message on a bad one.
    pub fn parse_command_line(
        name: &'static str,
        about: &'static str,
        version: &'static str,
    ) -> Self {
        use clap::{Args, FromArgMatches};
        // After `augment_args`, which would make this struct's doc comment the program's.
        let command = Self::augment_args(clap::Command::new(name))
            .about(about)
            .long_about(None)
            .version(version)
            .after_help(CONFIGURATION_HELP);
        let matches = command.get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
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
