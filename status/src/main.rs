//! `marketflow`: the pipeline's operator tool (`marketflow status`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use marketflow_core::Config;
use secrecy::ExposeSecret;

/// The marketflow pipeline's operator tool.
///
/// Configuration: built-in defaults (the local cluster), then the TOML file given with --config,
/// then environment variables MARKETFLOW__<SECTION>__<KEY>.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A TOML configuration file.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole data map: topics, consumer lag, subjects, MySQL tables, latest sums, programs.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show only the topics, groups and subjects whose names contain this.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
    },
    /// The pipeline's figures in a few lines: MySQL rows, running sums, drops, consumer lag.
    Summary {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Wait (up to this many seconds) until the sink and streams have caught up.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("marketflow: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (json, filter) = match args.command {
        Command::Status { json, filter } => (json, filter),
        Command::Summary { json, wait } => return summary(&config, json, wait).await,
    };
    let status = marketflow_status::collect(&config, filter.as_deref()).await;
    if json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("marketflow: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let header = format!(
            "marketflow status: brokers {}, registry {}, MySQL {}",
            config.kafka.bootstrap_servers,
            config.registry.url,
            marketflow_status::inventory::database_place(config.sink.database_url.expose_secret()),
        );
        print!("{}", marketflow_status::report::text(&status, &header));
    }
    if status.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn summary(config: &Config, json: bool, wait: Option<u64>) -> ExitCode {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait.unwrap_or(0));
    let mut summary = marketflow_status::summary::summarize(config).await;
    // Caught up, and the figures held still for a poll: streams' last stage has nothing in flight.
    let mut settled = false;
    while wait.is_some() && !settled && std::time::Instant::now() < deadline {
        eprint!(
            "\r  waiting: {}   ",
            marketflow_status::summary::progress(&summary)
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let next = marketflow_status::summary::summarize(config).await;
        settled = next.caught_up() && summary.caught_up() && next.same_figures(&summary);
        summary = next;
    }
    if wait.is_some() {
        eprintln!("\r  {}   ", marketflow_status::summary::progress(&summary));
    }
    if json {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("marketflow: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", marketflow_status::summary::text(&summary));
    }
    if wait.is_some() && !settled {
        eprintln!(
            "marketflow: the sink and streams had not caught up within {}s",
            wait.unwrap_or(0)
        );
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
