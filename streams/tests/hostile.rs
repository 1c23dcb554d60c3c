//! The hostile-input suite of streams: 2,000 records from `testkit::hostile` (1,000 good listings
//! with every extreme price and hostile strings in every field, categories included; 1,000 of
//! garbage, unknown and foreign schema ids, nested-null bombs, bodies that do not decode, a
//! ~1 MiB listing, tombstones for known, unknown and garbage keys) through the real `streams`
//! binary. Afterwards it still runs; its sums equal the ones this test computes from the good
//! records (prices 0..=1,000,000 count, the rest do not); `streams_records_dropped_total`
//! accounts for every record it could not use, by reason; and its memory stayed bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use marketflow_core::record::{Listing, ListingSumKey};
use marketflow_core::testkit::hostile::{self, Hostile, Kind, Mix};
use marketflow_core::testkit::memory::{MemoryWatch, mib};
use support::{Figures, Pipeline, free_port, start_capturing, terminate};

const SEED: u64 = 21;

/// The highest price that counts (the default `streams.max_price`).
const MAX_PRICE: i64 = 1_000_000;

/// Streams' resident set must stay under this: its state (a few entries per product), a
/// librdkafka fetch queue (64 MiB by default) and producer buffers, the ~1 MiB listing held
/// while it is forwarded; a decoding bomb would need gigabytes.
const RSS_BOUND: u64 = 256 << 20;

/// Past this the memory watch kills streams, so that an undefended decoder cannot take the
/// shared machine's memory.
const RSS_CEILING: u64 = 1 << 30;

/// Why streams must drop a record of `kind` (carrying `listing`), or `None` when it uses it
/// (tombstones included: they take a product out of the sums). A bomb whose schema is foreign
/// is both `foreign_schema` and `too_large`: which check comes first is the program's choice,
/// so [`Drops::accounts_for`] takes either.
fn drop_reason(kind: Kind, listing: Option<&Listing>) -> Option<&'static str> {
    match kind {
        Kind::Listing | Kind::Huge => match listing.and_then(|l| l.price) {
            None => Some("no_price"),
            Some(price) if price < 0 => Some("invalid_price"),
            Some(price) if price > MAX_PRICE => Some("over_max_price"),
            Some(_) => None,
        },
        Kind::Garbage | Kind::UnknownSchemaId | Kind::BadBody | Kind::TombstoneGarbageKey => {
            Some("undecodable")
        }
        Kind::ForeignListing | Kind::ForeignKeySchema => Some("foreign_schema"),
        Kind::ForeignBomb => Some(FOREIGN_OR_TOO_LARGE),
        Kind::OwnSubjectBomb => Some("too_large"),
        Kind::TombstoneKnown | Kind::TombstoneUnknown => None,
    }
}

/// The reason of a foreign bomb: `foreign_schema` or `too_large`.
const FOREIGN_OR_TOO_LARGE: &str = "foreign_schema or too_large";

/// The drops expected, by reason.
#[derive(Debug, Default)]
struct Drops(BTreeMap<String, u64>);

impl Drops {
    /// Whether the metrics `got` count every expected drop under its reason, and no other.
    fn accounts_for(&self, got: &BTreeMap<String, u64>) -> bool {
        let expected = |reason: &str| self.0.get(reason).copied().unwrap_or(0);
        let found = |reason: &str| got.get(reason).copied().unwrap_or(0);
        let either = expected(FOREIGN_OR_TOO_LARGE);
        let strict = self
            .0
            .keys()
            .chain(got.keys())
            .filter(|r| !matches!(r.as_str(), "foreign_schema" | "too_large"))
            .filter(|r| r.as_str() != FOREIGN_OR_TOO_LARGE)
            .all(|r| expected(r) == found(r));
        strict
            && found("foreign_schema") >= expected("foreign_schema")
            && found("too_large") >= expected("too_large")
            && found("foreign_schema") + found("too_large")
                == expected("foreign_schema") + expected("too_large") + either
    }
}

