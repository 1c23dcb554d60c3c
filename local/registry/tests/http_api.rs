//! The `registry` binary over HTTP: registration, ids, compatibility, errors, config, deletes
//! and restarts, checked against Confluent Schema Registry's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Registry;

const USER_V1: &str = r#"{"type":"record","name":"User","namespace":"mf.test","fields":[{"name":"id","type":"long"}]}"#;
const USER_V1_RESPELT: &str = r#"{ "namespace": "mf.test", "type": "record",
    "fields": [ { "type": "long", "name": "id" } ], "name": "User" }"#;
const USER_NO_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"mf.test","fields":[{"name":"id","type":"long"},{"name":"email","type":"string"}]}"#;
const USER_V2: &str = r#"{"type":"record","name":"User","namespace":"mf.test","fields":[{"name":"id","type":"long"},{"name":"email","type":"string","default":""}]}"#;

async fn start() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path()).await;
    (dir, registry)
}

fn code(body: &Value) -> u64 {
    body["error_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error_code in {body}"))
}

#[tokio::test]
async fn the_same_schema_gets_one_id_however_often_and_wherever_registered() {
    let (_dir, sr) = start().await;
    let (status, root) = sr.get("/").await;
    assert_eq!((status, root), (StatusCode::OK, json!({})));

    let id = sr.register("users-value", USER_V1).await;
    assert_eq!(id, 1);
    assert_eq!(sr.register("users-value", USER_V1).await, id);
    assert_eq!(sr.register("users-value", USER_V1_RESPELT).await, id);
    assert_eq!(sr.get("/subjects/users-value/versions").await.1, json!([1]));

    assert_eq!(sr.register("people-value", USER_V1).await, id);
    assert_eq!(
        sr.get("/subjects").await.1,
        json!(["people-value", "users-value"])
    );
    let (status, body) = sr.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "schema": USER_V1 }));
    let (_, versions) = sr.get(&format!("/schemas/ids/{id}/versions")).await;
    assert_eq!(
        versions,
        json!([
            {"subject": "people-value", "version": 1},
            {"subject": "users-value", "version": 1}
        ])
    );
    let (_, latest) = sr.get("/subjects/people-value/versions/latest").await;
    assert_eq!(
        latest,
        json!({"subject": "people-value", "version": 1, "id": id, "schema": USER_V1})
    );
}

