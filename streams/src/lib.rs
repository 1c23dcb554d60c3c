//! The `streams` program: drops listings over the price limit and keeps running sums, exact after
//! any crash, back to Kafka as Avro.
//!
//! Two stages run in each instance, each on its own thread with its own consumer group: the
//! [`worker`] (filter, per-input-partition state, changelog, partial sums) and the [`merge`]
//! stage (one owner per sum, totals to `listing-sums`). [`state`] explains why the sums stay
//! exact across crashes and rebalances, without transactions and with them.

pub mod aggregate;
mod buffers;
pub mod changelog;
pub mod control;
mod driver;
pub mod filter;
pub mod input;
pub mod merge;
pub mod output;
pub mod partition;
pub mod routing;
pub mod state;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use marketflow_core::Config;
use marketflow_core::admin::{self, AdminError};
use marketflow_core::codec::{Codec, CodecError};
use marketflow_core::config::{StreamsGuarantee, StreamsSemantics};
use marketflow_core::kafka::{self, ClientError, SendLimit};
use tokio_util::sync::CancellationToken;

use crate::control::{Control, Status};
use crate::merge::{MergeError, MergeSetup, Merger};
use crate::output::{Output, OutputError};
use crate::worker::{Setup, Worker, WorkerError, Writers};

/// What stopped the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cluster could not be reached or refused a client.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A topic the program reads does not exist.
    #[error(
        "topic {topic} not found on {servers}: run scripts/cluster.sh up, or create it (the \
         program reads it, it does not create it)"
    )]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The bootstrap list.
        servers: String,
    },
    /// The changelog does not match the input.
    #[error(
        "the changelog topic {changelog} has {found} partitions but the input topic {input} has \
         {wanted}: each input partition needs the changelog partition of the same number; use a \
         new streams.changelog_topic"
    )]
    ChangelogPartitions {
        /// The changelog topic.
        changelog: String,
        /// Its partition count.
        found: usize,
        /// The input topic.
        input: String,
        /// Its partition count.
        wanted: usize,
    },
    /// The registry refused or was unreachable.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The producer could not be built, or the brokers refuse transactions.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The admin server could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The aggregation stage stopped.
    #[error("aggregation stage: {0}")]
    Worker(#[from] WorkerError),
    /// The merge stage stopped.
    #[error("merge stage: {0}")]
    Merge(#[from] MergeError),
    /// A stage's thread panicked.
    #[error("a stage's thread ended abnormally: {0}")]
    Join(String),
}

/// Runs the program until `shutdown` is cancelled or a stage fails.
///
/// # Errors
/// [`Error`]: configuration, cluster, registry or a stage's fatal error. Under `exactly_once`,
/// [`OutputError::TransactionsRefused`] at start when the brokers have no transactions.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    validate(&config)?;
    // Before any client: the producers look their delivery-latency histogram up once, and a
    // handle looked up before the recorder is installed records nothing.
    let metrics = admin::install_metrics()?;
    kafka::check_reachable(&config.kafka).await?;
    let streams = &config.streams;
    // First: under `exactly_once` this is where brokers without transactions are told. Each
    // input partition's transactional producer is made when the partition is assigned.
    if streams.guarantee == StreamsGuarantee::ExactlyOnce {
        let kafka_config = config.kafka.clone();
        let group_id = streams.group_id.clone();
        blocking(move || Output::probe_transactions(&kafka_config, &group_id)).await??;
    }
    // The registry's side meanwhile: its HTTP clients load the system's root certificates, a
    // few hundred milliseconds.
    let registry = config.registry.clone();
    let (kafka_side, registry_side) = tokio::join!(
        async {
            let topics = prepare_topics(&config).await?;
            Ok::<_, Error>((topics, forward_limit(&config).await))
        },
        async {
            let codec = Arc::new(blocking(move || Codec::new(&registry)).await??);
            let forward = worker::register_forward(&codec, &config.topics.listings_affordable);
            Ok::<_, Error>((forward.await?, codec))
        },
    );
    let (topics, limit) = kafka_side?;
    let (forward, codec) = registry_side?;
    let writers = match streams.guarantee {
        StreamsGuarantee::Changelog => {
            Writers::Shared(Arc::new(Output::new(&config.kafka, limit)?))
        }
        StreamsGuarantee::ExactlyOnce => Writers::PerPartition,
    };
    let merge_output = Output::new(&config.kafka, SendLimit::new(&config.kafka, None))?;

    let control = Arc::new(Control::new(initial_status(&config)));
    admin::serve(
        streams.admin_addr,
        streams.admin_token.as_ref(),
        metrics,
        control::router(control.clone()),
        shutdown.clone(),
    )
    .await?;

    // One stage failing stops the other.
    let stop = shutdown.child_token();
    let runtime = tokio::runtime::Handle::current();
    let worker = Worker::new(
        Setup {
            config: config.clone(),
            codec: codec.clone(),
            runtime: runtime.clone(),
            writers,
            forward,
            partials_partitions: topics.partials_partitions,
            input_partitions: topics.input_partitions,
            limit,
            control: control.clone(),
            records_in: Arc::new(AtomicU64::new(0)),
        },
        stop.clone(),
    )?;
    let merger = Merger::new(
        MergeSetup {
            config: config.clone(),
            codec,
            runtime,
            output: merge_output,
            partials_partitions: topics.partials_partitions,
            control,
        },
        stop.clone(),
    )?;
    let worker = on_thread(stop.clone(), move || worker.run());
    let merger = on_thread(stop, move || merger.run());
    let (worker, merger) = tokio::join!(worker, merger);
    worker.map_err(|e| Error::Join(e.to_string()))??;
    merger.map_err(|e| Error::Join(e.to_string()))??;
    tracing::info!("Streams stopped.");
    Ok(())
}

