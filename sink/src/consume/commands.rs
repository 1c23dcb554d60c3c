//! The control commands as the loop carries them out: pause and replay first write and commit
//! what is buffered; replay then seeks every assigned partition and commits there. Each answer
//! is a typed reply (see [`crate::control`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::driver::Consumption;
use super::pipeline::multi_thread;
use crate::control::{Command, ReplayFrom, ReplayStart, Replaying, Switched};
use crate::error::ConsumeError;
use crate::stats::State;

/// How long a replay waits for each broker answer.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

impl Consumption {
    /// Carries out `command` and answers it; an error that stops the sink is returned too.
    pub(super) async fn handle(&mut self, command: Command) -> Result<(), ConsumeError> {
        // A requester that gave up waiting drops its end: nobody is left to answer.
        match command {
            Command::Pause(reply) => {
                let result = self.pause().await;
                let _ = reply.send(result);
            }
            Command::Resume(reply) => {
                let result = self.resume();
                let _ = reply.send(result);
            }
            Command::Replay(from, reply) => {
                if let Err(e) = self.drain_and_commit().await {
                    let _ = reply.send(Err(e.to_string()));
                    return Err(e);
                }
                let _ = reply.send(self.replay(from));
            }
        }
        Ok(())
    }

    async fn pause(&mut self) -> Result<Switched, String> {
        self.drain_and_commit().await.map_err(|e| e.to_string())?;
        self.switch(State::Paused)
    }

    fn resume(&mut self) -> Result<Switched, String> {
        self.switch(State::Running)
    }

    /// Pauses (`to` is [`State::Paused`]) or resumes every assigned partition; the flag tells
    /// the rebalance callback whether partitions assigned later start paused.
    fn switch(&mut self, to: State) -> Result<Switched, String> {
        let pause = to == State::Paused;
        self.paused.store(pause, Ordering::SeqCst);
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        let switched = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        switched.map_err(|e| e.to_string())?;
        self.board.set_state(to);
        let partitions = assignment.count();
        if pause {
            tracing::info!(partitions, "Consumption paused.");
        } else {
            tracing::info!(partitions, "Consumption resumed.");
        }
        Ok(Switched {
            state: to,
            partitions,
        })
    }

    /// Seeks every assigned partition to `from` and commits there, so that a restart continues
    /// the replay. Under upsert a replay writes the same rows again: the table ends the same.
    fn replay(&mut self, from: ReplayFrom) -> Result<Replaying, String> {
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        let targets = blocking(|| self.seek_and_commit(&assignment, from))
            .map_err(|e| format!("replay failed: {e}"))?;
        let replaying_from: Vec<ReplayStart> = targets
            .elements()
            .iter()
            .map(|e| ReplayStart {
                topic: e.topic().to_owned(),
                partition: e.partition(),
                offset: match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
            })
            .collect();
        tracing::info!(partitions = replaying_from.len(), ?from, "Replay started.");
        Ok(Replaying { replaying_from })
    }

    /// Seeks each partition of `assignment` to where a replay `from` starts and commits there (blocking
    /// librdkafka calls); the offsets sought.
    fn seek_and_commit(
        &self,
        assignment: &TopicPartitionList,
        from: ReplayFrom,
    ) -> Result<TopicPartitionList, KafkaError> {
        let consumer = &self.consumer;
        let by_time = match from {
            ReplayFrom::Timestamp(ms) => Some(consumer.offsets_for_timestamp(ms, REPLAY_TIMEOUT)?),
            ReplayFrom::Beginning => None,
        };
        let mut targets = TopicPartitionList::new();
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let (low, high) = consumer.fetch_watermarks(topic, partition, REPLAY_TIMEOUT)?;
            let found = by_time
                .as_ref()
                .and_then(|t| t.find_partition(topic, partition))
                .map(|e| e.offset());
            let offset = replay_start(found, low, high);
            targets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        consumer.seek_partitions(targets.clone(), REPLAY_TIMEOUT)?;
        consumer.commit(&targets, CommitMode::Sync)?;
        Ok(targets)
    }
}

/// Where a partition's replay starts: the offset the broker found for the timestamp (never
/// before the partition's first), the end when no record is that recent, the first offset when
/// replaying from the beginning (`found` is `None`).
fn replay_start(found: Option<Offset>, low: i64, high: i64) -> i64 {
    match found {
        None => low,
        Some(Offset::Offset(o)) => o.max(low),
        Some(_) => high,
    }
}

/// Runs a blocking librdkafka call without stalling the runtime's other tasks.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    if multi_thread() {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_starts_where_the_timestamp_points_within_the_log() {
        assert_eq!(replay_start(None, 5, 90), 5);
        assert_eq!(replay_start(Some(Offset::Offset(40)), 5, 90), 40);
        // Deleted by retention since: the first offset still there.
        assert_eq!(replay_start(Some(Offset::Offset(2)), 5, 90), 5);
        // No record at or after the timestamp: the end.
        assert_eq!(replay_start(Some(Offset::End), 5, 90), 90);
        assert_eq!(replay_start(Some(Offset::Invalid), 5, 90), 90);
    }
}
