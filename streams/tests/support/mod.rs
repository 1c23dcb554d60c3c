//! Helpers of the cluster-backed tests: a workload of listings, updates and tombstones with its
//! independently computed sums, a producer of it, the real `streams` binary on its own topics and
//! group under either guarantee, and readers of the sums and affordable topics through the
//! registry.

#![allow(
    dead_code,
    clippy::large_enum_variant,
    clippy::unwrap_used,
    clippy::expect_used
)] // each test binary uses a part

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use marketflow_core::codec::Codec;
use marketflow_core::kafka::create_producer;
use marketflow_core::record::{Listing, ListingKey, ListingSum, ListingSumKey};
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::{Cluster, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One input record.
#[derive(Debug, Clone)]
pub enum Op {
    /// A version of a product.
    Version(Listing),
    /// The product's tombstone.
    Tombstone(i64),
}

/// How the `streams` binary under test keeps its sums exact (`streams.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// No transactions: the affordable topic gets every accepted listing at least once.
    Changelog,
    /// Kafka transactions: the affordable topic gets every accepted listing exactly once.
    ExactlyOnce,
}

impl Guarantee {
    /// The environment that selects this guarantee, for [`Pipeline::start`].
    pub fn env(self) -> [(&'static str, &'static str); 1] {
        let name = match self {
            Self::Changelog => "changelog",
            Self::ExactlyOnce => "exactly_once",
        };
        [("MARKETFLOW__STREAMS__GUARANTEE", name)]
    }
}

/// What identifies one version of a listing on the affordable topic.
pub type VersionId = (i64, Option<i64>, Option<String>);

/// Count, sum, min, max of one sum.
pub type Figures = (i64, i64, Option<i64>, Option<i64>);

/// A small deterministic generator (xorshift), so that a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CATEGORIES: [&str; 6] = [
    "디지털기기",
    "가구/인테리어",
    "의류",
    "도서",
    "스포츠/레저",
    "유아동",
];

/// A listing of product `id` at `price` in a category picked by `rng` (sometimes none).
pub fn listing(rng: &mut Rng, id: i64, price: Option<i64>) -> Listing {
    let category = match rng.below(8) {
        0 => None,
        n => Some(CATEGORIES[(n as usize) % CATEGORIES.len()].to_owned()),
    };
    Listing {
        product_id: id,
        title: format!("상품 {id} \"급처\""),
        price,
        condition: "used".into(),
        sale_status: "on_sale".into(),
        category_path: category.clone(),
        category_level1: category,
        category_level2: None,
        category_level3: None,
        category_level4: None,
        description: "네고 가능".into(),
        seller: Some(format!("{:064x}", id)),
        location: Some("서울".into()),
        view_count: Some(1),
        wish_count: None,
        chat_count: None,
        image_urls: vec![format!("https://img.example/{id}.jpg")],
        posted_at: Some(1_700_000_000_000),
        scraped_at: 1_700_000_000_000 + id,
        source_url: format!("https://web.joongna.com/product/{id}"),
    }
}

/// `n` input records: new products, newer versions of earlier ones (new price or category),
/// tombstones, prices over the limit and missing prices, exactly 1,000,000 and 1,000,001.
pub fn workload(n: usize, seed: u64) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut ops = Vec::with_capacity(n);
    let mut next_id = 1_000i64;
    for _ in 0..n {
        let roll = rng.below(100);
        let price = match rng.below(20) {
            0 => None,
            1 => Some(1_000_000),
            2 => Some(1_000_001),
            3..=6 => Some(1_000_000 + rng.below(5_000_000) as i64),
            _ => Some(rng.below(1_000_000) as i64),
        };
        if roll < 8 && next_id > 1_000 {
            let id = 1_000 + rng.below((next_id - 1_000) as u64) as i64;
            ops.push(Op::Tombstone(id));
        } else if roll < 30 && next_id > 1_000 {
            let id = 1_000 + rng.below((next_id - 1_000) as u64) as i64;
            ops.push(Op::Version(listing(&mut rng, id, price)));
        } else {
            ops.push(Op::Version(listing(&mut rng, next_id, price)));
            next_id += 1;
        }
    }
    ops
}

/// The sums computed directly from the workload, as `distinct` defines them: the latest version
/// of each product (none after its tombstone), counted when priced at most 1,000,000.
pub fn expected_distinct(ops: &[Op]) -> BTreeMap<ListingSumKey, Figures> {
    let mut latest: BTreeMap<i64, &Listing> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Version(l) => {
                latest.insert(l.product_id, l);
            }
            Op::Tombstone(id) => {
                latest.remove(id);
            }
        }
    }
    group(latest.values().copied())
}