/// The sums `distinct` must end with, computed here: the last listing of each product (none
/// after its tombstone; records that cannot be read change nothing), counted when priced
/// 0..=1,000,000, per category at level 1 (`unknown` without one) and in `all`.
fn expected_sums(hostile: &Hostile) -> BTreeMap<ListingSumKey, Figures> {
    let mut latest: BTreeMap<i64, &Listing> = BTreeMap::new();
    for r in &hostile.records {
        match (r.kind, r.product_id, &r.listing) {
            (Kind::Listing | Kind::Huge, Some(id), Some(listing)) => {
                latest.insert(id, listing);
            }
            (Kind::TombstoneKnown | Kind::TombstoneUnknown, Some(id), _) => {
                latest.remove(&id);
            }
            _ => {}
        }
    }
    let mut prices: BTreeMap<ListingSumKey, Vec<i64>> = BTreeMap::new();
    for listing in latest.values() {
        let Some(price) = listing.price.filter(|p| (0..=MAX_PRICE).contains(p)) else {
            continue;
        };
        let category = listing
            .category_level1
            .clone()
            .unwrap_or_else(|| "unknown".into());
        for (scope, value) in [("all", "all".to_owned()), ("category_level1", category)] {
            let key = ListingSumKey {
                scope: scope.into(),
                value,
            };
            prices.entry(key).or_default().push(price);
        }
    }
    prices
        .into_iter()
        .map(|(key, p)| {
            let count = i64::try_from(p.len()).unwrap();
            (
                key,
                (
                    count,
                    p.iter().sum(),
                    p.iter().min().copied(),
                    p.iter().max().copied(),
                ),
            )
        })
        .collect()
}

/// `streams_records_dropped_total` by reason, from the worker's `/metrics`.
async fn dropped(port: u16) -> BTreeMap<String, u64> {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return BTreeMap::new();
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("streams_records_dropped_total{")?;
            let (labels, value) = rest.split_once("} ")?;
            let reason = labels
                .split(',')
                .find_map(|l| l.strip_prefix("reason=\""))?
                .trim_end_matches('"');
            Some((reason.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn hostile_records_leave_streams_running_with_exact_sums_and_every_drop_counted() {
    let pipeline = Pipeline::new("streams-hostile").await;
    let hostile = Hostile::generate(
        &pipeline.cluster.config,
        &pipeline.input,
        &Mix::default(),
        SEED,
    )
    .await
    .unwrap();
    hostile::produce(&pipeline.cluster.config.kafka, &hostile)
        .await
        .unwrap();
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut reasons = Drops::default();
    for r in &hostile.records {
        *by_kind.entry(r.kind).or_default() += 1;
        if let Some(reason) = drop_reason(r.kind, r.listing.as_ref()) {
            *reasons.0.entry(reason.to_owned()).or_default() += 1;
        }
    }
    eprintln!("{} records produced: {by_kind:?}", hostile.records.len());
    let sums = expected_sums(&hostile);

    let port = free_port();
    let (mut child, stderr) = start_capturing(pipeline.command(port, &[]));
    let watch = MemoryWatch::start(child.id(), RSS_CEILING);
    let running = |child: &mut std::process::Child| {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "streams is no longer running: {status}{}",
                if watch.killed() {
                    " (killed by the memory watch: over 1 GiB)"
                } else {
                    ""
                }
            );
        }
    };

    // The drops, by reason: every one counted once the worker has read everything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        running(&mut child);
        let got = dropped(port).await;
        if reasons.accounts_for(&got) {
            eprintln!("drops by reason: {got:?}");
            break;
        }
        let read = support::records_in(port).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 3 minutes ({read} of {} records read) the drops by reason are {got:?}, \
             expected {:?}",
            hostile.records.len(),
            reasons.0
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    pipeline.await_sums(&sums, Duration::from_secs(120)).await;
    eprintln!("{} sums exact", sums.len());

    // A few seconds more: still running, the same drops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    running(&mut child);
    let after = dropped(port).await;
    assert!(reasons.accounts_for(&after), "the drops changed: {after:?}");
    let peak = watch.peak();
    eprintln!(
        "{} records in; {}",
        hostile.records.len(),
        watch.report("streams")
    );
    assert!(
        peak < RSS_BOUND,
        "streams' peak RSS {:.1} MiB is over {} MiB",
        mib(peak),
        RSS_BOUND >> 20
    );
    let exit = terminate(&mut child);
    let _ = stderr.join();
    assert!(exit.success(), "streams exited with {exit} after SIGTERM");
}
