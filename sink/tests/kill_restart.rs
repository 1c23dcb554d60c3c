//! The real `sink` binary, killed with SIGKILL at 5 random points while consuming and restarted
//! each time: the table ends with exactly the distinct keys, each with its latest value (upsert),
//! or exactly one row per offset (insert with `pk_mode = "kafka"`): nothing lost, nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{
    Env, SinkProcess, child_vars, latest_by_product, listings, log_file, random_below,
    rewritten_in_windows, session_config,
};

const KILLS: usize = 5;

/// Starts the sink, and five times: waits until it consumes, lets it run a random while, kills
/// it with SIGKILL and starts it again. Returns the last, running child.
async fn kill_five_times(
    env: &Env,
    table: &str,
    vars: &[(&str, String)],
    log: &std::path::Path,
) -> SinkProcess {
    let config = session_config("sink-kill-config");
    let mut child = SinkProcess::start(env, vars, &config, log);
    for kill in 0..KILLS {
        env.wait_for("the sink to consume", Duration::from_secs(90), || async {
            child.records_in().await > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(random_below(1500))).await;
        child.kill(); // SIGKILL
        eprintln!(
            "kill {}: SIGKILL with {} rows in the table",
            kill + 1,
            env.count(table).await
        );
        child = SinkProcess::start(env, vars, &config, log);
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn upserts_survive_five_sigkills_with_every_key_at_its_latest_value() {
    let env = Env::new("kill_upsert").await;
    let topic = env.cluster.topic("sink-kill-upsert", 3).await;
    let table = topic.replace('-', "_");
    // 1,500 keys in windows of 50, each key written 4 times (different values) within its
    // window: 6,000 records, new keys arriving until the end.
    let sent = rewritten_in_windows(1_500, 3, 100);
    let latest = latest_by_product(&sent);

    let log = log_file("sink-kill-upsert");
    let vars = child_vars(&topic, "sink-kill");
    let (child, ()) = tokio::join!(
        kill_five_times(&env, &table, &vars, &log),
        env.produce_slowly(&topic, &sent, 150, Duration::from_millis(1000))
    );
    env.wait_for_latest(&table, &latest, Duration::from_secs(180))
        .await;
    // The last record again (its key's latest value: the table stays the same), so that the
    // last sink surely writes a row, which it times from the record's timestamp to its commit
    // (a summary: `_count` records timed, `_sum` their seconds).
    let last = sent.last().cloned().into_iter().collect::<Vec<_>>();
    env.produce_listings(&topic, &last).await;
    env.wait_for(
        "the last sink to time a row",
        Duration::from_secs(60),
        || async {
            child
                .metric("sink_end_to_end_latency_seconds_count")
                .await
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
    let seconds = child.metric("sink_end_to_end_latency_seconds_sum").await;
    assert!(seconds.is_some_and(|s| s >= 0.0), "seconds: {seconds:?}");
    child.stop();
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

    let log = log_file("sink-kill-insert");
    let mut vars = child_vars(&topic, "sink-kill");
    vars.extend([
        ("MARKETFLOW__SINK__INSERT_MODE", "insert".to_owned()),
        ("MARKETFLOW__SINK__PK_MODE", "kafka".to_owned()),
        ("MARKETFLOW__SINK__PK_FIELDS", "[]".to_owned()),
        ("MARKETFLOW__SINK__DELETE_ENABLED", "false".to_owned()),
    ]);
    let (child, ()) = tokio::join!(
        kill_five_times(&env, &table, &vars, &log),
        env.produce_slowly(&topic, &sent, 125, Duration::from_millis(1000))
    );
    env.wait_for_rows(&table, 5_000, Duration::from_secs(180))
        .await;
    // Give a re-delivery (if any) the chance to show up as an extra row before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.stop();
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
