//! A small schema registry speaking the Avro subset of the Confluent Schema Registry REST API,
//! for machines without Docker: the same clients work against it and against
//! `confluentinc/cp-schema-registry`.
//!
//! [`Store`] holds the state (in memory, or persisted to a JSON file): its wire types, its model
//! of schemas, subjects and versions, the operations on it (parsing with [`schema`], checks with
//! [`compat`]) and its file are the `store` module's parts. [`router`] answers HTTP over it
//! (changes behind optional basic auth, [`auth`]), and [`serve`] runs that on a listener until a
//! shutdown future resolves:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use marketflow_registry::{Store, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr()?);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, Store::in_memory(), None, async {
//!     let _ = stopped.await;
//! }));
//! // ... talk to `url` ...
//! # let _ = url;
//! let _ = stop.send(());
//! let _ = server.await;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod cli;
pub mod compat;
pub mod error;
pub mod schema;
pub mod store;

use std::future::Future;

pub use api::router;
pub use auth::BasicAuth;
pub use compat::CompatibilityLevel;
pub use error::{RegistryError, StoreError};
pub use store::{SchemaRequest, Store};

/// Serves the registry over `store` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish. With `auth`, changes need its credentials.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    store: Store,
    auth: Option<BasicAuth>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router(store, auth))
        .with_graceful_shutdown(shutdown)
        .await
}
