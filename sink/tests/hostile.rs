//! The hostile-input suite of the sink: 2,000 records from `testkit::hostile` (1,000 good
//! listings with 4-byte UTF-8 and SQL metacharacters in every string field and every extreme
//! price; 1,000 of garbage, unknown and foreign schema ids, nested-null bombs, bodies that do not
//! decode, a ~1 MiB listing, tombstones for known, unknown and garbage keys) through two real
//! `sink` binaries with `errors_tolerance = "all"`, one with `delete_enabled` and one without.
//! Afterwards both still run; each table holds exactly the rows the test computes from the good
//! records, column by column; each dead-letter topic holds exactly the bad records, each once,
//! with the `__connect.errors.*` headers naming where it came from and its own headers and
//! timestamp; and each sink's memory stayed bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::{Env, SinkProcess, child_vars, log_file, session_config};
use marketflow_core::record::Listing;
use marketflow_core::testkit::hostile::{self, Coordinates, Hostile, Kind, Mix};
use marketflow_core::testkit::memory::{MemoryWatch, mib};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};

const SEED: u64 = 12;

/// A sink's resident set must stay under this: a batch of 100 records (at most ~1 MiB each, one
/// of them the huge listing), librdkafka's fetch queue (64 MiB by default) and the dead-letter
/// producer's buffer, with room; a decoding bomb would need gigabytes.
const RSS_BOUND: u64 = 256 << 20;

/// Past this the memory watch kills the sink, so that an undefended decoder cannot take the
/// shared machine's memory.
const RSS_CEILING: u64 = 1 << 30;

/// One sink under test.
struct Run {
    name: &'static str,
    env: Env,
    delete_enabled: bool,
    dlq: String,
    log: PathBuf,
    sink: SinkProcess,
    watch: MemoryWatch,
}

impl Run {
    /// Panics with the sink's log when it is no longer running.
    fn assert_running(&mut self) {
        if let Some(status) = self.sink.process.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "the sink ({}) is no longer running: {status}{}; its log ends:\n{tail}",
                self.name,
                if self.watch.killed() {
                    " (killed by the memory watch: over 1 GiB)"
                } else {
                    ""
                }
            );
        }
    }
}

/// The rows the table must hold: the last listing of each product, and none for a product whose
/// last record is a tombstone when tombstones delete.
fn expected_rows(hostile: &Hostile, delete_enabled: bool) -> BTreeMap<i64, Listing> {
    let mut rows = BTreeMap::new();
    for r in &hostile.records {
        match (r.kind, r.product_id) {
            (Kind::Listing, Some(id)) => {
                rows.insert(id, r.listing.clone().unwrap());
            }
            (Kind::TombstoneKnown | Kind::TombstoneUnknown, Some(id)) if delete_enabled => {
                rows.remove(&id);
            }
            _ => {}
        }
    }
    rows
}

/// Whether the record can never be written: everything but a listing (the ~1 MiB one's
/// description does not fit a `TEXT` column), and tombstones too when they do not delete.
fn is_dead_letter(kind: Kind, delete_enabled: bool) -> bool {
    match kind {
        Kind::Listing => false,
        Kind::TombstoneKnown | Kind::TombstoneUnknown => !delete_enabled,
        _ => true,
    }
}

fn header(message: &OwnedMessage, name: &str) -> Option<Vec<u8>> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(<[u8]>::to_vec))
}

fn text_header(message: &OwnedMessage, name: &str) -> String {
    let value = header(message, name).unwrap_or_else(|| {
        panic!(
            "dead letter at {}/{} has no header {name}",
            message.partition(),
            message.offset()
        )
    });
    String::from_utf8(value).unwrap()
}

