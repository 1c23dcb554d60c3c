//! Why `acks=all` writes to a topic wait or fail: each partition's leader and in-sync replicas,
//! as the cluster's metadata has them, against the topic's `min.insync.replicas`.
//!
//! librdkafka retries a write the brokers refuse for want of in-sync replicas until
//! `message.timeout.ms`, then reports only that the message timed out; this is what tells the
//! operator the cause.

use std::fmt;

use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::error::KafkaError;

use crate::config::KafkaConfig;
use crate::kafka::{self, ClientError};

/// The topic setting that says how many replicas must have a record before an `acks=all` write
/// succeeds.
pub const MIN_INSYNC: &str = "min.insync.replicas";

/// One partition, as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    /// The partition.
    pub partition: i32,
    /// The node leading it; `None` when no node does.
    pub leader: Option<i32>,
    /// The nodes holding a replica of it.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader, the leader included.
    pub in_sync: Vec<i32>,
}

/// A topic's partitions that cannot take an `acks=all` write now: without a leader, or with
/// fewer replicas in sync than `min.insync.replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// The topic's `min.insync.replicas`.
    pub min_insync: i32,
    /// Its partitions that cannot take a write, in order.
    pub partitions: Vec<PartitionReplicas>,
}

impl Shortage {
    /// The partitions among `partitions` that cannot take an `acks=all` write under
    /// `min_insync`; `None` when every one can.
    pub fn find(min_insync: i32, mut partitions: Vec<PartitionReplicas>) -> Option<Self> {
        partitions.retain(|p| {
            p.leader.is_none() || i32::try_from(p.in_sync.len()).unwrap_or(i32::MAX) < min_insync
        });
        partitions.sort_by_key(|p| p.partition);
        (!partitions.is_empty()).then_some(Self {
            min_insync,
            partitions,
        })
    }
}

/// `node 3` or `nodes 1, 2`.
fn nodes(ids: &[i32]) -> String {
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    match list.len() {
        1 => format!("node {}", list[0]),
        _ => format!("nodes {}", list.join(", ")),
    }
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.partitions.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if p.leader.is_none() {
                write!(
                    f,
                    "partition {} has no leader (replicas on {})",
                    p.partition,
                    nodes(&p.replicas)
                )?;
            } else {
                let n = p.in_sync.len();
                write!(
                    f,
                    "partition {} has {n} in-sync replica{} ({}) of {}, fewer than {MIN_INSYNC}={}",
                    p.partition,
                    if n == 1 { "" } else { "s" },
                    nodes(&p.in_sync),
                    p.replicas.len(),
                    self.min_insync
                )?;
            }
        }
        Ok(())
    }
}

/// Reads `topic`'s partitions and `min.insync.replicas` from the cluster; `Ok(None)` when every
/// partition can take an `acks=all` write.
///
/// # Errors
/// [`ClientError`] when the metadata or the topic's configuration cannot be read (e.g. no broker
/// answers within `kafka.connect_timeout`).
pub async fn shortage(kafka: &KafkaConfig, topic: &str) -> Result<Option<Shortage>, ClientError> {
    let admin = kafka::create_admin(kafka)?;
    let timeout = kafka.connect_timeout;
    let name = topic.to_owned();
    let (admin, metadata) = tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(Some(&name), timeout);
        (admin, metadata)
    })
    .await
    .map_err(|e| ClientError::Unreachable {
        servers: kafka.bootstrap_servers.clone(),
        timeout,
        detail: e.to_string(),
    })?;
    let metadata = metadata?;
    let partitions: Vec<PartitionReplicas> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .map(|p| PartitionReplicas {
            partition: p.id(),
            leader: (p.leader() >= 0).then_some(p.leader()),
            replicas: p.replicas().to_vec(),
            in_sync: p.isr().to_vec(),
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await?;
    let mut min_insync = 1;
    for resource in described {
        let resource = resource.map_err(KafkaError::AdminOp)?;
        if let Some(value) = resource.get(MIN_INSYNC).and_then(|e| e.value.as_deref()) {
            min_insync = value.parse().unwrap_or(min_insync);
        }
    }
    Ok(Shortage::find(min_insync, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, leader: i32, in_sync: &[i32]) -> PartitionReplicas {
        PartitionReplicas {
            partition,
            leader: (leader >= 0).then_some(leader),
            replicas: vec![1, 2, 3],
            in_sync: in_sync.to_vec(),
        }
    }

    #[test]
    fn enough_replicas_in_sync_is_no_shortage() {
        let healthy = vec![partition(0, 1, &[1, 2, 3]), partition(1, 2, &[2, 3])];
        assert_eq!(Shortage::find(2, healthy), None);
    }

    #[test]
    fn too_few_in_sync_or_no_leader_is_a_shortage_saying_which_and_why() {
        let partitions = vec![
            partition(2, 3, &[3]),
            partition(0, 1, &[1, 2]),
            partition(1, -1, &[]),
        ];
        let shortage = Shortage::find(2, partitions).unwrap();
        assert_eq!(
            shortage
                .partitions
                .iter()
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(
            shortage.to_string(),
            "partition 1 has no leader (replicas on nodes 1, 2, 3); partition 2 has 1 in-sync \
             replica (node 3) of 3, fewer than min.insync.replicas=2"
        );
    }
}
