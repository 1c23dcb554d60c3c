//! Writing batches, in two halves so that one batch is written while the next is prepared: the
//! [`Planner`] turns a batch of envelopes into rows of their tables (creating and evolving tables
//! on a connection of its own) and builds its multi-row statements; the [`Writer`] runs them in
//! one transaction on the write connection. Records that can never be written are set aside as
//! dead letters (or, with `errors_tolerance = "none"`, the batch stops before the first of them);
//! under a plain `INSERT`, a record whose row is already in the table, identical, is a re-delivery
//! and is counted, not refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Executor, MySql, QueryBuilder};

use crate::db::{DUPLICATE_ENTRY, Database, DbError, classify};
use apache_avro::types::Value;

use crate::envelope::{Content, Decoded, Envelope, Poison};
use crate::settings::{InsertMode, PkMode, Settings, Tolerance};
use crate::sql::{self, OnDuplicate};
use crate::table::{Plan, Record, TableError, Tables};
use crate::typemap::SqlValue;

/// Bytes of bound values above which a multi-row statement is cut (well under MySQL's default
/// `max_allowed_packet` of 16 MiB).
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// Why a batch was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database is unavailable; the same batch may be written later.
    #[error(transparent)]
    Transient(DbError),
    /// Retrying will not help and no record is to blame.
    #[error("{0}")]
    Fatal(String),
}

impl From<DbError> for WriteError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Transient(_) => Self::Transient(e),
            other => Self::Fatal(other.to_string()),
        }
    }
}

/// A record set aside, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Index of the envelope in the batch.
    pub index: usize,
    /// Why it cannot be written.
    pub poison: Poison,
}

/// What writing a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rows written (inserted, upserted or updated) per table.
    pub rows: BTreeMap<String, u64>,
    /// Rows deleted per table.
    pub deleted: BTreeMap<String, u64>,
    /// Records whose row was already in the table, identical (a re-delivery), per table.
    pub redelivered: BTreeMap<String, u64>,
    /// Records set aside, in batch order.
    pub dead: Vec<DeadLetter>,
    /// How many envelopes from the start of the batch are done (written, skipped or dead); the
    /// rest (only with `errors_tolerance = "none"`) were not written.
    pub done: usize,
    /// With `errors_tolerance = "none"`: the record the batch stopped at.
    pub stopped_at: Option<DeadLetter>,
}

/// One envelope's part in the transaction.
#[derive(Debug)]
enum Op {
    Write(Arc<Plan>, Vec<SqlValue>),
    Delete(Arc<Plan>, Vec<SqlValue>),
    /// Its row is already in the table, identical: nothing to write.
    Redelivered(Arc<Plan>),
    Skip,
    Dead(Poison),
}

/// What writing one op alone found, when it was not written.
#[derive(Debug)]
enum Verdict {
    /// The database refuses the row.
    Refused(DbError),
    /// The row is already there, identical.
    Redelivered,
}

/// A batch planned into rows and statements, ready for the [`Writer`].
pub struct Prepared {
    ops: Vec<Op>,
    /// The statements of `ops`, built ahead; `None` once run (a retry builds them again).
    statements: Option<Statements>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("ops", &self.ops.len())
            .field("statements", &self.statements.as_ref().map(Vec::len))
            .finish()
    }
}

impl Prepared {
    /// What writing the batch did (once the writer has written it).
    pub fn outcome(&self, tolerance: Tolerance) -> Outcome {
        outcome(&self.ops, tolerance)
    }
}

/// Plans batches: the tables' shapes, creating and evolving them, and the rows and statements of
/// each record.
#[derive(Debug)]
pub struct Planner {
    settings: Arc<Settings>,
    /// For reading table shapes and for DDL; the rows go through the [`Writer`]'s connection.
    db: Database,
    tables: Tables,
}

impl Planner {
    /// A planner reading and changing tables through `db`.
    pub fn new(settings: Arc<Settings>, db: Database) -> Self {
        Self {
            tables: Tables::new(settings.clone()),
            settings,
            db,
        }
    }

