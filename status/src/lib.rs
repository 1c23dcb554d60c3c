//! `marketflow status`: the pipeline's data map in one view. Where data comes from, where it goes,
//! how far behind each step is: topics with their end offsets, consumer groups with their lag,
//! registry subjects with their versions, MySQL tables with their row counts, the latest running
//! sums, and which programs answer on their admin port.

pub mod inventory;
pub mod report;
pub mod summary;

pub use inventory::{Status, collect};
