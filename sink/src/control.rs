//! Runtime control on the admin port: `POST /pause`, `POST /resume`, `POST /replay` (to the
//! beginning or a timestamp, after writing and committing what is buffered) and `GET /status`.
//! Commands go to the consumer loop over a bounded channel; the loop answers each.

use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::stats::Board;

/// How long a control request waits for the loop (which may be writing a batch).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Each partition's first offset.
    Beginning,
    /// The first offset at or after this time (epoch milliseconds).
    Timestamp(i64),
}

/// A request to the consumer loop, with where to send its answer.
#[derive(Debug)]
pub enum Command {
    /// Write what is buffered, commit, and stop consuming.
    Pause(oneshot::Sender<Result<Value, String>>),
    /// Consume again.
    Resume(oneshot::Sender<Result<Value, String>>),
    /// Write what is buffered, commit, then seek every assigned partition and commit there.
    Replay(ReplayFrom, oneshot::Sender<Result<Value, String>>),
}

/// The body of `POST /replay`: `{"to": "beginning"}` or `{"timestamp_ms": 1700000000000}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// `"beginning"`.
    pub to: Option<String>,
    /// Epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl ReplayRequest {
    /// Where the request says to start.
    ///
    /// # Errors
    /// A message saying what a valid body looks like.
    pub fn parse(&self) -> Result<ReplayFrom, String> {
        match (self.to.as_deref(), self.timestamp_ms) {
            (Some("beginning"), None) => Ok(ReplayFrom::Beginning),
            (None, Some(ms)) if ms >= 0 => Ok(ReplayFrom::Timestamp(ms)),
            _ => Err(
                "expected {\"to\": \"beginning\"} or {\"timestamp_ms\": <epoch milliseconds>}"
                    .into(),
            ),
        }
    }
}

#[derive(Clone)]
struct Control {
    commands: mpsc::Sender<Command>,
    board: Board,
}

/// The control routes, to merge into the admin server.
pub fn router(commands: mpsc::Sender<Command>, board: Board) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/replay", post(replay))
        .with_state(Control { commands, board })
}

async fn status(AxumState(control): AxumState<Control>) -> Json<crate::stats::Status> {
    Json(control.board.snapshot())
}

async fn pause(AxumState(control): AxumState<Control>) -> (StatusCode, Json<Value>) {
    ask(&control, Command::Pause).await
}

async fn resume(AxumState(control): AxumState<Control>) -> (StatusCode, Json<Value>) {
    ask(&control, Command::Resume).await
}

async fn replay(
    AxumState(control): AxumState<Control>,
    body: Option<Json<ReplayRequest>>,
) -> (StatusCode, Json<Value>) {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    match request.parse() {
        Ok(from) => ask(&control, |reply| Command::Replay(from, reply)).await,
        Err(message) => (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))),
    }
}

async fn ask(
    control: &Control,
    command: impl FnOnce(oneshot::Sender<Result<Value, String>>) -> Command,
) -> (StatusCode, Json<Value>) {
    let (reply, answer) = oneshot::channel();
    let unavailable = |what: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("the sink {what}; try again") })),
        )
    };
    if control.commands.try_send(command(reply)).is_err() {
        return unavailable("is busy with other control requests or stopping");
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(body))) => (StatusCode::OK, Json(body)),
        Ok(Ok(Err(message))) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": message })),
        ),
        Ok(Err(_)) => unavailable("stopped before answering"),
        Err(_) => unavailable("did not answer in time (is the database down?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_bodies_parse() {
        let from = |json: &str| serde_json::from_str::<ReplayRequest>(json).unwrap().parse();
        assert_eq!(from(r#"{"to":"beginning"}"#), Ok(ReplayFrom::Beginning));
        assert_eq!(
            from(r#"{"timestamp_ms":1700000000000}"#),
            Ok(ReplayFrom::Timestamp(1_700_000_000_000))
        );
        assert!(from(r#"{"to":"end"}"#).is_err());
        assert!(from(r#"{"to":"beginning","timestamp_ms":1}"#).is_err());
        assert!(from("{}").is_err());
    }
}
