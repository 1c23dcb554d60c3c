//! Two real `sink` binaries in one consumer group share a topic's partitions through the brokers'
//! group coordination; one is killed with SIGKILL mid-run, the survivor takes its partitions over
//! once the group drops it, and the table ends exact: one row per product, equal to its latest
//! record.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    Env, SinkProcess, child_vars, latest_by_product, log_file, random_below, rewritten_in_windows,
    session_config,
};

/// Partitions of the topic: enough for each member to own several.
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn the_survivor_of_two_sinks_takes_the_killed_ones_partitions_and_the_table_is_exact() {
    let env = Env::new("rebalance").await;
    let topic = env.cluster.topic("sink-rebalance", PARTITIONS).await;
    let table = topic.replace('-', "_");
    // 1,200 keys in windows of 50, each written 4 times (different values) within its window:
    // 4,800 records, new keys arriving until the end.
    let sent = rewritten_in_windows(1_200, 5, 200);
    let latest = latest_by_product(&sent);

    let log = log_file("sink-rebalance");
    eprintln!("the sinks log to {}", log.display());
    let config = session_config("sink-rebalance-config");
    let vars = child_vars(&topic, "sink-rebalance");
    let produced = AtomicBool::new(false);
    let all: Vec<i64> = (0..i64::from(PARTITIONS)).collect();
    let members = async {
        let killed = SinkProcess::start(&env, &vars, &config, &log);
        let survivor = SinkProcess::start(&env, &vars, &config, &log);
        // The group splits the partitions between the two, and both write.
        env.wait_for(
            "the two sinks to split the partitions and consume",
            Duration::from_secs(90),
            || async {
                let (a, b) = (killed.partitions().await, survivor.partitions().await);
                let mut both: Vec<i64> = a.iter().chain(&b).copied().collect();
                both.sort_unstable();
                !a.is_empty()
                    && !b.is_empty()
                    && both == all
                    && killed.records_in().await > 0
                    && survivor.records_in().await > 0
            },
        )
        .await;
        // Killed once it has consumed a random number of records, between a batch or two and
        // about half of its share.
        let kill_after = 200 + random_below(1_000);
        env.wait_for(
            &format!("the first member to consume {kill_after} records"),
            Duration::from_secs(90),
            || async { killed.records_in().await >= kill_after },
        )
        .await;
        let taken = killed.partitions().await;
        let mut killed = killed;
        killed.kill(); // SIGKILL
        let mid_run = !produced.load(Ordering::SeqCst);
        eprintln!(
            "killed the member owning partitions {taken:?} after {kill_after} records, with {} \
             rows in the table",
            env.count(&table).await
        );
        // The group drops it when its session times out; the survivor owns everything then.
        env.wait_for(
            "the survivor to own every partition",
            Duration::from_secs(60),
            || async { survivor.partitions().await == all },
        )
        .await;
        (survivor, mid_run)
    };
    let produce = async {
        env.produce_slowly(&topic, &sent, 300, Duration::from_millis(700))
            .await;
        produced.store(true, Ordering::SeqCst);
    };
    let ((survivor, mid_run), ()) = tokio::join!(members, produce);
    assert!(mid_run, "the kill came after the last record was produced");
    env.wait_for_latest(&table, &latest, Duration::from_secs(180))
        .await;
    survivor.stop();
    assert_eq!(env.count(&table).await, 1_200);
    assert_eq!(env.listing_rows(&table).await, latest);
    env.drop_database().await;
}
