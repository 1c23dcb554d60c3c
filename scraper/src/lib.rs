//! The `scraper` program: crawls marketplace listings (the local market or web.joongna.com)
//! into Kafka as Avro, politely (rate limit, robots.txt, backoff), restartably (a checkpoint
//! in Kafka) and without duplicates or silent losses.
//!
//! How an id flows: [`crawl`] plans the ids to visit (a window, a range, or new ids as the recent
//! list grows), resuming from the [`checkpoint`] (a compacted topic; ids a crashed crawl already
//! produced are found and skipped), and visits them concurrently. A visit [`fetch`]es the page
//! (paced by [`throttle`], allowed by [`robots`], kept on the site by [`redirect`]), [`parse`]s it
//! into an `Outcome` (a pure function), hides the seller ([`pseudonym`]) and [`produce`]s the
//! listing; the checkpoint moves only over delivered ids. [`counts`] tallies the outcomes, and
//! [`events`] reports the crawl's start, end, failure and given-up ids to `scraper-events`.

pub mod checkpoint;
pub mod counts;
pub mod crawl;
pub mod events;
pub mod fetch;
pub mod parse;
pub mod produce;
pub mod pseudonym;
pub mod redirect;
pub mod robots;
pub mod throttle;

use std::sync::Arc;

use marketflow_core::Config;
use marketflow_core::admin::{self, AdminError};
use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::config::{RegistryConfig, ScraperConfig};
use marketflow_core::kafka::{self, ClientError, SendLimit};
use tokio_util::sync::CancellationToken;

pub use counts::Counts;
pub use crawl::{Mode, Range, Summary};

/// What stopped the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The seller key is missing.
    #[error(transparent)]
    Key(#[from] pseudonym::MissingKey),
    /// The brokers are unreachable, or a Kafka client cannot be built.
    #[error(transparent)]
    Kafka(#[from] ClientError),
    /// The schema registry is unreachable.
    #[error(
        "the schema registry at {url} did not answer: {detail}; is it up? (scripts/cluster.sh up, \
         or set MARKETFLOW__REGISTRY__URL)"
    )]
    Registry {
        /// The registry's URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The registry codec cannot be built.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The admin server cannot start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The marketplace cannot be reached (robots.txt).
    #[error(
        "cannot start crawling {base_url}: {source}; is the marketplace up? (scraper.base_url)"
    )]
    Market {
        /// The marketplace.
        base_url: String,
        /// What failed.
        source: fetch::FetchError,
    },
    /// The checkpoint topic cannot be created.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The crawl stopped on an error.
    #[error(transparent)]
    Crawl(#[from] crawl::CrawlError),
}

/// Checks the configuration and the cluster, then crawls in `mode` until done (once) or until
/// `shutdown` is cancelled. Prints the summary of a `--once` crawl on standard output.
///
/// # Errors
/// [`Error`] naming what failed and where: a bad setting, an unreachable broker, registry or
/// marketplace, or a crawl that could not go on.
pub async fn run(
    config: Config,
    mode: Mode,
    shutdown: CancellationToken,
) -> Result<Summary, Error> {
    let scraper = &config.scraper;
    validate(scraper)?;
    let pseudonymiser = pseudonym::Pseudonymiser::new(scraper.seller_hmac_key.as_ref())?;
    kafka::check_reachable(&config.kafka).await?;
    check_registry(&config.registry).await?;
    let topics = &config.topics;
    kafka::ensure_topics(
        &config.kafka,
        &[
            (topics.listings.as_str(), 3),
            (topics.scraper_events.as_str(), 3),
        ],
    )
    .await?;
    checkpoint::ensure_topic(&config.kafka, &scraper.checkpoint_topic).await?;
    let metrics = admin::install_metrics()?;
    admin::serve(
        scraper.admin_addr,
        scraper.admin_token.as_ref(),
        metrics,
        axum::Router::new(),
        shutdown.child_token(),
    )
    .await?;
    let fetcher = fetch::Fetcher::new(scraper)
        .await
        .map_err(|source| Error::Market {
            base_url: scraper.base_url.clone(),
            source,
        })?;
    let mut producer_kafka = config.kafka.clone();
    if !kafka::configures(&config.kafka, "linger.ms") {
        let linger = scraper.producer_linger.as_millis().to_string();
        producer_kafka
            .properties
            .insert("linger.ms".to_owned(), linger);
    }
    let topic_max = kafka::max_message_bytes(&config.kafka, &topics.listings).await;
    let listing_limit = SendLimit::new(&producer_kafka, topic_max);
    let mut producer_config = kafka::producer_config(&producer_kafka)?;
    listing_limit.apply(&mut producer_config);
    let producer = producer_config.create().map_err(ClientError::from)?;
    let codec = Arc::new(Codec::new(&config.registry)?);
    let crawler = crawl::Crawler::new(
        config,
        fetcher,
        pseudonymiser,
        producer,
        codec,
        listing_limit,
    );
    let summary = crawler.run(mode, shutdown).await?;
    if matches!(mode, Mode::Once(_)) {
        println!("{summary}");
    }
    Ok(summary)
}

/// Checks the `[scraper]` settings no type rules out: the one place they are refused.
fn validate(scraper: &ScraperConfig) -> Result<(), Error> {
    if scraper.concurrency == 0 {
        return Err(Error::Config(
            "scraper.concurrency must be at least 1".into(),
        ));
    }
    if !(scraper.max_requests_per_sec.is_finite() && scraper.max_requests_per_sec > 0.0) {
        return Err(Error::Config(format!(
            "scraper.max_requests_per_sec must be a positive number, not {}",
            scraper.max_requests_per_sec
        )));
    }
    if scraper.max_page_bytes == 0 {
        return Err(Error::Config(
            "scraper.max_page_bytes must be at least 1 (the default is 5242880, 5 MiB)".into(),
        ));
    }
    Ok(())
}

/// Asks the registry for its subjects, so that a wrong URL fails at start-up.
async fn check_registry(registry: &RegistryConfig) -> Result<(), Error> {
    let failed = |detail: String| Error::Registry {
        url: registry.url.clone(),
        detail,
    };
    let client = registry
        .http_client(registry.timeout)
        .map_err(|e| failed(e.to_string()))?;
    let url = format!("{}/subjects", registry.url.trim_end_matches('/'));
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("GET {url} answered {}", response.status())));
    }
    Ok(())
}
