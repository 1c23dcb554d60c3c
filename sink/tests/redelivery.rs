//! Insert mode keyed by the record: a batch delivered again (a crash between the database commit
//! and the offset commit; here, a second group reading the same topic into the same table) finds
//! its rows already there, identical, and is counted as a re-delivery — not dead-lettered, not
//! fatal — while a different record with a key already there stays a real conflict.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{Env, Running, latest_by_product, listings};
use marketflow_core::config::InsertMode;
use marketflow_core::testkit::unique;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_redelivered_batch_is_counted_and_a_real_conflict_is_still_refused() {
    let env = Env::new("redelivery").await;
    let topic = env.cluster.topic("sink-redelivery", 3).await;
    let table = topic.replace('-', "_");
    let sent = listings(300, 41);
    env.produce_listings(&topic, &sent).await;

    let mut config = env.config(&[&topic]);
    config.sink.insert_mode = InsertMode::Insert;
    config.sink.delete_enabled = false;
    let first = Running::start(&config).await;
    env.wait_for_rows(&table, 300, Duration::from_secs(120))
        .await;
    first.stop().await.unwrap();

    // The same product again with another title: a conflict, not a re-delivery.
    let mut conflict = sent[0].clone();
    conflict.title.push_str(" (changed)");
    env.produce_listings(&topic, &[conflict]).await;

    // A fresh group reads everything again into the same table.
    config.sink.group_id = unique("sink-test-group");
    let again = Running::start(&config).await;
    env.wait_for("301 records handled", Duration::from_secs(120), || async {
        let status = again.status().await;
        status["records_redelivered"].as_u64().unwrap_or(0)
            + status["dead_lettered"].as_u64().unwrap_or(0)
            >= 301
    })
    .await;
    let status = again.status().await;
    assert_eq!(status["records_redelivered"], 300, "{status}");
    assert_eq!(status["dead_lettered"], 1, "{status}");
    assert_eq!(status["state"], "running", "{status}");
    again.stop().await.unwrap();
    assert_eq!(env.listing_rows(&table).await, latest_by_product(&sent));
    env.drop_database().await;
}
