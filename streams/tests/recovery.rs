//! Crash recovery and rebalancing of the real `streams` binary against the local cluster: killed
//! with SIGKILL at 10 random points and restarted each time, and two instances in one group with
//! one killed and restarted mid-run; the last sums still equal the independent computation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use marketflow_core::record::Listing;
use support::{
    Op, Pipeline, Rng, await_records_in, expected_distinct, free_port, kill, produce_slowly,
    read_all, status, terminate, workload,
};

fn seed() -> u64 {
    let seed = std::env::var("STREAMS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (STREAMS_TEST_SEED={seed} replays this run)");
    seed
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn killed_at_ten_random_points_and_restarted_the_sums_stay_exact() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let pipeline = Arc::new(Pipeline::new("streams-kill").await);
    let ops = workload(12_000, seed);
    let expected = expected_distinct(&ops);
    let producer = produce_slowly(
        pipeline.clone(),
        ops.clone(),
        24,
        Duration::from_millis(1_500),
    );

    let port = free_port();
    for kill_no in 1..=10 {
        let mut streams = pipeline.start(port, &[]);
        // Most kills land mid-processing (after a random share of records), some while the
        // worker is still starting, joining or restoring.
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(200 + rng.below(3_000))).await;
        } else {
            let reached =
                await_records_in(port, 1 + rng.below(1_500), Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            eprintln!("kill {kill_no}: processing reached: {reached}");
        }
        kill(&mut streams);
    }
    producer.await.unwrap();
    let mut streams = pipeline.start(port, &[]);
    pipeline
        .await_sums(&expected, Duration::from_secs(120))
        .await;
    assert!(terminate(&mut streams).success());

    // Every accepted version reached the affordable topic at least once, kills or not.
    let accepted: BTreeSet<(i64, Option<i64>, Option<String>)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Version(l) if l.price.is_some_and(|p| p <= 1_000_000) => {
                Some((l.product_id, l.price, l.category_level1.clone()))
            }
            _ => None,
        })
        .collect();
    let mut forwarded = BTreeSet::new();
    for (_, value) in read_all(&pipeline.cluster, &pipeline.affordable).await {
        let l: Listing = pipeline.codec.decode(&value).await.unwrap();
        forwarded.insert((l.product_id, l.price, l.category_level1));
    }
    let missing: Vec<_> = accepted.difference(&forwarded).take(10).collect();
    assert!(
        missing.is_empty(),
        "accepted listings never forwarded (first 10): {missing:?}"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn two_instances_with_one_killed_and_restarted_mid_run_stay_exact() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let pipeline = Arc::new(Pipeline::new("streams-pair").await);
    let ops = workload(10_000, seed);
    let expected = expected_distinct(&ops);
    let producer = produce_slowly(pipeline.clone(), ops, 20, Duration::from_millis(1_000));

    let (port_a, port_b) = (free_port(), free_port());
    let mut a = pipeline.start(port_a, &[]);
    let mut b = pipeline.start(port_b, &[]);
    // Wait until the group has split the input between the two.
    let mut split = false;
    for _ in 0..120 {
        let owned = |s: Option<serde_json::Value>| {
            s.and_then(|s| s["partitions"].as_object().map(|p| p.len()))
                .unwrap_or(0)
        };
        let (in_a, in_b) = (owned(status(port_a).await), owned(status(port_b).await));
        if in_a > 0 && in_b > 0 && in_a + in_b == 3 {
            split = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        split,
        "the two instances never split the 3 input partitions"
    );
    assert!(await_records_in(port_a, 1, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(rng.below(2_000))).await;
    kill(&mut a);
    // B takes A's partitions over (after A's session times out), then A comes back.
    tokio::time::sleep(Duration::from_millis(3_000 + rng.below(6_000))).await;
    let mut a = pipeline.start(port_a, &[]);
    producer.await.unwrap();
    pipeline
        .await_sums(&expected, Duration::from_secs(120))
        .await;
    assert!(terminate(&mut a).success());
    assert!(terminate(&mut b).success());
}
