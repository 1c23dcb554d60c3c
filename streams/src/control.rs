//! Runtime control on the admin port: `POST /pause`, `POST /resume`, `POST /replay` (refused,
//! see [`REPLAY_REFUSED`]) and `GET /status` (JSON).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use marketflow_core::sync::lock;
use serde::Serialize;

/// Why `POST /replay` is refused: the answer the endpoint gives.
pub const REPLAY_REFUSED: &str = "replay refused: the sums are already exact and a replay could \
     only double-count. Each partition's state is rebuilt from the changelog whenever it is \
     assigned, and input at or before the offset the state reflects is skipped. To recompute the \
     sums from scratch, start streams with a new streams.group_id, streams.changelog_topic and \
     streams.partials_topic: it reads the input from the beginning into empty state.";

/// One input partition as the aggregation stage sees it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The last input offset the state reflects.
    pub position: Option<i64>,
    /// Products in the partition's current set (`distinct`).
    pub products: usize,
    /// Records behind the partition's end, when last measured.
    pub lag: Option<i64>,
}

/// What `GET /status` answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Whether input is paused.
    pub paused: bool,
    /// `distinct` or `append`.
    pub semantics: String,
    /// `changelog` or `exactly_once`.
    pub guarantee: String,
    /// The consumer group.
    pub group_id: String,
    /// The input topic.
    pub input_topic: String,
    /// The input partitions this instance owns, by number.
    pub partitions: BTreeMap<i32, PartitionStatus>,
    /// Sums this instance's merge stage owns.
    pub sums_owned: usize,
    /// Input records read since start.
    pub records_in: u64,
    /// Sum records emitted since start.
    pub sums_emitted: u64,
}

/// State shared by the stages and the admin routes.
#[derive(Debug, Default)]
pub struct Control {
    paused: AtomicBool,
    status: Mutex<Status>,
}

impl Control {
    /// A control with `status` as the initial status.
    pub fn new(status: Status) -> Self {
        Self {
            paused: AtomicBool::new(false),
            status: Mutex::new(status),
        }
    }

    /// Whether input should be paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Asks the stages to pause (or resume) reading input.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        self.update(|s| s.paused = paused);
    }

    /// Changes the status.
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut lock(&self.status));
    }

    /// The current status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }
}

/// The control routes, to merge into the admin server.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/replay", post(replay))
        .route("/status", get(status))
        .with_state(control)
}

async fn pause(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    control.set_paused(true);
    tracing::info!("Input paused.");
    Json(serde_json::json!({ "paused": true }))
}

async fn resume(State(control): State<Arc<Control>>) -> Json<serde_json::Value> {
    control.set_paused(false);
    tracing::info!("Input resumed.");
    Json(serde_json::json!({ "paused": false }))
}

async fn replay() -> impl IntoResponse {
    tracing::info!("Replay refused.");
    (
        StatusCode::CONFLICT,
        Json(serde_json::json!({ "replayed": false, "reason": REPLAY_REFUSED })),
    )
}

async fn status(State(control): State<Arc<Control>>) -> Json<Status> {
    Json(control.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve() -> (Arc<Control>, String) {
        let control = Arc::new(Control::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(control.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (control, format!("http://{addr}"))
    }

    #[tokio::test]
    async fn pause_and_resume_flip_the_flag_the_stages_read() {
        let (control, base) = serve().await;
        let http = reqwest::Client::new();
        let paused: serde_json::Value = http
            .post(format!("{base}/pause"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(paused["paused"], true);
        assert!(control.paused());
        let status: serde_json::Value = http
            .get(format!("{base}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["paused"], true);
        http.post(format!("{base}/resume")).send().await.unwrap();
        assert!(!control.paused());
    }

    #[tokio::test]
    async fn replay_is_refused_saying_why_and_what_to_do() {
        let (_, base) = serve().await;
        let response = reqwest::Client::new()
            .post(format!("{base}/replay"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CONFLICT);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["replayed"], false);
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("new streams.group_id")
        );
    }
}