#[tokio::test]
async fn a_backward_incompatible_change_is_refused_with_409() {
    let (_dir, sr) = start().await;
    sr.register("users-value", USER_V1).await;
    let (status, body) = sr
        .post(
            "/subjects/users-value/versions",
            json!({ "schema": USER_NO_DEFAULT }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), 409);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Schema being registered is incompatible with an earlier schema for subject \
             \"users-value\", details: ["
        ),
        "{message}"
    );
    assert!(
        message.contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
        "{message}"
    );
    assert_eq!(sr.get("/subjects/users-value/versions").await.1, json!([1]));

    let (status, body) = sr
        .post(
            "/compatibility/subjects/users-value/versions/latest?verbose=true",
            json!({ "schema": USER_NO_DEFAULT }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_compatible"], json!(false));
    assert!(!body["messages"].as_array().unwrap().is_empty(), "{body}");
}

#[tokio::test]
async fn a_compatible_change_gets_a_new_id_and_version_2() {
    let (_dir, sr) = start().await;
    let v1 = sr.register("users-value", USER_V1).await;
    let (status, body) = sr
        .post(
            "/compatibility/subjects/users-value/versions/latest",
            json!({ "schema": USER_V2 }),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    let v2 = sr.register("users-value", USER_V2).await;
    assert_eq!(v2, v1 + 1);
    assert_eq!(
        sr.get("/subjects/users-value/versions").await.1,
        json!([1, 2])
    );
    let (_, latest) = sr.get("/subjects/users-value/versions/-1").await;
    assert_eq!(
        (latest["version"].clone(), latest["id"].clone()),
        (json!(2), json!(v2))
    );

    let (status, found) = sr
        .post(
            "/subjects/users-value",
            json!({ "schema": USER_V1_RESPELT }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({"subject": "users-value", "version": 1, "id": v1, "schema": USER_V1})
    );
}

#[tokio::test]
async fn everything_survives_a_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut sr = Registry::start(dir.path()).await;
    sr.register("users-value", USER_V1).await;
    sr.register("users-value", USER_V2).await;
    sr.register("people-value", USER_V2).await;
    sr.register("gone-value", r#""string""#).await;
    sr.delete("/subjects/gone-value").await;
    sr.put("/config", json!({"compatibility": "FULL"})).await;
    sr.put("/config/people-value", json!({"compatibility": "none"}))
        .await;
    let paths = [
        "/subjects",
        "/subjects?deleted=true",
        "/subjects/users-value/versions",
        "/subjects/users-value/versions/1",
        "/subjects/users-value/versions/2",
        "/subjects/people-value/versions/latest",
        "/subjects/gone-value/versions?deleted=true",
        "/schemas/ids/1",
        "/schemas/ids/2",
        "/schemas/ids/3",
        "/schemas/ids/2/versions",
        "/config",
        "/config/people-value",
    ];
    let mut before = Vec::new();
    for path in paths {
        before.push(sr.get(path).await);
    }
    sr.kill();

    let sr = Registry::start(dir.path()).await;
    for (path, expected) in paths.iter().zip(&before) {
        assert_eq!(&sr.get(path).await, expected, "{path}");
    }
    assert_eq!(before[0].1, json!(["people-value", "users-value"]));
    assert_eq!(before[11].1, json!({"compatibilityLevel": "FULL"}));
    // Ids keep counting from where they were, and known schemas keep their ids.
    assert_eq!(sr.register("other-value", USER_V1).await, 1);
    assert_eq!(sr.register("another-value", r#""long""#).await, 4);
}

#[tokio::test]
async fn errors_carry_confluent_codes() {
    let (_dir, sr) = start().await;
    sr.register("users-value", USER_V1).await;

    let (status, body) = sr.get("/subjects/nobody/versions").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));
    assert_eq!(body["message"], json!("Subject 'nobody' not found."));
    let (status, body) = sr.get("/subjects/nobody/versions/1").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (status, body) = sr
        .post("/subjects/nobody", json!({"schema": USER_V1}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));

    let (status, body) = sr.get("/subjects/users-value/versions/7").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40402));
    assert_eq!(body["message"], json!("Version 7 not found."));

    let (status, body) = sr.get("/schemas/ids/42").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (status, body) = sr
        .post("/subjects/users-value", json!({"schema": USER_V2}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40403));

    for bad in [
        "not json",
        r#"{"type":"record","name":"NoFields"}"#,
        r#"{"type":"wat"}"#,
    ] {
        let (status, body) = sr
            .post("/subjects/bad/versions", json!({"schema": bad}))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            "{bad}"
        );
    }
    let (status, body) = sr
        .post(
            "/subjects/proto/versions",
            json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    assert!(
        body["message"].as_str().unwrap().contains("only AVRO"),
        "{body}"
    );
    assert_eq!(sr.get("/subjects").await.1, json!(["users-value"]));

    for bad in ["0", "-2", "abc", "99999999999"] {
        let (status, body) = sr
            .get(&format!("/subjects/users-value/versions/{bad}"))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            "{bad}"
        );
    }
    let (status, body) = sr
        .put("/config", json!({"compatibility": "SIDEWAYS"}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );

    let (status, body) = sr.get("/no/such/route").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 404));
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/x/versions", sr.url))
        .header("Content-Type", "text/html")
        .body(json!({"schema": USER_V1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/x/versions", sr.url))
        .json(&json!({"schema": USER_V1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "application/json is accepted"
    );
}

#[tokio::test]
async fn config_is_read_set_and_removed_globally_and_per_subject() {
    let (_dir, sr) = start().await;
    assert_eq!(
        sr.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (status, body) = sr.put("/config", json!({"compatibility": "FULL"})).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"compatibility": "FULL"}))
    );
    assert_eq!(
        sr.get("/config").await.1,
        json!({"compatibilityLevel": "FULL"})
    );

    let (status, body) = sr.get("/config/users-value").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40408));
    assert_eq!(
        body["message"],
        json!("Subject 'users-value' does not have subject-level compatibility configured")
    );
    let (_, body) = sr.get("/config/users-value?defaultToGlobal=true").await;
    assert_eq!(body, json!({"compatibilityLevel": "FULL"}));

    let (status, body) = sr
        .put("/config/users-value", json!({"compatibility": "none"}))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        sr.get("/config/users-value").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    // NONE lets an otherwise incompatible change through.
    sr.register("users-value", USER_V1).await;
    sr.register("users-value", USER_NO_DEFAULT).await;

    let (status, body) = sr.delete("/config/users-value").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"compatibilityLevel": "NONE"}))
    );
    let (status, _) = sr.get("/config/users-value").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = sr.delete("/config/users-value").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));

    // The global FULL applies again: dropping `email`, which the latest version needs and
    // has no default for, is backward compatible but not forward.
    let dropped = json!({"schema": r#"{"type":"record","name":"User","namespace":"mf.test","fields":[{"name":"id","type":"long"},{"name":"nick","type":"string","default":""}]}"#});
    let (status, body) = sr
        .post("/subjects/users-value/versions", dropped.clone())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("compatibility: 'FULL'"),
        "{body}"
    );
    let (_, body) = sr.delete("/config").await;
    assert_eq!(body, json!({"compatibilityLevel": "FULL"}));
    assert_eq!(
        sr.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (status, body) = sr.post("/subjects/users-value/versions", dropped).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn deletes_are_soft_first_and_permanent_after() {
    let (_dir, sr) = start().await;
    let v1 = sr.register("users-value", USER_V1).await;
    sr.register("users-value", USER_V2).await;

    let (status, body) = sr.delete("/subjects/users-value?permanent=true").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40405));
    let (status, body) = sr
        .delete("/subjects/users-value/versions/1?permanent=true")
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40407));

    let (status, body) = sr.delete("/subjects/users-value/versions/latest").await;
    assert_eq!((status, body), (StatusCode::OK, json!(2)));
    let (status, body) = sr.delete("/subjects/users-value/versions/2").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40406));
    assert_eq!(sr.get("/subjects/users-value/versions").await.1, json!([1]));
    let (status, body) = sr.get("/subjects/users-value/versions/2").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40402));
    let (status, body) = sr
        .get("/subjects/users-value/versions/2?deleted=true")
        .await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!(2))
    );

    let (status, body) = sr.delete("/subjects/users-value").await;
    assert_eq!((status, body), (StatusCode::OK, json!([1])));
    let (status, body) = sr.delete("/subjects/users-value").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40404));
    assert_eq!(sr.get("/subjects").await.1, json!([]));
    assert_eq!(
        sr.get("/subjects?deleted=true").await.1,
        json!(["users-value"])
    );
    let (status, body) = sr.get("/subjects/users-value/versions").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));
    // Soft-deleted schemas still answer by id, as consumers of old records need.
    assert_eq!(
        sr.get(&format!("/schemas/ids/{v1}")).await.0,
        StatusCode::OK
    );

    // Re-registering after a soft delete gives the same id and the next version.
    assert_eq!(sr.register("users-value", USER_V1).await, v1);
    assert_eq!(sr.get("/subjects/users-value/versions").await.1, json!([3]));
    sr.delete("/subjects/users-value").await;

    let (status, body) = sr.delete("/subjects/users-value?permanent=true").await;
    assert_eq!((status, body), (StatusCode::OK, json!([1, 2, 3])));
    let (status, body) = sr.get("/subjects/users-value/versions?deleted=true").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (status, body) = sr.get(&format!("/schemas/ids/{v1}")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (status, body) = sr.delete("/subjects/users-value").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, 40401));

    // After a permanent delete versions start again at 1; the id is remembered.
    assert_eq!(sr.register("users-value", USER_V1).await, v1);
    assert_eq!(sr.get("/subjects/users-value/versions").await.1, json!([1]));
}

