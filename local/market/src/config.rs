//! The market's command line: every option also from a `MARKET_…` environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use crate::generate::Shares;

/// The `market` binary's options.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "market",
    version,
    about = "An offline stand-in for web.joongna.com: deterministic product pages in the real \
             site's shapes, the ground truth for each (GET /__truth/{id}), and fault knobs."
)]
pub struct MarketConfig {
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, env = "MARKET_LISTEN", default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// The seed every page and fault is drawn from; the same seed serves the same bytes.
    #[arg(long, env = "MARKET_SEED", default_value_t = 42)]
    pub seed: u64,
    /// How many product ids exist at start-up, from --first-id upwards.
    #[arg(long, env = "MARKET_PRODUCTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub products: u64,
    /// The oldest product id.
    #[arg(long, env = "MARKET_FIRST_ID", default_value_t = 100_000_001)]
    pub first_id: u64,
    /// New product ids per second after start-up: the head (newest id) grows by this much.
    #[arg(long, env = "MARKET_NEW_PER_SEC", default_value_t = 0.0, value_parser = parse_non_negative)]
    pub new_per_sec: f64,
    /// Delay before answering each product or list request, e.g. `20ms`.
    #[arg(long, env = "MARKET_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Share of product and list requests answered 429 with `Retry-After: 1` (0 to 1).
    #[arg(long = "rate-429", env = "MARKET_RATE_429", default_value_t = 0.0, value_parser = parse_share)]
    pub rate_429: f64,
    /// Share of product and list requests answered 500 (0 to 1).
    #[arg(long = "rate-500", env = "MARKET_RATE_500", default_value_t = 0.0, value_parser = parse_share)]
    pub rate_500: f64,
    /// Share of product and list requests whose connection is closed without an answer (0 to 1).
    #[arg(long, env = "MARKET_RATE_RESET", default_value_t = 0.0, value_parser = parse_share)]
    pub rate_reset: f64,
    /// Share of product ids behind a Cloudflare-style challenge, fixed by the seed (0 to 1).
    #[arg(long, env = "MARKET_CAPTCHA_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub captcha_rate: f64,
    /// Share of product ids deleted: half answer 404, half a 200 "deleted" page (0 to 1).
    #[arg(long, env = "MARKET_DELETED_RATE", default_value_t = 0.03, value_parser = parse_share)]
    pub deleted_rate: f64,
    /// Share of product ids whose page shows another id's sku (0 to 1).
    #[arg(long, env = "MARKET_MISMATCH_RATE", default_value_t = 0.01, value_parser = parse_share)]
    pub mismatch_rate: f64,
}

impl MarketConfig {
    /// The defaults, as `market` with no options runs.
    pub fn new() -> Self {
        <Self as clap::Parser>::parse_from(["market"])
    }

    /// The shares of non-listing ids.
    pub fn shares(&self) -> Shares {
        Shares {
            captcha: self.captcha_rate,
            deleted: self.deleted_rate,
            sku_mismatch: self.mismatch_rate,
        }
    }
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1 (e.g. 0.05)"
        )),
    }
}

fn parse_non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?} is not a non-negative number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = MarketConfig::new();
        assert_eq!(config.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(config.products, 10_000);
        assert_eq!(config.first_id, 100_000_001);
        assert_eq!(config.shares(), Shares::default());
        assert_eq!(config.latency, Duration::ZERO);
    }

    #[test]
    fn shares_outside_zero_to_one_are_refused() {
        assert!(MarketConfig::try_parse_from(["market", "--rate-429", "1.5"]).is_err());
        assert!(MarketConfig::try_parse_from(["market", "--products", "0"]).is_err());
        let config =
            MarketConfig::try_parse_from(["market", "--latency", "20ms", "--rate-500", "0.1"])
                .unwrap();
        assert_eq!(config.latency, Duration::from_millis(20));
    }
}
