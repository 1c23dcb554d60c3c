//! A topic with 100 poison records interleaved (garbage bytes, an unknown schema id, a value too
//! long for its column): with `errors_tolerance = "all"` every good record lands and the 100 are
//! on the dead-letter topic with headers naming where they came from and why; with `"none"` the
//! sink stops at the first, naming its topic/partition/offset, and commits nothing past it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, Running, listings};
use futures::StreamExt;
use marketflow_core::config::Tolerance;
use marketflow_core::kafka::{consumer_config, create_consumer};
use marketflow_core::record::{Listing, ListingKey};
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::unique;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// What kind of poison, and the class the dead-letter header must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Garbage,
    UnknownSchema,
    Oversize,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Self::Garbage => "foreign_magic",
            Self::UnknownSchema => "unknown_schema_id",
            Self::Oversize => "row_refused",
        }
    }
}

/// Produces `goods` with a poison record after every tenth, the kinds cycling from `first`;
/// returns `(partition, offset) → kind` of each poison and the payload of each.
async fn produce_interleaved(
    env: &Env,
    topic: &str,
    goods: &[Listing],
    first: usize,
) -> BTreeMap<(i32, i64), (Kind, Vec<u8>)> {
    let keys = env.codec.encoder(topic, Part::Key, schema::LISTING_KEY);
    let values = env.codec.encoder(topic, Part::Value, schema::LISTING);
    let kinds = [Kind::Garbage, Kind::UnknownSchema, Kind::Oversize];
    let mut records = Vec::new();
    for (i, listing) in goods.iter().enumerate() {
        records.push((
            None,
            keys.encode(&listing.key()).await.unwrap(),
            values.encode(listing).await.unwrap(),
        ));
        if i % 10 == 9 {
            let n = i / 10;
            let kind = kinds[(first + n) % 3];
            let value = match kind {
                Kind::Garbage => format!("garbage {n} \u{1F4A5}").into_bytes(),
                Kind::UnknownSchema => {
                    let mut v = vec![0, 0x7f, 0xff, 0xff, 0xf0];
                    v.extend_from_slice(b"\x02\x04body");
                    v
                }
                Kind::Oversize => {
                    let mut big = listing.clone();
                    big.product_id = -1 - i64::try_from(n).unwrap();
                    big.description = "가".repeat(30_000); // 90,000 bytes > TEXT's 65,535
                    values.encode(&big).await.unwrap()
                }
            };
            let key = ListingKey {
                product_id: -1 - i64::try_from(n).unwrap(),
            };
            records.push((Some(kind), keys.encode(&key).await.unwrap(), value));
        }
    }
    let mut poisons = BTreeMap::new();
    for chunk in records.chunks(500) {
        let sends = chunk.iter().map(|(_, key, value)| {
            env.producer.send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(60),
            )
        });
        let deliveries = futures::future::join_all(sends).await;
        for ((kind, _, value), delivery) in chunk.iter().zip(deliveries) {
            let delivery = delivery.map_err(|(e, _)| e).unwrap();
            if let Some(kind) = kind {
                poisons.insert(
                    (delivery.partition, delivery.offset),
                    (*kind, value.clone()),
                );
            }
        }
    }
    poisons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn with_tolerance_all_good_records_land_and_poison_goes_to_the_dlq_with_headers() {
    let env = Env::new("poison_all").await;
    let topic = env.cluster.topic("sink-poison", 3).await;
    let table = topic.replace('-', "_");
    let goods = listings(1_000, 6);
    let poisons = produce_interleaved(&env, &topic, &goods, 0).await;
    assert_eq!(poisons.len(), 100);

    let config = env.config(&[&topic]);
    let dlq = config.sink.dead_letter_topic.clone();
    let sink = Running::start(&config).await;
    env.wait_for_rows(&table, 1_000, Duration::from_secs(120))
        .await;
    env.wait_for("100 dead letters", Duration::from_secs(60), || async {
        sink.status().await["dead_lettered"] == 100
    })
    .await;
    sink.stop().await.unwrap();
    let rows = env.listing_rows(&table).await;
    for listing in &goods {
        assert_eq!(rows.get(&listing.product_id), Some(listing));
    }

    let consumer = create_consumer(&env.cluster.config.kafka, &unique("dlq-reader")).unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let mut stream = consumer.stream();
    let mut seen = BTreeMap::new();
    while seen.len() < 100 {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} dead letters arrived", seen.len()))
            .unwrap()
            .unwrap();
        let headers = message.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert_eq!(header("__connect.errors.topic"), topic);
        let partition: i32 = header("__connect.errors.partition").parse().unwrap();
        let offset: i64 = header("__connect.errors.offset").parse().unwrap();
        let (kind, payload) = poisons
            .get(&(partition, offset))
            .unwrap_or_else(|| panic!("no poison at {partition}/{offset}"));
        assert_eq!(
            header("__connect.errors.exception.class.name"),
            kind.class()
        );
        assert!(!header("__connect.errors.exception.message").is_empty());
        assert_eq!(message.payload(), Some(payload.as_slice()));
        seen.insert((partition, offset), kind);
    }
    assert_eq!(seen.len(), 100);
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn with_tolerance_none_the_sink_stops_at_the_first_poison_naming_it() {
    let env = Env::new("poison_none").await;
    let topic = env.cluster.topic("sink-poison-none", 1).await;
    let table = topic.replace('-', "_");
    let goods = listings(200, 7);
    // The first poison is the oversize one: the database refuses it, mid-batch.
    let poisons = produce_interleaved(&env, &topic, &goods, 2).await;
    let (&(partition, offset), (kind, _)) = poisons.iter().next().unwrap();
    assert_eq!((partition, offset, *kind), (0, 10, Kind::Oversize));

    let mut config = env.config(&[&topic]);
    config.sink.errors_tolerance = Tolerance::None;
    let group = config.sink.group_id.clone();
    let sink = Running::start(&config).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), sink.handle)
        .await
        .expect("the sink did not stop at the poison record")
        .unwrap();
    let message = ended.unwrap_err().to_string();
    assert!(
        message.contains(&format!("stopped at record {topic}/0/10")),
        "{message}"
    );
    assert!(message.contains("row_refused"), "{message}");

    // Everything before it is written and committed; nothing from it on.
    assert_eq!(env.count(&table).await, 10);
    let client: BaseConsumer = consumer_config(&env.cluster.config.kafka, &group)
        .unwrap()
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = client
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        Offset::Offset(10)
    );
    env.drop_database().await;
}
