//! The real `sink` binary, killed with SIGKILL at 5 random points while consuming and restarted
//! each time: the table ends with exactly the distinct keys, each with its latest value (upsert),
//! or exactly one row per offset (insert with `pk_mode = "kafka"`): nothing lost, nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Env, listings};
use marketflow_core::record::Listing;
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::unique;

const KILLS: usize = 5;

/// A random number below `bound`, from the clock (enough to vary the kill points).
fn random_below(bound: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761)) % bound.max(1)
}

/// A free port on loopback for a child's admin server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config file with a short group session, so that the group notices a killed member within
/// seconds rather than librdkafka's default 45 s; everything else comes from `MARKETFLOW__`
/// variables.
fn session_config() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("sink-kill-config")));
    std::fs::write(
        &path,
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
    )
    .unwrap();
    path
}

struct Child {
    process: std::process::Child,
    admin: u16,
}

fn spawn_sink(
    env: &Env,
    vars: &[(&str, String)],
    config: &std::path::Path,
    log: &std::path::Path,
) -> Child {
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
    Child {
        process: command.spawn().expect("starting the sink binary"),
        admin,
    }
}

/// Records consumed by a child so far (0 while it starts).
async fn records_in(child: &Child) -> u64 {
    let url = format!("http://127.0.0.1:{}/status", child.admin);
    match reqwest::get(url).await {
        Ok(response) => response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|s| s["records_in"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Starts the sink, and five times: waits until it consumes, lets it run a random while, kills
/// it with SIGKILL and starts it again. Returns the last, running child.
async fn kill_five_times(
    env: &Env,
    table: &str,
    vars: &[(&str, String)],
    log: &std::path::Path,
) -> Child {
    let config = session_config();
    let mut child = spawn_sink(env, vars, &config, log);
    for kill in 0..KILLS {
        env.wait_for("the sink to consume", Duration::from_secs(90), || async {
            records_in(&child).await > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(random_below(1500))).await;
        child.process.kill().unwrap(); // SIGKILL
        child.process.wait().unwrap();
        eprintln!(
            "kill {}: SIGKILL with {} rows in the table",
            kill + 1,
            env.count(table).await
        );
        child = spawn_sink(env, vars, &config, log);
    }
    child
}

fn stop(mut child: Child) {
    let pid = child.process.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = child.process.wait().unwrap();
    assert!(exit.success(), "the sink exited with {exit} after SIGTERM");
}

/// Encodes `records` and produces them in chunks of `chunk`, pausing between chunks, so that the
/// sink is consuming while it is killed.
async fn produce_slowly(env: &Env, topic: &str, records: &[Listing], chunk: usize) {
    let keys = env.codec.encoder(topic, Part::Key, schema::LISTING_KEY);
    let values = env.codec.encoder(topic, Part::Value, schema::LISTING);
    let mut encoded = Vec::new();
    for listing in records {
        encoded.push((
            keys.encode(&listing.key()).await.unwrap(),
            Some(values.encode(listing).await.unwrap()),
        ));
    }
    for part in encoded.chunks(chunk) {
        env.produce_raw(topic, part).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn upserts_survive_five_sigkills_with_every_key_at_its_latest_value() {
    let env = Env::new("kill_upsert").await;
    let topic = env.cluster.topic("sink-kill-upsert", 3).await;
    let table = topic.replace('-', "_");
    // 1,500 keys in windows of 50, each key written 4 times (different values) within its
    // window: 6,000 records, new keys arriving until the end.
    let base = listings(1_500, 3);
    let versions: Vec<Vec<Listing>> = (0..4).map(|v| listings(1_500, 100 + v)).collect();
    let mut sent = Vec::new();
    for window in base.chunks(50).enumerate() {
        let (w, keys) = window;
        for version in &versions {
            for (i, key) in keys.iter().enumerate() {
                let mut listing = version[w * 50 + i].clone();
                listing.product_id = key.product_id;
                sent.push(listing);
            }
        }
    }
    let latest: BTreeMap<i64, Listing> = sent.iter().map(|l| (l.product_id, l.clone())).collect();

    let log = std::env::temp_dir().join(format!("{}.log", unique("sink-kill-upsert")));
    let vars = [
        ("MARKETFLOW__SINK__TOPICS", format!("[{topic}]")),
        ("MARKETFLOW__SINK__GROUP_ID", unique("sink-kill-group")),
        (
            "MARKETFLOW__SINK__DEAD_LETTER_TOPIC",
            unique("sink-kill-dlq"),
        ),
    ];
    let (child, ()) = tokio::join!(
        kill_five_times(&env, &table, &vars, &log),
        produce_slowly(&env, &topic, &sent, 150)
    );
    env.wait_for(
        "every key at its latest value",
        Duration::from_secs(180),
        || async { env.listing_rows(&table).await == latest },
    )
    .await;
    stop(child);
    assert_eq!(env.count(&table).await, 1_500);
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn inserts_keyed_by_offset_survive_five_sigkills_without_duplicates() {
    let env = Env::new("kill_insert").await;
    let topic = env.cluster.topic("sink-kill-insert", 3).await;
    let table = topic.replace('-', "_");
    let sent = listings(5_000, 4);

    let log = std::env::temp_dir().join(format!("{}.log", unique("sink-kill-insert")));
    let vars = [
        ("MARKETFLOW__SINK__TOPICS", format!("[{topic}]")),
        ("MARKETFLOW__SINK__GROUP_ID", unique("sink-kill-group")),
        (
            "MARKETFLOW__SINK__DEAD_LETTER_TOPIC",
            unique("sink-kill-dlq"),
        ),
        ("MARKETFLOW__SINK__INSERT_MODE", "insert".to_owned()),
        ("MARKETFLOW__SINK__PK_MODE", "kafka".to_owned()),
        ("MARKETFLOW__SINK__PK_FIELDS", "[]".to_owned()),
        ("MARKETFLOW__SINK__DELETE_ENABLED", "false".to_owned()),
    ];
    let (child, ()) = tokio::join!(
        kill_five_times(&env, &table, &vars, &log),
        produce_slowly(&env, &topic, &sent, 125)
    );
    env.wait_for_rows(&table, 5_000, Duration::from_secs(180))
        .await;
    // Give a re-delivery (if any) the chance to show up as an extra row before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(child);
    assert_eq!(env.count(&table).await, 5_000);
    let per_offset: Vec<(String, i32, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT __connect_topic, __connect_partition, __connect_offset, COUNT(*) FROM `{table}` \
         GROUP BY 1, 2, 3 HAVING COUNT(*) > 1"
    )))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(per_offset.is_empty(), "duplicate offsets: {per_offset:?}");
    let products: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(DISTINCT product_id) FROM `{table}`"
    )))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(products, 5_000, "a record is missing");
    env.drop_database().await;
}
