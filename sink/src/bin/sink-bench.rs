//! `sink-bench [N] [BATCH] [ROUNDS]`: the sink's rows/s from a pre-filled topic of N listings into
//! MariaDB, next to the raw rate of the same rows written directly with multi-row INSERTs of the
//! same batch size into the same database, measured in the same run; ROUNDS (5) pairs of them, one
//! after the other, and the median ratio. Run through `scripts/bench.sh sink`.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use marketflow_core::Config;
use marketflow_core::codec::Codec;
use marketflow_core::kafka::{create_admin, create_producer, ensure_topics};
use marketflow_core::record::Listing;
use marketflow_sink::Sink;
use marketflow_sink::sql::{self, OnDuplicate};
use marketflow_sink::typemap::SqlValue;
use rdkafka::admin::AdminOptions;
use rdkafka::producer::FutureRecord;
use secrecy::{ExposeSecret, SecretString};
use sqlx::types::chrono::DateTime;
use sqlx::{Connection, Executor, MySqlConnection};
use tokio_util::sync::CancellationToken;

/// See the workspace's Cargo.toml: the sink allocates and frees every record's fields.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn listing(i: i64) -> Listing {
    let some = |s: String| Some(s);
    Listing {
        product_id: 1_000_000 + i,
        title: format!("아이폰 15 Pro {i} 🍎 \"급처\" \\ 네고 X"),
        price: (i % 7 != 0).then_some(10_000 + i * 13 % 900_000),
        condition: "used".into(),
        sale_status: "on_sale".into(),
        category_path: some("디지털기기 > 휴대폰 > 애플".into()),
        category_level1: some("디지털기기".into()),
        category_level2: some("휴대폰".into()),
        category_level3: some("애플".into()),
        category_level4: None,
        description: format!("상태 좋아요. 직거래 선호합니다 {i}. '; DROP TABLE listings; --")
            .repeat(3),
        seller: some(format!("{:064x}", i * 7919)),
        location: some("서울특별시 강남구".into()),
        view_count: Some(i % 1000),
        wish_count: Some(i % 50),
        chat_count: None,
        image_urls: vec![
            format!("https://img.example/{i}/1.jpg"),
            format!("https://img.example/{i}/2.jpg"),
        ],
        posted_at: Some(1_700_000_000_000 + i),
        scraped_at: 1_700_000_100_000 + i,
        source_url: format!("https://web.joongna.com/product/{i}"),
    }
}

/// The row the sink writes for a listing, in its table's column order.
fn row(l: &Listing) -> Vec<SqlValue> {
    let text = |s: &str| SqlValue::Text(s.to_owned());
    let opt_text = |s: &Option<String>| s.as_deref().map_or(SqlValue::Null, text);
    let opt_int = |n: Option<i64>| n.map_or(SqlValue::Null, SqlValue::Int);
    let time = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .map_or(SqlValue::Null, |t| SqlValue::DateTime(t.naive_utc()))
    };
    vec![
        SqlValue::Int(l.product_id),
        text(&l.title),
        opt_int(l.price),
        text(&l.condition),
        text(&l.sale_status),
        opt_text(&l.category_path),
        opt_text(&l.category_level1),
        opt_text(&l.category_level2),
        opt_text(&l.category_level3),
        opt_text(&l.category_level4),
        text(&l.description),
        opt_text(&l.seller),
        opt_text(&l.location),
        opt_int(l.view_count),
        opt_int(l.wish_count),
        opt_int(l.chat_count),
        SqlValue::Text(serde_json::to_string(&l.image_urls).unwrap_or_default()),
        l.posted_at.map_or(SqlValue::Null, time),
        time(l.scraped_at),
        text(&l.source_url),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map_or(Ok(50_000), |a| a.parse()).context("N")?;
    let batch: usize = args
        .next()
        .map_or(Ok(500), |a| a.parse())
        .context("BATCH")?;
    let rounds: usize = args
        .next()
        .map_or(Ok(5), |a| a.parse())
        .context("ROUNDS")?
        .max(1);
    let mut config = Config::load(None)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let topic = format!("sink-bench-{stamp}");
    let database = format!("sink_bench_{stamp}");

    let (mut admin, url) = create_database(&config, &database).await?;
    let listings = produce_listings(&config, &topic, n).await?;

    // Rounds of the sink (a new group and table each) and the raw loop, one after the other.
    config.sink.topics = vec![topic.clone()];
    config.sink.database_url = SecretString::from(url.clone());
    config.sink.batch_size = batch;
    config.sink.dead_letter_topic = format!("sink-bench-dlq-{stamp}");
    let rows: Vec<Vec<SqlValue>> = listings.iter().map(row).collect();
    println!("listings:            {n} (batch size {batch}, {rounds} rounds)");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        config.sink.group_id = format!("sink-bench-{stamp}-{round}");
        config.sink.table_name_format = format!("r{round}_${{topic}}");
        let (sink_rows, sink_elapsed) = sink_round(&config, n).await?;
        let table = marketflow_sink::settings::table_name(&config.sink.table_name_format, &topic);
        let skip = rows.len() - sink_rows;
        let raw_elapsed = raw_round(&url, &table, round, &rows[skip..], batch).await?;
        #[allow(clippy::cast_precision_loss)]
        let (sink_rate, raw_rate) = (
            sink_rows as f64 / sink_elapsed.as_secs_f64(),
            sink_rows as f64 / raw_elapsed.as_secs_f64(),
        );
        println!(
            "round {round}: sink (Kafka→MySQL) {sink_rate:>7.0} rows/s ({sink_rows} rows in \
             {sink_elapsed:.2?}), raw (INSERT only) {raw_rate:>7.0} rows/s ({raw_elapsed:.2?}), \
             ratio {:.1} %",
            100.0 * sink_rate / raw_rate
        );
        ratios.push(100.0 * sink_rate / raw_rate);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio sink/raw:      {:>5.1} % (median of {rounds}; lowest {:.1} %, highest {:.1} %)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {}",
            sql::quote(&database)
        )))
        .await?;
    // The topics go too, so that repeated runs do not grow the brokers' storage.
    let topics = [topic.as_str(), config.sink.dead_letter_topic.as_str()];
    let deleted = create_admin(&config.kafka)?
        .delete_topics(&topics, &AdminOptions::new())
        .await;
    if let Err(error) = deleted {
        eprintln!("Could not delete the topics {topics:?}: {error}");
    }
    Ok(())
}

