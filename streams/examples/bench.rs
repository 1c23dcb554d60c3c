//! The `streams` benchmark (run by `scripts/bench.sh streams [N]`): fills a fresh topic with N
//! Avro listings, then measures, against the same brokers in the same run,
//!
//! 1. the raw rate: a plain consume→produce loop copying the same bytes to another topic, with
//!    the same client settings (group consumer, idempotent producer, `acks=all`), run before and
//!    after streams and averaged, so that both see the brokers' load alike;
//! 2. the `streams` rate: the release binary reading the same topic through filter and sums
//!    (changelog, forwarded listings, partial sums), from its first record read to its N-th;
//!
//! and prints both and their ratio, after checking that the sums are exact.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marketflow_core::Config;
use marketflow_core::codec::Codec;
use marketflow_core::kafka::{consumer_config, create_producer, ensure_topics, producer_config};
use marketflow_core::record::{Listing, ListingKey, ListingSum, ListingSumKey};
use marketflow_core::schema::{self, Part};
use marketflow_core::testkit::unique;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn listing(i: u64) -> Listing {
    // Deterministic spread: a quarter over the limit, one in 20 without a price.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    let price = match h % 20 {
        0 => None,
        1..=5 => Some(1_000_001 + (h % 4_000_000) as i64),
        _ => Some((h % 1_000_001) as i64),
    };
    let category = ["디지털기기", "가구/인테리어", "의류", "도서", "스포츠/레저"][(h % 5) as usize];
    let id = (i % 40_000) as i64; // repeats are newer versions of earlier products
    Listing {
        product_id: id,
        title: format!("아이폰 15 Pro {i} 급처"),
        price,
        condition: "used".into(),
        sale_status: "on_sale".into(),
        category_path: Some(format!("{category} > 기타")),
        category_level1: Some(category.into()),
        category_level2: Some("기타".into()),
        category_level3: None,
        category_level4: None,
        description: "직거래 선호, 네고 가능합니다. 상태 좋아요.".into(),
        seller: Some(format!("{:064x}", h)),
        location: Some("서울 강남구".into()),
        view_count: Some((h % 500) as i64),
        wish_count: Some((h % 20) as i64),
        chat_count: Some((h % 5) as i64),
        image_urls: vec![format!("https://img.joongna.com/{i}/1.jpg")],
        posted_at: Some(1_700_000_000_000),
        scraped_at: 1_700_000_000_000 + i as i64,
        source_url: format!("https://web.joongna.com/product/{id}"),
    }
}

async fn fill(config: &Config, codec: &Codec, topic: &str, n: u64) -> BTreeMap<i64, Listing> {
    let producer: FutureProducer = create_producer(&config.kafka).unwrap();
    let keys = codec.encoder(topic, Part::Key, schema::LISTING_KEY);
    let values = codec.encoder(topic, Part::Value, schema::LISTING);
    let mut latest = BTreeMap::new();
    let mut pending = Vec::new();
    for i in 0..n {
        let l = listing(i);
        let key = keys
            .encode(&ListingKey {
                product_id: l.product_id,
            })
            .await
            .unwrap();
        let value = values.encode(&l).await.unwrap();
        pending.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
        latest.insert(l.product_id, l);
        if pending.len() >= 10_000 {
            for d in pending.drain(..) {
                d.await.unwrap().unwrap();
            }
        }
    }
    for d in pending {
        d.await.unwrap().unwrap();
    }
    latest
}

