//! The consumer side of the sink. [`Consumption`] (the loop, `driver`) reads records, decodes
//! them into the [`Pipeline`]'s batch (`pipeline`: batch → planner → write stage) and commits
//! what the write stage finished (`commit`: what and when); the rebalance callback
//! ([`SinkContext`], `rebalance`) writes and commits before partitions leave; control commands
//! (`commands`: pause, resume, replay) are carried out between records. The decisions are plain
//! functions, unit-tested without Kafka.

mod commands;
mod commit;
mod driver;
mod pipeline;
mod rebalance;

pub(crate) use driver::Consumption;
pub(crate) use pipeline::Pipeline;
pub(crate) use rebalance::context;
