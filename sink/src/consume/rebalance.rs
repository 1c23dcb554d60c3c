//! The rebalance callback: before partitions are revoked, what is buffered or being written is
//! written and committed (so this member never writes a partition's record after its next owner
//! has); newly assigned partitions stay paused while the sink is paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::Mutex;

use super::commit;
use super::pipeline::{Pipeline, multi_thread};
use crate::stage::StageHandle;
use crate::stats::Board;

/// What the rebalance callback needs.
pub(crate) struct SinkContext {
    pub(super) pipeline: Arc<Mutex<Pipeline>>,
    pub(super) stage: StageHandle,
    pub(super) board: Board,
    /// Whether the sink is paused through `POST /pause`.
    pub(super) paused: Arc<AtomicBool>,
}

/// The callback's context for `pipeline`, and the flags it shares with the loop.
pub(crate) fn context(
    pipeline: Arc<Mutex<Pipeline>>,
    stage: StageHandle,
    board: Board,
) -> SinkContext {
    SinkContext {
        pipeline,
        stage,
        board,
        paused: Arc::default(),
    }
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            self.write_before_revoke(base, revoked);
        }
    }

    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assignment = base.assignment().unwrap_or_default();
        if let Rebalance::Assign(assigned) = rebalance
            && self.paused.load(Ordering::SeqCst)
            && let Err(error) = base.pause(assigned)
        {
            tracing::warn!(%error, "Cannot pause newly assigned partitions.");
        }
        let list = partitions(&assignment);
        tracing::info!(partitions = ?list, "Partitions assigned.");
        self.board.set_assignment(&list);
    }
}

impl SinkContext {
    /// Writes and commits what is buffered or being written before partitions go to another
    /// member, so that it never writes a record of a partition it no longer owns after that
    /// member has.
    fn write_before_revoke(&self, base: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let revoked_list = partitions(revoked);
        if multi_thread() {
            let pipeline = self.pipeline.clone();
            let drained = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(async move { pipeline.lock().await.drain(&mut |_| {}).await })
            });
            if let Err(error) = drained {
                self.stage.fail(error);
            }
        } else if let Ok(mut pipeline) = self.pipeline.try_lock() {
            // Cannot wait for the database here (and nothing is being written: without
            // overlap each batch is waited for): drop the revoked partitions' records instead
            // (not committed, so their next owner reads them again).
            pipeline.forget(&revoked_list);
        }
        let written = commit::offsets(self.stage.take_written(), None);
        if written.count() > 0 {
            tracing::info!(partitions = ?revoked_list, "Partitions revoked; committing what is written first.");
            if let Err(error) = base.commit(&written, CommitMode::Sync) {
                tracing::warn!(%error, "Commit before revoke failed; the next owner re-reads those records.");
            }
        }
    }
}

/// The (topic, partition) pairs of a list.
fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_list_names_its_pairs_in_order() {
        let mut list = TopicPartitionList::new();
        list.add_partition("b", 2);
        list.add_partition("a", 0);
        assert_eq!(
            partitions(&list),
            [("b".to_owned(), 2), ("a".to_owned(), 0)]
        );
        assert!(partitions(&TopicPartitionList::new()).is_empty());
    }
}
