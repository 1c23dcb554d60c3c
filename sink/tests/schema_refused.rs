//! Schemas whose tables MySQL 8 or MariaDB refuse. A schema the sink can map within MySQL's limits
//! (a string default on a TEXT column, twenty `VARCHAR(4096)`s, an enum symbol of 20,000
//! characters) gets a table MariaDB creates and its rows land. A schema the database refuses
//! (1,100 columns: "Too many columns") or the sink refuses (a field name over 64 characters) is
//! the schema's problem: with `errors_tolerance = "all"` its records go to the dead-letter topic
//! with the reason and the other topics keep flowing; with `"none"` the sink stops, saying what
//! to change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use common::{Env, Running, listings};
use futures::StreamExt;
use marketflow_core::config::{PkMode, Tolerance};
use marketflow_core::kafka::create_consumer;
use marketflow_core::testkit::unique;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};

/// Registers `schema` under `<topic>-value` and returns its id.
async fn register(env: &Env, topic: &str, schema: &str) -> u32 {
    let url = format!(
        "{}/subjects/{topic}-value/versions",
        env.cluster.config.registry.url.trim_end_matches('/')
    );
    let answer: serde_json::Value = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    u32::try_from(answer["id"].as_u64().unwrap()).unwrap()
}

/// `value` in the Confluent wire format under schema `id`.
fn encode(id: u32, schema: &Schema, value: Value) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .unwrap();
    bytes.extend(writer.write_value_to_vec(value).unwrap());
    bytes
}

/// Registers a record schema of `fields` (JSON) for `topic` and produces `n` records of it, each
/// from `record(i)`.
async fn produce_records(
    env: &Env,
    topic: &str,
    fields: &[String],
    n: usize,
    record: impl Fn(usize) -> Vec<(String, Value)>,
) {
    let json = format!(
        r#"{{"type":"record","name":"Wide","namespace":"test","fields":[{}]}}"#,
        fields.join(",")
    );
    let schema = Schema::parse_str(&json).unwrap();
    let id = register(env, topic, &json).await;
    let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
        .map(|i| {
            let value = encode(id, &schema, Value::Record(record(i)));
            (format!("k{i}").into_bytes(), Some(value))
        })
        .collect();
    env.produce_raw(topic, &records).await;
}

