//! The codec against the local cluster: Avro listings produced through one broker are consumed
//! through another, in a consumer group, and decode to the same values.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::kafka::{create_consumer, create_producer};
use marketflow_core::record::{Listing, ListingKey, arbitrary};
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::{Cluster, unique};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::Offset;

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn listings_produced_via_one_broker_are_consumed_via_another_in_a_group() {
    let cluster = Cluster::require().await;
    let topic = cluster.topic("codec", 3).await;
    let codec = Codec::new(&cluster.config.registry).unwrap();
    let keys = codec.encoder(&topic, Part::Key, schema::LISTING_KEY);
    let values = codec.encoder(&topic, Part::Value, schema::LISTING);

    let mut via_first = cluster.config.kafka.clone();
    via_first.bootstrap_servers = "127.0.0.1:19092".into();
    let producer = create_producer(&via_first).unwrap();
    let sent = arbitrary::distinct_listings(60, 1);
    let mut partitions = BTreeSet::new();
    for listing in &sent {
        let key = keys.encode(&listing.key()).await.unwrap();
        let value = values.encode(listing).await.unwrap();
        let record = FutureRecord::to(&topic).key(&key).payload(&value);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap();
        partitions.insert(delivery.partition);
    }
    assert_eq!(
        partitions.len(),
        3,
        "keys should spread over the 3 partitions: {partitions:?}"
    );

    let mut via_last = cluster.config.kafka.clone();
    via_last.bootstrap_servers = "127.0.0.1:19094".into();
    let consumer = create_consumer(&via_last, &unique("codec-group")).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut received = BTreeMap::new();
    let mut stream = consumer.stream();
    while received.len() < sent.len() {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {} of {} listings arrived", received.len(), sent.len())
            })
            .unwrap()
            .unwrap();
        let key: ListingKey = codec.decode(message.key().unwrap()).await.unwrap();
        let value: Listing = codec.decode(message.payload().unwrap()).await.unwrap();
        assert_eq!(key, value.key());
        assert!(
            received.insert(key.product_id, value).is_none(),
            "{key:?} arrived twice"
        );
        consumer.store_offset_from_message(&message).unwrap();
    }
    drop(stream);
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let expected: BTreeMap<i64, Listing> = sent.into_iter().map(|l| (l.product_id, l)).collect();
    assert_eq!(received, expected);

    let committed = consumer.committed(Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!(
                "partition {} has no committed offset: {other:?}",
                e.partition()
            ),
        })
        .sum();
    assert_eq!(
        total, 60,
        "the group's committed offsets should cover every record"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn the_same_schema_gets_the_same_id_from_every_codec() {
    let cluster = Cluster::require().await;
    let topic = unique("ids");
    let listing = arbitrary::distinct_listings(1, 2).remove(0);
    let first = Codec::new(&cluster.config.registry).unwrap();
    let second = Codec::new(&cluster.config.registry).unwrap();
    let a = first
        .encoder(&topic, Part::Value, schema::LISTING)
        .encode(&listing)
        .await
        .unwrap();
    let b = second
        .encoder(&topic, Part::Value, schema::LISTING)
        .encode(&listing)
        .await
        .unwrap();
    assert_eq!(
        a[..5],
        b[..5],
        "both codecs should frame with the same schema id"
    );
    assert_eq!(a, b);
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn bad_payloads_are_typed_errors() {
    let cluster = Cluster::require().await;
    let codec = Codec::new(&cluster.config.registry).unwrap();

    let unknown = [0u8, 0x7f, 0xff, 0xff, 0x00, 2];
    match codec.decode::<Listing>(&unknown).await {
        Err(CodecError::UnknownSchemaId { id, .. }) => assert_eq!(id, 0x7fff_ff00),
        other => panic!("expected UnknownSchemaId, got {other:?}"),
    }
    assert!(matches!(
        codec.decode::<Listing>(b"{}").await,
        Err(CodecError::Short { len: 2 })
    ));
    assert!(matches!(
        codec.decode::<Listing>(b"null-ish json").await,
        Err(CodecError::ForeignMagic { byte: b'n' })
    ));

    // A real id with a body that is not a listing.
    let topic = unique("bad-body");
    let key = codec
        .encoder(&topic, Part::Key, schema::LISTING_KEY)
        .encode(&ListingKey { product_id: 1 })
        .await
        .unwrap();
    let mut truncated = key[..5].to_vec();
    truncated.push(0x80); // a varint that never ends
    match codec.decode::<ListingKey>(&truncated).await {
        Err(CodecError::MalformedBody { .. }) => {}
        other => panic!("expected MalformedBody, got {other:?}"),
    }
    match codec.decode::<Listing>(&key).await {
        Err(error @ CodecError::Mismatch { .. }) => assert!(!error.is_retryable()),
        other => panic!("a key decoded as a listing should be a Mismatch, got {other:?}"),
    }
}
