//! The `sink` program: writes Avro records from Kafka into MySQL, like Kafka Connect's JDBC sink
//! (insert, upsert or update; primary keys from the record's coordinates, key or value; tables
//! created and evolved from the schemas; tombstones delete; poison records to a dead-letter
//! topic), committing a record's offset only once the transaction holding its row has committed.
//!
//! How a record flows: `consume`'s loop (`consume/driver.rs`) reads it and decodes it through
//! the registry (`envelope`) into the batch of the `Pipeline` (`batch`). A batch due by size or
//! age is prepared by the `writer`'s planner, which asks `table` for each schema's plan (the
//! columns the schemas call for, the table created or evolved with DDL that fits MySQL's
//! `limits`, values mapped by [`typemap`] into [`sql`] statements), and handed to the `stage`:
//! a task of its own that writes the batch in one transaction (`db`), sends its dead letters
//! (`dlq`), publishes its figures ([`stats`]) and records its offsets. The loop commits those
//! offsets (`consume/commit.rs` decides what and when); the rebalance callback
//! (`consume/rebalance.rs`) writes and commits before partitions leave; the admin port's
//! `control` routes send pause, resume and replay to the loop (`consume/commands.rs`). Database
//! outages are retried with backoff (`retry`), consumption held meanwhile; whatever stops the
//! sink is a [`ConsumeError`]. [`settings`] checks `[sink]` once, at start.

mod batch;
mod consume;
mod control;
mod db;
mod dlq;
mod envelope;
mod error;
mod limits;
mod retry;
pub mod settings;
pub mod sql;
mod stage;
pub mod stats;
mod table;
pub mod typemap;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::kafka::{self, ClientError};
use marketflow_core::{Config, admin};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consume::{Consumption, Pipeline};
use crate::db::Database;
pub use crate::db::DbError;
pub use crate::error::ConsumeError;
use crate::settings::{Settings, SettingsError, Tolerance};
use crate::stage::Stage;
use crate::stats::Board;
use crate::writer::{Planner, Writer};

/// How often the consumer lag is read.
const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// What stopped the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[sink]` section is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A Kafka client could not be built or the brokers did not answer.
    #[error(transparent)]
    Kafka(#[from] ClientError),
    /// The registry client could not be built.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The database refused us for good (e.g. a bad URL or credentials).
    #[error(transparent)]
    Database(#[from] DbError),
    /// The admin server could not start.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The consumer loop stopped on an error.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

/// A sink ready to run: clients built, group subscribed.
#[derive(Debug)]
pub struct Sink {
    consumption: Consumption,
    commands: mpsc::Sender<control::Command>,
    board: Board,
    shutdown: CancellationToken,
    /// The write stage, the lag watcher and what they spawn.
    tasks: TaskTracker,
    /// Stops the tasks once the loop has ended (a child of `shutdown`).
    tasks_shutdown: CancellationToken,
}

impl Sink {
    /// Checks the settings, reaches the brokers (and the database, if it answers), builds the
    /// clients and subscribes; records flow once [`Sink::run`] is called. `shutdown` also ends
    /// the retries of a write in progress.
    ///
    /// # Errors
    /// [`Error`] naming what is misconfigured or unreachable.
    pub async fn new(config: &Config, shutdown: CancellationToken) -> Result<Self, Error> {
        let settings = Arc::new(Settings::parse(config)?);
        kafka::check_reachable(&config.kafka).await?;
        let tasks = TaskTracker::new();
        let tasks_shutdown = shutdown.child_token();
        let dead_letters = if settings.sink.errors_tolerance == Tolerance::All {
            kafka::ensure_topics(&config.kafka, &[(&settings.dead_letter_topic, 3)]).await?;
            Some(dlq::DeadLetters::new(
                &config.kafka,
                &settings.dead_letter_topic,
            )?)
        } else {
            None
        };
        let codec = Arc::new(Codec::new(&config.registry)?);
        let mut database = Database::new(&config.sink.database_url, settings.sink.write_timeout)?;
        match database.connection().await {
            Ok(_) => tracing::info!(database = database.describe(), "Database reachable."),
            Err(e @ DbError::Fatal(_)) => return Err(e.into()),
            Err(error) => {
                tracing::warn!(%error, database = database.describe(), "Database not reachable yet; writes will retry.");
            }
        }
        let board = Board::new(&settings.sink.group_id);
        // Tables are planned (shapes read, DDL run) on a connection of their own, so that the
        // next batch is prepared while the write stage writes this one.
        let planner = Planner::new(settings.clone(), database.sibling());
        let stage = Stage::spawn(
            settings.clone(),
            Writer::new(settings.clone(), database),
            dead_letters,
            board.clone(),
            tasks_shutdown.clone(),
            &tasks,
        );
        let handle = stage.handle();
        let pipeline = Arc::new(Mutex::new(Pipeline::new(
            settings.clone(),
            planner,
            stage,
            board.clone(),
            shutdown.clone(),
        )));
        let consumer = kafka::consumer_config(&config.kafka, &settings.sink.group_id)?
            .create_with_context(consume::context(pipeline, handle, board.clone()))
            .map_err(ClientError::from)?;
        stats::watch_lag(
            &config.kafka,
            &settings.sink.group_id,
            settings.sink.topics.clone(),
            board.clone(),
            LAG_INTERVAL,
            tasks_shutdown.clone(),
            &tasks,
        )?;
        let (commands, receiver) = mpsc::channel(4);
        let consumption = Consumption::new(settings.clone(), codec, consumer, receiver)
            .map_err(ClientError::from)?;
        tracing::info!(topics = ?settings.sink.topics, group = settings.sink.group_id, "Sink subscribed.");
        Ok(Self {
            consumption,
            commands,
            board,
            shutdown,
            tasks,
            tasks_shutdown,
        })
    }

    /// The status board (what `GET /status` shows), e.g. for a benchmark to watch.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// The control routes (`/status`, `/pause`, `/resume`, `/replay`) for the admin server.
    pub fn router(&self) -> axum::Router {
        control::router(self.commands.clone(), self.board.clone())
    }

    /// Consumes and writes until the shutdown token is cancelled (then writes and commits what
    /// is buffered) or an error stops it.
    ///
    /// # Errors
    /// [`Error::Consume`]; nothing past the last written record is committed.
    pub async fn run(self) -> Result<(), Error> {
        let result = self.consumption.run(self.shutdown.clone()).await;
        // The loop is gone, and with it the write stage's queue: the stage finishes the batch it
        // has (retries end at once) and stops; the lag watcher stops.
        self.tasks_shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(error) = &result {
            tracing::error!(%error, "Sink stopped.");
        }
        Ok(result?)
    }
}

/// Runs the program: the sink, and the admin server (metrics, health, control) on
/// `sink.admin_addr`, until `shutdown` is cancelled or an error stops it.
///
/// # Errors
/// [`Error`] naming what failed.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let metrics = admin::install_metrics()?;
    let sink = Sink::new(&config, shutdown.clone()).await?;
    let admin_shutdown = shutdown.child_token();
    let addr: SocketAddr = admin::serve(
        config.sink.admin_addr,
        config.sink.admin_token.as_ref(),
        metrics,
        sink.router(),
        admin_shutdown.clone(),
    )
    .await?;
    tracing::info!(%addr, "Control: POST /pause, /resume, /replay; GET /status.");
    let result = sink.run().await;
    admin_shutdown.cancel();
    result
}
