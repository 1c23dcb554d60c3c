//! One listing too large for the listings topic: that product id fails with the cause (an
//! `id_failed` event), the crawl goes on and finishes, and the checkpoint passes the id.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::sync::Arc;

use axum::response::Html;
use axum::routing::get;
use clap::Parser;
use marketflow_market::generate::Generator;
use marketflow_market::{MarketConfig, page};
use support::{FIRST_ID, Market, Topics};

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_listing_over_the_topic_limit_fails_its_id_and_the_crawl_goes_on() {
    let cluster = marketflow_core::testkit::Cluster::require().await;
    let topics = Topics::new(&cluster).await;
    // The listings topic takes records of 20,000 bytes at most; a listing is about 2,000.
    cluster
        .set_topic_config(&topics.listings, "max.message.bytes", "20000")
        .await;

    // A market of plain listings, one of whose pages carries a 45,000-byte description.
    let config = MarketConfig::parse_from([
        "market",
        "--products",
        "300",
        "--deleted-rate",
        "0",
        "--mismatch-rate",
        "0",
    ]);
    let large = FIRST_ID + 100;
    let mut product = Generator::new(config.seed, config.shares()).product(large.cast_unsigned());
    product.description = "가".repeat(15_000);
    let large_page = page::product(&product, large.cast_unsigned());
    let routes = axum::Router::new()
        .route(
            &format!("/product/{large}"),
            get(move || {
                let page = large_page.clone();
                async move { Html(page) }
            }),
        )
        .merge(marketflow_market::router(Arc::new(
            marketflow_market::Market::new(&config),
        )));
    let market = Market::serve(routes).await;

    let (from, to) = (FIRST_ID, FIRST_ID + 249);
    let out = support::output(support::once_command(&market, &topics, &[], (from, to))).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the crawl stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 1 failed"), "{stdout}");

    // Every other listing is on the topic, exactly once; the large one is not.
    let mut truth = market.truth(from, to).await;
    assert_eq!(truth[&large].0, "listing");
    truth.remove(&large);
    let records = support::read_listings(&cluster.config, &topics.listings).await;
    assert!(records.iter().all(|r| r.listing.product_id != large));
    support::assert_exactly_the_truth(&records, &truth);

    // The id failed with its cause, and the checkpoint went past it to the end.
    let events = support::read_events(&cluster.config, &topics.events).await;
    let failed: Vec<_> = events.iter().filter(|e| e.kind == "id_failed").collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].product_id, Some(large));
    let cause = failed[0].cause.as_deref().unwrap_or_default();
    assert!(cause.contains("max.message.bytes"), "{cause}");
    let finished = events.iter().find(|e| e.kind == "finished").unwrap();
    assert_eq!(finished.checkpoint_id, Some(to + 1));
}
