//! The sink's figures: its Prometheus metrics (named in `marketflow_core::metric::sink`: records
//! in, rows written per table, re-deliveries, batches, latencies, dead letters, consumer lag) and
//! the status board behind `GET /status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{self, ClientError, consumer_config};
use marketflow_core::metric;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the sink is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Connecting and joining the group.
    Starting,
    /// Consuming and writing.
    Running,
    /// Paused through `POST /pause`.
    Paused,
    /// Waiting for the database to come back; consumption paused.
    BackingOff,
    /// Stopped (shut down or failed).
    Stopped,
}

/// One assigned partition as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset the sink will read.
    pub position: Option<i64>,
    /// Next offset the group has committed (everything before it is in the table).
    pub committed: Option<i64>,
    /// The partition's end offset.
    pub high_watermark: Option<i64>,
    /// `high_watermark - committed`.
    pub lag: Option<i64>,
}

/// The answer of `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// What the sink is doing.
    pub state: State,
    /// The consumer group.
    pub group_id: String,
    /// Partitions assigned to this instance.
    pub partitions: Vec<PartitionStatus>,
    /// Sum of the partitions' lag.
    pub lag: i64,
    /// Records consumed since start.
    pub records_in: u64,
    /// Rows written since start, all tables.
    pub rows_written: u64,
    /// Rows written since start, per table.
    pub rows_written_by_table: BTreeMap<String, u64>,
    /// Rows deleted since start.
    pub rows_deleted: u64,
    /// Records found already written, identical, since start (re-deliveries).
    pub records_redelivered: u64,
    /// Batches committed since start.
    pub batches: u64,
    /// Records sent to the dead-letter topic since start.
    pub dead_lettered: u64,
    /// The last error, when the sink is backing off or stopped by one.
    pub last_error: Option<String>,
}

/// The shared status, written by the consumer loop and the lag watcher, read by `/status`.
#[derive(Debug, Clone)]
pub struct Board(Arc<Mutex<Status>>);

impl Board {
    /// A board for group `group_id`, starting.
    pub fn new(group_id: &str) -> Self {
        Self(Arc::new(Mutex::new(Status {
            state: State::Starting,
            group_id: group_id.to_owned(),
            partitions: Vec::new(),
            lag: 0,
            records_in: 0,
            rows_written: 0,
            rows_written_by_table: BTreeMap::new(),
            rows_deleted: 0,
            records_redelivered: 0,
            batches: 0,
            dead_lettered: 0,
            last_error: None,
        })))
    }

    /// Locks the status for an update (a poisoned lock is taken over: the status is plain data).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Status> {
        marketflow_core::sync::lock(&self.0)
    }

    /// A copy of the status.
    pub fn snapshot(&self) -> Status {
        self.lock().clone()
    }

    /// Sets the state.
    pub(crate) fn set_state(&self, state: State) {
        self.lock().state = state;
    }

    /// Replaces the assigned partitions (keeping what is known of those still assigned).
    pub(crate) fn set_assignment(&self, assigned: &[(String, i32)]) {
        let mut status = self.lock();
        let old = std::mem::take(&mut status.partitions);
        status.partitions = assigned
            .iter()
            .map(|(topic, partition)| {
                old.iter()
                    .find(|p| &p.topic == topic && p.partition == *partition)
                    .cloned()
                    .unwrap_or_else(|| PartitionStatus {
                        topic: topic.clone(),
                        partition: *partition,
                        ..PartitionStatus::default()
                    })
            })
            .collect();
        status.lag = status.partitions.iter().filter_map(|p| p.lag).sum();
    }
}

/// Every `interval`, reads the topics' end offsets and the group's committed offsets (through a
/// client of its own that never joins the group), and updates the lag gauge and the board, on a
/// task of `tracker` that ends at `shutdown`.
///
/// # Errors
/// [`ClientError`] when the client cannot be built.
pub(crate) fn watch_lag(
    kafka: &KafkaConfig,
    group_id: &str,
    topics: Vec<String>,
    board: Board,
    interval: Duration,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), ClientError> {
    let client: BaseConsumer = consumer_config(kafka, group_id)?.create()?;
    let client = Arc::new(client);
    tracker.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let (client, topics) = (client.clone(), topics.clone());
            let read = tokio::task::spawn_blocking(move || read_lag(&client, &topics));
            // A read stalled on unreachable brokers is not waited for at shutdown.
            let read = tokio::select! {
                read = read => read,
                () = shutdown.cancelled() => return,
            };
            let Ok(Some(partitions)) = read else { continue };
            let mut by_topic: BTreeMap<&str, i64> = BTreeMap::new();
            for ((topic, _), (_, _, lag)) in &partitions {
                *by_topic.entry(topic.as_str()).or_default() += lag;
            }
            for (topic, lag) in by_topic {
                #[allow(clippy::cast_precision_loss)] // lag far below 2^52
                metrics::gauge!(metric::sink::CONSUMER_LAG, "topic" => topic.to_owned())
                    .set(lag as f64);
            }
            let mut status = board.lock();
            for p in &mut status.partitions {
                if let Some((high, committed, lag)) =
                    partitions.get(&(p.topic.clone(), p.partition))
                {
                    p.high_watermark = Some(*high);
                    p.committed = *committed;
                    p.lag = Some(*lag);
                }
            }
            status.lag = status.partitions.iter().filter_map(|p| p.lag).sum();
        }
    });
    Ok(())
}

type LagTable = BTreeMap<(String, i32), (i64, Option<i64>, i64)>;

/// `(topic, partition) → (high watermark, committed, lag)` of every partition of `topics`.
fn read_lag(client: &BaseConsumer, topics: &[String]) -> Option<LagTable> {
    let timeout = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), timeout).ok()?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = client.committed_offsets(tpl.clone(), timeout).ok()?;
    let mut table = BTreeMap::new();
    for element in committed.elements() {
        let (topic, partition) = (element.topic().to_owned(), element.partition());
        let (low, high) = client.fetch_watermarks(&topic, partition, timeout).ok()?;
        let committed = match element.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let lag = kafka::lag(low, high, committed);
        table.insert((topic, partition), (high, committed, lag));
    }
    Some(table)
}
