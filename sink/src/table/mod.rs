//! Tables: the columns a record's schemas call for (`columns`), the table as the database has
//! it and the DDL that creates or evolves it (`tables`), the diff between the two (`evolution`),
//! and the plan that turns a record into a row (`plan`).

mod columns;
mod error;
mod evolution;
mod plan;
mod tables;
#[cfg(test)]
mod testing;

pub use error::TableError;
pub use plan::{Plan, Record};
pub use tables::Tables;