/// Checks the dead-letter topic of `run`: exactly the bad records, each once, each with its
/// source named, its error class, its own headers and timestamp, and its bytes (the value may be
/// cut short, never altered).
async fn assert_dead_letters(
    run: &Run,
    topic: &str,
    hostile: &Hostile,
    landed: &[Coordinates],
) -> usize {
    let by_coordinates: BTreeMap<Coordinates, usize> =
        landed.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let expected: BTreeSet<usize> = hostile
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| is_dead_letter(r.kind, run.delete_enabled))
        .map(|(i, _)| i)
        .collect();
    let kafka = run.env.cluster.config.kafka.clone();
    let dlq = run.dlq.clone();
    let letters = tokio::task::spawn_blocking(move || hostile::read_all(&kafka, &dlq).unwrap())
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    let mut classes: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for letter in &letters {
        assert_eq!(text_header(letter, "__connect.errors.topic"), topic);
        let partition: i32 = text_header(letter, "__connect.errors.partition")
            .parse()
            .unwrap();
        let offset: i64 = text_header(letter, "__connect.errors.offset")
            .parse()
            .unwrap();
        let index = *by_coordinates.get(&(partition, offset)).unwrap_or_else(|| {
            panic!("dead letter for {partition}/{offset}, which the test did not produce")
        });
        let record = &hostile.records[index];
        *seen.entry(index).or_insert(0) += 1;
        let class = text_header(letter, "__connect.errors.exception.class.name");
        assert!(!class.is_empty());
        assert!(!text_header(letter, "__connect.errors.exception.message").is_empty());
        *classes.entry((record.kind, class)).or_default() += 1;
        // Provenance: the record's own headers and timestamp.
        for (name, value) in &record.headers {
            assert_eq!(
                header(letter, name).as_ref(),
                Some(value),
                "dead letter of record {index} ({:?}, {partition}/{offset}) lacks the original \
                 header {name}",
                record.kind
            );
        }
        assert_eq!(
            letter.timestamp().to_millis(),
            Some(record.timestamp),
            "dead letter of record {index} ({:?}) lacks the original timestamp",
            record.kind
        );
        // The bytes as they arrived; a value too large to send again may be cut short.
        match (letter.payload(), record.value.as_deref()) {
            (None, None) => {}
            (Some(got), Some(sent)) if got == sent => {
                assert_eq!(letter.key(), record.key.as_deref(), "key of record {index}");
            }
            (got, Some(sent)) => {
                let got = got.unwrap_or_default();
                assert!(
                    got.len() < sent.len() && sent.starts_with(got),
                    "dead letter of record {index} ({:?}): its value is neither the original \
                     ({} bytes) nor a truncation of it ({} bytes)",
                    record.kind,
                    sent.len(),
                    got.len()
                );
            }
            (Some(got), None) => {
                panic!(
                    "dead letter of tombstone {index} has a value of {} bytes",
                    got.len()
                )
            }
        }
    }
    eprintln!("{}: dead letters by kind and class: {classes:?}", run.name);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{}: dead-lettered more than once: {twice:?}",
        run.name
    );
    let kinds = |indices: &mut dyn Iterator<Item = &usize>| {
        let mut by_kind: BTreeMap<Kind, Vec<usize>> = BTreeMap::new();
        for i in indices {
            by_kind
                .entry(hostile.records[*i].kind)
                .or_default()
                .push(*i);
        }
        by_kind
    };
    let missing = kinds(&mut expected.iter().filter(|i| !seen.contains_key(i)));
    let unexpected = kinds(&mut seen.keys().filter(|i| !expected.contains(i)));
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{}: bad records missing from the dead-letter topic (by kind, record indices): \
         {missing:?}; records dead-lettered that are good: {unexpected:?}",
        run.name
    );
    letters.len()
}

