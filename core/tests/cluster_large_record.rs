//! Records as large as the broker takes, against the local cluster: one of about 1,040,000
//! bytes, written by another client and consumed with core's consumer, is sent again with core's
//! producer (as the sink's dead-letter send and the streams forward do) and arrives whole.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::time::Duration;

use marketflow_core::kafka::{BROKER_MESSAGE_MAX_BYTES, create_consumer, create_producer};
use marketflow_core::testkit::{Cluster, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// About 1,040,000 bytes: over librdkafka's default limit (1,000,000), under the broker's.
const LARGE: usize = 1_040_000;

async fn first_message(consumer: &StreamConsumer, topic: &str) -> OwnedMessage {
    consumer.subscribe(&[topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing arrived from {topic}"))
        .unwrap()
        .detach();
    consumer.unsubscribe();
    message
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_record_the_broker_accepted_can_be_sent_again_with_cores_producer() {
    let cluster = Cluster::require().await;
    let source = cluster.topic("large-in", 1).await;
    let onward = cluster.topic("large-out", 1).await;
    let kafka = &cluster.config.kafka;

    // Another client, with the broker's limit (as a Java producer's 1,048,576 would be).
    let other: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("message.max.bytes", BROKER_MESSAGE_MAX_BYTES.to_string())
        .create()
        .unwrap();
    let value: Vec<u8> = (0..LARGE).map(|i| u8::try_from(i % 251).unwrap()).collect();
    other
        .send(
            FutureRecord::to(&source).key("big").payload(&value),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("the other client could not write it: {e}"));

    let consumer = create_consumer(kafka, &unique("large-group")).unwrap();
    let consumed = first_message(&consumer, &source).await;
    assert_eq!(consumed.payload().map(<[u8]>::len), Some(LARGE));

    let producer = create_producer(kafka).unwrap();
    let record = FutureRecord::to(&onward)
        .key(consumed.key().unwrap())
        .payload(consumed.payload().unwrap());
    producer
        .send(record, Duration::from_secs(30))
        .await
        .unwrap_or_else(|(e, _)| {
            panic!("core's producer could not send again a record the broker took: {e}")
        });

    let again = first_message(&consumer, &onward).await;
    assert_eq!(again.key(), Some(&b"big"[..]));
    assert!(again.payload() == Some(&value[..]), "the record changed");
}
