//! Shared by the scraper's integration tests: a `market` on a free port (in-process, on its own
//! runtime), the `scraper` binary with per-test topics, the ground truth, and a reader of the
//! listings topic through the registry.

#![allow(dead_code)] // each test file uses a part

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hmac::{Hmac, Mac};
use marketflow_core::Config;
use marketflow_core::codec::Codec;
use marketflow_core::kafka::consumer_config;
use marketflow_core::record::{Listing, ScraperEvent};
use marketflow_core::testkit::{Cluster, unique};
use marketflow_market::MarketConfig;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The seller key every test's scraper runs with.
pub const KEY: &str = "test-seller-key";

/// The market's first product id (its default).
pub const FIRST_ID: i64 = 100_000_001;

/// The market most crawls run against: 2,500 products, 2 % of their pages captchas.
pub const MARKET_ARGS: &[&str] = &["--products", "2500", "--captcha-rate", "0.02"];

/// The ids most crawls cover: the first 2,000 of the market's.
pub const IDS: (i64, i64) = (FIRST_ID, FIRST_ID + 1999);

/// A `market` serving on a free loopback port until dropped.
pub struct Market {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: CancellationToken,
}

impl Market {
    /// Starts a market with `args` (the `market` binary's options).
    pub async fn start(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut argv = vec!["market", "--listen", &listen];
        argv.extend_from_slice(args);
        let config = MarketConfig::parse_from(argv);
        let stop = CancellationToken::new();
        let token = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(marketflow_market::run(config, token))
                .unwrap();
        });
        let base = format!("http://{listen}");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
                && r.status().is_success()
            {
                return Self { base, stop };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the market did not come up on {base}");
    }

    /// Serves `router` (a market's routes, some replaced) on a free loopback port, on a runtime
    /// of its own, until dropped.
    pub async fn serve(router: axum::Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .unwrap();
            });
        });
        Self { base, stop }
    }

    /// The truth for each id of `from..=to`: `(status, listing)`.
    pub async fn truth(&self, from: i64, to: i64) -> BTreeMap<i64, (String, Option<Value>)> {
        let client = reqwest::Client::new();
        let mut out = BTreeMap::new();
        for id in from..=to {
            let truth: Value = client
                .get(format!("{}/__truth/{id}", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let status = truth["status"].as_str().unwrap().to_owned();
            let listing = truth.get("listing").filter(|l| !l.is_null()).cloned();
            out.insert(id, (status, listing));
        }
        out
    }
}

impl Drop for Market {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The topics of one test's scraper.
pub struct Topics {
    /// Listings.
    pub listings: String,
    /// Lifecycle events.
    pub events: String,
    /// Checkpoints.
    pub checkpoints: String,
}

impl Topics {
    /// Fresh topics on the cluster.
    pub async fn new(cluster: &Cluster) -> Self {
        Self {
            listings: cluster.topic("scraper-listings", 3).await,
            events: cluster.topic("scraper-events", 3).await,
            checkpoints: cluster.topic("scraper-checkpoints", 1).await,
        }
    }
}

/// What a crawl test runs against: the local cluster, a market, and topics of its own.
pub struct Bench {
    /// The local cluster.
    pub cluster: Cluster,
    /// The market crawled.
    pub market: Market,
    /// Fresh topics on the cluster.
    pub topics: Topics,
}

impl Bench {
    /// Requires the cluster, starts a market with `args` and creates fresh topics.
    pub async fn start(args: &[&str]) -> Self {
        let cluster = Cluster::require().await;
        let market = Market::start(args).await;
        let topics = Topics::new(&cluster).await;
        Self {
            cluster,
            market,
            topics,
        }
    }
}

/// The `scraper` binary crawling `market` into `topics`, with `extra` environment variables.
pub fn scraper(market: &Market, topics: &Topics, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scraper"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("MARKETFLOW__SCRAPER__")) {
        command.env_remove(name);
    }
    command
        .env("MARKETFLOW__SCRAPER__BASE_URL", &market.base)
        .env("MARKETFLOW__SCRAPER__SELLER_HMAC_KEY", KEY)
        .env("MARKETFLOW__SCRAPER__ADMIN_ADDR", "127.0.0.1:0")
        .env("MARKETFLOW__SCRAPER__CONCURRENCY", "16")
        .env("MARKETFLOW__SCRAPER__MIN_BACKOFF", "20ms")
        .env("MARKETFLOW__SCRAPER__MAX_BACKOFF", "2s")
        .env("MARKETFLOW__SCRAPER__MAX_RETRIES", "20")
        .env("MARKETFLOW__TOPICS__LISTINGS", &topics.listings)
        .env("MARKETFLOW__TOPICS__SCRAPER_EVENTS", &topics.events)
        .env("MARKETFLOW__SCRAPER__CHECKPOINT_TOPIC", &topics.checkpoints)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

/// Runs `command` to its end (on a blocking thread), returning its output.
pub async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The `scraper` binary set for a `--once` crawl of `from..=to` (see [`scraper`]).
pub fn once_command(
    market: &Market,
    topics: &Topics,
    extra: &[(&str, &str)],
    (from, to): (i64, i64),
) -> Command {
    let mut command = scraper(market, topics, extra);
    command.args([
        "--once",
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]);
    command
}

/// Runs a `--once` crawl of `from..=to` to its end and checks that it succeeded.
pub async fn crawl_once(market: &Market, topics: &Topics, from: i64, to: i64) -> Output {
    let out = output(once_command(market, topics, &[], (from, to))).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the `--once` crawl of `from..=to` again after its first `run` (a "restart", a "rerun")
/// was cut short, and checks that it resumed and that every listing the truth expects is on the
/// topic exactly once, all under one crawl id.
pub async fn assert_rerun_resumes(
    config: &Config,
    market: &Market,
    topics: &Topics,
    (from, to): (i64, i64),
    run: &str,
) {
    let out = crawl_once(market, topics, from, to).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(resumed)"),
        "the {run} did not resume: {stdout}"
    );
    let truth = market.truth(from, to).await;
    let records = read_listings(config, &topics.listings).await;
    assert_exactly_the_truth(&records, &truth);
    let crawls: BTreeSet<_> = records.iter().map(|r| r.crawl.clone()).collect();
    assert_eq!(
        crawls.len(),
        1,
        "the {run} must go on with the same crawl id: {crawls:?}"
    );
}

/// A random number below `bound`, from the clock (enough to vary a kill point).
pub fn random_below(bound: u32) -> usize {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    usize::try_from(nanos % bound).unwrap()
}

/// Waits until `topic` holds at least `count` listings, looking every 100 ms after calling
/// `check` (which panics when the crawl has ended too early); returns how many it holds.
pub async fn wait_for_listings(
    config: &Config,
    topic: &str,
    count: usize,
    mut check: impl FnMut(),
) -> usize {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        check();
        let listed = read_listings(config, topic).await.len();
        if listed >= count {
            return listed;
        }
    }
}

/// Runs the crawl `command` in the background until `topic` holds `count` listings, checking
/// that the crawl has not ended before `what` comes; returns the running crawl and how many
/// listings the topic holds.
pub async fn crawl_until_listed(
    command: Command,
    config: &Config,
    topic: &str,
    count: usize,
    what: &str,
) -> (JoinHandle<Output>, usize) {
    let crawl = tokio::spawn(output(command));
    let listed = wait_for_listings(config, topic, count, || {
        assert!(!crawl.is_finished(), "the crawl ended before {what}");
    })
    .await;
    (crawl, listed)
}

/// Spawns the crawl `command` and kills it with SIGKILL once `topic` holds `count` listings.
pub async fn kill_once_listed(command: Command, config: &Config, topic: &str, count: usize) {
    let mut child = spawn(command);
    wait_for_listings(config, topic, count, || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the first run ended ({status}) before the kill point");
        }
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Spawns `command` with its output discarded.
pub fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The hex HMAC-SHA256 of `raw` under [`KEY`], computed here, independently of the scraper.
pub fn pseudonym(raw: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(raw.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The listing the truth expects, its seller pseudonymised with the test's key and `scraped_at`
/// set to 0 (not compared).
pub fn expected(truth: &Value) -> Listing {
    let mut truth = truth.clone();
    let raw = truth["seller"].as_str().map(pseudonym);
    truth["seller"] = raw.map_or(Value::Null, Value::String);
    truth["scraped_at"] = Value::from(0);
    serde_json::from_value(truth).unwrap()
}

/// A record of the listings topic, decoded.
pub struct Record {
    /// The decoded value.
    pub listing: Listing,
    /// The `marketflow-crawl` header.
    pub crawl: Option<String>,
}

/// Every record of `topic` up to its current end, decoded through the registry.
pub async fn read_listings(config: &Config, topic: &str) -> Vec<Record> {
    let codec = Codec::new(&config.registry).unwrap();
    let mut records = Vec::new();
    for (payload, crawl) in read_raw(config, topic).await {
        let listing: Listing = codec.decode(&payload).await.unwrap();
        records.push(Record { listing, crawl });
    }
    records
}

/// Every event of `topic` up to its current end, decoded through the registry.
pub async fn read_events(config: &Config, topic: &str) -> Vec<ScraperEvent> {
    let codec = Codec::new(&config.registry).unwrap();
    let mut events = Vec::new();
    for (payload, _) in read_raw(config, topic).await {
        events.push(codec.decode(&payload).await.unwrap());
    }
    events
}

/// Runs `read` with `topic` on a blocking thread, with a consumer of a group of its own (named
/// from `group`).
pub async fn with_consumer<T: Send + 'static>(
    config: &Config,
    group: &str,
    topic: &str,
    read: impl FnOnce(&BaseConsumer, &str) -> T + Send + 'static,
) -> T {
    let kafka = config.kafka.clone();
    let group = group.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = consumer_config(&kafka, &unique(&group))
            .unwrap()
            .create()
            .unwrap();
        read(&consumer, &topic)
    })
    .await
    .unwrap()
}

/// Payloads and crawl headers of `topic` up to its current end.
async fn read_raw(config: &Config, topic: &str) -> Vec<(Vec<u8>, Option<String>)> {
    with_consumer(config, "scraper-test", topic, |consumer, topic| {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
        let mut list = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in metadata.topics()[0].partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
            if high > low {
                list.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .unwrap();
                ends.insert(p.id(), high);
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        consumer.assign(&list).unwrap();
        // A broker that cannot be reached (a node a test stopped) comes as a consumer error
        // while the others serve the topic: only a silence of 30 s ends the read.
        let mut last_record = std::time::Instant::now();
        let mut last_error = None;
        while !ends.is_empty() {
            let m = match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => m,
                silence_or_error => {
                    last_error = silence_or_error.and_then(Result::err).or(last_error);
                    assert!(
                        last_record.elapsed() < Duration::from_secs(30),
                        "the topic stalled (last error: {last_error:?})"
                    );
                    continue;
                }
            };
            last_record = std::time::Instant::now();
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
            let crawl = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "marketflow-crawl")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push((m.payload().unwrap().to_vec(), crawl));
        }
        out
    })
    .await
}

/// Checks that `records` hold exactly the listings the truth expects for `from..=to`, each once.
pub fn assert_exactly_the_truth(
    records: &[Record],
    truth: &BTreeMap<i64, (String, Option<Value>)>,
) {
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for r in records {
        *seen.entry(r.listing.product_id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "product ids produced more than once: {twice:?}"
    );
    let expected: BTreeMap<i64, Listing> = truth
        .iter()
        .filter_map(|(id, (_, l))| l.as_ref().map(|l| (*id, expected(l))))
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} expected listings missing: {missing:?}",
        missing.len()
    );
    let unexpected: Vec<_> = seen
        .keys()
        .filter(|id| !expected.contains_key(id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "listings produced that the truth does not expect: {unexpected:?}"
    );
    for r in records {
        let mut got = r.listing.clone();
        assert!(
            got.scraped_at > 0,
            "scraped_at is not set on {}",
            got.product_id
        );
        got.scraped_at = 0;
        assert_eq!(
            got, expected[&got.product_id],
            "listing {} differs",
            got.product_id
        );
    }
}
