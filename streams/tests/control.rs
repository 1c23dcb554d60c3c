//! Runtime control and start-up refusals of the real `streams` binary against the local cluster:
//! pause stops reading, a replay request is refused and leaves the final sums unchanged, and
//! `exactly_once` on brokers without transactions exits saying so and naming the other mode.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{
    Pipeline, await_records_in, expected_distinct, free_port, records_in, status, terminate,
    workload,
};

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn exactly_once_on_brokers_without_transactions_exits_saying_so() {
    let pipeline = Pipeline::new("streams-eos").await;
    let mut command = pipeline.command(
        free_port(),
        &[("MARKETFLOW__STREAMS__GUARANTEE", "exactly_once")],
    );
    command.stderr(Stdio::piped());
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || command.output().unwrap()),
    )
    .await
    .expect("streams under exactly_once kept running on brokers without transactions")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("needs Kafka transactions"), "{stderr}");
    assert!(stderr.contains("refuse them"), "{stderr}");
    assert!(
        stderr.contains("streams.guarantee = \"changelog\""),
        "the message should name the other mode: {stderr}"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn pause_stops_reading_and_a_refused_replay_leaves_the_sums_exact() {
    let pipeline = Pipeline::new("streams-control").await;
    let ops = workload(6_000, 6);
    let (first, second) = ops.split_at(3_000);
    pipeline.produce(first).await;
    let port = free_port();
    let mut streams = pipeline.start(port, &[]);
    assert!(await_records_in(port, 3_000, Duration::from_secs(60)).await);

    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let paused: serde_json::Value = http
        .post(url("/pause"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = records_in(port).await;
    pipeline.produce(second).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        records_in(port).await,
        before,
        "records were read while paused"
    );
    assert_eq!(status(port).await.unwrap()["paused"], true);

    let replay = http.post(url("/replay")).send().await.unwrap();
    assert_eq!(replay.status(), reqwest::StatusCode::CONFLICT);
    let body: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(body["replayed"], false);
    assert!(body["reason"].as_str().unwrap().contains("double-count"));

    http.post(url("/resume")).send().await.unwrap();
    pipeline
        .await_sums(&expected_distinct(&ops), Duration::from_secs(90))
        .await;
    let status = status(port).await.unwrap();
    assert_eq!(status["paused"], false);
    assert_eq!(status["semantics"], "distinct");
    assert!(terminate(&mut streams).success());
}