/// The sums computed directly from the workload, as `append` defines them: every accepted record.
pub fn expected_append(ops: &[Op]) -> BTreeMap<ListingSumKey, Figures> {
    group(ops.iter().filter_map(|op| match op {
        Op::Version(l) => Some(l),
        Op::Tombstone(_) => None,
    }))
}

fn group<'a>(listings: impl Iterator<Item = &'a Listing>) -> BTreeMap<ListingSumKey, Figures> {
    let mut groups: BTreeMap<ListingSumKey, Vec<i64>> = BTreeMap::new();
    for l in listings {
        let Some(price) = l.price.filter(|p| *p <= 1_000_000) else {
            continue;
        };
        let category = l
            .category_level1
            .clone()
            .unwrap_or_else(|| "unknown".into());
        for key in [
            ListingSumKey {
                scope: "all".into(),
                value: "all".into(),
            },
            ListingSumKey {
                scope: "category_level1".into(),
                value: category,
            },
        ] {
            groups.entry(key).or_default().push(price);
        }
    }
    groups
        .into_iter()
        .map(|(k, p)| {
            let figures = (
                p.len() as i64,
                p.iter().sum(),
                p.iter().min().copied(),
                p.iter().max().copied(),
            );
            (k, figures)
        })
        .collect()
}

/// The topics and group of one test's pipeline.
pub struct Pipeline {
    pub cluster: Cluster,
    pub codec: Codec,
    pub input: String,
    pub affordable: String,
    pub sums: String,
    pub group: String,
    pub changelog: String,
    pub partials: String,
    config_file: tempfile::NamedTempFile,
}

