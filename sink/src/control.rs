//! Runtime control on the admin port: `POST /pause`, `POST /resume`, `POST /replay` (to the
//! beginning or a timestamp, after writing and committing what is buffered) and `GET /status`.
//! Commands go to the consumer loop over a bounded channel; the loop answers each.

use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::stats::{Board, State};

/// How long a control request waits for the loop (which may be writing a batch).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayFrom {
    /// Each partition's first offset.
    Beginning,
    /// The first offset at or after this time (epoch milliseconds).
    Timestamp(i64),
}

/// Where the loop sends a command's answer: the reply, or what went wrong.
pub(crate) type Answer<T> = oneshot::Sender<Result<T, String>>;

/// A request to the consumer loop, with where to send its answer.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write what is buffered, commit, and stop consuming.
    Pause(Answer<Switched>),
    /// Consume again.
    Resume(Answer<Switched>),
    /// Write what is buffered, commit, then seek every assigned partition and commit there.
    Replay(ReplayFrom, Answer<Replaying>),
}

/// The answer of `POST /pause` and `POST /resume`: `{"state": "paused", "partitions": 3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Switched {
    /// What the sink does now (`paused` or `running`).
    pub(crate) state: State,
    /// Partitions assigned to this instance.
    pub(crate) partitions: usize,
}

/// The answer of `POST /replay`: where each assigned partition starts again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Replaying {
    /// One entry per assigned partition.
    pub(crate) replaying_from: Vec<ReplayStart>,
}

/// Where one partition's replay starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReplayStart {
    /// Topic.
    pub(crate) topic: String,
    /// Partition.
    pub(crate) partition: i32,
    /// The offset sought (`None`: a logical offset, which a seek never yields).
    pub(crate) offset: Option<i64>,
}

/// The answer of a control request that failed: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize)]
struct Failure {
    /// What went wrong, and what to do.
    error: String,
}

/// The body of `POST /replay`: `{"to": "beginning"}` or `{"timestamp_ms": 1700000000000}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// `"beginning"`.
    pub(crate) to: Option<String>,
    /// Epoch milliseconds.
    pub(crate) timestamp_ms: Option<i64>,
}

impl ReplayRequest {
    /// Where the request says to start.
    ///
    /// # Errors
    /// A message saying what a valid body looks like.
    pub(crate) fn parse(&self) -> Result<ReplayFrom, String> {
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
pub(crate) fn router(commands: mpsc::Sender<Command>, board: Board) -> Router {
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

async fn pause(AxumState(control): AxumState<Control>) -> Response {
    ask(&control, Command::Pause).await
}

async fn resume(AxumState(control): AxumState<Control>) -> Response {
    ask(&control, Command::Resume).await
}

async fn replay(
    AxumState(control): AxumState<Control>,
    body: Option<Json<ReplayRequest>>,
) -> Response {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    match request.parse() {
        Ok(from) => ask(&control, |reply| Command::Replay(from, reply)).await,
        Err(error) => failure(StatusCode::BAD_REQUEST, error),
    }
}

/// Sends a command to the loop and turns its answer into a response.
async fn ask<T: Serialize>(
    control: &Control,
    command: impl FnOnce(Answer<T>) -> Command,
) -> Response {
    let (reply, answer) = oneshot::channel();
    let unavailable = |what: &str| {
        failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the sink {what}; try again"),
        )
    };
    if control.commands.try_send(command(reply)).is_err() {
        return unavailable("is busy with other control requests or stopping");
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(body))) => (StatusCode::OK, Json(body)).into_response(),
        Ok(Ok(Err(message))) => failure(StatusCode::INTERNAL_SERVER_ERROR, message),
        Ok(Err(_)) => unavailable("stopped before answering"),
        Err(_) => unavailable("did not answer in time (is the database down?)"),
    }
}

fn failure(status: StatusCode, error: String) -> Response {
    (status, Json(Failure { error })).into_response()
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

    #[test]
    fn replies_keep_their_json_shape() {
        let paused = Switched {
            state: State::Paused,
            partitions: 3,
        };
        assert_eq!(json(&paused), r#"{"state":"paused","partitions":3}"#);
        let replaying = Replaying {
            replaying_from: vec![ReplayStart {
                topic: "listings".into(),
                partition: 1,
                offset: Some(42),
            }],
        };
        assert_eq!(
            json(&replaying),
            r#"{"replaying_from":[{"topic":"listings","partition":1,"offset":42}]}"#
        );
        let failed = Failure { error: "no".into() };
        assert_eq!(json(&failed), r#"{"error":"no"}"#);
    }

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).unwrap()
    }
}
