//! The pipeline the loop and the rebalance callback share: the batch being gathered, the planner
//! that prepares it (tables, rows, statements) and the write stage it is handed to.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::envelope::Envelope;
use crate::error::ConsumeError;
use crate::retry::Retry;
use crate::settings::Settings;
use crate::stage::{Job, Stage};
use crate::stats::Board;
use crate::writer::Planner;

/// What the loop and the rebalance callback share: the batch being gathered, the planner that
/// prepares it, and the write stage it goes to.
pub(crate) struct Pipeline {
    settings: Arc<Settings>,
    batch: Batch<Envelope>,
    planner: Planner,
    stage: Stage,
    board: Board,
    shutdown: CancellationToken,
    /// Whether the next batch is read while one is written; not on a current-thread runtime,
    /// where the rebalance callback could not wait for the write stage.
    overlap: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("buffered", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline preparing batches with `planner` and writing them through `stage`.
    pub(crate) fn new(
        settings: Arc<Settings>,
        planner: Planner,
        stage: Stage,
        board: Board,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            batch: Batch::new(settings.sink.batch_size, settings.sink.batch_max_age),
            overlap: multi_thread(),
            settings,
            planner,
            stage,
            board,
            shutdown,
        }
    }

    /// Adds a record to the batch; whether the batch is now full (and due).
    pub(super) fn push(&mut self, envelope: Envelope) -> bool {
        self.batch.push(envelope)
    }

    /// When the batch is due by age; `None` while it is empty.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.batch.deadline()
    }

    /// Drops the buffered records of `revoked` partitions (not committed, so their next owner
    /// reads them again).
    pub(super) fn forget(&mut self, revoked: &[(String, i32)]) {
        self.batch.retain(|e| still_owned(e, revoked));
    }

    /// Prepares the buffered batch (retrying while the database is unavailable for a table's
    /// shape or DDL) and hands it to the write stage. A batch the stage no longer takes (it
    /// stopped on a failure, which the loop then stops with) is not written.
    pub(super) async fn flush(
        &mut self,
        hold: &mut (dyn FnMut(bool) + Send),
    ) -> Result<(), ConsumeError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut entries = self.batch.take();
        let mut retry = Retry::new(&self.settings, &self.board, &self.shutdown);
        let prepared = loop {
            match self.planner.prepare(&mut entries).await {
                Ok(prepared) => break retry.through(hold, prepared),
                Err(e) => retry.wait(hold, e).await?,
            }
        };
        self.stage.submit(Job { entries, prepared }, hold).await;
        if !self.overlap {
            self.stage.drain().await;
        }
        Ok(())
    }

    /// Flushes, then waits until the stage has written everything handed to it.
    pub(super) async fn drain(
        &mut self,
        hold: &mut (dyn FnMut(bool) + Send),
    ) -> Result<(), ConsumeError> {
        self.flush(hold).await?;
        self.stage.drain().await;
        Ok(())
    }

    /// Whether nothing is buffered or being written.
    pub(super) fn caught_up(&self) -> bool {
        self.batch.is_empty() && self.stage.idle()
    }
}

/// Whether `envelope` is of none of the `revoked` partitions.
fn still_owned(envelope: &Envelope, revoked: &[(String, i32)]) -> bool {
    !revoked
        .iter()
        .any(|(topic, partition)| **topic == *envelope.topic && *partition == envelope.partition)
}

/// Whether this runs on a multi-thread runtime, where a blocking wait is allowed.
pub(super) fn multi_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(topic: &str, partition: i32, offset: i64) -> Envelope {
        Envelope::poison_for_test(topic, partition, offset)
    }

    #[test]
    fn a_revoke_drops_only_the_revoked_partitions_records() {
        let revoked = [("a".to_owned(), 1), ("b".to_owned(), 0)];
        assert!(!still_owned(&envelope("a", 1, 5), &revoked));
        assert!(!still_owned(&envelope("b", 0, 5), &revoked));
        assert!(still_owned(&envelope("a", 0, 5), &revoked));
        assert!(still_owned(&envelope("b", 1, 5), &revoked));
        assert!(still_owned(&envelope("c", 1, 5), &revoked));
        let mut batch = Batch::new(10, std::time::Duration::from_secs(1));
        for (topic, partition) in [("a", 0), ("a", 1), ("b", 0), ("a", 1)] {
            batch.push(envelope(topic, partition, 0));
        }
        batch.retain(|e| still_owned(e, &revoked));
        let kept: Vec<_> = batch.take().into_iter().map(|e| e.coordinates()).collect();
        assert_eq!(kept, ["a/0/0"]);
    }

    #[test]
    fn only_a_multi_thread_runtime_overlaps() {
        assert!(!multi_thread());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!runtime.block_on(async { multi_thread() }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert!(runtime.block_on(async { multi_thread() }));
    }
}
