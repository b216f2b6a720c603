//! Projections: read models derived from the log, kept in redb.
//!
//! ```text
//! log ─▶ reader thread: read + decode ─▶ host thread: apply the batch to every hosted
//!        each record once                 projection, publish its rows (queries see them)
//!                                              ─▶ committer thread: ONE redb transaction for
//!                                                 every batch waiting: rows + checkpoints
//! ```
//! A [`Projection`] names itself, lists the redb tables it owns, opens them on a batch's
//! [`Stage`] and applies a batch of [`CommittedEvent`]s to them (keeping the rows it touches
//! in memory and writing each once per batch). A [`ProjectionHost`] runs several projections:
//! a reader thread follows the log and decodes each record once, the host thread applies each
//! batch (whatever is committed, up to [`WorkerConfig::max_batch`] records) to every
//! projection from its own checkpoint (the `checkpoints` table, keyed by projection name,
//! value = the next position to apply) and publishes what they wrote, and a committer thread
//! writes the published batches with all the checkpoints in **one** redb transaction. A crash
//! anywhere leaves every model consistent with its checkpoint: a batch and the checkpoints are
//! committed together or not at all, so restarting never applies an event twice or skips one.
//! [`ProjectionWorker`] is a host of one.
//! [`ProjectionHandle`] is a hosted projection seen from outside: `reached`, `wait_for`
//! (read-your-writes), `lag` (positions) and `lag_time` (age of the oldest unapplied record).
//!
//! Read models are derived: deleting the redb file and starting the workers again rebuilds them
//! from position 0 of the log.
//!
//! Read models here (per tenant, see each module for its row format):
//! - [`mod@inventory`]: (tenant, SKU) → on hand, reserved; query [`inventory()`].
//! - [`mod@orders`]: (tenant, order) → status, customer, lines, totals, payment, positions of the
//!   order's events; query [`order()`].
//!   Also (tenant, payment) → order, so payment events update the order's payment state.
//! - [`mod@customers`]: (tenant, customer, placed at, order) → nothing, an index; query
//!   [`orders_of_customer()`], paginated newest first.
//! - [`mod@kpi`]: (tenant, minute) → orders, revenue per currency, basket, cancellations,
//!   payment declines by gateway; query [`kpis()`].

pub mod binding;
pub mod customers;
mod file;
mod holds;
mod host;
pub mod inventory;
pub mod kpi;
pub mod orders;
mod pending;
mod progress;
mod reader;
pub mod rebuild;
mod row;
mod stage;
mod worker;

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

pub use binding::Binding;
pub use customers::{CustomerCursor, CustomersProjection, orders_of_customer};
pub use file::{CACHE_BYTES, WRITE_BEHIND_BYTES};
pub use holds::{OPEN_HOLDS, OpenHoldsProjection, open_holds};
pub use host::{Hosted, ProjectionHost};
pub use inventory::{InventoryLevel, InventoryProjection, inventory, inventory_levels};
pub use kpi::{Cancellations, CurrencySales, DayKpis, KpiProjection, SalesKpis, day, kpis};
pub use orders::{OrderView, OrdersProjection, order, order_status_counts, orders_of};
pub use progress::{ProjectionHandle, WaitError};
pub use rebuild::{Generation, Rebuilt, apply_into, generation, rebuild};
pub use stage::{Row, Rows, Stage};
pub use worker::{ProjectionWorker, WorkerConfig};

use crate::Position;
use crate::codec::DecodeError;
use crate::engine::CommittedEvent;

/// The table of every projection's checkpoint: projection name → the next position to apply
/// (everything below it is in the projection's read model).
pub const CHECKPOINTS: TableDefinition<'static, &str, u64> = TableDefinition::new("checkpoints");

