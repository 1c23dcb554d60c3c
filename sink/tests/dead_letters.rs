//! Dead letters keep their provenance and never stop the sink for their size: a listing just
//! under the broker's 1,048,588-byte limit that the table refuses (its description is over TEXT's
//! 65,535 bytes) is too large to send again with the error headers added, so it goes cut, saying
//! so in `__connect.errors.marketflow.truncated` (its original size); every dead letter carries
//! the record's own headers (the scraper's `marketflow-crawl`) and timestamp.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{Env, Running, listings};
use futures::StreamExt;
use marketflow_core::kafka::{create_consumer, producer_config};
use marketflow_core::record::Listing;
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::unique;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The broker's default `message.max.bytes` (a whole record batch).
const BROKER_LIMIT: usize = 1_048_588;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_dead_letter_too_large_to_resend_goes_cut_and_every_letter_keeps_its_provenance() {
    let env = Env::new("dead_letters").await;
    let topic = env.cluster.topic("sink-dead-letters", 1).await;
    let table = topic.replace('-', "_");
    let keys = env.codec.encoder(&topic, Part::Key, schema::LISTING_KEY);
    let values = env.codec.encoder(&topic, Part::Value, schema::LISTING);

    // A listing whose record (with its header and the batch's framing) just fits the broker.
    let mut big: Listing = listings(1, 77).remove(0);
    big.product_id = -1;
    big.description = String::new();
    let base = values.encode(&big).await.unwrap().len();
    let target = BROKER_LIMIT - 300;
    // The description's length prefix grows from 1 byte to 3.
    big.description = "d".repeat(target - base - 2);
    let big_value = values.encode(&big).await.unwrap();
    assert_eq!(big_value.len(), target);
    let big_key = keys.encode(&big.key()).await.unwrap();

    let mut producer_settings = producer_config(&env.cluster.config.kafka).unwrap();
    producer_settings.set("message.max.bytes", BROKER_LIMIT.to_string());
    let producer: FutureProducer = producer_settings.create().unwrap();
    let send = |key: Vec<u8>, value: Vec<u8>, crawl: &'static str, timestamp: i64| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let headers = OwnedHeaders::new().insert(Header {
                key: "marketflow-crawl",
                value: Some(crawl),
            });
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .headers(headers)
                        .timestamp(timestamp),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap()
        }
    };
    let goods = listings(10, 78);
    env.produce_listings(&topic, &goods[..5]).await;
    let big_at = send(big_key, big_value.clone(), "crawl-big", 1_600_000_000_001).await;
    let garbage = b"not avro at all".to_vec();
    let garbage_at = send(
        b"g".to_vec(),
        garbage.clone(),
        "crawl-garbage",
        1_600_000_000_002,
    )
    .await;
    env.produce_listings(&topic, &goods[5..]).await;

    let config = env.config(&[&topic]);
    let dlq = config.sink.dead_letter_topic.clone();
    let sink = Running::start(&config).await;
    env.wait_for_rows(&table, 10, Duration::from_secs(120))
        .await;
    env.wait_for("2 dead letters", Duration::from_secs(60), || async {
        sink.status().await["dead_lettered"] == 2
    })
    .await;
    assert!(!sink.handle.is_finished(), "the sink stopped");
    assert_eq!(sink.status().await["state"], "running");

    let consumer = create_consumer(&env.cluster.config.kafka, &unique("dlq-reader")).unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let mut stream = consumer.stream();
    let mut seen = 0;
    while seen < 2 {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the dead letters did not arrive")
            .unwrap()
            .unwrap();
        let headers = message.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        let offset: i64 = header("__connect.errors.offset").unwrap().parse().unwrap();
        let payload = message.payload().unwrap();
        if offset == big_at.offset {
            assert_eq!(header("marketflow-crawl").as_deref(), Some("crawl-big"));
            assert_eq!(message.timestamp().to_millis(), Some(1_600_000_000_001));
            assert_eq!(
                header("__connect.errors.exception.class.name").as_deref(),
                Some("row_refused")
            );
            assert_eq!(
                header("__connect.errors.marketflow.truncated"),
                Some(big_value.len().to_string())
            );
            assert!(
                header("__connect.errors.marketflow.truncated.reason")
                    .unwrap()
                    .contains("value cut")
            );
            assert!(payload.len() < big_value.len() && payload.len() > BROKER_LIMIT / 2);
            assert_eq!(payload, &big_value[..payload.len()]);
        } else {
            assert_eq!(offset, garbage_at.offset);
            assert_eq!(header("marketflow-crawl").as_deref(), Some("crawl-garbage"));
            assert_eq!(message.timestamp().to_millis(), Some(1_600_000_000_002));
            assert_eq!(header("__connect.errors.marketflow.truncated"), None);
            assert_eq!(payload, garbage.as_slice());
        }
        seen += 1;
    }
    sink.stop().await.unwrap();
    env.drop_database().await;
}