impl Pipeline {
    /// Fresh topics (3 partitions) and names for one test.
    pub async fn new(prefix: &str) -> Self {
        let cluster = Cluster::require().await;
        let codec = Codec::new(&cluster.config.registry).unwrap();
        let input = cluster.topic(&format!("{prefix}-in"), 3).await;
        let affordable = cluster.topic(&format!("{prefix}-ok"), 3).await;
        let sums = cluster.topic(&format!("{prefix}-sums"), 3).await;
        // Librdkafka's dotted property names cannot be spelt as environment variables: a file.
        let mut config_file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            config_file,
            "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\""
        )
        .unwrap();
        Self {
            codec,
            input,
            affordable,
            sums,
            group: unique(&format!("{prefix}-group")),
            changelog: unique(&format!("{prefix}-changelog")),
            partials: unique(&format!("{prefix}-partials")),
            cluster,
            config_file,
        }
    }

    /// Produces the workload to the input topic, in order, keyed by product id.
    pub async fn produce(&self, ops: &[Op]) {
        self.produce_to(ops, None).await;
    }

    /// Produces the workload to the input topic, in order, keyed by product id: to `partition`
    /// when given, else where the key's partitioner puts it.
    pub async fn produce_to(&self, ops: &[Op], partition: Option<i32>) {
        let producer: FutureProducer = create_producer(&self.cluster.config.kafka).unwrap();
        let keys = self
            .codec
            .encoder(&self.input, Part::Key, schema::LISTING_KEY);
        let values = self
            .codec
            .encoder(&self.input, Part::Value, schema::LISTING);
        let mut pending = Vec::with_capacity(ops.len());
        for op in ops {
            let (id, value) = match op {
                Op::Version(l) => (l.product_id, Some(values.encode(l).await.unwrap())),
                Op::Tombstone(id) => (*id, None),
            };
            let key = keys.encode(&ListingKey { product_id: id }).await.unwrap();
            let mut record = FutureRecord::to(&self.input).key(&key);
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            if let Some(value) = &value {
                record = record.payload(value);
            }
            pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for delivery in pending {
            delivery.await.unwrap().unwrap();
        }
    }

    /// Starts the real `streams` binary on this pipeline, with admin port `admin_port` and
    /// `extra` environment variables.
    pub fn start(&self, admin_port: u16, extra: &[(&str, &str)]) -> Child {
        let mut command = self.command(admin_port, extra);
        if std::env::var_os("STREAMS_TEST_QUIET").is_some() {
            command.stderr(Stdio::null());
        }
        command.spawn().unwrap()
    }

    /// The command line of the real `streams` binary on this pipeline.
    pub fn command(&self, admin_port: u16, extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_streams"));
        command
            .arg("--config")
            .arg(self.config_file.path())
            .env("MARKETFLOW__TOPICS__LISTINGS", &self.input)
            .env("MARKETFLOW__TOPICS__LISTINGS_AFFORDABLE", &self.affordable)
            .env("MARKETFLOW__TOPICS__LISTING_SUMS", &self.sums)
            .env("MARKETFLOW__STREAMS__GROUP_ID", &self.group)
            .env("MARKETFLOW__STREAMS__CHANGELOG_TOPIC", &self.changelog)
            .env("MARKETFLOW__STREAMS__PARTIALS_TOPIC", &self.partials)
            .env("MARKETFLOW__STREAMS__COMMIT_INTERVAL", "200ms")
            .env(
                "MARKETFLOW__STREAMS__ADMIN_ADDR",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("RUST_LOG", "warn,marketflow_streams=info")
            .stdin(Stdio::null());
        for (key, value) in extra {
            command.env(key, value);
        }
        command
    }

    /// The last sum per key on the sums topic, decoded through the registry.
    pub async fn last_sums(&self) -> BTreeMap<ListingSumKey, ListingSum> {
        let records = read_all(&self.cluster, &self.sums).await;
        let mut last = BTreeMap::new();
        for (key, value) in records {
            let key: ListingSumKey = self.codec.decode(&key).await.unwrap();
            let value: ListingSum = self.codec.decode(&value).await.unwrap();
            assert_eq!((&key.scope, &key.value), (&value.scope, &value.value));
            last.insert(key, value);
        }
        last
    }

    /// Waits until the last sums equal `expected` (keys not expected must be at 0), or panics
    /// after `within` showing the difference.
    pub async fn await_sums(&self, expected: &BTreeMap<ListingSumKey, Figures>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = figures(&self.last_sums().await);
            if &got == expected {
                return;
            }
            if Instant::now() > deadline {
                let wrong: Vec<_> = expected
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(*v))
                    .map(|(k, v)| {
                        format!(
                            "{}={}: expected {v:?}, got {:?}",
                            k.scope,
                            k.value,
                            got.get(k)
                        )
                    })
                    .chain(
                        got.keys()
                            .filter(|k| !expected.contains_key(*k))
                            .map(|k| format!("unexpected {k:?}")),
                    )
                    .collect();
                panic!(
                    "the sums did not converge within {within:?}:\n{}",
                    wrong.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The input offsets the pipeline's group has committed, summed over the input partitions
    /// (0 for a partition without one): how many input records its commits cover.
    pub async fn committed(&self) -> i64 {
        let servers = self.cluster.config.kafka.bootstrap_servers.clone();
        let (topic, group) = (self.input.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            // Asks the group coordinator only: the group is not joined.
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .create()
                .unwrap();
            until_answered(&format!("reading the offsets of {group}"), || {
                let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
                let mut tpl = TopicPartitionList::new();
                for p in 0..metadata.topics()[0].partitions().len() {
                    tpl.add_partition(&topic, p as i32);
                }
                let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
                Ok(committed
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    })
                    .sum())
            })
        })
        .await
        .unwrap()
    }

    /// The end offsets of `topic`, summed over its partitions: with `read_committed`, where a
    /// `read_committed` reader's view ends (before the first open transaction); without,
    /// everything written, open transactions included.
    pub async fn end_offsets(&self, topic: &str, read_committed: bool) -> i64 {
        let servers = self.cluster.config.kafka.bootstrap_servers.clone();
        let topic = topic.to_owned();
        let isolation = if read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("group.id", unique("watermarks"))
                .set("isolation.level", isolation)
                .create()
                .unwrap();
            until_answered(&format!("reading the end offsets of {topic}"), || {
                let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
                (0..metadata.topics()[0].partitions().len())
                    .map(|p| {
                        consumer
                            .fetch_watermarks(&topic, p as i32, Duration::from_secs(10))
                            .map(|(_, high)| high)
                    })
                    .sum::<KafkaResult<i64>>()
            })
        })
        .await
        .unwrap()
    }

    /// How many times each version occurs on the affordable topic, read `read_committed`.
    pub async fn forwarded_versions(&self) -> BTreeMap<VersionId, usize> {
        let mut forwarded = BTreeMap::new();
        for (_, value) in read_all(&self.cluster, &self.affordable).await {
            let l: Listing = self.codec.decode(&value).await.unwrap();
            *forwarded
                .entry((l.product_id, l.price, l.category_level1))
                .or_default() += 1;
        }
        forwarded
    }

    /// Asserts that the affordable topic holds every accepted version of `ops`: exactly as
    /// often as the workload has it under `exactly_once`, at least as often under `changelog`.
    pub async fn assert_forwarded(&self, ops: &[Op], guarantee: Guarantee) {
        let accepted = accepted_versions(ops);
        let forwarded = self.forwarded_versions().await;
        let missing: Vec<_> = accepted
            .iter()
            .filter(|(v, n)| forwarded.get(*v).copied().unwrap_or(0) < **n)
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "accepted listings never forwarded (first 10, with their count in the input): \
             {missing:?}"
        );
        if guarantee == Guarantee::ExactlyOnce {
            let extra: Vec<_> = forwarded
                .iter()
                .filter(|(v, n)| accepted.get(*v).copied().unwrap_or(0) != **n)
                .take(10)
                .collect();
            let total: usize = forwarded.values().sum();
            assert!(
                extra.is_empty(),
                "under exactly_once {total} listings were forwarded for {} accepted; forwarded \
                 more often than accepted, or never accepted (first 10, with their count on the \
                 topic): {extra:?}",
                accepted.values().sum::<usize>()
            );
        }
    }
}

