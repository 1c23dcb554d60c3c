//! The database unreachable for 20 s mid-stream (mariadbd stopped with SIGSTOP, then continued):
//! the sink backs off with consumption paused, resumes, and ends exact; at no point is an offset
//! committed past a row that is not in the table. In its own test binary, because it stops the
//! shared MariaDB.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{Env, Running, listings};
use marketflow_core::config::{InsertMode, PkMode};
use marketflow_core::kafka::consumer_config;
use marketflow_core::testkit::cluster_dir;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const OUTAGE: Duration = Duration::from_secs(20);

/// Continues mariadbd when dropped, even when the test panics.
struct Continue(String);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// The group's committed offset per partition (0 when none).
fn committed(client: &BaseConsumer, topic: &str) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(topic, p);
    }
    client
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            (e.partition(), offset)
        })
        .collect()
}

/// Asserts that every offset below the group's committed one is a row. The offsets are read
/// first: a row whose offset was committed was in the table before, so it must be found.
async fn assert_nothing_committed_past_the_table(env: &Env, client: &BaseConsumer, topic: &str) {
    let table = topic.replace('-', "_");
    let offsets = committed(client, topic);
    for (partition, offset) in offsets {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM `{table}` WHERE __connect_partition = ? AND __connect_offset < ?"
        )))
        .bind(partition)
        .bind(offset)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(0);
        assert_eq!(
            rows, offset,
            "partition {partition}: offset {offset} committed but only {rows} rows below it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn the_sink_backs_off_through_a_20_second_database_outage_and_ends_exact() {
    let env = Env::new("outage").await;
    let topic = env.cluster.topic("sink-outage", 3).await;
    let table = topic.replace('-', "_");
    let mut config = env.config(&[&topic]);
    config.sink.insert_mode = InsertMode::Insert;
    config.sink.pk_mode = PkMode::Kafka;
    config.sink.pk_fields = vec![];
    config.sink.delete_enabled = false;
    config.sink.batch_size = 100;
    config.sink.write_timeout = Duration::from_secs(3);
    config.sink.max_retries = 40;
    let group = config.sink.group_id.clone();
    let client: BaseConsumer = consumer_config(&env.cluster.config.kafka, &group)
        .unwrap()
        .create()
        .unwrap();

    let sent = listings(3_000, 5);
    env.produce_listings(&topic, &sent[..1_000]).await;
    let sink = Running::start(&config).await;
    env.wait_for_rows(&table, 1_000, Duration::from_secs(60))
        .await;
    assert_nothing_committed_past_the_table(&env, &client, &topic).await;

    let pid = std::fs::read_to_string(cluster_dir().join("pids/mariadb.pid"))
        .unwrap()
        .trim()
        .to_owned();
    signal(&pid, "-STOP");
    let guard = Continue(pid.clone());
    let stopped_at = tokio::time::Instant::now();
    // Records keep arriving while the database is away.
    env.produce_listings(&topic, &sent[1_000..2_000]).await;
    env.wait_for("the sink to back off", OUTAGE, || async {
        sink.status().await["state"] == "backing_off"
    })
    .await;
    let during = committed(&client, &topic);
    tokio::time::sleep_until(stopped_at + OUTAGE).await;
    assert_eq!(
        committed(&client, &topic),
        during,
        "offsets moved while the database was unreachable"
    );
    let status = sink.status().await;
    assert_eq!(status["state"], "backing_off", "{status}");
    assert!(status["last_error"].is_string(), "{status}");
    signal(&pid, "-CONT");
    drop(guard);

    assert_nothing_committed_past_the_table(&env, &client, &topic).await;
    env.produce_listings(&topic, &sent[2_000..]).await;
    env.wait_for_rows(&table, 3_000, Duration::from_secs(120))
        .await;
    env.wait_for("the sink to run again", Duration::from_secs(30), || async {
        sink.status().await["state"] == "running"
    })
    .await;
    sink.stop().await.unwrap();
    assert_nothing_committed_past_the_table(&env, &client, &topic).await;
    assert_eq!(committed(&client, &topic).values().sum::<i64>(), 3_000);
    let products: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(DISTINCT product_id) FROM `{table}`"
    )))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(products, 3_000);
    env.drop_database().await;
}
