//! The raw consume→produce loop: copies the first N records of a topic, bytes unchanged, to
//! another topic, then flushes and exits; it prints one line, `copied N`.
//!
//! It is the ceiling the streams programs are compared with: no decoding and no state, only the
//! Kafka clients with marketflow's settings (`core/src/kafka.rs`): a group consumer that stores
//! no offsets by itself, reading from the earliest offset, and an idempotent producer with
//! `acks=all`, `linger.ms=5` and the broker's `message.max.bytes`. The loop is the one
//! `streams/examples/bench.rs` runs in-process; here it is a process of its own, so that its wall
//! time, CPU and memory are measured like the others'.
//!
//! Usage: `raw-copy BOOTSTRAP FROM TO N GROUP`.

use std::process::ExitCode;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn copy(bootstrap: &str, from: &str, to: &str, n: u64, group: &str) -> Result<u64, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[from])?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", "1048588")
        .create()?;
    let mut copied = 0;
    while copied < n {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let mut record = BaseRecord::to(to).key(message.key().unwrap_or_default());
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        // On a full queue, wait for deliveries and send again; never drop a record.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((error, _)) => return Err(error),
            }
        }
        copied += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(copied)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, from, to, n, group] = args.as_slice() else {
        eprintln!("usage: raw-copy BOOTSTRAP FROM TO N GROUP");
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("raw-copy: N must be a whole number of records, not {n:?}");
        return ExitCode::from(2);
    };
    match copy(bootstrap, from, to, n, group) {
        Ok(copied) => {
            println!("copied {copied}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("raw-copy: copying {from} to {to} on {bootstrap} failed: {error}");
            ExitCode::FAILURE
        }
    }
}
