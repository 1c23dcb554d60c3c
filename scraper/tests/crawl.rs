//! `scraper --once` against a real `market` and the local cluster: exactly the expected listings
//! (compared with the market's `/__truth`, decoded through the registry), under 429/500 faults,
//! across a `kill -9` and a restart, and captcha pages counted as blocked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Bench, FIRST_ID, IDS, MARKET_ARGS};

/// The summary line a `--once` run prints, as `name -> count`.
fn summary_counts(stdout: &[u8]) -> BTreeMap<String, i64> {
    let line = String::from_utf8_lossy(stdout);
    let mut counts = BTreeMap::new();
    let words: Vec<&str> = line
        .split([' ', ',', ':', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if let Ok(n) = pair[0].parse::<i64>() {
            counts.insert(pair[1].to_owned(), n);
        }
    }
    counts
}

fn truth_count(truth: &BTreeMap<i64, (String, Option<serde_json::Value>)>, status: &str) -> i64 {
    i64::try_from(truth.values().filter(|(s, _)| s == status).count()).unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_once_crawl_of_2000_ids_yields_exactly_the_expected_listings() {
    let Bench {
        cluster,
        market,
        topics,
    } = Bench::start(MARKET_ARGS).await;
    let (from, to) = IDS;
    let out = support::crawl_once(&market, &topics, from, to).await;

    let truth = market.truth(from, to).await;
    let records = support::read_listings(&cluster.config, &topics.listings).await;
    support::assert_exactly_the_truth(&records, &truth);
    assert!(records.len() > 1800, "only {} listings", records.len());

    let counts = summary_counts(&out.stdout);
    assert_eq!(
        counts["listings"],
        truth_count(&truth, "listing"),
        "{counts:?}"
    );
    assert_eq!(
        counts["blocked"],
        truth_count(&truth, "blocked"),
        "{counts:?}"
    );
    assert_eq!(
        counts["deleted"],
        truth_count(&truth, "deleted"),
        "{counts:?}"
    );
    assert_eq!(
        counts["malformed"],
        truth_count(&truth, "sku_mismatch"),
        "{counts:?}"
    );
    assert_eq!(counts["failed"], 0, "{counts:?}");

    let events = support::read_events(&cluster.config, &topics.events).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "finished"]);
    let finished = &events[1];
    assert_eq!(finished.listings, Some(counts["listings"]));
    assert_eq!(finished.blocked, Some(counts["blocked"]));
    assert_eq!(finished.checkpoint_id, Some(to + 1));
    assert_eq!((finished.from_id, finished.to_id), (Some(from), Some(to)));
    let crawl = &events[0].crawl_id;
    assert!(records.iter().all(|r| r.crawl.as_ref() == Some(crawl)));
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn with_20_percent_429_and_500_faults_every_expected_listing_arrives() {
    let Bench {
        cluster,
        market,
        topics,
    } = Bench::start(&[
        "--products",
        "1000",
        "--rate-429",
        "0.1",
        "--rate-500",
        "0.1",
        "--rate-reset",
        "0.02",
    ])
    .await;
    let (from, to) = (FIRST_ID, FIRST_ID + 799);
    let out = support::crawl_once(&market, &topics, from, to).await;
    assert_eq!(summary_counts(&out.stdout)["failed"], 0);

    let truth = market.truth(from, to).await;
    let records = support::read_listings(&cluster.config, &topics.listings).await;
    support::assert_exactly_the_truth(&records, &truth);
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_crawl_killed_with_sigkill_and_restarted_ends_with_every_listing_exactly_once() {
    // A little latency so that the kill lands mid-crawl.
    let Bench {
        cluster,
        market,
        topics,
    } = Bench::start(&[
        "--products",
        "2500",
        "--latency",
        "2ms",
        "--captcha-rate",
        "0.02",
    ])
    .await;
    let (from, to) = (FIRST_ID, FIRST_ID + 1999);
    // Kill once a random number of listings (100..1600) is on the topic.
    let kill_after = 100 + support::random_below(1500);
    eprintln!("killing the first run after {kill_after} listings");

    let first = support::once_command(&market, &topics, &[], (from, to));
    support::kill_once_listed(first, &cluster.config, &topics.listings, kill_after).await;
    let after_kill = support::read_listings(&cluster.config, &topics.listings)
        .await
        .len();
    eprintln!("{after_kill} listings on the topic after the kill");

    support::assert_rerun_resumes(&cluster.config, &market, &topics, (from, to), "restart").await;
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn captcha_pages_are_counted_as_blocked_and_produce_nothing() {
    let Bench {
        cluster,
        market,
        topics,
    } = Bench::start(&["--products", "400", "--captcha-rate", "0.3"]).await;
    let (from, to) = (FIRST_ID, FIRST_ID + 399);
    let out = support::crawl_once(&market, &topics, from, to).await;

    let truth = market.truth(from, to).await;
    let blocked: Vec<i64> = truth
        .iter()
        .filter(|(_, (s, _))| s == "blocked")
        .map(|(id, _)| *id)
        .collect();
    assert!(
        blocked.len() > 60,
        "the market blocked only {} ids",
        blocked.len()
    );
    assert_eq!(
        summary_counts(&out.stdout)["blocked"],
        i64::try_from(blocked.len()).unwrap()
    );
    let records = support::read_listings(&cluster.config, &topics.listings).await;
    assert!(
        records
            .iter()
            .all(|r| !blocked.contains(&r.listing.product_id))
    );
    support::assert_exactly_the_truth(&records, &truth);
    let events = support::read_events(&cluster.config, &topics.events).await;
    let finished = events.iter().find(|e| e.kind == "finished").unwrap();
    assert_eq!(
        finished.blocked,
        Some(i64::try_from(blocked.len()).unwrap())
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_continuous_crawl_follows_the_head_and_stops_gracefully_on_sigterm() {
    let Bench {
        cluster,
        market,
        topics,
    } = Bench::start(&["--products", "300", "--new-per-sec", "50"]).await;
    let extra = [
        ("MARKETFLOW__SCRAPER__POLL_INTERVAL", "200ms"),
        ("MARKETFLOW__SCRAPER__WINDOW", "100"),
    ];
    let mut child = support::spawn(support::scraper(&market, &topics, &extra));
    // Wait until ids beyond the initial head (FIRST_ID + 299) have been produced.
    let beyond = FIRST_ID + 400;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the continuous crawl ended by itself"
        );
        let records = support::read_listings(&cluster.config, &topics.listings).await;
        if records.iter().any(|r| r.listing.product_id > beyond) {
            break;
        }
    }
    let pid = child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "a graceful stop exits 0, not {status}");

    let events = support::read_events(&cluster.config, &topics.events).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "stopped"]);
    let (from, next) = (events[0].from_id.unwrap(), events[1].checkpoint_id.unwrap());
    // A first continuous crawl starts `window` ids below the head, which grows from the start.
    assert!(
        (FIRST_ID + 200..FIRST_ID + 400).contains(&from),
        "from {from}"
    );
    assert!(next > beyond);
    // Every id below the checkpoint is done: exactly its listings are on the topic.
    let truth = market.truth(from, next - 1).await;
    let records: Vec<_> = support::read_listings(&cluster.config, &topics.listings)
        .await
        .into_iter()
        .filter(|r| r.listing.product_id < next)
        .collect();
    support::assert_exactly_the_truth(&records, &truth);
}
