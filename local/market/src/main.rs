//! The `market` binary: parse the options, start logging, serve until SIGINT or SIGTERM.

use anyhow::{Context, anyhow};
use clap::Parser;
use marketflow_core::config::TelemetryConfig;
use marketflow_core::{shutdown, telemetry};
use marketflow_market::MarketConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MarketConfig::parse();
    telemetry::init(&TelemetryConfig::default()).map_err(|e| anyhow!(e))?;
    let shutdown = shutdown::on_signals().context("installing the SIGINT/SIGTERM handlers")?;
    marketflow_market::run(config, shutdown)
        .await
        .context("running the market")
}
