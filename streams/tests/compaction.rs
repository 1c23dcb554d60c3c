//! The real `streams` binary on a changelog and a partials topic that the brokers really compact
//! (`segment.ms=100`, `min.cleanable.dirty.ratio=0.01`): after compaction has removed every
//! product's older changelog records, a restart restores from what is left and the sums stay
//! exact, including sums that fell to zero when their last product moved to another category.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use marketflow_core::kafka::create_admin;
use marketflow_core::record::Listing;
use marketflow_core::testkit::unique;
use marketflow_streams::changelog::decode_change;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::{Op, Pipeline, Rng, expected_distinct, free_port, kill, listing, terminate};

/// The input partition every record of this test goes to, so that one partition's state holds
/// every product (and the changelog partition of the same number every change).
const PARTITION: i32 = 0;

/// Products that each start alone in a category of their own and later move to [`MOVED_TO`]:
/// their first categories' sums fall to zero.
const MOVERS: i64 = 12;
/// The category the movers move to.
const MOVED_TO: &str = "compaction-moved";
/// Products updated again and again, so that compaction has many records to remove.
const REGULARS: i64 = 150;

/// Topic settings under which the brokers compact within seconds: a segment rolls every 100 ms
/// (on the first record appended after that), and any dirty share makes a log cleanable.
const COMPACT_FAST: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("delete.retention.ms", "100"),
    ("min.compaction.lag.ms", "0"),
];

/// A `streams` child, killed if the test ends (or panics) before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            kill(&mut self.0);
        }
    }
}