/// A new database `database` on the server of `sink.database_url`: a connection to the server,
/// and the database's URL.
async fn create_database(
    config: &Config,
    database: &str,
) -> anyhow::Result<(MySqlConnection, String)> {
    let server = config.sink.database_url.expose_secret().to_owned();
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(b, _)| b)
        .to_owned();
    let mut admin = MySqlConnection::connect(&server)
        .await
        .context("connecting to MariaDB")?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4",
            sql::quote(database)
        )))
        .await?;
    let url = format!("{base}/{database}");
    Ok((admin, url))
}

/// `n` listings produced to `topic` (made with three partitions), as they were produced.
async fn produce_listings(config: &Config, topic: &str, n: i64) -> anyhow::Result<Vec<Listing>> {
    ensure_topics(&config.kafka, &[(topic, 3)]).await?;
    let codec = Codec::new(&config.registry)?;
    let encoder = codec.record_encoder::<Listing>(topic);
    let producer = create_producer(&config.kafka)?;
    let listings: Vec<Listing> = (0..n).map(listing).collect();
    eprintln!("Producing {n} listings to {topic}...");
    for chunk in listings.chunks(2_000) {
        let mut encoded = Vec::with_capacity(chunk.len());
        for l in chunk {
            encoded.push(encoder.encode(&l.key(), l).await?);
        }
        try_join_all(encoded.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(60),
            )
        }))
        .await
        .map_err(|(e, _)| e)?;
    }
    // Its polling thread would otherwise share the cores with what is measured.
    drop(producer);
    Ok(listings)
}

/// The sink from the topic's first row to its last, into the table of its configuration: rows
/// timed (those after the first batch, which also waits for the group to form) and how long.
async fn sink_round(config: &Config, n: i64) -> anyhow::Result<(usize, Duration)> {
    let shutdown = CancellationToken::new();
    let sink = Sink::new(config, shutdown.clone()).await?;
    let board = sink.board();
    let running = tokio::spawn(sink.run());
    let (mut started, mut first) = (None, 0);
    let total = u64::try_from(n)?;
    loop {
        let written = board.snapshot().rows_written;
        if started.is_none() && written > 0 {
            (started, first) = (Some(Instant::now()), written);
        }
        if written >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    shutdown.cancel();
    running.await??;
    Ok((usize::try_from(total - first)?, elapsed))
}

/// The same rows written directly: multi-row INSERTs of the same batch size into a table of
/// the same definition in the same database, each batch one statement, which is its own
/// transaction (as the sink writes a batch that fits one statement).
async fn raw_round(
    url: &str,
    table: &str,
    round: usize,
    rows: &[Vec<SqlValue>],
    batch: usize,
) -> anyhow::Result<Duration> {
    let raw_table = format!("raw_{round}");
    let mut raw = MySqlConnection::connect(url).await?;
    raw.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {} LIKE {}",
        sql::quote(&raw_table),
        sql::quote(table)
    )))
    .await?;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut raw)
    .await?;
    let key = vec!["product_id".to_owned()];
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let refs: Vec<&[SqlValue]> = chunk.iter().map(Vec::as_slice).collect();
        let mut insert = sql::insert(&raw_table, &columns, &key, OnDuplicate::Fail, &refs);
        raw.execute(insert.build()).await?;
    }
    Ok(started.elapsed())
}