/// The plain consume→produce loop: records per second from its first record read to the last
/// one delivered.
fn raw(config: &Config, from: &str, to: &str, n: u64) -> f64 {
    let consumer: BaseConsumer = consumer_config(&config.kafka, &unique("bench-raw"))
        .unwrap()
        .create()
        .unwrap();
    consumer.subscribe(&[from]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(&config.kafka).unwrap().create().unwrap();
    let mut copied = 0;
    let mut started = None;
    while copied < n {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        started.get_or_insert_with(Instant::now);
        let mut record = BaseRecord::to(to).key(message.key().unwrap_or_default());
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        copied += 1;
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    n as f64 / started.unwrap().elapsed().as_secs_f64()
}

async fn records_in(port: u16) -> u64 {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/status")).await else {
        return 0;
    };
    let status: serde_json::Value = response.json().await.unwrap_or_default();
    status["records_in"].as_u64().unwrap_or(0)
}

fn last_all_sum(
    config: &Config,
    codec: &Codec,
    runtime: &tokio::runtime::Handle,
    topic: &str,
) -> Option<ListingSum> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", unique("bench-read"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut eof, mut last) = (0, None);
    while eof < 3 {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let key: ListingSumKey = runtime.block_on(codec.decode(m.key().unwrap())).unwrap();
                if key.scope == "all" {
                    last = Some(
                        runtime
                            .block_on(codec.decode(m.payload().unwrap()))
                            .unwrap(),
                    );
                }
            }
            Some(Err(_)) => eof += 1,
            None => {}
        }
    }
    last
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().expect("N, a number of listings"));
    let binary = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "target/release/streams".into());
    let config = Config::load(None).unwrap();
    let codec = Codec::new(&config.registry).unwrap();
    let input = unique("bench-in");
    let copy = unique("bench-raw-out");
    let (affordable, sums) = (unique("bench-ok"), unique("bench-sums"));
    ensure_topics(
        &config.kafka,
        &[(&input, 3), (&copy, 3), (&affordable, 3), (&sums, 3)],
    )
    .await
    .unwrap();

    eprintln!("bench: filling {input} with {n} listings");
    let latest = fill(&config, &codec, &input, n).await;
    let expected_count = latest
        .values()
        .filter(|l| l.price.is_some_and(|p| p <= 1_000_000))
        .count() as i64;

    // The raw loop runs before and after streams, so that both see the brokers' load alike.
    eprintln!("bench: raw consume→produce loop");
    let (raw_config, from, to) = (config.clone(), input.clone(), copy.clone());
    let raw_before = tokio::task::spawn_blocking(move || raw(&raw_config, &from, &to, n))
        .await
        .unwrap();

    eprintln!("bench: streams ({binary})");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = unique("bench-streams");
    let mut child = Command::new(&binary)
        .env("MARKETFLOW__TOPICS__LISTINGS", &input)
        .env("MARKETFLOW__TOPICS__LISTINGS_AFFORDABLE", &affordable)
        .env("MARKETFLOW__TOPICS__LISTING_SUMS", &sums)
        .env("MARKETFLOW__STREAMS__GROUP_ID", &group)
        .env(
            "MARKETFLOW__STREAMS__CHANGELOG_TOPIC",
            format!("{group}-changelog"),
        )
        .env(
            "MARKETFLOW__STREAMS__PARTIALS_TOPIC",
            format!("{group}-partials"),
        )
        .env(
            "MARKETFLOW__STREAMS__ADMIN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("run `cargo build --release -p marketflow-streams` first");
    let mut started = None;
    loop {
        let read = records_in(port).await;
        if read > 0 {
            started.get_or_insert_with(Instant::now);
        }
        if read >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let streams_rate = n as f64 / started.unwrap().elapsed().as_secs_f64();

    // The figures count only if the sums are right.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runtime = tokio::runtime::Handle::current();
    loop {
        let (c, cc, s) = (
            config.clone(),
            Codec::new(&config.registry).unwrap(),
            sums.clone(),
        );
        let rt = runtime.clone();
        let all = tokio::task::spawn_blocking(move || last_all_sum(&c, &cc, &rt, &s))
            .await
            .unwrap();
        if all.as_ref().is_some_and(|a| a.count == expected_count) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sums did not reach the expected count {expected_count}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    eprintln!("bench: raw consume→produce loop again");
    let (raw_config, from, to) = (config.clone(), input.clone(), copy.clone());
    let raw_after = tokio::task::spawn_blocking(move || raw(&raw_config, &from, &to, n))
        .await
        .unwrap();
    let raw_rate = (raw_before + raw_after) / 2.0;

    println!("listings                 {n}");
    println!(
        "raw consume→produce      {raw_rate:>10.0} records/s (mean of {raw_before:.0} before and \
         {raw_after:.0} after)"
    );
    println!("streams filter + sums    {streams_rate:>10.0} records/s");
    println!("ratio                    {:>10.2}", streams_rate / raw_rate);
}
