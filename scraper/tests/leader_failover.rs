//! A `scraper --once` crawl whose partition leader is stopped mid-crawl (a controlled shutdown of
//! that Kafka node, `scripts/cluster.sh stop-broker N`): leadership moves to another replica and
//! the crawl completes with exactly the listings the market's truth expects, none lost, none
//! twice. In a test binary of its own: it stops a broker of the shared local cluster, and brings
//! it back even when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::{Duration, Instant};

use marketflow_core::testkit::{Cluster, Restore, cluster_script};
use rdkafka::consumer::Consumer;
use support::{Bench, IDS, MARKET_ARGS};

/// The node leading `partition` of `topic`, as the cluster's metadata says now.
async fn leader(cluster: &Cluster, topic: &str, partition: i32) -> i32 {
    support::with_consumer(
        &cluster.config,
        "leader-probe",
        topic,
        move |consumer, topic| {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .unwrap();
            metadata.topics()[0]
                .partitions()
                .iter()
                .find(|p| p.id() == partition)
                .unwrap()
                .leader()
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_crawl_whose_partition_leader_stops_mid_crawl_yields_every_listing_once() {
    let Bench {
        cluster,
        market,
        topics,
    } = Bench::start(MARKET_ARGS).await;
    let node = leader(&cluster, &topics.listings, 0).await;
    let _restore = Restore;
    let (from, to) = IDS;
    // Paced so that the crawl goes on well after the node's controlled shutdown (seconds).
    let extra = [("MARKETFLOW__SCRAPER__MAX_REQUESTS_PER_SEC", "150")];
    let command = support::once_command(&market, &topics, &extra, (from, to));

    // Once listings flow, the node leading partition 0 stops.
    let (crawl, produced) =
        support::crawl_until_listed(command, &cluster.config, &topics.listings, 200, "the stop")
            .await;
    eprintln!("stopping Kafka node {node}, the leader of partition 0, after {produced} listings");
    let stop = node.to_string();
    tokio::task::spawn_blocking(move || cluster_script(&["stop-broker", &stop]))
        .await
        .unwrap();
    assert!(
        !crawl.is_finished(),
        "the crawl ended before node {node} had stopped: not a failover mid-crawl"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader(&cluster, &topics.listings, 0).await == node {
        assert!(
            Instant::now() < deadline,
            "partition 0 still names stopped node {node} its leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = crawl.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the crawl failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 failed"), "{stdout}");

    // Read back through the two nodes still up, then bring the third back.
    let truth = market.truth(from, to).await;
    let records = support::read_listings(&cluster.config, &topics.listings).await;
    support::assert_exactly_the_truth(&records, &truth);
    assert!(records.len() > 1800, "only {} listings", records.len());
    let start = node.to_string();
    tokio::task::spawn_blocking(move || cluster_script(&["start-broker", &start]))
        .await
        .unwrap();
}