    /// Plans `batch` and builds its statements, moving the records' decoded fields into rows.
    /// With tolerance none the plan ends at the first record that cannot be written.
    ///
    /// # Errors
    /// [`WriteError::Transient`] when the database is unavailable for a table's shape or DDL,
    /// [`WriteError::Fatal`] when retrying cannot help. Nothing has been taken from the records
    /// then, so the same batch can be prepared again.
    pub async fn prepare(&mut self, batch: &mut [Envelope]) -> Result<Prepared, WriteError> {
        let mut plans = Vec::with_capacity(batch.len());
        for envelope in batch.iter() {
            let planned = self.plan(envelope).await?;
            let dead = matches!(planned, Planned::Dead(_));
            plans.push(planned);
            if dead && self.settings.sink.errors_tolerance == Tolerance::None {
                break;
            }
        }
        let ops: Vec<Op> = batch
            .iter_mut()
            .zip(plans)
            .map(|(envelope, planned)| op(envelope, planned))
            .collect();
        let statements = all_statements(&ops, &self.settings);
        Ok(Prepared {
            ops,
            statements: Some(statements),
        })
    }

    /// How `envelope` is written, creating or evolving its table first when needed.
    async fn plan(&mut self, envelope: &Envelope) -> Result<Planned, WriteError> {
        let (key, value) = match &envelope.content {
            Content::Poison(poison) => return Ok(Planned::Dead(poison.clone())),
            Content::Tombstone { .. } if !self.settings.sink.delete_enabled => {
                return Ok(Planned::Dead(Poison {
                    class: "tombstone_not_enabled",
                    message: "a tombstone (null value) arrived and sink.delete_enabled is off"
                        .into(),
                }));
            }
            Content::Tombstone { key } => (key.as_ref(), None),
            Content::Record { key, value } => (key.as_ref(), Some(value)),
        };
        let planned = self
            .tables
            .plan(
                &mut self.db,
                &envelope.topic,
                key.map(|k| (k.schema.id, &k.schema.parsed)),
                value.map(|v| (v.schema.id, &v.schema.parsed)),
            )
            .await;
        match planned {
            Ok(Some(plan)) => Ok(Planned::Rows(plan)),
            Ok(None) => Ok(Planned::Skip),
            Err(TableError::Database(e)) => Err(e.into()),
            Err(e) => Ok(Planned::Dead(Poison {
                class: e.class(),
                message: e.to_string(),
            })),
        }
    }
}

/// A record's plan, before its row is built.
enum Planned {
    Rows(Arc<Plan>),
    Skip,
    Dead(Poison),
}

/// `envelope`'s part in the transaction under `planned`; its decoded key and value move into
/// the row (what is left of them is null).
fn op(envelope: &mut Envelope, planned: Planned) -> Op {
    let plan = match planned {
        Planned::Rows(plan) => plan,
        Planned::Skip => return Op::Skip,
        Planned::Dead(poison) => return Op::Dead(poison),
    };
    let take = |decoded: &mut Decoded| std::mem::replace(&mut decoded.value, Value::Null);
    let (key, value) = match &mut envelope.content {
        Content::Record { key, value } => (key.as_mut().map(take), Some(take(value))),
        Content::Tombstone { key } => (key.as_mut().map(take), None),
        // Planned as dead above.
        Content::Poison(poison) => return Op::Dead(poison.clone()),
    };
    let deleting = value.is_none();
    let record = Record {
        topic: &envelope.topic,
        partition: envelope.partition,
        offset: envelope.offset,
        key,
        value,
    };
    let row = if deleting {
        plan.key_row(record).map(|key| Op::Delete(plan, key))
    } else {
        plan.row(record).map(|row| Op::Write(plan, row))
    };
    row.unwrap_or_else(|e| {
        Op::Dead(Poison {
            class: "value_unbindable",
            message: e.to_string(),
        })
    })
}

/// The statements of a batch's ops.
type Statements = Vec<QueryBuilder<MySql>>;

/// Writes prepared batches on the write connection.
#[derive(Debug)]
pub struct Writer {
    settings: Arc<Settings>,
    db: Database,
}

impl Writer {
    /// A writer writing to `db`.
    pub fn new(settings: Arc<Settings>, db: Database) -> Self {
        Self { settings, db }
    }

    /// Writes `batch` in one transaction; rows the database refuses become dead letters (with
    /// tolerance none: the batch ends before the first). Retrying the same batch after an error
    /// is safe: nothing of a failed attempt was committed.
    ///
    /// # Errors
    /// [`WriteError::Transient`] when the database is unavailable (nothing was committed),
    /// [`WriteError::Fatal`] when retrying cannot help.
    pub async fn write(&mut self, batch: &mut Prepared) -> Result<(), WriteError> {
        let statements = match batch.statements.take() {
            Some(statements) => statements,
            None => all_statements(&batch.ops, &self.settings),
        };
        match self.write_all(statements).await {
            Ok(()) => Ok(()),
            // Some row is refused: find which, one statement per row, each in a savepoint.
            Err(DbError::Data { .. }) => self.write_one_by_one(&mut batch.ops).await,
            Err(e) => Err(e.into()),
        }
    }

