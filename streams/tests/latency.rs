//! The real `streams` binary against the local cluster: `streams_end_to_end_latency_seconds`
//! times the input records whose change to the state became durable, under either guarantee.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::Duration;

use support::{
    Guarantee, Pipeline, await_metric, expected_distinct, free_port, metric, terminate, workload,
};

const COUNT: &str = "streams_end_to_end_latency_seconds_count";
const SUM: &str = "streams_end_to_end_latency_seconds_sum";

/// Runs 300 records through `streams` under `guarantee` and checks that, once the sums are
/// exact, some of them were timed, none twice, and none before it was read.
async fn state_changes_are_timed(prefix: &str, guarantee: Guarantee) {
    let pipeline = Pipeline::new(prefix).await;
    let ops = workload(300, 17);
    pipeline.produce(&ops).await;
    let port = free_port();
    let mut streams = pipeline.start(port, &guarantee.env());
    pipeline
        .await_sums(&expected_distinct(&ops), Duration::from_secs(120))
        .await;
    let timed = await_metric(port, COUNT, 1.0).await;
    #[allow(clippy::cast_precision_loss)] // 300
    let records = ops.len() as f64;
    assert!(timed <= records, "{timed} records timed, {records} read");
    let seconds = metric(port, SUM).await.unwrap();
    assert!(seconds >= 0.0, "the timed records took {seconds} s in all");
    assert!(
        terminate(&mut streams).success(),
        "streams did not stop cleanly on SIGTERM"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn under_changelog_a_change_is_timed_when_its_changelog_record_is_delivered() {
    state_changes_are_timed("streams-latency-changelog", Guarantee::Changelog).await;
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn under_exactly_once_a_change_is_timed_when_its_transaction_commits() {
    state_changes_are_timed("streams-latency-eos", Guarantee::ExactlyOnce).await;
}