/// The largest listing that can be forwarded: the producer's limit or the affordable topic's
/// `max.message.bytes`, whichever is lower (logged).
async fn forward_limit(config: &Config) -> SendLimit {
    let affordable = &config.topics.listings_affordable;
    let limit = SendLimit::new(
        &config.kafka,
        kafka::max_message_bytes(&config.kafka, affordable).await,
    );
    tracing::info!(
        topic = %affordable,
        bytes = limit.bytes(),
        "Listings larger than this cannot be forwarded; they are dropped as unsendable."
    );
    limit
}

/// Runs a stage on a blocking thread of its own; when it ends, for any reason, `stop` is
/// cancelled, so that the other stage stops too.
fn on_thread<E: Send + 'static>(
    stop: CancellationToken,
    stage: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), E>> {
    tokio::task::spawn_blocking(move || {
        let outcome = stage();
        stop.cancel();
        outcome
    })
}

/// The status the admin routes show before the stages report.
fn initial_status(config: &Config) -> Status {
    let streams = &config.streams;
    Status {
        semantics: match streams.semantics {
            StreamsSemantics::Distinct => "distinct",
            StreamsSemantics::Append => "append",
        }
        .to_owned(),
        guarantee: match streams.guarantee {
            StreamsGuarantee::Changelog => "changelog",
            StreamsGuarantee::ExactlyOnce => "exactly_once",
        }
        .to_owned(),
        group_id: streams.group_id.clone(),
        input_topic: config.topics.listings.clone(),
        ..Status::default()
    }
}

fn validate(config: &Config) -> Result<(), Error> {
    let streams = &config.streams;
    if !(1..=4).contains(&streams.category_level) {
        return Err(Error::Config(format!(
            "streams.category_level is {}, but listings have category levels 1 to 4",
            streams.category_level
        )));
    }
    if streams.commit_interval.is_zero() {
        return Err(Error::Config(
            "streams.commit_interval is 0; give a duration such as \"500ms\"".into(),
        ));
    }
    if streams.max_price < 0 {
        return Err(Error::Config(format!(
            "streams.max_price is {}: a price below 0 is never accepted, so nothing would count",
            streams.max_price
        )));
    }
    if streams.group_id.is_empty() {
        return Err(Error::Config("streams.group_id is empty".into()));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Join(e.to_string()))
}

struct Topics {
    partials_partitions: i32,
    input_partitions: i32,
}

/// Checks the input exists, and creates what is missing: the internal topics (compacted; the
/// changelog with the input's partition count) and the output topics.
async fn prepare_topics(config: &Config) -> Result<Topics, Error> {
    let input = &config.topics.listings;
    let wanted = kafka::partition_counts(&config.kafka, &[input], Duration::ZERO)
        .await?
        .into_iter()
        .flatten()
        .next()
        .ok_or_else(|| Error::MissingTopic {
            topic: input.clone(),
            servers: config.kafka.bootstrap_servers.clone(),
        })?;
    let count = i32::try_from(wanted).unwrap_or(i32::MAX);
    let streams = &config.streams;
    let internal = [
        (streams.changelog_topic.as_str(), count),
        (streams.partials_topic.as_str(), count),
    ];
    let output = [
        (config.topics.listings_affordable.as_str(), count),
        (config.topics.listing_sums.as_str(), count),
    ];
    tokio::try_join!(
        kafka::ensure_compacted_topics(&config.kafka, &internal),
        kafka::ensure_topics(&config.kafka, &output),
    )?;
    // Topics just created may take a moment to show in the metadata.
    let created = internal.map(|(name, _)| name);
    let counts =
        kafka::partition_counts(&config.kafka, &created, config.kafka.connect_timeout).await?;
    let (changelog, partials) = (
        counts.first().copied().flatten(),
        counts.get(1).copied().flatten(),
    );
    let found = changelog.unwrap_or(0);
    if found != wanted {
        return Err(Error::ChangelogPartitions {
            changelog: streams.changelog_topic.clone(),
            found,
            input: input.clone(),
            wanted,
        });
    }
    Ok(Topics {
        partials_partitions: i32::try_from(partials.unwrap_or(1).max(1)).unwrap_or(1),
        input_partitions: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_level_outside_1_to_4_is_refused() {
        let mut config = Config::default();
        config.streams.category_level = 5;
        let err = validate(&config).unwrap_err().to_string();
        assert!(err.contains("category levels 1 to 4"), "{err}");
        config.streams.category_level = 4;
        assert!(validate(&config).is_ok());
    }
}
