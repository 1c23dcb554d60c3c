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

/// Registers `schema` (Avro JSON) under `subject` on the cluster's registry, as any producer
/// could, and returns its id.
async fn register_raw(cluster: &Cluster, subject: &str, schema: &str) -> u32 {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/subjects/{subject}/versions",
            cluster.config.registry.url
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": schema }).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let body: serde_json::Value = response.json().await.unwrap();
    u32::try_from(body["id"].as_u64().unwrap()).unwrap()
}

/// A wire-format payload of schema `id` and Avro `body`.
fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![0];
    payload.extend(id.to_be_bytes());
    payload.extend(body);
    payload
}

/// 18 arrays of 9 million nulls each (each array under apache-avro's own 512 MiB limit on one
/// allocation; about 9 GB in all), in 93 bytes, for
/// `{"type":"array","items":{"type":"array","items":"null"}}`.
fn nested_null_bomb() -> Vec<u8> {
    let mut body = vec![36]; // 18, zigzag
    for _ in 0..18 {
        body.extend([0x80, 0xd1, 0xca, 0x08, 0]); // 9,000,000, zigzag; then the end
    }
    body.push(0);
    body
}

const BOMB: &str = r#"{"type":"array","items":{"type":"array","items":"null"}}"#;

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_schema_id_registered_under_another_subject_is_refused_unread() {
    let cluster = Cluster::require().await;
    let codec = Codec::new(&cluster.config.registry).unwrap();
    let topic = unique("foreign");
    let listing = arbitrary::distinct_listings(1, 4).remove(0);
    let own = codec
        .encoder(&topic, Part::Value, schema::LISTING)
        .encode(&listing)
        .await
        .unwrap();
    let decoded: Listing = codec.decode_for(&topic, Part::Value, &own).await.unwrap();
    assert_eq!(decoded, listing);

    // The listing schema itself, under another topic's subject only as far as `topic` knows:
    // it is also a version of `topic`'s, so it decodes (one id, many subjects).
    let elsewhere = unique("elsewhere");
    let shared = codec
        .encoder(&elsewhere, Part::Value, schema::LISTING)
        .encode(&listing)
        .await
        .unwrap();
    assert_eq!(shared[..5], own[..5]);
    let _: Listing = codec
        .decode_for(&topic, Part::Value, &shared)
        .await
        .unwrap();

    // The bomb's schema, registered under another subject: refused before it is even fetched.
    let other_subject = format!("{}-value", unique("other"));
    let id = register_raw(&cluster, &other_subject, BOMB).await;
    let payload = framed(id, &nested_null_bomb());
    for _ in 0..2 {
        // Twice: the second answer comes from the cache, and is the same.
        match codec.decode_value_for(&topic, Part::Value, &payload).await {
            Err(error @ CodecError::ForeignSchema { .. }) => {
                assert_eq!(error.class(), "foreign_schema");
                assert!(!error.is_retryable());
                let message = error.to_string();
                assert!(
                    message.contains(&format!(
                        "schema id {id} is not a version of subject {topic}-value"
                    )),
                    "{message}"
                );
                assert!(message.contains(&other_subject), "{message}");
            }
            other => panic!("expected ForeignSchema, got {other:?}"),
        }
    }
    // A key's subject is `<topic>-key`: the value's schema id is foreign there.
    assert!(matches!(
        codec.decode_value_for(&topic, Part::Key, &own).await,
        Err(CodecError::ForeignSchema { .. })
    ));
    // An id the registry does not know is still that, not foreign.
    assert!(matches!(
        codec
            .decode_value_for(&topic, Part::Value, &framed(0x7fff_ff00, &[2]))
            .await,
        Err(CodecError::UnknownSchemaId { .. })
    ));
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn the_bomb_under_the_topics_own_subject_is_refused_over_the_cap() {
    let cluster = Cluster::require().await;
    let codec = Codec::new(&cluster.config.registry).unwrap();
    assert_eq!(codec.max_decoded_bytes(), 4 << 20);
    let topic = unique("bomb");
    let id = register_raw(&cluster, &format!("{topic}-value"), BOMB).await;
    let payload = framed(id, &nested_null_bomb());
    assert!(payload.len() < 100);
    match codec.decode_value_for(&topic, Part::Value, &payload).await {
        Err(error @ CodecError::TooLarge { .. }) => {
            assert_eq!(error.class(), "too_large");
            assert!(!error.is_retryable());
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The same without the subject check: the cap holds on every decode.
    assert!(matches!(
        codec.decode_value(&payload).await,
        Err(CodecError::TooLarge { .. })
    ));
}