    /// The statements in one transaction.
    async fn write_all(&mut self, statements: Statements) -> Result<(), DbError> {
        let timeout = self.db.timeout();
        let connection = self.db.connection().await?;
        let attempt = tokio::time::timeout(timeout, write_all(connection, statements)).await;
        self.db.settle(attempt)
    }

    /// Every op in one transaction, one statement each in its own savepoint; refused rows become
    /// dead letters (with tolerance none: the first one ends the batch there, and nothing after
    /// it is written), rows already there and identical re-deliveries.
    async fn write_one_by_one(&mut self, ops: &mut [Op]) -> Result<(), WriteError> {
        let kind = statement_kind(&self.settings);
        let tolerate = self.settings.sink.errors_tolerance == Tolerance::All;
        let timeout = self.db.timeout();
        let connection = self.db.connection().await?;
        let attempt =
            tokio::time::timeout(timeout, write_one_by_one(connection, ops, kind, tolerate)).await;
        for (i, verdict) in self.db.settle(attempt)? {
            ops[i] = match (verdict, &ops[i]) {
                (Verdict::Redelivered, Op::Write(plan, _)) => Op::Redelivered(plan.clone()),
                (Verdict::Refused(e), _) => Op::Dead(Poison {
                    class: e.class(),
                    message: e.to_string(),
                }),
                // Only writes are found re-delivered.
                (Verdict::Redelivered, _) => continue,
            };
        }
        Ok(())
    }
}

// Plain async fns, not closures: the write stage's task must be `Send`, which the compiler
// cannot prove of an async closure taking the connection by reference (rust-lang/rust#110338).

async fn write_all(c: &mut MySqlConnection, mut statements: Statements) -> Result<(), DbError> {
    if let [statement] = statements.as_mut_slice() {
        // One statement is a transaction of its own (InnoDB applies it wholly or not at all):
        // no BEGIN and COMMIT round trips, which cost more than the rows under load.
        return c
            .execute(statement.build())
            .await
            .map(drop)
            .map_err(|e| classify(&e));
    }
    let mut tx = c.begin().await.map_err(|e| classify(&e))?;
    for mut statement in statements {
        tx.execute(statement.build())
            .await
            .map_err(|e| classify(&e))?;
    }
    tx.commit().await.map_err(|e| classify(&e))
}

async fn write_one_by_one(
    c: &mut MySqlConnection,
    ops: &[Op],
    (on_duplicate, update): (OnDuplicate, bool),
    tolerate: bool,
) -> Result<Vec<(usize, Verdict)>, DbError> {
    let mut verdicts = Vec::new();
    let mut tx = c.begin().await.map_err(|e| classify(&e))?;
    for (i, op) in ops.iter().enumerate() {
        let mut savepoint = tx.begin().await.map_err(|e| classify(&e))?;
        let mut result = Ok(());
        for mut statement in statements(std::slice::from_ref(op), on_duplicate, update) {
            if let Err(e) = savepoint.execute(statement.build()).await {
                result = Err(classify(&e));
                break;
            }
        }
        let verdict = match result {
            Ok(()) => {
                savepoint.commit().await.map_err(|e| classify(&e))?;
                continue;
            }
            // A plain INSERT of a key already there: a re-delivery when the row there is this
            // very row (written before a crash or a timed-out commit), else a real conflict.
            Err(e @ DbError::Data { code, .. }) => match op {
                Op::Write(plan, row) if code == DUPLICATE_ENTRY && !update => {
                    let mut same = sql::count_same(&plan.table, &plan.columns, row);
                    let found: i64 = same
                        .build_query_scalar()
                        .fetch_one(&mut *savepoint)
                        .await
                        .map_err(|e| classify(&e))?;
                    if found > 0 {
                        Verdict::Redelivered
                    } else {
                        Verdict::Refused(e)
                    }
                }
                _ => Verdict::Refused(e),
            },
            Err(e) => return Err(e),
        };
        savepoint.rollback().await.map_err(|e| classify(&e))?;
        let refused = matches!(verdict, Verdict::Refused(_));
        verdicts.push((i, verdict));
        if refused && !tolerate {
            break;
        }
    }
    tx.commit().await.map_err(|e| classify(&e))?;
    Ok(verdicts)
}

