//! `market`: an offline stand-in for web.joongna.com. Every product page, and the ground truth of
//! what a scraper must read from it, is a pure function of the seed and the product id; faults
//! (latency, 429, 500, resets) are drawn per request. The contract with the scraper is
//! `local/market/README.md`.

pub mod catalog;
pub mod config;
pub mod fault;
pub mod generate;
pub mod load;
pub mod page;
pub mod server;
pub mod truth;

pub use config::MarketConfig;
pub use server::{Market, router, run};
