//! `scripts/demo.sh` against the local cluster, on topics, groups, a database and ports of its
//! own: it completes, and the counts it prints agree with a direct query of MySQL and a direct
//! read of the sums topic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use marketflow_core::codec::Codec;
use marketflow_core::kafka::{create_consumer, ensure_topics};
use marketflow_core::record::{ListingSum, ListingSumKey};
use marketflow_core::testkit::{Cluster, unique};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

const LISTINGS: usize = 400;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binaries `cargo test --workspace` built beside this test's.
fn bin_dir() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_marketflow"));
    let dir = me.parent().unwrap().to_path_buf();
    for program in ["market", "scraper", "sink", "streams"] {
        assert!(
            dir.join(program).exists(),
            "{} is missing: run the workspace's tests (scripts/test.sh), which build every program",
            dir.join(program).display()
        );
    }
    dir
}

/// The value of `key=` on a `label  key=value ...` line of the report.
fn field(line: &str, key: &str) -> i64 {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap()
}

/// The latest sum of every key, read straight from the topic.
async fn sums_on_topic(cluster: &Cluster, topic: &str) -> BTreeMap<ListingSumKey, ListingSum> {
    let codec = Codec::new(&cluster.config.registry).unwrap();
    let consumer = create_consumer(&cluster.config.kafka, &unique("demo-check")).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut latest = BTreeMap::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(8), async {
        use futures::StreamExt;
        consumer.stream().next().await
    })
    .await
    {
        let message = message.unwrap();
        let key: ListingSumKey = codec.decode(message.key().unwrap()).await.unwrap();
        let value: ListingSum = codec.decode(message.payload().unwrap()).await.unwrap();
        latest.insert(key, value);
    }
    latest
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn the_demo_completes_and_its_counts_agree_with_mysql_and_the_sums_topic() {
    let cluster = Cluster::require().await;
    let bin = bin_dir();
    let tag = unique("demo");
    let name = |what: &str| format!("{tag}-{what}");
    let topics = [
        name("listings"),
        name("affordable"),
        name("sums"),
        name("events"),
        name("dlq"),
    ];
    for topic in &topics {
        ensure_topics(&cluster.config.kafka, &[(topic, 3)])
            .await
            .unwrap();
    }

    let database = cluster.database("demo").await;
    let database_url = database.url.clone();

    let run_dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let env: Vec<(String, String)> = vec![
        ("DEMO_BUILD".into(), "0".into()),
        ("DEMO_BIN".into(), bin.display().to_string()),
        ("DEMO_LISTINGS".into(), LISTINGS.to_string()),
        ("DEMO_RUN_DIR".into(), run_dir.path().display().to_string()),
        ("DEMO_WAIT".into(), "180".into()),
        (
            "MARKETFLOW__SCRAPER__BASE_URL".into(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
        (
            "MARKETFLOW__SCRAPER__ADMIN_ADDR".into(),
            "127.0.0.1:0".into(),
        ),
        (
            "MARKETFLOW__SCRAPER__CHECKPOINT_TOPIC".into(),
            name("checkpoints"),
        ),
        (
            "MARKETFLOW__SINK__ADMIN_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "MARKETFLOW__SINK__DATABASE_URL".into(),
            database_url.clone(),
        ),
        (
            "MARKETFLOW__SINK__TOPICS".into(),
            format!("[\"{}\"]", topics[0]),
        ),
        ("MARKETFLOW__SINK__GROUP_ID".into(), name("sink")),
        (
            "MARKETFLOW__STREAMS__ADMIN_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        ("MARKETFLOW__STREAMS__GROUP_ID".into(), name("streams")),
        (
            "MARKETFLOW__STREAMS__CHANGELOG_TOPIC".into(),
            name("changelog"),
        ),
        (
            "MARKETFLOW__STREAMS__PARTIALS_TOPIC".into(),
            name("partials"),
        ),
        ("MARKETFLOW__TOPICS__LISTINGS".into(), topics[0].clone()),
        (
            "MARKETFLOW__TOPICS__LISTINGS_AFFORDABLE".into(),
            topics[1].clone(),
        ),
        ("MARKETFLOW__TOPICS__LISTING_SUMS".into(), topics[2].clone()),
        (
            "MARKETFLOW__TOPICS__SCRAPER_EVENTS".into(),
            topics[3].clone(),
        ),
        ("MARKETFLOW__TOPICS__DEAD_LETTER".into(), topics[4].clone()),
    ];
    let output = Command::new("bash")
        .arg(&script)
        .envs(env.clone())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    // Stop the demo's programs whatever happened.
    let _ = Command::new("bash")
        .arg(&script)
        .arg("stop")
        .envs(env)
        .output();
    assert!(
        output.status.success(),
        "demo.sh failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let line = |label: &str| {
        report
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in the report:\n{report}"))
            .to_owned()
    };

    // MySQL: the printed row count is the table's.
    let mut db = MySqlConnection::connect(&database_url).await.unwrap();
    let rows = line("MySQL rows");
    let words: Vec<&str> = rows.split_whitespace().collect();
    let (table, printed) = (words[2], words[3].parse::<i64>().unwrap());
    let counted: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{table}`"
    )))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(printed, counted, "{report}");
    let scraped = line("Scraped");
    let listings: i64 = scraped
        .split(": ")
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        listings, counted,
        "every listing scraped is a row: {report}"
    );
    assert!(counted > (LISTINGS as i64) * 9 / 10, "{report}");

    // The sums topic: the printed total and categories are its latest values.
    let sums = sums_on_topic(&cluster, &topics[2]).await;
    let total = &sums[&ListingSumKey {
        scope: "all".into(),
        value: "all".into(),
    }];
    let printed = line("Sum of all");
    assert_eq!(
        (field(&printed, "count"), field(&printed, "sum")),
        (total.count, total.sum),
        "{report}"
    );
    let categories: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("Top categories"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(!categories.is_empty(), "{report}");
    for category in categories {
        let value = category.split("count=").next().unwrap().trim();
        let sum = &sums[&ListingSumKey {
            scope: "category_level1".into(),
            value: value.to_owned(),
        }];
        assert_eq!(
            (field(category, "count"), field(category, "sum")),
            (sum.count, sum.sum),
            "{category}"
        );
    }
    // The drops and the total add up to the listings with a price under the limit.
    let over: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{table}` WHERE price IS NULL OR price > 1000000"
    )))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(total.count + over, counted, "{report}");

    database.drop().await;
}
