//! The `market-load` binary: load a market on loopback and print what it served per second.

use clap::Parser;
use marketflow_market::load::{self, LoadConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = LoadConfig::parse();
    let report = load::run(&config).await?;
    println!(
        "pages={} ok={} errors={} bytes={} seconds={:.3} pages_per_sec={:.0}",
        report.pages,
        report.ok,
        report.errors,
        report.bytes,
        report.elapsed.as_secs_f64(),
        report.pages_per_sec()
    );
    Ok(())
}