/// How many times each accepted version (priced at most 1,000,000) occurs in the workload.
pub fn accepted_versions(ops: &[Op]) -> BTreeMap<VersionId, usize> {
    let mut accepted = BTreeMap::new();
    for op in ops {
        if let Op::Version(l) = op
            && l.price.is_some_and(|p| p <= 1_000_000)
        {
            *accepted
                .entry((l.product_id, l.price, l.category_level1.clone()))
                .or_default() += 1;
        }
    }
    accepted
}

/// The figures of the sums whose count is not 0.
pub fn figures(sums: &BTreeMap<ListingSumKey, ListingSum>) -> BTreeMap<ListingSumKey, Figures> {
    sums.iter()
        .filter(|(_, s)| s.count != 0 || s.sum != 0 || s.min.is_some() || s.max.is_some())
        .map(|(k, s)| (k.clone(), (s.count, s.sum, s.min, s.max)))
        .collect()
}

/// Every record of `topic` now, as (key, value) bytes, in partition order.
pub async fn read_all(cluster: &Cluster, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let servers = cluster.config.kafka.bootstrap_servers.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // Only what committed transactions wrote (and everything written without one).
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let partitions = metadata.topics()[0].partitions().len();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p as i32, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        // Partitions read to their end (a partition may report its end more than once).
        let mut ended = std::collections::BTreeSet::new();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ended.len() < partitions {
            assert!(
                Instant::now() < deadline,
                "reading {topic} took over a minute"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let (Some(k), Some(v)) = (m.key(), m.payload()) {
                        records.push((k.to_vec(), v.to_vec()));
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                // The cluster is shared: a broker may be restarting, and the client recovers
                // (the deadline above catches one that does not).
                Some(Err(e)) => eprintln!("reading {topic}: {e}; retrying"),
                None => {}
            }
        }
        records
    })
    .await
    .unwrap()
}

/// A free local port for an admin server.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops a child with SIGKILL and reaps it.
pub fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Sends `signal` (`"STOP"`, `"CONT"`, ...) to a child.
pub fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {} failed", child.id());
}

/// Starts `command` with its stderr captured (and echoed unless `STREAMS_TEST_QUIET` is set),
/// and returns the child and a thread that yields the whole stderr once the child closed it.
pub fn start_capturing(mut command: Command) -> (Child, std::thread::JoinHandle<String>) {
    command.stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let echo = std::env::var_os("STREAMS_TEST_QUIET").is_none();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if echo {
                eprintln!("{line}");
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (child, reader)
}

/// Stops a child with SIGTERM and waits for its graceful exit.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}

/// The worker's `/status`, once its admin server answers.
pub async fn status(port: u16) -> Option<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// Input records the worker on `port` has read since it started (0 until it answers).
pub async fn records_in(port: u16) -> u64 {
    status(port)
        .await
        .and_then(|s| s["records_in"].as_u64())
        .unwrap_or(0)
}

/// Waits until the worker on `port` has read at least `n` input records, or `within` passes.
pub async fn await_records_in(port: u16, n: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if records_in(port).await >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The value of the metric line starting with `series` on the admin port `port`, if shown.
pub async fn metric(port: u16, series: &str) -> Option<f64> {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Waits until the metric `series` on `port` is at least `at_least`, returning it; panics after
/// a minute.
pub async fn await_metric(port: u16, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = metric(port, series).await
            && value >= at_least
        {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {at_least} within a minute (now {:?})",
            metric(port, series).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Produces `ops` in `chunks` pieces, `pause` apart, in the background.
pub fn produce_slowly(
    pipeline: std::sync::Arc<Pipeline>,
    ops: Vec<Op>,
    chunks: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let size = ops.len().div_ceil(chunks.max(1));
        for chunk in ops.chunks(size.max(1)) {
            pipeline.produce(chunk).await;
            tokio::time::sleep(pause).await;
        }
    })
}

/// Runs `ask` until it answers, for up to a minute, then panics naming `what`: the cluster is
/// shared, and a broker may be restarting.
fn until_answered<T>(what: &str, mut ask: impl FnMut() -> KafkaResult<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ask() {
            Ok(answer) => return answer,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}
