//! Two of the three Kafka nodes stopped under a `scraper --once` crawl: with `acks=all` and
//! `min.insync.replicas=2` the brokers refuse its writes, and the scraper says so, naming the
//! partitions short of in-sync replicas and what to run, rather than librdkafka's bare "message
//! timed out"; once a node is back, a second run resumes the crawl and every listing is on the
//! topic exactly once. In a test binary of its own: it stops brokers of the shared local cluster,
//! and brings them back even when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::{Duration, Instant};

use marketflow_core::replicas;
use marketflow_core::testkit::{Restore, cluster_script};
use support::{Bench, IDS, MARKET_ARGS};

/// The nodes stopped; node 3 stays up.
const STOPPED: [&str; 2] = ["1", "2"];

/// Runs `scripts/cluster.sh` with `args` on a blocking thread.
async fn cluster(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster_script(&args);
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn with_two_brokers_down_the_crawl_says_why_it_fails_and_a_rerun_loses_nothing() {
    let Bench {
        cluster: kafka_cluster,
        market,
        topics,
    } = Bench::start(MARKET_ARGS).await;
    let _restore = Restore;
    let (from, to) = IDS;
    // Paced so that the outage comes mid-crawl; librdkafka gives a delivery up after 15 s
    // rather than its default 5 minutes.
    let extra = [
        ("MARKETFLOW__SCRAPER__MAX_REQUESTS_PER_SEC", "150"),
        ("MARKETFLOW__KAFKA__PROPERTIES__MESSAGE_TIMEOUT_MS", "15000"),
    ];
    let first = support::once_command(&market, &topics, &extra, (from, to));
    let (crawl, produced) = support::crawl_until_listed(
        first,
        &kafka_cluster.config,
        &topics.listings,
        200,
        "the outage",
    )
    .await;
    eprintln!("stopping Kafka nodes {STOPPED:?} after {produced} listings");
    for node in STOPPED {
        cluster(&["stop-broker", node]).await;
    }
    assert!(
        !crawl.is_finished(),
        "the crawl ended before the nodes had stopped: no outage mid-crawl"
    );

    // The first run fails, saying why and what to do, after saying why its deliveries wait.
    let out = tokio::time::timeout(Duration::from_secs(300), crawl)
        .await
        .expect("the crawl neither failed nor finished within 5 minutes of the outage")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("the first run's standard error:\n{stderr}");
    assert!(
        !out.status.success(),
        "the crawl succeeded with two of three brokers down"
    );
    let last = stderr.lines().last().unwrap_or_default();
    for part in [
        "scraper: cannot produce to topic",
        "not enough in-sync replicas",
        "fewer than min.insync.replicas=2",
        "run scripts/cluster.sh status",
        "run the crawl again to resume it",
    ] {
        assert!(
            last.contains(part),
            "{part:?} missing from the error: {last}"
        );
    }
    assert!(
        stderr.contains("Deliveries wait: not enough in-sync replicas"),
        "no warning while the deliveries waited"
    );

    // One node back: two replicas in sync again everywhere the crawl writes.
    cluster(&["start-broker", STOPPED[0]]).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    for topic in [&topics.listings, &topics.events, &topics.checkpoints] {
        loop {
            match replicas::shortage(&kafka_cluster.config.kafka, topic).await {
                Ok(None) => break,
                Ok(Some(shortage)) => eprintln!("{topic}: {shortage}"),
                Err(error) => eprintln!("{topic}: {error}"),
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not get two in-sync replicas back within 3 minutes"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // The second run resumes the crawl: every listing exactly once.
    support::assert_rerun_resumes(&kafka_cluster.config, &market, &topics, (from, to), "rerun")
        .await;
    cluster(&["start-broker", STOPPED[1]]).await;
}
