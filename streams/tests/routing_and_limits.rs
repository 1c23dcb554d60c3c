//! The real `streams` binary against the local cluster, on input its guarantees do not cover:
//! one product in two input partitions (counted in each under `distinct`, and reported as
//! misrouted), and a listing too large for the affordable topic (dropped as `unsendable`, the
//! program running on and every other sum exact).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::Duration;

use marketflow_core::record::ListingSumKey;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use support::{
    Op, Pipeline, Rng, await_metric, expected_distinct, free_port, listing, terminate, workload,
};

/// Kills the `streams` child when the test ends, failed or not.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The record count of each partition of `topic`.
async fn partition_counts(pipeline: &Pipeline, topic: &str) -> Vec<i64> {
    let servers = pipeline.cluster.config.kafka.bootstrap_servers.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create()
            .unwrap();
        (0..3)
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap();
                high - low
            })
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_product_in_two_partitions_is_counted_in_each_and_reported_as_misrouted() {
    let pipeline = Pipeline::new("streams-misrouted").await;
    // 200 records where our producers' partitioner puts them: none is misrouted.
    let mut ops = workload(200, 7);
    pipeline.produce(&ops).await;
    // A product first where the partitioner puts it, then a newer version in another partition,
    // as a producer with another partitioner, or one choosing partitions, would write it.
    let mut rng = Rng::new(3);
    let first = listing(&mut rng, 900_001, Some(100));
    let before = partition_counts(&pipeline, &pipeline.input).await;
    pipeline.produce(&[Op::Version(first.clone())]).await;
    let after = partition_counts(&pipeline, &pipeline.input).await;
    let home = (0..3).find(|p| after[*p] > before[*p]).unwrap();
    let elsewhere = i32::try_from((home + 1) % 3).unwrap();
    let mut second = first.clone();
    second.price = Some(200);
    pipeline
        .produce_to(&[Op::Version(second.clone())], Some(elsewhere))
        .await;

    let port = free_port();
    let mut streams = Running(pipeline.start(port, &[]));
    // Under distinct the documented outcome: each partition counts the version it holds.
    ops.push(Op::Version(first));
    let mut expected = expected_distinct(&ops);
    let all = ListingSumKey {
        scope: "all".into(),
        value: "all".into(),
    };
    let category = ListingSumKey {
        scope: "category_level1".into(),
        value: second
            .category_level1
            .clone()
            .unwrap_or_else(|| "unknown".into()),
    };
    for key in [all, category] {
        let figures = expected.entry(key).or_insert((0, 0, None, None));
        figures.0 += 1;
        figures.1 += 200;
        figures.2 = Some(figures.2.map_or(200, |m| m.min(200)));
        figures.3 = Some(figures.3.map_or(200, |m| m.max(200)));
    }
    pipeline
        .await_sums(&expected, Duration::from_secs(120))
        .await;
    // The one record placed by hand is reported; the 201 the partitioner placed are not.
    let misrouted = await_metric(port, "streams_records_misrouted_total", 1.0).await;
    assert!(
        (misrouted - 1.0).abs() < f64::EPSILON,
        "{misrouted} records reported misrouted, 1 was"
    );
    assert!(
        terminate(&mut streams.0).success(),
        "streams did not stop cleanly on SIGTERM"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_listing_too_large_for_the_affordable_topic_is_dropped_as_unsendable() {
    let pipeline = Pipeline::new("streams-unsendable").await;
    // The affordable topic takes smaller records than the input topic does.
    pipeline
        .cluster
        .set_topic_config(&pipeline.affordable, "max.message.bytes", "20000")
        .await;

    let ops = workload(2_000, 11);
    let mut rng = Rng::new(5);
    let mut large = listing(&mut rng, 800_001, Some(500_000));
    large.description = "가".repeat(15_000); // 45,000 bytes: fine for the input, not onward
    let mut with_large = ops[..1_000].to_vec();
    with_large.push(Op::Version(large));
    with_large.extend_from_slice(&ops[1_000..]);
    pipeline.produce(&with_large).await;

    let port = free_port();
    let mut streams = Running(pipeline.start(port, &[]));
    // Every other sum exact; the large listing in none.
    pipeline
        .await_sums(&expected_distinct(&ops), Duration::from_secs(120))
        .await;
    let dropped = await_metric(
        port,
        "streams_records_dropped_total{reason=\"unsendable\"}",
        1.0,
    )
    .await;
    assert!((dropped - 1.0).abs() < f64::EPSILON, "{dropped} unsendable");
    assert!(
        streams.0.try_wait().unwrap().is_none(),
        "streams exited on a record it cannot send"
    );
    pipeline
        .assert_forwarded(&ops, support::Guarantee::Changelog)
        .await;
    let forwarded = pipeline.forwarded_versions().await;
    assert!(
        !forwarded.keys().any(|(id, ..)| *id == 800_001),
        "the large listing was forwarded"
    );
    assert!(
        terminate(&mut streams.0).success(),
        "streams did not stop cleanly on SIGTERM"
    );
}
