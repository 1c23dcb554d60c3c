//! The scraper's checkpoint topic, compacted by the brokers for real (`segment.ms=100`,
//! `min.cleanable.dirty.ratio=0.01`): a crawl killed with SIGKILL leaves many checkpoints of its
//! key, compaction removes all but the latest ones, and a restart resumes from what is left with
//! every listing on the topic exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::{Duration, Instant};

use marketflow_core::kafka::create_admin;
use marketflow_core::testkit::{Cluster, unique};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use support::{IDS, MARKET_ARGS, Market, Topics};

/// Creates the checkpoint topic as the scraper would (one partition, compacted), but with
/// settings under which the brokers compact within seconds: a segment rolls every 100 ms (on the
/// first record appended after that) and any dirty share makes the log cleanable.
async fn compacting_checkpoint_topic(cluster: &Cluster) -> String {
    let name = unique("scraper-checkpoints-compacted");
    let topic = [
        ("cleanup.policy", "compact"),
        ("segment.ms", "100"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "100"),
        ("min.compaction.lag.ms", "0"),
    ]
    .iter()
    .fold(
        NewTopic::new(&name, 1, TopicReplication::Fixed(3)),
        |topic, (key, value)| topic.set(key, value),
    );
    let admin = create_admin(&cluster.config.kafka).unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await.unwrap() {
        result.unwrap_or_else(|(topic, code)| panic!("cannot create topic {topic}: {code}"));
    }
    name
}

/// The offsets of the records of the (one-partition) topic `topic` now, and its high watermark.
async fn offsets(cluster: &Cluster, topic: &str) -> (Vec<i64>, i64) {
    support::with_consumer(
        &cluster.config,
        "checkpoint-reader",
        topic,
        |consumer, topic| {
            let timeout = Duration::from_secs(10);
            let (low, high) = consumer.fetch_watermarks(topic, 0, timeout).unwrap();
            let mut offsets = Vec::new();
            if high == low {
                return (offsets, high);
            }
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic, 0, Offset::Beginning)
                .unwrap();
            consumer.assign(&list).unwrap();
            while offsets.last().is_none_or(|last| last + 1 < high) {
                let message = consumer
                    .poll(Duration::from_secs(30))
                    .expect("the checkpoint topic stalled")
                    .unwrap();
                offsets.push(message.offset());
            }
            (offsets, high)
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_crawl_resumed_from_a_compacted_checkpoint_topic_yields_every_listing_once() {
    let cluster = Cluster::require().await;
    let market = Market::start(MARKET_ARGS).await;
    let topics = Topics {
        listings: cluster.topic("scraper-listings", 3).await,
        events: cluster.topic("scraper-events", 3).await,
        checkpoints: compacting_checkpoint_topic(&cluster).await,
    };
    let (from, to) = IDS;
    // Paced, and checkpointing every 20 ms: many checkpoints of one key, over many segments.
    let extra = [
        ("MARKETFLOW__SCRAPER__MAX_REQUESTS_PER_SEC", "200"),
        ("MARKETFLOW__SCRAPER__CHECKPOINT_INTERVAL", "20ms"),
    ];
    let kill_after = 600 + support::random_below(800);
    let first = support::once_command(&market, &topics, &extra, (from, to));
    support::kill_once_listed(first, &cluster.config, &topics.listings, kill_after).await;

    // The brokers compact the checkpoint topic: fewer records than were written, with gaps in
    // their offsets.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (left, written) = loop {
        let (left, written) = offsets(&cluster, &topics.checkpoints).await;
        if written > 20 && i64::try_from(left.len()).unwrap() * 4 < written {
            break (left, written);
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint topic was not compacted within 2 minutes: {} records left of \
             {written} written",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "killed after {kill_after} listings; checkpoints compacted: {} left of {written} written",
        left.len()
    );
    // The first checkpoints are gone (superseded by later ones of the same key), and what is
    // left is not one run of offsets from the start.
    assert!(
        !left.contains(&0) && left.len() < usize::try_from(written).unwrap(),
        "compaction left the first checkpoint: {left:?}"
    );

    // The restart resumes from what compaction left: every listing exactly once.
    support::assert_rerun_resumes(&cluster.config, &market, &topics, (from, to), "restart").await;
}
