//! The admin server every program runs beside its work: Prometheus `/metrics` and `/healthz`, plus
//! any routes the program adds (e.g. pause and resume), whose mutating requests it guards.
//!
//! A request that is not a `GET` or `HEAD` changes the program, so it must come from the
//! operator, not from a web page the operator happens to have open: it is refused with 403 when
//! it carries an `Origin` other than the admin address itself (browsers send one on every
//! cross-origin `POST`, and a page cannot forge it), with 401 when an admin token is set and the
//! request lacks `Authorization: Bearer <token>`, and with 415 unless its `content-type` is
//! `application/json` (which a cross-site form or a `no-cors` fetch cannot send). `GET`s
//! (`/metrics`, `/healthz`, `/status`) stay open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What failed starting the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} for the admin server: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A metrics recorder is already installed in this process.
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    /// The admin token is set to nothing, which would let any caller through.
    #[error(
        "the admin token (admin_token of this program's section) is empty: set a token, or \
         unset it to leave the admin endpoints without one"
    )]
    EmptyToken,
}

/// Installs the process-wide Prometheus recorder; the handle renders `/metrics`.
///
/// # Errors
/// [`AdminError::Recorder`] when one is installed already.
pub fn install_metrics() -> Result<PrometheusHandle, AdminError> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| AdminError::Recorder(e.to_string()))
}

/// How often the recorder's histograms drain their samples into its summaries.
const UPKEEP: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every [`UPKEEP`] until `shutdown`. A recorder installed with
/// `install_recorder` leaves it to its caller: without it every histogram sample (16 bytes) is
/// kept until `/metrics` is read, tens of MiB an hour per latency histogram at 1,000 records/s
/// with nothing scraping, and a late read's quantiles cover only the newest samples.
fn spawn_upkeep(metrics: PrometheusHandle, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => metrics.run_upkeep(),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `extra` until `shutdown` is cancelled;
/// mutating requests need `token` when it is set (see the module's documentation). Returns the
/// bound address (useful when `addr` has port 0) once listening.
///
/// # Errors
/// [`AdminError::Bind`] when the address cannot be bound, [`AdminError::EmptyToken`] when
/// `token` is empty.
pub async fn serve(
    addr: SocketAddr,
    token: Option<&SecretString>,
    metrics: PrometheusHandle,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminError> {
    if token.is_some_and(|t| t.expose_secret().is_empty()) {
        return Err(AdminError::EmptyToken);
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let guard = Arc::new(Guard {
        origin: format!("http://{bound}"),
        token: token.cloned(),
    });
    spawn_upkeep(metrics.clone(), shutdown.clone());
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .merge(extra)
        .layer(middleware::from_fn_with_state(guard, guard_mutations));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "Admin server stopped.");
        }
    });
    let token_required = token.is_some();
    tracing::info!(addr = %bound, token_required, "Admin server listening.");
    if !token_required && !bound.ip().is_loopback() {
        tracing::warn!(
            addr = %bound,
            "The admin server's mutating endpoints are open to anyone who reaches this address: \
             set an admin_token."
        );
    }
    Ok(bound)
}

/// What a mutating request must satisfy.
#[derive(Debug)]
struct Guard {
    /// The admin address as a browser would name it in `Origin`.
    origin: String,
    token: Option<SecretString>,
}

/// Why a mutating request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    CrossOrigin,
    Unauthorized,
    NotJson,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::CrossOrigin => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::CrossOrigin => {
                "cross-origin requests may not change this program: send it from the operator's \
                 shell (curl), not from a web page"
            }
            Self::Unauthorized => {
                "this request needs `Authorization: Bearer <token>`, the token being the \
                 program's admin_token setting"
            }
            Self::NotJson => "this request needs `content-type: application/json`",
        }
    }

    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message() }));
        let mut response = (self.status(), body).into_response();
        if self == Self::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"marketflow admin\""),
            );
        }
        response
    }
}

