//! Helpers of the sink's cluster-backed tests: a database and topics of their own, listings
//! produced through the registry codec, a sink run in-process (or as the real binary), and
//! waiting for the table to reach a state.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test helpers, not all used by every test

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use marketflow_core::Config;
use marketflow_core::codec::Codec;
use marketflow_core::kafka::create_producer;
use marketflow_core::record::{Listing, ListingKey};
use marketflow_core::schema::{self, Part, SchemaFile};
use marketflow_core::testkit::{Cluster, TestDatabase, unique};
use marketflow_sink::Sink;
use rdkafka::producer::{FutureProducer, FutureRecord};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySqlPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The local cluster plus a database of this test's own.
pub struct Env {
    pub cluster: Cluster,
    pub database: String,
    pub url: String,
    pub pool: MySqlPool,
    pub codec: Codec,
    pub producer: FutureProducer,
}

impl Env {
    /// Requires the cluster and MariaDB, and creates `sink_test_<unique>`.
    pub async fn new(prefix: &str) -> Self {
        let cluster = Cluster::require().await;
        let TestDatabase {
            name: database,
            url,
        } = cluster.database(&format!("sink_test_{prefix}")).await;
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        let codec = Codec::new(&cluster.config.registry).unwrap();
        let producer = create_producer(&cluster.config.kafka).unwrap();
        Self {
            cluster,
            database,
            url,
            pool,
            codec,
            producer,
        }
    }

    /// A configuration that sinks `topics` into this database, with a group of its own.
    pub fn config(&self, topics: &[&str]) -> Config {
        let mut config = self.cluster.config.clone();
        config.sink.topics = topics.iter().map(|t| (*t).to_owned()).collect();
        config.sink.group_id = unique("sink-test-group");
        config.sink.database_url = SecretString::from(self.url.clone());
        config.sink.batch_max_age = Duration::from_millis(100);
        config.sink.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.sink.dead_letter_topic = unique("sink-test-dlq");
        config.sink.retry_backoff = Duration::from_millis(100);
        config.sink.retry_backoff_max = Duration::from_secs(2);
        config
    }

    /// Produces `listings` to `topic` (key `ListingKey`, value `Listing`).
    pub async fn produce_listings(&self, topic: &str, listings: &[Listing]) {
        let keys: Vec<ListingKey> = listings.iter().map(Listing::key).collect();
        self.produce(topic, schema::LISTING_KEY, schema::LISTING, &keys, listings)
            .await;
    }

    /// Produces records of the given schemas, in order per key. A codec of its own each time,
    /// since the codec caches one schema per subject and tests change schemas.
    pub async fn produce<K: Serialize, V: Serialize>(
        &self,
        topic: &str,
        key_schema: SchemaFile,
        value_schema: SchemaFile,
        keys: &[K],
        values: &[V],
    ) {
        let codec = Codec::new(&self.cluster.config.registry).unwrap();
        let key_encoder = codec.encoder(topic, Part::Key, key_schema);
        let value_encoder = codec.encoder(topic, Part::Value, value_schema);
        let mut encoded = Vec::with_capacity(values.len());
        for (key, value) in keys.iter().zip(values) {
            let key = key_encoder.encode(key).await.unwrap();
            let value = value_encoder.encode(value).await.unwrap();
            encoded.push((key, Some(value)));
        }
        self.produce_raw(topic, &encoded).await;
    }

    /// Produces raw `(key, value)` pairs; `None` values are tombstones.
    pub async fn produce_raw(&self, topic: &str, records: &[(Vec<u8>, Option<Vec<u8>>)]) {
        for chunk in records.chunks(2000) {
            let sends = chunk.iter().map(|(key, value)| {
                let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(key.as_slice());
                if let Some(value) = value {
                    record = record.payload(value.as_slice());
                }
                self.producer.send(record, Duration::from_secs(60))
            });
            for result in join_all(sends).await {
                result.map_err(|(e, _)| e).unwrap();
            }
        }
    }

