//! A producer to the three-broker bootstrap list keeps delivering when the broker it was using is
//! killed: no record lost, none duplicated. In its own test binary, because it kills a broker of
//! the shared local cluster (and brings it back with `scripts/cluster.sh up`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use marketflow_core::kafka::{create_consumer, create_producer};
use marketflow_core::testkit::{Cluster, Restore, cluster_dir, unique};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureRecord, Producer};

const RECORDS: usize = 600;

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_producer_survives_the_loss_of_its_broker_without_loss_or_duplicates() {
    let cluster = Cluster::require().await;
    let topic = cluster.topic("failover", 1).await;
    let producer = create_producer(&cluster.config.kafka).unwrap();

    // The broker this producer writes through: the partition leader its metadata names.
    let metadata = producer
        .client()
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let leader = metadata.topics()[0].partitions()[0].leader();
    let broker = metadata
        .brokers()
        .iter()
        .find(|b| b.id() == leader)
        .unwrap();
    let node = broker.port() - 19091; // Kafka node ids 1-3 listen on 19092-19094
    let pid_file = cluster_dir().join(format!("pids/broker-{node}.pid"));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let _restore = Restore;

    let mut deliveries = Vec::with_capacity(RECORDS);
    for seq in 0..RECORDS {
        if seq == RECORDS / 3 {
            // Let what is in flight so far land, then pull the broker out from under it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
            assert!(
                killed.success(),
                "could not kill Kafka node {node} (pid {pid})"
            );
        }
        let payload = seq.to_string();
        let record = FutureRecord::to(&topic).key(&payload).payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (seq, delivery) in deliveries.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(120), delivery).await;
        let delivered = outcome.unwrap_or_else(|_| panic!("record {seq} never resolved"));
        assert!(delivered.unwrap().is_ok(), "record {seq} was not delivered");
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // Read everything back through the brokers still up.
    let mut survivors = cluster.config.kafka.clone();
    survivors.bootstrap_servers = [19092, 19093, 19094]
        .iter()
        .filter(|port| **port != broker.port())
        .map(|port| format!("127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let consumer = create_consumer(&survivors, &unique("failover-group")).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut stream = consumer.stream();
    while seen.len() < RECORDS {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        let Ok(Some(message)) = next else {
            panic!(
                "only {} of {RECORDS} distinct records came back",
                seen.len()
            );
        };
        let message = message.unwrap();
        let seq: usize = std::str::from_utf8(message.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        *seen.entry(seq).or_default() += 1;
    }
    // Anything still to come would be a duplicate: drain for a moment.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await
    {
        let seq: usize = std::str::from_utf8(message.unwrap().payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        *seen.entry(seq).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "records delivered more than once: {duplicated:?}"
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..RECORDS).collect::<Vec<_>>()
    );
}
