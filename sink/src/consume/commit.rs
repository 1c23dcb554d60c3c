//! What to commit and when: only offsets the write stage finished, only of partitions still
//! assigned, and as soon as the sink is caught up or `commit_interval` has passed.

use std::time::Duration;

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::stage::Offsets;

/// Whether to commit now: everything handed over is written (a caught-up sink commits at once),
/// or the last commit is `interval` old.
pub(super) fn due(caught_up: bool, since_last: Duration, interval: Duration) -> bool {
    caught_up || since_last >= interval
}

/// `written` as a list to commit, only the partitions in `assignment` when given (offsets of a
/// partition given away are its new owner's to commit).
pub(super) fn offsets(
    written: Offsets,
    assignment: Option<&TopicPartitionList>,
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in written {
        if assignment.is_some_and(|a| a.find_partition(&topic, partition).is_none()) {
            continue;
        }
        // Only fails for a negative offset, which `written` never holds; leaving it out only
        // leaves that partition's commit behind, never ahead of its rows.
        if let Err(error) = list.add_partition_offset(&topic, partition, Offset::Offset(offset)) {
            tracing::error!(%error, %topic, partition, offset, "Offset left out of a commit.");
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn written(entries: &[(&str, i32, i64)]) -> Offsets {
        entries
            .iter()
            .map(|(t, p, o)| ((Arc::from(*t), *p), *o))
            .collect()
    }

    fn listed(list: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
        list.elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect()
    }

    #[test]
    fn a_caught_up_sink_commits_at_once_a_busy_one_every_interval() {
        let second = Duration::from_secs(1);
        assert!(due(true, Duration::ZERO, second));
        assert!(!due(false, Duration::from_millis(999), second));
        assert!(due(false, second, second));
        assert!(due(false, Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn only_offsets_of_partitions_still_assigned_are_committed() {
        let finished = written(&[("a", 0, 10), ("a", 1, 20), ("b", 0, 30)]);
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition("a", 1);
        assignment.add_partition("b", 0);
        assert_eq!(
            listed(&offsets(finished.clone(), Some(&assignment))),
            [
                ("a".to_owned(), 1, Offset::Offset(20)),
                ("b".to_owned(), 0, Offset::Offset(30))
            ]
        );
        // Before a revoke, everything written is committed: the partitions are still ours.
        assert_eq!(offsets(finished, None).count(), 3);
        assert_eq!(offsets(Offsets::new(), None).count(), 0);
    }
}
