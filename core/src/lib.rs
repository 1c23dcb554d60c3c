//! The shared contract of marketflow: the records and their Avro schemas, the registry codec,
//! configuration, Kafka client builders and why their writes wait (with the rules every program
//! applies alike: consumer lag, the wait on a full producer queue), the metric names, telemetry,
//! the admin server, graceful shutdown, and the `main` every program shares (`program`).
//!
//! Every program of the workspace (`scraper`, `sink`, `streams`) builds on this crate, so that they
//! agree on what a listing is, how it is framed on the wire and how they are configured.

pub mod admin;
pub mod codec;
pub mod config;
pub mod kafka;
pub mod metric;
pub mod program;
pub mod record;
pub mod replicas;
pub mod schema;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use codec::{Codec, CodecError};
pub use config::Config;