impl Guard {
    /// Whether a request with `method` and `headers` may go through.
    fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN)
            && !origin
                .to_str()
                .is_ok_and(|o| o.eq_ignore_ascii_case(&self.origin))
        {
            return Err(Refusal::CrossOrigin);
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, given)| given.trim());
            if !given.is_some_and(|g| same_secret(g.as_bytes(), token.expose_secret().as_bytes())) {
                return Err(Refusal::Unauthorized);
            }
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Refusal::NotJson);
        }
        Ok(())
    }
}

async fn guard_mutations(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(
                method = %request.method(),
                path = request.uri().path(),
                status = refusal.status().as_u16(),
                "Admin request refused."
            );
            refusal.into_response()
        }
    }
}

/// Whether `given` equals `expected`, in a time that does not tell a caller how much of a guess
/// was right (RustCrypto's `subtle`).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An admin server on a free loopback port with a `POST /pause` and a `GET /status`.
    async fn start(token: Option<&str>) -> SocketAddr {
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let extra = Router::new()
            .route("/pause", axum::routing::post(|| async { "paused" }))
            .route("/status", get(|| async { "{}" }));
        let token = token.map(SecretString::from);
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        serve(
            addr,
            token.as_ref(),
            metrics,
            extra,
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    /// The status and the headers of `method path` with `headers`, over plain HTTP/1.1.
    async fn call(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        (answer[9..12].parse().unwrap(), answer.to_ascii_lowercase())
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[tokio::test]
    async fn with_a_token_mutations_need_it_and_reads_stay_open() {
        let addr = start(Some("s3cret-admin")).await;
        let (status, answer) = call(addr, "POST", "/pause", &[JSON]).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("www-authenticate: bearer"), "{answer}");
        let wrong = [JSON, ("authorization", "Bearer s3cret-admiN")];
        assert_eq!(call(addr, "POST", "/pause", &wrong).await.0, 401);
        let basic = [JSON, ("authorization", "Basic s3cret-admin")];
        assert_eq!(call(addr, "POST", "/pause", &basic).await.0, 401);
        let right = [JSON, ("authorization", "Bearer s3cret-admin")];
        let (status, answer) = call(addr, "POST", "/pause", &right).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.ends_with("paused"), "{answer}");
        for path in ["/healthz", "/metrics", "/status"] {
            assert_eq!(call(addr, "GET", path, &[]).await.0, 200, "GET {path}");
        }
    }

    #[tokio::test]
    async fn a_form_or_a_cross_origin_request_cannot_mutate() {
        for token in [None, Some("s3cret-admin")] {
            let addr = start(token).await;
            let auth = ("authorization", "Bearer s3cret-admin");
            let form = ("content-type", "application/x-www-form-urlencoded");
            assert_eq!(call(addr, "POST", "/pause", &[form, auth]).await.0, 415);
            assert_eq!(call(addr, "POST", "/pause", &[auth]).await.0, 415);
            let text = ("content-type", "text/plain");
            assert_eq!(call(addr, "POST", "/pause", &[text, auth]).await.0, 415);
            let charset = ("content-type", "application/json; charset=utf-8");
            assert_eq!(call(addr, "POST", "/pause", &[charset, auth]).await.0, 200);
            for origin in ["http://evil.example", "null", "http://localhost:1"] {
                let cross = [JSON, auth, ("origin", origin)];
                assert_eq!(
                    call(addr, "POST", "/pause", &cross).await.0,
                    403,
                    "{origin}"
                );
            }
            let own = format!("http://{addr}");
            let same = [JSON, auth, ("origin", own.as_str())];
            assert_eq!(call(addr, "POST", "/pause", &same).await.0, 200);
        }
    }

    #[tokio::test]
    async fn an_empty_token_is_refused_at_start_up() {
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let empty = SecretString::from("");
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let error = serve(
            addr,
            Some(&empty),
            metrics,
            Router::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, AdminError::EmptyToken), "{error}");
    }

    #[test]
    fn secrets_compare_whole_and_the_guard_does_not_show_its_token() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"abcd", b"abc"));
        assert!(!same_secret(b"", b"abc"));
        let guard = Guard {
            origin: "http://127.0.0.1:1".into(),
            token: Some(SecretString::from("s3cret-admin")),
        };
        assert!(!format!("{guard:?}").contains("s3cret"));
    }
}
