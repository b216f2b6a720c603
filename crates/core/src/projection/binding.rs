//! Which log the read models were built from.
//!
//! A checkpoint is a position, and a position names a record only within one log: read models
//! kept while the log was put back from a copy of another data folder (or from an older copy
//! to which other records were appended since) would count their rows as built from records
//! they never saw. So every transaction that moves a checkpoint past the binding also stores
//! the [`Digest`] there, the chain hash of the record before it, which commits to every earlier
//! record; an open checks it against the log ([`check`]) as the engine's snapshot and the
//! payments checkpoint are checked. One binding at the furthest checkpoint vouches for every
//! checkpoint below it.

use orderly_store::{LogReader, Position};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::ProjectionError;
use crate::audit::Digest;

/// The one row of the binding: (position, chain hash of the record before it).
pub const LOG_BINDING: TableDefinition<'static, &str, (u64, [u8; 32])> =
    TableDefinition::new("log_binding");

const KEY: &str = "log";

/// What the log says of the records a read-model database was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The log holds the record the binding names: every checkpoint's records are this log's.
    Holds,
    /// Nothing binds the database yet (new, or written by an orderly from before bindings):
    /// only its checkpoints' positions can be checked.
    Unbound,
    /// The database was built from records this log does not hold: rebuild every read model.
    Broken {
        /// The binding stored.
        bound: Digest,
        /// How the log differs there.
        why: String,
    },
}

/// Checks the binding of `db` against `log`.
pub fn check(db: &Database, log: &LogReader) -> Result<Binding, ProjectionError> {
    let txn = db.begin_read()?;
    let stored = match txn.open_table(LOG_BINDING) {
        Ok(table) => table.get(KEY)?.map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let Some((head, hash)) = stored else { return Ok(Binding::Unbound) };
    let bound = Digest { head, hash };
    if head == REBUILDING {
        let why = "a rebuild of every read model from the log did not finish".to_owned();
        return Ok(Binding::Broken { bound, why });
    }
    let log_head = log.head().0;
    if head > log_head {
        let why = format!("the log ends at position {log_head}");
        return Ok(Binding::Broken { bound, why });
    }
    let found = digest_at(log, head)?;
    if found == bound {
        return Ok(Binding::Holds);
    }
    let why = format!("the log's record before it has another chain hash ({found})");
    Ok(Binding::Broken { bound, why })
}

/// Binds the database to `log` at `reached` in `txn`, unless it is bound at or past it already.
/// Called by every transaction that moves a current checkpoint forward.
pub(super) fn raise(
    txn: &WriteTransaction,
    log: &LogReader,
    reached: u64,
) -> Result<(), ProjectionError> {
    let mut table = txn.open_table(LOG_BINDING)?;
    let bound = table.get(KEY)?.map_or(0, |v| v.value().0);
    if reached <= bound {
        return Ok(());
    }
    bind(&mut table, log, reached)
}

/// Stores the digest of `log` at `head` as the binding.
fn bind(
    table: &mut redb::Table<'_, &str, (u64, [u8; 32])>,
    log: &LogReader,
    head: u64,
) -> Result<(), ProjectionError> {
    let digest = digest_at(log, head)?;
    table.insert(KEY, (digest.head, digest.hash))?;
    Ok(())
}

/// The digest of `log` at `head`, which the log holds (it is at most its head).
fn digest_at(log: &LogReader, head: u64) -> Result<Digest, ProjectionError> {
    let Some(position) = head.checked_sub(1) else { return Ok(Digest { head, hash: [0; 32] }) };
    match log.chain_hash_at(Position(position)) {
        Some(Ok(hash)) => Ok(Digest { head, hash }),
        Some(Err(error)) => Err(ProjectionError::Read { position, error }),
        None => Err(ProjectionError::Inconsistent {
            position,
            problem: "the log holds no record there".to_owned(),
        }),
    }
}

/// The binding's position while every read model is rebuilt ([`rebuild_all`]): past any log's
/// head, so that a crash or an error before the last rebuild ends leaves a database that no
/// log vouches for, which the next open rebuilds whole again (a rebuild's own commit never
/// lowers it).
const REBUILDING: u64 = u64::MAX;

/// Marks the database as being rebuilt whole from `log` (every read model's rows may be of
/// another log until then), runs `rebuild_each`, and binds the database to `log` at its head
/// once every rebuild ended well.
pub fn rebuild_all(
    db: &Database,
    log: &LogReader,
    rebuild_each: impl FnOnce() -> Result<(), ProjectionError>,
) -> Result<(), ProjectionError> {
    let txn = db.begin_write()?;
    txn.open_table(LOG_BINDING)?.insert(KEY, (REBUILDING, [0; 32]))?;
    txn.commit()?;
    rebuild_each()?;
    let txn = db.begin_write()?;
    bind(&mut txn.open_table(LOG_BINDING)?, log, log.head().0)?;
    txn.commit()?;
    Ok(())
}