/// Creates `topics` (3 partitions, replication factor 3) with [`COMPACT_FAST`].
async fn create_compacting(pipeline: &Pipeline, topics: &[&str]) {
    let admin = create_admin(&pipeline.cluster.config.kafka).unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            COMPACT_FAST.iter().fold(
                NewTopic::new(name, 3, TopicReplication::Fixed(3)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await.unwrap() {
        result.unwrap_or_else(|(topic, code)| panic!("cannot create topic {topic}: {code}"));
    }
}

/// A listing of `id` at `price` in `category`.
fn version(rng: &mut Rng, id: i64, price: i64, category: &str) -> Op {
    let mut listing: Listing = listing(rng, id, Some(price));
    listing.category_path = Some(category.to_owned());
    listing.category_level1 = Some(category.to_owned());
    Op::Version(listing)
}

/// One record of a topic: its offset, key and value (`None` for a tombstone).
struct Stored {
    offset: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// Every record of every partition of `topic` now, and each partition's high watermark.
async fn read_topic(pipeline: &Pipeline, topic: &str) -> (BTreeMap<i32, Vec<Stored>>, i64) {
    let servers = pipeline.cluster.config.kafka.bootstrap_servers.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", unique("compaction-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let timeout = Duration::from_secs(10);
        let mut list = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        let mut written = 0;
        for partition in 0..3 {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .unwrap();
            written += high;
            if high > low {
                list.add_partition_offset(&topic, partition, Offset::Beginning)
                    .unwrap();
                ends.insert(partition, high);
            }
        }
        let mut records: BTreeMap<i32, Vec<Stored>> = BTreeMap::new();
        if ends.is_empty() {
            return (records, written);
        }
        consumer.assign(&list).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ends.is_empty() {
            assert!(
                Instant::now() < deadline,
                "reading {topic} took over a minute"
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.unwrap();
            let partition = message.partition();
            if ends
                .get(&partition)
                .is_some_and(|end| message.offset() + 1 >= *end)
            {
                ends.remove(&partition);
            }
            records.entry(partition).or_default().push(Stored {
                offset: message.offset(),
                key: message.key().unwrap_or_default().to_vec(),
                value: message.payload().map(<[u8]>::to_vec),
            });
        }
        (records, written)
    })
    .await
    .unwrap()
}

/// The changelog key of product `id` under `distinct`.
fn product_key(id: i64) -> Vec<u8> {
    let mut key = vec![b'd'];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Waits until the brokers have compacted `topic`: fewer records than offsets handed out, and
/// `done` holds of what is left.
async fn await_compaction(
    pipeline: &Pipeline,
    topic: &str,
    within: Duration,
    done: impl Fn(&BTreeMap<i32, Vec<Stored>>) -> bool,
) -> (usize, i64) {
    let deadline = Instant::now() + within;
    loop {
        let (records, written) = read_topic(pipeline, topic).await;
        let left = records.values().map(Vec::len).sum::<usize>();
        if i64::try_from(left).unwrap() < written && done(&records) {
            return (left, written);
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} was not compacted within {within:?}: {left} records left of \
             {written} written"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_restart_after_compaction_restores_exact_sums() {
    let pipeline = Pipeline::new("streams-compact").await;
    create_compacting(&pipeline, &[&pipeline.changelog, &pipeline.partials]).await;
    let mut rng = Rng::new(7);
    let movers = 1..=MOVERS;
    let regulars = 1_000..1_000 + REGULARS;

    // 1. Every mover alone in its own category, the regulars updated five times over, in
    //    rounds so that the partial sums are written again and again; a first run sums it all
    //    and stops cleanly (its partial sums and offsets are durable).
    let port = free_port();
    let mut streams = Running(pipeline.start(port, &[]));
    let mut first: Vec<Op> = movers
        .clone()
        .map(|id| version(&mut rng, id, 1_000 * id, &format!("compaction-from-{id}")))
        .collect();
    pipeline.produce_to(&first, Some(PARTITION)).await;
    for round in 0..5 {
        let chunk: Vec<Op> = regulars
            .clone()
            .map(|id| {
                let category =
                    ["디지털기기", "의류", "도서"][usize::try_from(id + round).unwrap() % 3];
                version(&mut rng, id, 10 * id + round, category)
            })
            .collect();
        pipeline.produce_to(&chunk, Some(PARTITION)).await;
        first.extend(chunk);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    pipeline
        .await_sums(&expected_distinct(&first), Duration::from_secs(120))
        .await;
    assert!(terminate(&mut streams.0).success());

    // 2. A second run moves every mover to another category and updates the regulars again,
    //    over a few seconds so that the changelog's segments roll behind the moves. Its commit
    //    interval is longer than the run: its partial sums never leave, as if it crashed right
    //    after the changes reached the changelog, and it is killed.
    let mut second: Vec<Op> = movers
        .clone()
        .map(|id| version(&mut rng, id, 2_000 * id, MOVED_TO))
        .collect();
    let mut streams =
        Running(pipeline.start(port, &[("MARKETFLOW__STREAMS__COMMIT_INTERVAL", "1h")]));
    pipeline.produce_to(&second, Some(PARTITION)).await;
    for round in 5..10 {
        let chunk: Vec<Op> = regulars
            .clone()
            .map(|id| version(&mut rng, id, 10 * id + round, "디지털기기"))
            .collect();
        pipeline.produce_to(&chunk, Some(PARTITION)).await;
        second.extend(chunk);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let last_regular = product_key(regulars.end - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Every mover's move, and the regulars' last round, are in the changelog.
        let (records, _) = read_topic(&pipeline, &pipeline.changelog).await;
        let changes = records.get(&PARTITION).map_or(&[][..], Vec::as_slice);
        let latest = |key: &[u8]| {
            changes
                .iter()
                .rev()
                .find(|r| r.key == key)
                .and_then(|r| r.value.as_deref())
                .map(|v| decode_change(&pipeline.changelog, v).unwrap())
        };
        let moved = movers.clone().all(|id| {
            latest(&product_key(id)).is_some_and(|(_, c)| {
                c.next
                    .as_ref()
                    .is_some_and(|n| n.category == MOVED_TO && n.price == 2_000 * id)
            })
        });
        let last_round = latest(&last_regular).is_some_and(|(_, c)| {
            c.next
                .is_some_and(|n| n.price == 10 * (regulars.end - 1) + 9)
        });
        if moved && last_round {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second run did not write its changes to the changelog within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    kill(&mut streams.0);

    // 3. The brokers compact: each mover keeps one changelog record, its move; the records that
    //    put it in its first category are gone. The partials compact too.
    let (left, written) = await_compaction(
        &pipeline,
        &pipeline.changelog,
        Duration::from_secs(120),
        |records| {
            let changes = records.get(&PARTITION).map_or(&[][..], Vec::as_slice);
            movers
                .clone()
                .all(|id| changes.iter().filter(|r| r.key == product_key(id)).count() == 1)
        },
    )
    .await;
    eprintln!("changelog compacted: {left} records left of {written} written");
    let (records, _) = read_topic(&pipeline, &pipeline.changelog).await;
    let offsets: Vec<i64> = records[&PARTITION].iter().map(|r| r.offset).collect();
    assert!(
        offsets.windows(2).any(|w| w[1] > w[0] + 1),
        "a compacted changelog has gaps in its offsets"
    );
    let (left, written) = await_compaction(
        &pipeline,
        &pipeline.partials,
        Duration::from_secs(120),
        |_| true,
    )
    .await;
    eprintln!("partials compacted: {left} records left of {written} written");

    // 4. A third run restores from the compacted changelog and reads the second run's input
    //    again (its offsets were never committed); then more input arrives. The sums are exact:
    //    the movers' first categories are at zero, as nothing is in them any more.
    let mut streams = Running(pipeline.start(port, &[]));
    let third: Vec<Op> = regulars
        .clone()
        .step_by(10)
        .map(|id| version(&mut rng, id, 7 * id, "도서"))
        .collect();
    pipeline.produce_to(&third, Some(PARTITION)).await;
    let all: Vec<Op> = first.into_iter().chain(second).chain(third).collect();
    let expected = expected_distinct(&all);
    assert!(
        expected
            .keys()
            .all(|k| !k.value.starts_with("compaction-from-")),
        "the movers' first categories must be empty"
    );
    pipeline
        .await_sums(&expected, Duration::from_secs(120))
        .await;
    assert!(terminate(&mut streams.0).success());
}
