//! The HTTP server: the routes of the contract (local/market/README.md), faults in front of the
//! product and list pages, a head that grows with time, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::MarketConfig;
use crate::fault::{Fault, FaultRates, Faults};
use crate::generate::{Generator, Kind};
use crate::page;
use crate::truth::{self, Status};

/// How many links the recent list shows.
const RECENT: u64 = 50;

/// What failed running the market.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr}: {source} (is another market running? pick --listen)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving on {addr} failed: {source}")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The market's state: the generator, the fault stream and the clock the head grows by.
#[derive(Debug)]
pub struct Market {
    config: MarketConfig,
    generator: Generator,
    faults: Faults,
    started: Instant,
}

impl Market {
    /// A market serving `config`, its head growing from now.
    pub fn new(config: &MarketConfig) -> Self {
        Self {
            generator: Generator::new(config.seed, config.shares()),
            faults: Faults::new(
                config.seed,
                FaultRates {
                    too_many_requests: config.rate_429,
                    server_error: config.rate_500,
                    reset: config.rate_reset,
                },
            ),
            config: config.clone(),
            started: Instant::now(),
        }
    }

    /// The newest product id now.
    pub fn newest_id(&self) -> u64 {
        // Truncation is the point: whole ids.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let grown = (self.started.elapsed().as_secs_f64() * self.config.new_per_sec) as u64;
        self.config.first_id + self.config.products - 1 + grown
    }

    /// What `id` is now.
    pub fn status(&self, id: u64) -> Status {
        if id < self.config.first_id || id > self.newest_id() {
            Status::Missing
        } else {
            Status::of(self.generator.kind(id))
        }
    }

    /// The truth for `id`, with `base_url` the scheme and authority the scraper requested.
    pub fn truth(&self, id: u64, base_url: &str) -> truth::Truth {
        let status = self.status(id);
        let product = (status == Status::Listing).then(|| self.generator.product(id));
        truth::truth(id, status, product.as_ref(), base_url)
    }

    /// The answer to `GET /product/{id}`, faults aside.
    pub fn product_page(&self, id: u64) -> Response {
        if id < self.config.first_id || id > self.newest_id() {
            return not_found();
        }
        match self.generator.kind(id) {
            Kind::Listing => html(
                StatusCode::OK,
                page::product(&self.generator.product(id), id),
            ),
            Kind::SkuMismatch { shown_id } => html(
                StatusCode::OK,
                page::product(&self.generator.product(id), shown_id),
            ),
            Kind::Deleted { not_found: true } => not_found(),
            Kind::Deleted { not_found: false } => html(StatusCode::OK, page::deleted()),
            Kind::Blocked { forbidden } => {
                let status = if forbidden {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::OK
                };
                let mut response = html(status, page::challenge(id));
                response
                    .headers_mut()
                    .insert("cf-mitigated", HeaderValue::from_static("challenge"));
                response
            }
        }
    }

    /// Waits the configured latency, then draws this request's fault: `Some` answer when it
    /// faults.
    async fn fault(&self) -> Option<Response> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        match self.faults.draw() {
            Fault::None => None,
            Fault::TooManyRequests => Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "Too Many Requests",
                )
                    .into_response(),
            ),
            Fault::ServerError => {
                Some((StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response())
            }
            Fault::Reset => Some(reset()),
        }
    }
}

/// The market's routes over `market`.
pub fn router(market: Arc<Market>) -> Router {
    Router::new()
        .route("/product/list", get(recent))
        .route("/product/{id}", get(product))
        .route("/robots.txt", get(|| async { page::ROBOTS }))
        .route("/__truth", get(summary))
        .route("/__truth/{id}", get(truth_of))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { not_found() })
        .with_state(market)
}

/// Serves `config` until `shutdown` is cancelled, then lets requests in flight finish.
///
/// # Errors
/// [`ServerError::Bind`] when the address cannot be bound; [`ServerError::Serve`] when serving
/// fails.
pub async fn run(config: MarketConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let market = Arc::new(Market::new(&config));
    info!(
        %addr,
        seed = config.seed,
        first_id = config.first_id,
        newest_id = market.newest_id(),
        "Market listening."
    );
    axum::serve(listener, router(market))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| ServerError::Serve { addr, source })?;
    info!(%addr, "Market stopped.");
    Ok(())
}

async fn product(State(market): State<Arc<Market>>, Path(id): Path<String>) -> Response {
    if let Some(fault) = market.fault().await {
        return fault;
    }
    match id.parse::<u64>() {
        Ok(id) => market.product_page(id),
        Err(_) => not_found(),
    }
}

async fn recent(State(market): State<Arc<Market>>) -> Response {
    if let Some(fault) = market.fault().await {
        return fault;
    }
    html(
        StatusCode::OK,
        page::recent(market.config.first_id, market.newest_id(), RECENT),
    )
}

async fn summary(State(market): State<Arc<Market>>) -> Json<serde_json::Value> {
    let newest_id = market.newest_id();
    Json(json!({
        "first_id": market.config.first_id,
        "newest_id": newest_id,
        "products": newest_id + 1 - market.config.first_id,
        "seed": market.config.seed,
    }))
}

async fn truth_of(
    State(market): State<Arc<Market>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return (StatusCode::BAD_REQUEST, "the id must be a whole number").into_response();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    Json(market.truth(id, &format!("http://{host}"))).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, page::NOT_FOUND.to_owned())
}

/// A response whose body fails before its first byte: hyper then drops the connection without
/// writing the head, so the client sees the connection closed without an answer.
fn reset() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault injected: connection reset",
        ))
    });
    Response::new(Body::from_stream(failing))
}
