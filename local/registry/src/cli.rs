//! The command line: the registry binary's arguments, its logging, and running it until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::auth::BasicAuth;
use crate::error::StoreError;
use crate::store::Store;

/// The `registry` binary's arguments.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "registry",
    version,
    about = "A schema registry speaking the Confluent Schema Registry REST API (Avro only)."
)]
pub struct Args {
    /// The address to listen on (loopback unless told otherwise).
    #[arg(long, env = "REGISTRY_LISTEN", default_value = "127.0.0.1:18081")]
    pub listen: SocketAddr,
    /// USER:PASSWORD that changes (POST, PUT, DELETE) must carry as HTTP basic auth; reads stay
    /// open. Unset: no auth. Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "REGISTRY_BASIC_AUTH",
        hide_env_values = true,
        value_name = "USER:PASSWORD"
    )]
    pub basic_auth: Option<BasicAuth>,
    /// The directory holding the registry's state file (created if missing).
    #[arg(long, env = "REGISTRY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// How to write the logs on stderr.
    #[arg(long, env = "REGISTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The shape of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the registry could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state could not be loaded.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Sends logs to stderr in `format`, filtered by `RUST_LOG` (default `info`). Does nothing
/// if a subscriber is already installed.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_err() {
        warn!("Logging was already set up.");
    }
}

/// Opens the store in `args.data_dir`, listens on `args.listen` and serves until SIGINT or
/// SIGTERM, then finishes the requests in flight.
pub async fn run(args: Args) -> Result<(), RunError> {
    let store = Store::open(&args.data_dir)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let auth_user = args.basic_auth.as_ref().map(BasicAuth::user);
    info!(%addr, data_dir = %args.data_dir.display(), auth_user, "Registry listening.");
    if args.basic_auth.is_none() && !addr.ip().is_loopback() {
        warn!(
            %addr,
            "Anyone who reaches this address can change the schemas: set REGISTRY_BASIC_AUTH."
        );
    }
    crate::serve(listener, store, args.basic_auth, shutdown_signal())
        .await
        .map_err(RunError::Serve)?;
    info!("Registry stopped.");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "SIGINT cannot be watched.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "SIGTERM cannot be watched.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!(signal = "SIGINT", "Shutting down."),
        () = terminate => info!(signal = "SIGTERM", "Shutting down."),
    }
}
