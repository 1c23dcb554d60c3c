//! 10,000 listings in, exactly 10,000 rows out, every column equal to its record's field
//! (Korean, emoji, quotes, backslashes and `'; DROP TABLE` strings included); and tombstones
//! delete their rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{Env, Running, listings};
use marketflow_core::record::ListingKey;
use marketflow_core::schema::{self, Part};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn ten_thousand_listings_become_ten_thousand_equal_rows() {
    let env = Env::new("exact").await;
    let topic = env.cluster.topic("sink-exact", 3).await;
    let sent = listings(10_000, 1);
    env.produce_listings(&topic, &sent).await;

    let table = topic.replace('-', "_");
    let sink = Running::start(&env.config(&[&topic])).await;
    env.wait_for_rows(&table, 10_000, Duration::from_secs(180))
        .await;
    // Nothing more arrives after the last record.
    let status = sink.status().await;
    sink.stop().await.unwrap();
    assert_eq!(status["rows_written"], 10_000, "{status}");
    assert_eq!(env.count(&table).await, 10_000);

    let rows = env.listing_rows(&table).await;
    assert_eq!(rows.len(), sent.len());
    for listing in &sent {
        assert_eq!(rows.get(&listing.product_id), Some(listing));
    }
    let tricky = sent
        .iter()
        .filter(|l| l.title.contains('\'') || l.title.contains('\\') || l.title.contains('🍎'))
        .count();
    assert!(tricky > 0, "the generator made no tricky titles");
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn tombstones_delete_their_rows_and_later_records_bring_them_back() {
    let env = Env::new("tomb").await;
    let topic = env.cluster.topic("sink-tomb", 1).await;
    let table = topic.replace('-', "_");
    let sent = listings(50, 2);
    env.produce_listings(&topic, &sent).await;

    // Tombstones (a real null value) for the first 20, then the 10th comes back.
    let keys = env.codec.encoder(&topic, Part::Key, schema::LISTING_KEY);
    let mut tombstones = Vec::new();
    for listing in &sent[..20] {
        tombstones.push((keys.encode(&listing.key()).await.unwrap(), None));
    }
    env.produce_raw(&topic, &tombstones).await;
    env.produce_listings(&topic, &sent[10..11]).await;
    // A key with no row: deleting nothing is fine.
    let ghost = keys.encode(&ListingKey { product_id: -1 }).await.unwrap();
    env.produce_raw(&topic, &[(ghost, None)]).await;

    let sink = Running::start(&env.config(&[&topic])).await;
    env.wait_for_rows(&table, 31, Duration::from_secs(60)).await;
    env.wait_for("every record consumed", Duration::from_secs(60), || async {
        sink.status().await["records_in"] == 72
    })
    .await;
    let status = sink.status().await;
    sink.stop().await.unwrap();
    // 20 tombstones of rows and one of a key that never had a row.
    assert_eq!(status["rows_deleted"], 21, "{status}");
    let rows = env.listing_rows(&table).await;
    assert_eq!(rows.len(), 31);
    assert!(rows.contains_key(&sent[10].product_id));
    for listing in sent[..10].iter().chain(&sent[11..20]) {
        assert!(!rows.contains_key(&listing.product_id));
    }
    for listing in &sent[20..] {
        assert_eq!(rows.get(&listing.product_id), Some(listing));
    }
    env.drop_database().await;
}