/// 1,100 boolean fields: MariaDB refuses the table ("Too many columns"; MySQL error 1117).
async fn produce_too_wide(env: &Env, topic: &str, n: usize) {
    let fields: Vec<String> = (0..1_100)
        .map(|i| format!(r#"{{"name":"b{i}","type":"boolean"}}"#))
        .collect();
    produce_records(env, topic, &fields, n, |_| {
        (0..1_100)
            .map(|i| (format!("b{i}"), Value::Boolean(i % 2 == 0)))
            .collect()
    })
    .await;
}

/// The sink's config for `topics`, keyed by Kafka coordinates (the records have no key schema).
fn config(env: &Env, topics: &[&str], tolerance: Tolerance) -> marketflow_core::Config {
    let mut config = env.config(topics);
    config.sink.pk_mode = PkMode::Kafka;
    config.sink.pk_fields = vec![];
    config.sink.delete_enabled = false;
    config.sink.errors_tolerance = tolerance;
    config
}

/// Every dead letter on `dlq` until `n` have come: (source topic, class, message).
async fn dead_letters(env: &Env, dlq: &str, n: usize) -> Vec<(String, String, String)> {
    let consumer = create_consumer(&env.cluster.config.kafka, &unique("dlq-reader")).unwrap();
    consumer.subscribe(&[dlq]).unwrap();
    let mut stream = consumer.stream();
    let mut letters = Vec::new();
    while letters.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} dead letters arrived", letters.len()))
            .unwrap()
            .unwrap();
        let headers = message.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        letters.push((
            header("__connect.errors.topic"),
            header("__connect.errors.exception.class.name"),
            header("__connect.errors.exception.message"),
        ));
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn with_tolerance_all_refused_schemas_are_dead_lettered_and_other_topics_flow() {
    let env = Env::new("schema_refused_all").await;
    let good = env.cluster.topic("sink-refused-good", 1).await;
    let mapped = env.cluster.topic("sink-refused-mapped", 1).await;
    let wide = env.cluster.topic("sink-refused-wide", 1).await;
    let named = env.cluster.topic("sink-refused-named", 1).await;

    // Within MySQL's limits only as the sink maps it.
    let long_symbol = "S".repeat(20_000);
    let mut fields = vec![
        r#"{"name":"color","type":"string","default":"red"}"#.to_owned(),
        format!(
            r#"{{"name":"kind","type":{{"type":"enum","name":"Kind","symbols":["A","{long_symbol}"]}}}}"#
        ),
    ];
    fields
        .extend((0..20).map(|i| format!(r#"{{"name":"s{i}","type":"string","max_length":4096}}"#)));
    produce_records(&env, &mapped, &fields, 30, |i| {
        let mut record = vec![
            ("color".to_owned(), Value::String(format!("c{i}"))),
            ("kind".to_owned(), Value::Enum(1, long_symbol.clone())),
        ];
        record.extend((0..20).map(|f| (format!("s{f}"), Value::String("가".repeat(4096)))));
        record
    })
    .await;
    produce_too_wide(&env, &wide, 20).await;
    let long_name = "n".repeat(70);
    produce_records(
        &env,
        &named,
        &[format!(r#"{{"name":"{long_name}","type":"long"}}"#)],
        10,
        |i| vec![(long_name.clone(), Value::Long(i64::try_from(i).unwrap()))],
    )
    .await;
    env.produce_listings(&good, &listings(200, 31)).await;

    let config = config(&env, &[&good, &mapped, &wide, &named], Tolerance::All);
    let dlq = config.sink.dead_letter_topic.clone();
    let sink = Running::start(&config).await;
    env.wait_for_rows(&good.replace('-', "_"), 200, Duration::from_secs(120))
        .await;
    env.wait_for_rows(&mapped.replace('-', "_"), 30, Duration::from_secs(60))
        .await;
    env.wait_for("30 dead letters", Duration::from_secs(60), || async {
        sink.status().await["dead_lettered"] == 30
    })
    .await;
    assert!(!sink.handle.is_finished(), "the sink stopped");
    assert_eq!(sink.status().await["state"], "running");

    // The mapped table as MariaDB made it: the TEXT default an expression, wide strings TEXT.
    let mapped_table = mapped.replace('-', "_");
    let (ddl,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COLUMN_DEFAULT AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{mapped_table}' AND COLUMN_NAME = 'color'"
    )))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(ddl.contains("red"), "{ddl}");
    let kinds: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT kind FROM `{mapped_table}` LIMIT 1"
    )))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(kinds[0].0, long_symbol);

    let letters = dead_letters(&env, &dlq, 30).await;
    let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
    for (topic, class, message) in &letters {
        *by_topic.entry(topic.as_str()).or_default() += 1;
        if topic == &wide {
            assert_eq!(class, "schema_refused", "{message}");
            assert!(message.contains("Too many columns"), "{message}");
            assert!(message.contains("sink.fields_exclude"), "{message}");
        } else {
            assert_eq!(topic, &named);
            assert_eq!(class, "schema_unsupported", "{message}");
            assert!(message.contains("error 1059"), "{message}");
        }
    }
    assert_eq!(by_topic.get(wide.as_str()), Some(&20));
    assert_eq!(by_topic.get(named.as_str()), Some(&10));
    sink.stop().await.unwrap();
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn with_tolerance_none_a_refused_schema_stops_the_sink_saying_what_to_change() {
    let env = Env::new("schema_refused_none").await;
    let wide = env.cluster.topic("sink-refused-none", 1).await;
    produce_too_wide(&env, &wide, 5).await;

    let sink = Running::start(&config(&env, &[&wide], Tolerance::None)).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), sink.handle)
        .await
        .expect("the sink did not stop at the refused schema")
        .unwrap();
    let message = ended.unwrap_err().to_string();
    assert!(
        message.contains(&format!("stopped at record {wide}/0/0 (schema_refused)")),
        "{message}"
    );
    assert!(message.contains("Too many columns"), "{message}");
    assert!(message.contains("change the schema"), "{message}");
    assert!(message.contains("errors_tolerance"), "{message}");
    assert_eq!(env.count(&wide.replace('-', "_")).await, 0);
    env.drop_database().await;
}