    /// Produces one raw record to a given partition.
    pub async fn produce_to(&self, topic: &str, partition: i32, key: &[u8], value: Option<&[u8]>) {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .partition(partition);
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    /// Rows in `table` (0 when it does not exist yet).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM `{table}`"
        )))
        .fetch_one(&self.pool)
        .await
        .unwrap_or(0)
    }

    /// Waits (up to `limit`) until `check` holds, panicking with `what` otherwise.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting after {limit:?} for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to `limit`) until the rows of `table` are exactly `latest`.
    pub async fn wait_for_latest(
        &self,
        table: &str,
        latest: &BTreeMap<i64, Listing>,
        limit: Duration,
    ) {
        self.wait_for("every key at its latest value", limit, || async {
            self.listing_rows(table).await == *latest
        })
        .await;
    }

    /// Encodes `records` and produces them in chunks of `chunk`, `pause` between chunks, so that
    /// a sink is consuming while it is killed.
    pub async fn produce_slowly(
        &self,
        topic: &str,
        records: &[Listing],
        chunk: usize,
        pause: Duration,
    ) {
        let keys = self.codec.encoder(topic, Part::Key, schema::LISTING_KEY);
        let values = self.codec.encoder(topic, Part::Value, schema::LISTING);
        let mut encoded = Vec::new();
        for listing in records {
            encoded.push((
                keys.encode(&listing.key()).await.unwrap(),
                Some(values.encode(listing).await.unwrap()),
            ));
        }
        for part in encoded.chunks(chunk) {
            self.produce_raw(topic, part).await;
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits until `table` holds `rows` rows.
    pub async fn wait_for_rows(&self, table: &str, rows: i64, limit: Duration) {
        let mut last = -1;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let now = self.count(table).await;
            if now == rows {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "table {table} has {now} rows, expected {rows}, after {limit:?} (was {last})"
            );
            last = now;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every listing row, by product id.
    pub async fn listing_rows(&self, table: &str) -> BTreeMap<i64, Listing> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM `{table}`")))
            .fetch_all(&self.pool)
            .await
            .unwrap();
        let millis = |t: Option<sqlx::types::chrono::NaiveDateTime>| {
            t.map(|t| t.and_utc().timestamp_millis())
        };
        rows.iter()
            .map(|row| {
                let urls: String = row.get("image_urls");
                let listing = Listing {
                    product_id: row.get("product_id"),
                    title: row.get("title"),
                    price: row.get("price"),
                    condition: row.get("condition"),
                    sale_status: row.get("sale_status"),
                    category_path: row.get("category_path"),
                    category_level1: row.get("category_level1"),
                    category_level2: row.get("category_level2"),
                    category_level3: row.get("category_level3"),
                    category_level4: row.get("category_level4"),
                    description: row.get("description"),
                    seller: row.get("seller"),
                    location: row.get("location"),
                    view_count: row.get("view_count"),
                    wish_count: row.get("wish_count"),
                    chat_count: row.get("chat_count"),
                    image_urls: serde_json::from_str(&urls).unwrap(),
                    posted_at: millis(row.get("posted_at")),
                    scraped_at: millis(Some(row.get("scraped_at"))).unwrap(),
                    source_url: row.get("source_url"),
                };
                (listing.product_id, listing)
            })
            .collect()
    }

    /// Drops the test database.
    pub async fn drop_database(&self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS `{}`",
            self.database
        )))
        .execute(&self.pool)
        .await;
    }
}

/// `n` arbitrary listings with distinct product ids, from `seed`.
pub use marketflow_core::record::arbitrary::distinct_listings as listings;

/// `keys` distinct products (from `seed`) in windows of 50, each written 4 times within its
/// window with the values of `versions_seed..versions_seed + 4`: new keys arrive until the end.
pub fn rewritten_in_windows(keys: usize, seed: u64, versions_seed: u64) -> Vec<Listing> {
    let base = listings(keys, seed);
    let versions: Vec<Vec<Listing>> = (0..4).map(|v| listings(keys, versions_seed + v)).collect();
    let mut sent = Vec::new();
    for (w, window) in base.chunks(50).enumerate() {
        for version in &versions {
            for (i, key) in window.iter().enumerate() {
                let mut listing = version[w * 50 + i].clone();
                listing.product_id = key.product_id;
                sent.push(listing);
            }
        }
    }
    sent
}

/// The last of `sent` for each product id.
pub fn latest_by_product(sent: &[Listing]) -> BTreeMap<i64, Listing> {
    sent.iter().map(|l| (l.product_id, l.clone())).collect()
}