/// How a batch's rows are written: what an `INSERT` does with a key already there, and whether
/// they are `UPDATE`s.
fn statement_kind(settings: &Settings) -> (OnDuplicate, bool) {
    let on_duplicate = match (settings.sink.insert_mode, settings.sink.pk_mode) {
        (InsertMode::Upsert, _) => OnDuplicate::Update,
        // The same record again (a re-delivery after a crash): keep the row.
        (_, PkMode::Kafka) => OnDuplicate::Keep,
        _ => OnDuplicate::Fail,
    };
    (
        on_duplicate,
        settings.sink.insert_mode == InsertMode::Update,
    )
}

/// Every op's statements, consecutive writes (or deletes) of one plan as one run.
fn all_statements(ops: &[Op], settings: &Settings) -> Statements {
    let (on_duplicate, update) = statement_kind(settings);
    let mut all = Vec::new();
    let mut start = 0;
    while start < ops.len() {
        let end = run_end(ops, start);
        all.extend(statements(&ops[start..end], on_duplicate, update));
        start = end;
    }
    all
}

/// The end of the run of ops starting at `start` that go into the same statements: writes (or
/// deletes) of one plan. Skips and dead letters are runs of their own.
fn run_end(ops: &[Op], start: usize) -> usize {
    let same = |a: &Op, b: &Op| match (a, b) {
        (Op::Write(p, _), Op::Write(q, _)) | (Op::Delete(p, _), Op::Delete(q, _)) => {
            Arc::ptr_eq(p, q)
        }
        _ => false,
    };
    let mut end = start + 1;
    while end < ops.len() && same(&ops[start], &ops[end]) {
        end += 1;
    }
    end
}

/// The statements of one run.
fn statements(run: &[Op], on_duplicate: OnDuplicate, update: bool) -> Vec<QueryBuilder<MySql>> {
    let Some(first) = run.first() else {
        return Vec::new();
    };
    let (plan, deleting) = match first {
        Op::Write(plan, _) => (plan, false),
        Op::Delete(plan, _) => (plan, true),
        Op::Redelivered(_) | Op::Skip | Op::Dead(_) => return Vec::new(),
    };
    let values: Vec<&[SqlValue]> = run
        .iter()
        .filter_map(|op| match op {
            Op::Write(_, v) | Op::Delete(_, v) => Some(v.as_slice()),
            Op::Redelivered(_) | Op::Skip | Op::Dead(_) => None,
        })
        .collect();
    if update && !deleting {
        return values
            .iter()
            .filter_map(|row| sql::update(&plan.table, &plan.columns, &plan.key, row))
            .collect();
    }
    let width = if deleting {
        plan.key.len()
    } else {
        plan.columns.len()
    };
    let per_statement = sql::rows_per_statement(width);
    let mut chunks: Vec<&[&[SqlValue]]> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in values.iter().enumerate() {
        let size: usize = row.iter().map(value_size).sum();
        if i > start && (i - start >= per_statement || bytes + size > MAX_STATEMENT_BYTES) {
            chunks.push(&values[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    chunks.push(&values[start..]);
    chunks
        .into_iter()
        .map(|rows| {
            if deleting {
                sql::delete(&plan.table, &plan.key, rows)
            } else {
                sql::insert(&plan.table, &plan.columns, &plan.key, on_duplicate, rows)
            }
        })
        .collect()
}

fn value_size(value: &SqlValue) -> usize {
    match value {
        SqlValue::Text(s) => s.len(),
        SqlValue::Bytes(b) => b.len(),
        _ => 8,
    }
}

/// What the ops did. With tolerance none the first dead letter ends the batch: it and every op
/// after it count as not done.
fn outcome(mut ops: &[Op], tolerance: Tolerance) -> Outcome {
    let mut outcome = Outcome::default();
    if tolerance == Tolerance::None
        && let Some(index) = ops.iter().position(|op| matches!(op, Op::Dead(_)))
        && let Op::Dead(poison) = &ops[index]
    {
        outcome.stopped_at = Some(DeadLetter {
            index,
            poison: poison.clone(),
        });
        ops = &ops[..index];
    }
    outcome.done = ops.len();
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::Write(plan, _) => count(&mut outcome.rows, &plan.table),
            Op::Delete(plan, _) => count(&mut outcome.deleted, &plan.table),
            Op::Redelivered(plan) => count(&mut outcome.redelivered, &plan.table),
            Op::Skip => {}
            Op::Dead(poison) => outcome.dead.push(DeadLetter {
                index,
                poison: poison.clone(),
            }),
        }
    }
    outcome
}

/// One more for `table` (its name copied only the first time).
fn count(counts: &mut BTreeMap<String, u64>, table: &str) {
    match counts.get_mut(table) {
        Some(n) => *n += 1,
        None => {
            counts.insert(table.to_owned(), 1);
        }
    }
}
