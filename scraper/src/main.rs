//! `scraper`: Crawls marketplace listings (the local market or web.joongna.com) into Kafka as Avro.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use marketflow_core::program;
use marketflow_scraper::{Mode, Range};

/// Crawls marketplace listings (the local market or web.joongna.com) into Kafka as Avro.
///
/// Without --once it runs until SIGINT/SIGTERM, polling the recent list every
/// scraper.poll_interval and visiting new ids. A restart (graceful or kill -9) resumes from the
/// checkpoint without producing an id twice.
///
/// Configuration: built-in defaults (the local cluster and market), then the TOML file given with
/// --config, then environment variables `MARKETFLOW__<SECTION>__<KEY>`. The [scraper] keys:
/// base_url, user_agent, concurrency, max_requests_per_sec, request_timeout, max_retries,
/// min_backoff, max_backoff, max_crawl_delay, max_page_bytes, poll_interval, window,
/// seller_hmac_key (required, secret), checkpoint_topic, checkpoint_interval, shutdown_grace,
/// producer_linger, admin_addr, admin_token (secret) (see the README).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A TOML configuration file (e.g. scraper/joongna.toml, the polite real-site profile).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Visit one range, then exit with a summary: --from/--to, else the scraper.window ids up to
    /// the newest (or the unfinished crawl being resumed).
    #[arg(long)]
    once: bool,
    /// First product id of a --once crawl (with --to).
    #[arg(long, requires_all = ["once", "to"], value_name = "ID")]
    from: Option<i64>,
    /// Last product id of a --once crawl (with --from).
    #[arg(long, requires_all = ["once", "from"], value_name = "ID")]
    to: Option<i64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mode = match (args.once, args.from, args.to) {
        (false, ..) => Mode::Continuous,
        (true, Some(from), Some(to)) => Mode::Once(Range::Ids { from, to }),
        (true, ..) => Mode::Once(Range::Window),
    };
    program::run("scraper", args.config.as_deref(), |config, shutdown| {
        marketflow_scraper::run(config, mode, shutdown)
    })
    .await
}
