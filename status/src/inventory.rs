//! Gathers the pipeline's data map: topics and their end offsets, consumer groups and their lag,
//! registry subjects, MySQL tables, the latest running sums and which programs answer. Each part is
//! gathered on its own; one that cannot be reached is reported, not fatal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use marketflow_core::Config;
use marketflow_core::codec::Codec;
use marketflow_core::kafka;
use marketflow_core::record::{ListingSum, ListingSumKey};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::Offset;
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{AssertSqlSafe, Row};

/// How long one question to one part may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The whole view.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Which programs answer on their admin port.
    pub programs: Vec<ProgramStatus>,
    /// Every topic but Kafka's internal ones.
    pub topics: Vec<TopicStatus>,
    /// Every consumer group with the topics it has committed offsets for.
    pub groups: Vec<GroupStatus>,
    /// Every registry subject.
    pub subjects: Vec<SubjectStatus>,
    /// Every table of the sink's database.
    pub tables: Vec<TableStatus>,
    /// The latest value of every running sum.
    pub sums: Vec<ListingSum>,
    /// Parts that could not be asked, and why.
    pub errors: Vec<String>,
}

/// One program's admin server.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStatus {
    /// `scraper`, `sink` or `streams`.
    pub name: String,
    /// Its admin address.
    pub address: String,
    /// Whether `/healthz` answered 200.
    pub up: bool,
}

/// One topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStatus {
    /// Its name.
    pub name: String,
    /// Its partitions' offsets.
    pub partitions: Vec<PartitionStatus>,
}

impl TopicStatus {
    /// Sum of the partitions' end offsets.
    pub fn end_offsets(&self) -> i64 {
        self.partitions.iter().map(|p| p.high).sum()
    }

    /// Records the topic holds now (end minus start offsets).
    pub fn messages(&self) -> i64 {
        self.partitions.iter().map(|p| p.high - p.low).sum()
    }
}

/// One partition's offsets.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: i32,
    /// Its start offset.
    pub low: i64,
    /// Its end offset (the next offset to be written).
    pub high: i64,
}

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// The group id.
    pub group: String,
    /// Its state as the broker reports it (e.g. `Stable`, `Empty`).
    pub state: String,
    /// How many members it has.
    pub members: usize,
    /// Per topic: committed offsets, end offsets and the lag between them.
    pub topics: Vec<GroupLag>,
}

/// A group's position in one topic.
#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    /// The topic.
    pub topic: String,
    /// Sum of the committed offsets of the partitions that have one.
    pub committed: i64,
    /// Sum of those partitions' end offsets.
    pub end: i64,
    /// `end - committed`: records not yet processed.
    pub lag: i64,
}

/// One registry subject.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectStatus {
    /// The subject, e.g. `listings-value`.
    pub subject: String,
    /// Its live versions.
    pub versions: Vec<u32>,
    /// The schema id of its latest version.
    pub latest_id: Option<u32>,
}

/// One MySQL table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// The table's name.
    pub table: String,
    /// Its exact row count.
    pub rows: i64,
}

/// Which topics and consumer groups to look at.
pub type NameFilter = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Asks every part and assembles the view. With `filter`, only the topics, groups and subjects
/// whose names contain it are shown.
pub async fn collect(config: &Config, filter: Option<&str>) -> Status {
    let mut errors = Vec::new();
    let owned = filter.map(str::to_owned);
    let keep: NameFilter =
        std::sync::Arc::new(move |name: &str| owned.as_deref().is_none_or(|f| name.contains(f)));
    let (programs, kafka, subjects, tables) = tokio::join!(
        programs(config),
        kafka_parts(config, keep.clone(), keep),
        subjects(config, filter),
        tables(config),
    );
    let (topics, groups) = kafka.unwrap_or_else(|e| {
        errors.push(e);
        (Vec::new(), Vec::new())
    });
    let subjects = subjects.unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let tables = tables.unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let sums = if topics.iter().any(|t| t.name == config.topics.listing_sums) {
        sums(config, &topics).await.unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        })
    } else {
        Vec::new()
    };
    Status {
        programs,
        topics,
        groups,
        subjects,
        tables,
        sums,
        errors,
    }
}