#[tokio::test]
async fn compatibility_tests_follow_the_version_asked() {
    let (_dir, sr) = start().await;
    let body = json!({"schema": USER_NO_DEFAULT});
    let (status, answer) = sr
        .post(
            "/compatibility/subjects/nobody/versions/latest",
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    let (status, answer) = sr
        .post("/compatibility/subjects/nobody/versions/1", body.clone())
        .await;
    assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, 40402));

    sr.register("users-value", USER_V1).await;
    sr.put("/config/users-value", json!({"compatibility": "NONE"}))
        .await;
    sr.register("users-value", r#"{"type":"record","name":"User","namespace":"mf.test","fields":[{"name":"id","type":"string"}]}"#)
        .await;
    sr.put(
        "/config/users-value",
        json!({"compatibility": "BACKWARD_TRANSITIVE"}),
    )
    .await;
    let v3 = json!({"schema": r#"{"type":"record","name":"User","namespace":"mf.test","fields":[{"name":"id","type":"string"},{"name":"n","type":"int","default":0}]}"#});
    let (_, answer) = sr
        .post("/compatibility/subjects/users-value/versions/2", v3.clone())
        .await;
    assert_eq!(answer, json!({"is_compatible": true}));
    let (_, answer) = sr
        .post(
            "/compatibility/subjects/users-value/versions/1?verbose=true",
            v3.clone(),
        )
        .await;
    assert_eq!(answer["is_compatible"], json!(false), "{answer}");
    let (_, answer) = sr
        .post("/compatibility/subjects/users-value/versions", v3.clone())
        .await;
    assert_eq!(answer, json!({"is_compatible": false}));
    let (status, _) = sr.post("/subjects/users-value/versions", v3).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "transitive checks reach version 1"
    );
}

#[tokio::test]
async fn raw_schemas_and_encoded_subject_names_work() {
    let (_dir, sr) = start().await;
    let id = sr.register("team%2Fusers-value", USER_V1).await;
    assert_eq!(sr.get("/subjects").await.1, json!(["team/users-value"]));
    let (_, raw) = sr
        .get("/subjects/team%2Fusers-value/versions/1/schema")
        .await;
    assert_eq!(raw, serde_json::from_str::<Value>(USER_V1).unwrap());
    let (_, raw) = sr.get(&format!("/schemas/ids/{id}/schema")).await;
    assert_eq!(raw, serde_json::from_str::<Value>(USER_V1).unwrap());
    assert_eq!(sr.get("/schemas/types").await.1, json!(["AVRO"]));
    assert_eq!(
        sr.get(&format!("/schemas/ids/{id}/subjects")).await.1,
        json!(["team/users-value"])
    );
}

#[tokio::test]
async fn references_are_resolved_against_other_subjects() {
    let (_dir, sr) = start().await;
    let user = sr.register("user", USER_V1).await;
    let order = json!({
        "schema": r#"{"type":"record","name":"Order","namespace":"mf.test","fields":[{"name":"buyer","type":"mf.test.User"}]}"#,
        "schemaType": "AVRO",
        "references": [{"name": "mf.test.User", "subject": "user", "version": 1}]
    });
    let (status, body) = sr
        .post("/subjects/order-value/versions", order.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id = body["id"].as_u64().unwrap();
    assert_ne!(order_id, user);
    let (_, body) = sr.get("/subjects/order-value/versions/1").await;
    assert_eq!(body["references"], order["references"]);
    assert_eq!(
        sr.get("/subjects/user/versions/1/referencedby").await.1,
        json!([order_id])
    );
    let (status, body) = sr.delete("/subjects/user/versions/1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42206)
    );
}

#[tokio::test]
async fn sigterm_stops_the_registry_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sr = Registry::start(dir.path()).await;
    sr.register("users-value", USER_V1).await;
    let status = sr.terminate();
    assert!(status.success(), "{status}:\n{}", sr.logs());
    let logs = sr.logs();
    assert!(logs.contains("Registry stopped."), "{logs}");
    assert!(dir.path().join("registry.json").exists());
}

/// `GET /schemas/ids/{id}/versions`, which consumers ask to check that a record's schema id is a
/// version of its topic's subject, answered as cp-schema-registry answers it.
#[tokio::test]
async fn the_versions_of_an_id_are_listed_as_confluent_lists_them() {
    let (_dir, sr) = start().await;
    let id = sr.register("users-value", USER_V1).await;
    sr.register("people-value", USER_V1).await;
    let other = sr.register("orders-value", r#""string""#).await;
    let versions = |path: String| {
        let sr = &sr;
        async move { sr.get(&path).await }
    };

    // Every subject holding the id, with its version; no other subject.
    let (status, body) = versions(format!("/schemas/ids/{id}/versions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([
            {"subject": "people-value", "version": 1},
            {"subject": "users-value", "version": 1}
        ])
    );
    assert_eq!(
        versions(format!("/schemas/ids/{other}/versions")).await.1,
        json!([{"subject": "orders-value", "version": 1}])
    );

    // A soft-deleted version is listed only with deleted=true; the id is still found.
    sr.delete("/subjects/people-value/versions/1").await;
    assert_eq!(
        versions(format!("/schemas/ids/{id}/versions")).await.1,
        json!([{"subject": "users-value", "version": 1}])
    );
    assert_eq!(
        versions(format!("/schemas/ids/{id}/versions?deleted=true"))
            .await
            .1,
        json!([
            {"subject": "people-value", "version": 1},
            {"subject": "users-value", "version": 1}
        ])
    );

    // Registered again after a soft delete: a new version with the same id, and one entry per
    // subject (Confluent keeps the latest registration per subject), deleted or not.
    assert_eq!(sr.register("people-value", USER_V1).await, id);
    for query in ["", "?deleted=true"] {
        assert_eq!(
            versions(format!("/schemas/ids/{id}/versions{query}"))
                .await
                .1,
            json!([
                {"subject": "people-value", "version": 2},
                {"subject": "users-value", "version": 1}
            ]),
            "{query}"
        );
    }

    // Every version soft-deleted: found, with none listed.
    sr.delete("/subjects/orders-value").await;
    assert_eq!(
        versions(format!("/schemas/ids/{other}/versions")).await,
        (StatusCode::OK, json!([]))
    );

    // Unknown ids: Confluent's 40403 with its message on this route, which names no id.
    for unknown in ["999", "-1", "0"] {
        let (status, body) = versions(format!("/schemas/ids/{unknown}/versions")).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::NOT_FOUND,
                json!({"error_code": 40403, "message": "Schema not found"})
            ),
            "{unknown}"
        );
    }
    // Not a Java Integer: no such route.
    for bad in ["abc", "4294967296", "2147483648"] {
        let (status, body) = versions(format!("/schemas/ids/{bad}/versions")).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::NOT_FOUND,
                json!({"error_code": 404, "message": "HTTP 404 Not Found"})
            ),
            "{bad}"
        );
    }
}
