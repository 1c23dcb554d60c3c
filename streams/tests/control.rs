//! Runtime control of the real `streams` binary against the local cluster: pause stops reading,
//! and a replay request is refused and leaves the final sums unchanged.
//!
//! The start-up refusal of `exactly_once` on brokers without transactions (`output.rs`) has no
//! test here: the local cluster's brokers have transactions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::Duration;

use support::{
    Pipeline, await_records_in, expected_distinct, free_port, records_in, status, terminate,
    workload,
};

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
    // The admin server takes a mutating request only as JSON (core::admin).
    let post = |path: &str| {
        http.post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
    };
    let paused: serde_json::Value = post("/pause").send().await.unwrap().json().await.unwrap();
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

    let replay = post("/replay").send().await.unwrap();
    assert_eq!(replay.status(), reqwest::StatusCode::CONFLICT);
    let body: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(body["replayed"], false);
    assert!(body["reason"].as_str().unwrap().contains("double-count"));

    post("/resume").send().await.unwrap();
    pipeline
        .await_sums(&expected_distinct(&ops), Duration::from_secs(90))
        .await;
    let status = status(port).await.unwrap();
    assert_eq!(status["paused"], false);
    assert_eq!(status["semantics"], "distinct");
    assert!(terminate(&mut streams).success());
}
