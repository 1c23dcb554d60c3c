//! Schema evolution (a field added with a default adds a column that new rows fill; an
//! incompatible change is reported and nothing of it applied) and runtime control (pause: no rows
//! written, lag grows; resume: catches up; replay from the beginning: the table ends unchanged).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{Env, Running, listings};
use marketflow_core::config::Tolerance;
use marketflow_core::schema::SchemaFile;
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct ItemKey {
    id: i64,
}

#[derive(Serialize)]
struct ItemV1 {
    id: i64,
    name: String,
}

#[derive(Serialize)]
struct ItemV2 {
    id: i64,
    name: String,
    color: String,
}

#[derive(Serialize)]
struct ItemV3 {
    id: i64,
    name: i64,
    size: i32,
}

fn schema(json: String) -> SchemaFile {
    SchemaFile {
        full_name: "test.Item",
        json: Box::leak(json.into_boxed_str()),
    }
}

fn item(fields: &str) -> SchemaFile {
    schema(format!(
        r#"{{"type":"record","name":"Item","namespace":"test","fields":[{fields}]}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_new_field_adds_a_column_and_an_incompatible_change_is_refused_whole() {
    let env = Env::new("evolve").await;
    let topic = env.cluster.topic("sink-evolve", 1).await;
    let table = topic.replace('-', "_");
    let key = SchemaFile {
        full_name: "test.ItemKey",
        json: r#"{"type":"record","name":"ItemKey","namespace":"test","fields":[{"name":"id","type":"long"}]}"#,
    };
    let v1 = item(r#"{"name":"id","type":"long"},{"name":"name","type":"string"}"#);
    let v2 = item(
        r#"{"name":"id","type":"long"},{"name":"name","type":"string"},
           {"name":"color","type":"string","default":"red"}"#,
    );
    let v3 = item(
        r#"{"name":"id","type":"long"},{"name":"name","type":"long"},
           {"name":"size","type":"int","default":0}"#,
    );
    let keys = |ids: std::ops::Range<i64>| ids.map(|id| ItemKey { id }).collect::<Vec<_>>();

    let mut config = env.config(&[&topic]);
    config.sink.pk_fields = vec!["id".into()];
    let sink = Running::start(&config).await;

    let firsts: Vec<ItemV1> = (1..11)
        .map(|id| ItemV1 {
            id,
            name: format!("첫 {id}"),
        })
        .collect();
    env.produce(&topic, key, v1, &keys(1..11), &firsts).await;
    env.wait_for_rows(&table, 10, Duration::from_secs(60)).await;

    let seconds: Vec<ItemV2> = (11..21)
        .map(|id| ItemV2 {
            id,
            name: format!("둘 {id}"),
            color: format!("blue {id}"),
        })
        .collect();
    env.produce(&topic, key, v2, &keys(11..21), &seconds).await;
    env.wait_for_rows(&table, 20, Duration::from_secs(60)).await;
    let colors: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, color FROM `{table}` ORDER BY id"
    )))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for (id, color) in &colors {
        let expected = if *id <= 10 {
            "red".to_owned()
        } else {
            format!("blue {id}")
        };
        assert_eq!(color, &expected, "row {id}");
    }

    // v3 retypes `name` and adds `size`: incompatible, so `size` must not appear either.
    reqwest::Client::new()
        .put(format!(
            "{}/config/{topic}-value",
            env.cluster.config.registry.url
        ))
        .json(&json!({"compatibility": "NONE"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let thirds: Vec<ItemV3> = (21..26)
        .map(|id| ItemV3 {
            id,
            name: id,
            size: 3,
        })
        .collect();
    env.produce(&topic, key, v3, &keys(21..26), &thirds).await;
    env.wait_for("5 dead letters", Duration::from_secs(60), || async {
        sink.status().await["dead_lettered"] == 5
    })
    .await;
    sink.stop().await.unwrap();
    assert_eq!(env.count(&table).await, 20);
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(&table)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(columns, ["id", "name", "color"]);

    // With tolerance none the same change stops the sink with the reason.
    let mut config = env.config(&[&topic]);
    config.sink.pk_fields = vec!["id".into()];
    config.sink.errors_tolerance = Tolerance::None;
    let sink = Running::start(&config).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), sink.handle)
        .await
        .unwrap()
        .unwrap();
    let message = ended.unwrap_err().to_string();
    assert!(
        message.contains(&format!("stopped at record {topic}/0/20")),
        "{message}"
    );
    assert!(message.contains("schema_incompatible"), "{message}");
    assert!(message.contains("column name is text"), "{message}");
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn pause_resume_and_replay_from_the_beginning() {
    let env = Env::new("control").await;
    let topic = env.cluster.topic("sink-control", 3).await;
    let table = topic.replace('-', "_");
    let sent = listings(1_000, 8);
    env.produce_listings(&topic, &sent[..500]).await;
    let sink = Running::start(&env.config(&[&topic])).await;
    env.wait_for_rows(&table, 500, Duration::from_secs(60))
        .await;

    let (code, body) = sink.post("/pause", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(sink.status().await["state"], "paused");
    env.produce_listings(&topic, &sent[500..]).await;
    env.wait_for(
        "lag to show the new records",
        Duration::from_secs(30),
        || async { sink.status().await["lag"] == 500 },
    )
    .await;
    let status = sink.status().await;
    assert_eq!(env.count(&table).await, 500, "rows written while paused");
    assert_eq!(status["rows_written"], 500, "{status}");
    assert_eq!(
        status["records_in"], 500,
        "records consumed while paused: {status}"
    );

    let (code, body) = sink.post("/resume", None).await;
    assert_eq!(code, 200, "{body}");
    env.wait_for_rows(&table, 1_000, Duration::from_secs(60))
        .await;
    env.wait_for("lag to drain", Duration::from_secs(30), || async {
        sink.status().await["lag"] == 0
    })
    .await;
    let before = env.listing_rows(&table).await;
    assert_eq!(before.len(), 1_000);

    let (code, body) = sink.post("/replay", Some(json!({"to": "end"}))).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = sink.post("/replay", Some(json!({"to": "beginning"}))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["replaying_from"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    env.wait_for(
        "every record written again",
        Duration::from_secs(60),
        || async { sink.status().await["rows_written"] == 2_000 },
    )
    .await;
    sink.stop().await.unwrap();
    assert_eq!(
        env.listing_rows(&table).await,
        before,
        "the replay changed the table"
    );
    env.drop_database().await;
}