async fn programs(config: &Config) -> Vec<ProgramStatus> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build();
    let addresses: [(&str, SocketAddr); 3] = [
        ("scraper", config.scraper.admin_addr),
        ("sink", config.sink.admin_addr),
        ("streams", config.streams.admin_addr),
    ];
    let mut out = Vec::new();
    for (name, address) in addresses {
        let asked = reachable(address);
        let up = match &client {
            Ok(client) => client
                .get(format!("http://{asked}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Err(_) => false,
        };
        out.push(ProgramStatus {
            name: name.to_owned(),
            address: asked.to_string(),
            up,
        });
    }
    out
}

/// Topics with their watermarks, and groups with their committed offsets.
pub(crate) async fn kafka_parts(
    config: &Config,
    topic_filter: NameFilter,
    group_filter: NameFilter,
) -> Result<(Vec<TopicStatus>, Vec<GroupStatus>), String> {
    let servers = config.kafka.bootstrap_servers.clone();
    let kafka_config = config.kafka.clone();
    let consumer: BaseConsumer = kafka::consumer_config(&config.kafka, "marketflow-status")
        .and_then(|c| Ok(c.create()?))
        .map_err(|e| format!("Kafka at {servers}: {e}"))?;
    tokio::task::spawn_blocking(move || {
        let unreachable = |e: rdkafka::error::KafkaError| format!("Kafka at {servers}: {e}");
        let metadata = consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(unreachable)?;
        let mut topics = Vec::new();
        for topic in metadata.topics() {
            if topic.name().starts_with("__")
                || topic.name() == "_schemas"
                || !topic_filter(topic.name())
            {
                continue;
            }
            let mut partitions = Vec::new();
            for partition in topic.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic.name(), partition.id(), TIMEOUT)
                    .map_err(unreachable)?;
                partitions.push(PartitionStatus {
                    partition: partition.id(),
                    low,
                    high,
                });
            }
            partitions.sort_by_key(|p| p.partition);
            topics.push(TopicStatus {
                name: topic.name().to_owned(),
                partitions,
            });
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));

        let mut all = TopicPartitionList::new();
        let mut offsets = BTreeMap::new();
        for topic in &topics {
            for p in &topic.partitions {
                all.add_partition(&topic.name, p.partition);
                offsets.insert((topic.name.clone(), p.partition), (p.low, p.high));
            }
        }
        let list = consumer
            .fetch_group_list(None, TIMEOUT)
            .map_err(unreachable)?;
        let mut groups = Vec::new();
        for info in list.groups().iter().filter(|g| group_filter(g.name())) {
            let topics = if all.elements().is_empty() {
                Vec::new()
            } else {
                let committed = group_offsets(&kafka_config, info.name(), &all)
                    .map_err(|e| format!("offsets of group {}: {e}", info.name()))?;
                group_lags(&committed, &offsets)
            };
            groups.push(GroupStatus {
                group: info.name().to_owned(),
                state: info.state().to_owned(),
                members: info.members().len(),
                topics,
            });
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok((topics, groups))
    })
    .await
    .map_err(|e| format!("Kafka inventory task failed: {e}"))?
}

/// A group's position per topic, from its `committed` offsets and the partitions' `(start, end)`
/// offsets; a partition the group never committed in is left out.
fn group_lags(
    committed: &TopicPartitionList,
    offsets: &BTreeMap<(String, i32), (i64, i64)>,
) -> Vec<GroupLag> {
    let mut lags: BTreeMap<String, GroupLag> = BTreeMap::new();
    for element in committed.elements() {
        let Offset::Offset(offset) = element.offset() else {
            continue;
        };
        let (low, high) = offsets
            .get(&(element.topic().to_owned(), element.partition()))
            .copied()
            .unwrap_or((offset, offset));
        let lag = lags
            .entry(element.topic().to_owned())
            .or_insert_with(|| GroupLag {
                topic: element.topic().to_owned(),
                committed: 0,
                end: 0,
                lag: 0,
            });
        lag.committed += offset;
        lag.end += high;
        lag.lag += kafka::lag(low, high, Some(offset));
    }
    lags.into_values().collect()
}

/// The committed offsets of `group` for the partitions in `partitions`, asked as a member of
/// that group would, without joining it.
fn group_offsets(
    kafka: &marketflow_core::config::KafkaConfig,
    group: &str,
    partitions: &TopicPartitionList,
) -> Result<TopicPartitionList, String> {
    let consumer: BaseConsumer = kafka::consumer_config(kafka, group)
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .committed_offsets(partitions.clone(), TIMEOUT)
        .map_err(|e| e.to_string())
}

