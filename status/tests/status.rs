//! `marketflow status` against the local cluster: every topic, group, subject and table it is
//! shown appears with the right figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::time::Duration;

use marketflow_core::codec::Codec;
use marketflow_core::kafka::{create_consumer, create_producer};
use marketflow_core::record::{ListingSum, ListingSumKey};
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::{Cluster, unique};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::Offset;
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

async fn produce(cluster: &Cluster, topic: &str, partition: i32, key: &[u8], value: &[u8]) {
    let producer = create_producer(&cluster.config.kafka).unwrap();
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn status_shows_each_topic_group_subject_table_and_sum_with_its_figures() {
    let cluster = Cluster::require().await;
    let tag = unique("status");
    let mut config = cluster.config.clone();

    // A topic of 3 partitions holding 4 + 3 + 0 records.
    let topic = format!("{tag}-events");
    marketflow_core::kafka::ensure_topics(&config.kafka, &[(&topic, 3)])
        .await
        .unwrap();
    for (partition, count) in [(0, 4), (1, 3)] {
        for i in 0..count {
            produce(&cluster, &topic, partition, b"k", format!("{i}").as_bytes()).await;
        }
    }

    // A group that has processed 3 of partition 0 and all of partition 1: lag 1.
    let group = format!("{tag}-group");
    let consumer = create_consumer(&config.kafka, &group).unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(3))
        .unwrap();
    offsets
        .add_partition_offset(&topic, 1, Offset::Offset(3))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
    drop(consumer);

    // Running sums: two versions of one key and one of another, registered through the codec.
    let sums_topic = format!("{tag}-sums");
    marketflow_core::kafka::ensure_topics(&config.kafka, &[(&sums_topic, 1)])
        .await
        .unwrap();
    config.topics.listing_sums = sums_topic.clone();
    let codec = Codec::new(&config.registry).unwrap();
    let keys = codec.encoder(&sums_topic, Part::Key, schema::LISTING_SUM_KEY);
    let values = codec.encoder(&sums_topic, Part::Value, schema::LISTING_SUM);
    let sum = |scope: &str, value: &str, count: i64, total: i64| ListingSum {
        scope: scope.into(),
        value: value.into(),
        count,
        sum: total,
        min: Some(1),
        max: Some(total),
        updated_at: 0,
    };
    for record in [
        sum("all", "all", 1, 100),
        sum("category_level1", "디지털기기", 1, 100),
        sum("all", "all", 2, 250),
    ] {
        let key = keys
            .encode(&ListingSumKey {
                scope: record.scope.clone(),
                value: record.value.clone(),
            })
            .await
            .unwrap();
        let value = values.encode(&record).await.unwrap();
        produce(&cluster, &sums_topic, 0, &key, &value).await;
    }

    // A database of its own with a table of 5 rows.
    let database = cluster.database("status").await;
    let mut db = MySqlConnection::connect(&database.url).await.unwrap();
    sqlx::query("CREATE TABLE `rows of mine` (id INT PRIMARY KEY)")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO `rows of mine` VALUES (1),(2),(3),(4),(5)")
        .execute(&mut db)
        .await
        .unwrap();
    config.sink.database_url = SecretString::from(database.url.clone());

    let status = marketflow_status::collect(&config, Some(&tag)).await;
    assert!(status.errors.is_empty(), "{:?}", status.errors);

    let shown = status
        .topics
        .iter()
        .find(|t| t.name == topic)
        .expect("the topic is shown");
    let ends: Vec<i64> = shown.partitions.iter().map(|p| p.high).collect();
    assert_eq!(ends, vec![4, 3, 0]);
    assert_eq!(shown.messages(), 7);

    let shown = status
        .groups
        .iter()
        .find(|g| g.group == group)
        .expect("the group is shown");
    assert_eq!(shown.topics.len(), 1);
    assert_eq!(
        (
            shown.topics[0].committed,
            shown.topics[0].end,
            shown.topics[0].lag
        ),
        (6, 7, 1)
    );

    let subject = schema::subject(&sums_topic, Part::Value);
    let shown = status
        .subjects
        .iter()
        .find(|s| s.subject == subject)
        .expect("the subject is shown");
    assert_eq!(shown.versions, vec![1]);
    assert!(shown.latest_id.is_some());

    assert_eq!(status.tables.len(), 1);
    assert_eq!(
        (status.tables[0].table.as_str(), status.tables[0].rows),
        ("rows of mine", 5)
    );

    assert_eq!(status.sums.len(), 2);
    assert_eq!(
        (
            status.sums[0].scope.as_str(),
            status.sums[0].count,
            status.sums[0].sum
        ),
        ("all", 2, 250)
    );
    assert_eq!(status.sums[1].value, "디지털기기");

    // The command line's JSON says the same.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_marketflow"))
        .args(["status", "--json", "--filter", &tag])
        .env(
            "MARKETFLOW__SINK__DATABASE_URL",
            config.sink.database_url.expose_secret(),
        )
        .env("MARKETFLOW__TOPICS__LISTING_SUMS", &sums_topic)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["tables"][0]["rows"], 5);
    assert_eq!(json["groups"][0]["topics"][0]["lag"], 1);
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(":marketflow@"),
        "credentials leaked"
    );

    database.drop().await;
}
