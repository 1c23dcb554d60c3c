//! The real `streams` binary against the local cluster: 20,000 listings through the filter and
//! the sums, whose last value per key equals the independent computation and decodes through the
//! registry with the schemas in `core/schemas`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::Duration;

use marketflow_core::codec::schema_id;
use marketflow_core::schema;
use support::{Op, Pipeline, expected_distinct, free_port, read_all, terminate, workload};

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn twenty_thousand_listings_sum_to_the_independent_computation() {
    let pipeline = Pipeline::new("streams-20k").await;
    let ops = workload(20_000, 20_000);
    pipeline.produce(&ops).await;
    let mut streams = pipeline.start(free_port(), &[]);
    let expected = expected_distinct(&ops);
    pipeline
        .await_sums(&expected, Duration::from_secs(120))
        .await;
    assert!(
        terminate(&mut streams).success(),
        "streams did not stop cleanly on SIGTERM"
    );

    // The sums decode through the registry with the shipped schemas, under the topic's subjects.
    let records = read_all(&pipeline.cluster, &pipeline.sums).await;
    let (key, value) = records.last().unwrap();
    let key_schema = pipeline
        .codec
        .schema(schema_id(key).unwrap())
        .await
        .unwrap();
    let value_schema = pipeline
        .codec
        .schema(schema_id(value).unwrap())
        .await
        .unwrap();
    let shipped_key = schema::LISTING_SUM_KEY.parse().unwrap();
    let shipped_value = schema::LISTING_SUM.parse().unwrap();
    assert_eq!(key_schema.parsed, shipped_key);
    assert_eq!(value_schema.parsed, shipped_value);

    // Every accepted listing reached the affordable topic with its key; none over the limit did.
    let affordable = read_all(&pipeline.cluster, &pipeline.affordable).await;
    let accepted = ops
        .iter()
        .filter(|op| matches!(op, Op::Version(l) if l.price.is_some_and(|p| p <= 1_000_000)))
        .count();
    assert!(
        affordable.len() >= accepted,
        "{} of {accepted} forwarded",
        affordable.len()
    );
    for (_, value) in affordable.iter().take(200) {
        let listing: marketflow_core::record::Listing = pipeline.codec.decode(value).await.unwrap();
        assert!(listing.price.is_some_and(|p| p <= 1_000_000), "{listing:?}");
    }
}