/// A read model maintained from committed events.
///
/// `apply` is called in position order on a [`Stage`]: what it writes there becomes visible
/// when the batch is published, and is committed with the projection's checkpoint in one redb
/// transaction. It must change nothing outside the tables it owns. An error drops the whole
/// batch (nothing of it is published or written) and stops the worker.
pub trait Projection: Send + 'static {
    /// The projection's tables opened on one batch's [`Stage`] (as [`Rows`]).
    type Tables<'s>;

    /// The projection's name: its key in [`CHECKPOINTS`]. Stable across restarts.
    fn name(&self) -> &str;

    /// The names of the redb tables this projection owns (and only it writes).
    fn tables(&self) -> Vec<String>;

    /// Opens the tables of [`Projection::tables`] on `stage` ([`Stage::table`], which puts
    /// them in the stage's generation).
    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError>;

    /// Applies a batch of committed events, in position order, to the read model.
    ///
    /// A batch is given whole so that a projection can keep the rows it touches in memory
    /// across the batch and write each one once, rather than reading, decoding, encoding and
    /// writing a row per event. The result must be the same whatever the batch boundaries.
    fn apply(
        &self,
        tables: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError>;
}

/// Why a projection or a query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// redb failed (IO, a full disk, a table of another type under the same name, …).
    #[error("read-model store: {0}")]
    Store(#[from] redb::Error),
    /// The log could not be read.
    #[error("cannot read the log at position {position}: {error}")]
    Read {
        /// The position being read.
        position: u64,
        /// Why.
        error: orderly_store::ReadError,
    },
    /// A log record is not an event this build can decode.
    #[error("the record at position {position} does not decode: {error}")]
    Decode {
        /// The record's position.
        position: u64,
        /// Why.
        error: DecodeError,
    },
    /// An event does not fit the read model (an event for an order never placed, stock going
    /// below zero, …): the read model or the log is not what the projection expects.
    #[error("the event at position {position} does not fit the read model: {problem}")]
    Inconsistent {
        /// The event's position.
        position: u64,
        /// What does not fit.
        problem: String,
    },
    /// A stored read-model row does not decode.
    #[error("a read-model row is corrupt: {0}")]
    Corrupt(String),
    /// The worker thread could not be started.
    #[error("cannot start the projection worker: {0}")]
    Spawn(std::io::Error),
    /// The read model has applied records the log does not hold (recovery cut the log's
    /// tail, or the log was restored from an older copy): its rows include the effects of
    /// records that are gone, and the positions it would wait for are taken by others. Rebuild
    /// it from the log ([`rebuild()`]; a node does so itself when it opens).
    #[error(
        "read model {name} has applied the log up to position {checkpoint}, past its head \
         {head}: rebuild it from the log"
    )]
    AheadOfLog {
        /// The projection.
        name: String,
        /// Where its checkpoint stands.
        checkpoint: u64,
        /// The log's head.
        head: u64,
    },
    /// The read models were built from records the log does not hold: the log was put back
    /// from another copy (another data folder's, or an older one appended to since) and the
    /// read models kept. Rebuild them from the log (a node does so itself when it opens).
    #[error(
        "the read models were built from another log: bound to {bound}, but {why}; rebuild them from the log"
    )]
    OtherLog {
        /// Where the read models' database is bound.
        bound: crate::audit::Digest,
        /// How the log differs there.
        why: String,
    },
    /// A worker (or a rebuild) of this projection already runs on this database.
    #[error("projection {name} is already running on this database")]
    AlreadyRunning {
        /// The projection (` (rebuild)` appended for a rebuild).
        name: String,
    },
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for ProjectionError {
            fn from(e: $t) -> ProjectionError {
                ProjectionError::Store(e.into())
            }
        }
    )*};
}
store_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Opens (or creates) the read-model database at `path`. An empty or missing file is a new,
/// empty database: every projection starts from position 0.
///
/// redb's cache is bounded ([`CACHE_BYTES`]), and the file is written behind: a background
/// thread carries out redb's writes and syncs in the order redb issued them (at most
/// [`WRITE_BEHIND_BYTES`] ahead), so that a durable commit does not stall the host on the disk
/// (see `file.rs`).
pub fn open_db(path: &Path) -> Result<Database, ProjectionError> {
    file::open(path)
}

/// The checkpoint of projection `name`: the next position it will apply (0 if it never ran).
pub fn checkpoint(db: &Database, name: &str) -> Result<Position, ProjectionError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(CHECKPOINTS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Position(0)),
        Err(e) => return Err(e.into()),
    };
    Ok(Position(table.get(name)?.map_or(0, |v| v.value())))
}

/// An [`ProjectionError::Inconsistent`] at `event`'s position.
fn inconsistent(event: &CommittedEvent, problem: impl Into<String>) -> ProjectionError {
    ProjectionError::Inconsistent { position: event.position.0, problem: problem.into() }
}
