//! A small load client for measuring the market: product pages over loopback, with bounded
//! concurrency, a bounded number of requests and a bounded time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Url;

/// The `market-load` binary's options.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "market-load",
    version,
    about = "Fetches product pages from a market on loopback and reports pages per second."
)]
pub struct LoadConfig {
    /// The market's base URL (loopback only).
    #[arg(
        long,
        env = "MARKET_LOAD_URL",
        default_value = "http://127.0.0.1:18080"
    )]
    pub url: Url,
    /// Requests in flight at once.
    #[arg(long, env = "MARKET_LOAD_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Requests to send at most.
    #[arg(long, env = "MARKET_LOAD_REQUESTS", default_value_t = 50_000)]
    pub requests: u64,
    /// Time to run at most, e.g. `10s`.
    #[arg(long, env = "MARKET_LOAD_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    /// Answers received (any status).
    pub pages: u64,
    /// Of which 2xx.
    pub ok: u64,
    /// Requests that got no answer.
    pub errors: u64,
    /// Bytes of bodies received.
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Answers per second.
    pub fn pages_per_sec(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let pages = self.pages as f64;
        pages / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What failed before the load could run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL is not on this machine.
    #[error("{0} is not a loopback address: market-load only loads a market on this machine")]
    NotLoopback(Url),
    /// The market did not answer `/__truth`.
    #[error("cannot read {url}__truth: {source} (is the market running?)")]
    Unreachable {
        /// The market's URL.
        url: Url,
        /// What failed.
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

#[derive(serde::Deserialize)]
struct Summary {
    first_id: u64,
    products: u64,
}

#[derive(Default)]
struct Counters {
    next: AtomicU64,
    pages: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// Loads the market at `config.url` with GET `/product/{id}` over its ids, round robin.
///
/// # Errors
/// [`LoadError`] when the URL is not loopback or the market does not answer.
pub async fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    let host = config.url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(LoadError::NotLoopback(config.url.clone()));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(LoadError::Client)?;
    let unreachable = |source| LoadError::Unreachable {
        url: config.url.clone(),
        source,
    };
    let base = config.url.as_str().trim_end_matches('/').to_owned();
    let summary: Summary = client
        .get(format!("{base}/__truth"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unreachable)?
        .json()
        .await
        .map_err(unreachable)?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + config.duration;
    let workers: Vec<_> = (0..config.concurrency.max(1))
        .map(|_| {
            let (client, counters, base) = (client.clone(), counters.clone(), base.clone());
            let (limit, products) = (config.requests, summary.products.max(1));
            let first = summary.first_id;
            tokio::spawn(async move {
                loop {
                    let n = counters.next.fetch_add(1, Ordering::Relaxed);
                    if n >= limit || Instant::now() >= deadline {
                        break;
                    }
                    let url = format!("{base}/product/{}", first + n % products);
                    match client.get(url).send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let bytes = response.bytes().await.map_or(0, |b| b.len() as u64);
                            counters.pages.fetch_add(1, Ordering::Relaxed);
                            counters.ok.fetch_add(u64::from(ok), Ordering::Relaxed);
                            counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                        }
                        Err(_) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        // A worker only ends by returning; a panic in one is not worth failing the report for.
        let _ = worker.await;
    }
    Ok(LoadReport {
        pages: counters.pages.load(Ordering::Relaxed),
        ok: counters.ok.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}