async fn subjects(config: &Config, filter: Option<&str>) -> Result<Vec<SubjectStatus>, String> {
    let url = config.registry.url.trim_end_matches('/');
    let fail = |e: reqwest::Error| format!("registry at {url}: {e}");
    let client = config.registry.http_client(TIMEOUT).map_err(fail)?;
    let names: Vec<String> = client
        .get(format!("{url}/subjects"))
        .send()
        .await
        .map_err(fail)?
        .json()
        .await
        .map_err(fail)?;
    let mut out = Vec::new();
    for subject in names
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.contains(f)))
    {
        let mut base = reqwest::Url::parse(url).map_err(|e| format!("registry URL {url}: {e}"))?;
        base.path_segments_mut()
            .map_err(|()| format!("registry URL {url} cannot have a path"))?
            .extend(["subjects", &subject, "versions"]);
        let versions: Vec<u32> = client
            .get(base.clone())
            .send()
            .await
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)?;
        base.path_segments_mut()
            .map_err(|()| format!("registry URL {url}"))?
            .push("latest");
        let latest: serde_json::Value = client
            .get(base)
            .send()
            .await
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)?;
        let latest_id = latest
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok());
        out.push(SubjectStatus {
            subject,
            versions,
            latest_id,
        });
    }
    Ok(out)
}

pub(crate) async fn tables(config: &Config) -> Result<Vec<TableStatus>, String> {
    let url = config.sink.database_url.expose_secret();
    let place = database_place(url);
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| format!("MySQL at {place}: {}", redact(&e.to_string(), url)))?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(&pool)
    .await
    .map_err(|e| format!("MySQL at {place}: {e}"))?;
    let mut out = Vec::new();
    for table in names {
        let sql = format!("SELECT COUNT(*) FROM {}", quote_identifier(&table));
        let row = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("MySQL at {place}, counting {table}: {e}"))?;
        let rows: i64 = row
            .try_get(0)
            .map_err(|e| format!("MySQL at {place}: {e}"))?;
        out.push(TableStatus { table, rows });
    }
    pool.close().await;
    Ok(out)
}

/// The latest value of every key of the sums topic, read from its start to its end offsets.
pub(crate) async fn sums(
    config: &Config,
    topics: &[TopicStatus],
) -> Result<Vec<ListingSum>, String> {
    let name = &config.topics.listing_sums;
    let Some(topic) = topics.iter().find(|t| &t.name == name) else {
        return Ok(Vec::new());
    };
    let codec = Codec::new(&config.registry).map_err(|e| e.to_string())?;
    let consumer = kafka::create_consumer(&config.kafka, "marketflow-status")
        .map_err(|e| format!("Kafka: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for p in topic.partitions.iter().filter(|p| p.high > p.low) {
        assignment
            .add_partition_offset(name, p.partition, Offset::Offset(p.low))
            .map_err(|e| e.to_string())?;
        remaining.insert(p.partition, p.high);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("reading {name}: {e}"))?;
    let mut latest: BTreeMap<ListingSumKey, ListingSum> = BTreeMap::new();
    while !remaining.is_empty() {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .map_err(|_| format!("reading {name}: no record within {TIMEOUT:?}"))?
            .map_err(|e| format!("reading {name}: {e}"))?;
        if remaining
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            remaining.remove(&message.partition());
        }
        let (Some(key), Some(value)) = (message.key(), message.payload()) else {
            continue;
        };
        // A record that does not decode is left out of the view; status never stops on one.
        if let (Ok(key), Ok(value)) = (
            codec.decode::<ListingSumKey>(key).await,
            codec.decode::<ListingSum>(value).await,
        ) {
            latest.insert(key, value);
        }
    }
    let mut sums: Vec<ListingSum> = latest.into_values().collect();
    // The global total first, then the largest sums.
    sums.sort_by_key(|s| (s.scope != "all", std::cmp::Reverse(s.sum)));
    Ok(sums)
}

/// Where to ask a program's admin server: one bound to every interface is asked on loopback.
pub(crate) fn reachable(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], address.port()))
    } else {
        address
    }
}

/// A MySQL identifier in backquotes, any backquote in it doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `host:port/database` of a MySQL URL: what may be shown, without user or password.
pub fn database_place(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('?').next().unwrap_or(rest).to_owned()
}

/// `text` with the URL's password, if any, replaced by `***`.
fn redact(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => text.replace(password, "***"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_backquotes_doubled() {
        assert_eq!(quote_identifier("listings"), "`listings`");
        assert_eq!(quote_identifier("a`b"), "`a``b`");
    }

    #[test]
    fn the_database_place_shows_no_credentials() {
        let url = "mysql://marketflow:s3cret@127.0.0.1:13306/marketflow?ssl-mode=disabled";
        assert_eq!(database_place(url), "127.0.0.1:13306/marketflow");
        assert_eq!(redact("failed for s3cret", url), "failed for ***");
    }
}