/// A random number below `bound`, from the clock (enough to vary a kill point).
pub fn random_below(bound: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761)) % bound.max(1)
}

/// A free port on loopback for a child's admin server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config file (its name from `prefix`) with a short group session, so that the group drops a
/// killed member within seconds rather than librdkafka's default 45 s; everything else comes from
/// `MARKETFLOW__` variables (dotted librdkafka names cannot be spelt as environment variables).
pub fn session_config(prefix: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique(prefix)));
    std::fs::write(
        &path,
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
    )
    .unwrap();
    path
}

/// The variables that point a `sink` child at `topic`, with a group and a dead-letter topic
/// named after `prefix`.
pub fn child_vars(topic: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MARKETFLOW__SINK__TOPICS", format!("[{topic}]")),
        (
            "MARKETFLOW__SINK__GROUP_ID",
            unique(&format!("{prefix}-group")),
        ),
        (
            "MARKETFLOW__SINK__DEAD_LETTER_TOPIC",
            unique(&format!("{prefix}-dlq")),
        ),
    ]
}

/// A log file in the temporary directory, named from `prefix`.
pub fn log_file(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.log", unique(prefix)))
}

/// The real `sink` binary as a child process, killed if the test ends (or panics) before
/// stopping it.
pub struct SinkProcess {
    pub process: std::process::Child,
    pub admin: u16,
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

impl SinkProcess {
    /// Starts the real `sink` binary on `env`'s database with `config` and `vars`, appending
    /// its log to `log`.
    pub fn start(env: &Env, vars: &[(&str, String)], config: &Path, log: &Path) -> Self {
        let admin = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sink"));
        command
            .arg("--config")
            .arg(config)
            .env("MARKETFLOW__SINK__DATABASE_URL", &env.url)
            .env("MARKETFLOW__SINK__ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .env("MARKETFLOW__SINK__BATCH_SIZE", "100")
            .env("MARKETFLOW__SINK__BATCH_MAX_AGE", "100ms")
            .env("RUST_LOG", "warn,marketflow_sink=info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            );
        for (key, value) in vars {
            command.env(key, value);
        }
        Self {
            process: command.spawn().expect("starting the sink binary"),
            admin,
        }
    }

    /// `GET /status`, or `None` while the admin server does not answer.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/status", self.admin);
        reqwest::get(url).await.ok()?.json().await.ok()
    }

    /// The value of the unlabelled series `name` on its `/metrics`, if it shows one.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// The partitions assigned to it, as its status shows them.
    pub async fn partitions(&self) -> Vec<i64> {
        let status = self.status().await.unwrap_or_default();
        let mut partitions: Vec<i64> = status["partitions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|p| p["partition"].as_i64())
                    .collect()
            })
            .unwrap_or_default();
        partitions.sort_unstable();
        partitions
    }

    /// Records it consumed so far (0 while it starts).
    pub async fn records_in(&self) -> u64 {
        let status = self.status().await.unwrap_or_default();
        status["records_in"].as_u64().unwrap_or(0)
    }

    /// SIGKILL, and waits for it to end.
    pub fn kill(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }

    /// SIGTERM, then checks that it exits 0.
    pub fn stop(mut self) {
        let pid = self.process.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.process.wait().unwrap();
        assert!(exit.success(), "the sink exited with {exit} after SIGTERM");
    }
}

/// A sink running in this process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), marketflow_sink::Error>>,
    pub admin: SocketAddr,
}

impl Running {
    /// Starts a sink on `config`, with its control routes served on a free port.
    pub async fn start(config: &Config) -> Self {
        let shutdown = CancellationToken::new();
        let sink = Sink::new(config, shutdown.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let router = sink.router();
        let serve_shutdown = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
                .await
        });
        let handle = tokio::spawn(sink.run());
        Self {
            shutdown,
            handle,
            admin,
        }
    }

    /// Stops it gracefully and returns how it ended.
    pub async fn stop(self) -> Result<(), marketflow_sink::Error> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the sink did not stop within 60 s")
            .unwrap()
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/status", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST` to a control route, returning the status code and JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::Client::new();
        // The admin server takes mutations as JSON only (a cross-site form cannot send it).
        let mut request = client
            .post(format!("http://{}{path}", self.admin))
            .header("content-type", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or_default())
    }
}