/// The rows that differ from `expected`: missing, extra, or each field that differs.
fn row_differences(got: &BTreeMap<i64, Listing>, expected: &BTreeMap<i64, Listing>) -> Vec<String> {
    let mut out = Vec::new();
    for (id, want) in expected {
        match got.get(id) {
            None => out.push(format!("product {id}: no row")),
            Some(row) if row != want => {
                let (row, want) = (
                    serde_json::to_value(row).unwrap(),
                    serde_json::to_value(want).unwrap(),
                );
                let fields: Vec<String> = want
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(name, value)| row.get(name.as_str()) != Some(value))
                    .map(|(name, value)| format!("{name} = {} (expected {value})", row[name]))
                    .collect();
                out.push(format!("product {id}: {}", fields.join(", ")));
            }
            Some(_) => {}
        }
    }
    for id in got.keys().filter(|id| !expected.contains_key(id)) {
        out.push(format!("product {id}: a row no good record makes"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn hostile_records_leave_both_sinks_running_with_exact_rows_and_every_bad_one_dead_lettered()
{
    let deleting = Env::new("hostile_delete").await;
    let keeping = Env::new("hostile_keep").await;
    let topic = deleting.cluster.topic("sink-hostile", 3).await;
    let table = topic.replace('-', "_");
    let hostile = Hostile::generate(&deleting.cluster.config, &topic, &Mix::default(), SEED)
        .await
        .unwrap();
    let landed = hostile::produce(&deleting.cluster.config.kafka, &hostile)
        .await
        .unwrap();
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for r in &hostile.records {
        *by_kind.entry(r.kind).or_default() += 1;
    }
    eprintln!(
        "{} records produced to {topic}: {by_kind:?}",
        hostile.records.len()
    );

    let config = session_config("sink-hostile-config");
    let mut runs = Vec::new();
    for (name, env, delete_enabled) in [
        ("delete_enabled = true", deleting, true),
        ("delete_enabled = false", keeping, false),
    ] {
        let mut vars = child_vars(&topic, "sink-hostile");
        let dlq = vars
            .iter()
            .find(|(k, _)| *k == "MARKETFLOW__SINK__DEAD_LETTER_TOPIC")
            .unwrap()
            .1
            .clone();
        vars.push(("MARKETFLOW__SINK__ERRORS_TOLERANCE", "all".into()));
        vars.push((
            "MARKETFLOW__SINK__DELETE_ENABLED",
            delete_enabled.to_string(),
        ));
        let log = log_file("sink-hostile");
        eprintln!("{name}: log {}", log.display());
        let sink = SinkProcess::start(&env, &vars, &config, &log);
        let watch = MemoryWatch::start(sink.process.id(), RSS_CEILING);
        runs.push(Run {
            name,
            env,
            delete_enabled,
            dlq,
            log,
            sink,
            watch,
        });
    }

    for run in &mut runs {
        let rows = expected_rows(&hostile, run.delete_enabled);
        let dead = hostile
            .records
            .iter()
            .filter(|r| is_dead_letter(r.kind, run.delete_enabled))
            .count() as u64;
        // Until the table and the dead letters are as expected; or the sink has read every
        // record and nothing has changed for 20 s; or 5 minutes have passed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let (mut last, mut since) = (None, tokio::time::Instant::now());
        loop {
            run.assert_running();
            let status = run.sink.status().await.unwrap_or_default();
            let got = run.env.listing_rows_if_any(&table).await;
            if got == rows && status["dead_lettered"].as_u64() == Some(dead) {
                break;
            }
            let now = (status["dead_lettered"].as_u64(), got.clone());
            if last.as_ref() != Some(&now) {
                (last, since) = (Some(now), tokio::time::Instant::now());
            }
            let read_all = status["records_in"].as_u64() >= Some(hostile.records.len() as u64);
            let settled = read_all && since.elapsed() > Duration::from_secs(20);
            if settled || tokio::time::Instant::now() > deadline {
                let differences = row_differences(&got, &rows);
                panic!(
                    "{}: the sink has dead-lettered {} of {dead} records and {} of {} rows \
                     differ; the first:\n{}",
                    run.name,
                    status["dead_lettered"],
                    differences.len(),
                    rows.len(),
                    differences
                        .into_iter()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "{}: {} rows exact, {dead} dead letters counted",
            run.name,
            rows.len()
        );
    }

    for run in &mut runs {
        let letters = assert_dead_letters(run, &topic, &hostile, &landed).await;
        // A few seconds more: still running, nothing more dead-lettered, the rows unchanged.
        tokio::time::sleep(Duration::from_secs(3)).await;
        run.assert_running();
        assert_eq!(
            run.env.listing_rows_if_any(&table).await,
            expected_rows(&hostile, run.delete_enabled)
        );
        let peak = run.watch.peak();
        eprintln!(
            "{}: {} records in, {letters} dead letters; {}",
            run.name,
            hostile.records.len(),
            run.watch.report("sink")
        );
        assert!(
            peak < RSS_BOUND,
            "{}: the sink's peak RSS {:.1} MiB is over {} MiB",
            run.name,
            mib(peak),
            RSS_BOUND >> 20
        );
    }
    for run in runs {
        run.sink.stop();
        run.env.drop_database().await;
    }
}

trait RowsIfAny {
    /// The listing rows, or none while the table does not exist yet.
    async fn listing_rows_if_any(&self, table: &str) -> BTreeMap<i64, Listing>;
}

impl RowsIfAny for Env {
    async fn listing_rows_if_any(&self, table: &str) -> BTreeMap<i64, Listing> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        )
        .bind(&self.database)
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        if exists == 0 {
            return BTreeMap::new();
        }
        self.listing_rows(table).await
    }
}
