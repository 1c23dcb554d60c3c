//! The admin server every program runs beside its work: Prometheus `/metrics` and `/healthz`, plus
//! any routes the program adds (e.g. pause and resume).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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

/// Binds `addr` and serves `/metrics`, `/healthz` and `extra` until `shutdown` is cancelled.
/// Returns the bound address (useful when `addr` has port 0) once listening.
///
/// # Errors
/// [`AdminError::Bind`] when the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .merge(extra);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "Admin server stopped.");
        }
    });
    tracing::info!(addr = %bound, "Admin server listening.");
    Ok(bound)
}
