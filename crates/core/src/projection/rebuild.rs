//! Blue-green rebuild of a projection from position 0 while the current read model keeps
//! serving, and the guard that keeps two workers of one projection apart.
//!
//! ```text
//! generations: projection → (current, building)      table_generations: table → current
//!
//! gen 0: inventory            ◀── queries, live worker (checkpoint key "inventory")
//! gen 1: inventory@1          ◀── rebuild worker from 0 (checkpoint key "inventory@1")
//!            │ caught up with the log head: ONE write transaction applies the last records,
//!            ▼ makes gen 1 current, moves its checkpoint to "inventory", drops gen 0's tables
//! gen 1: inventory@1          ◀── queries, live worker (moves over at its next batch)
//! ```
//!
//! A projection's tables exist in **generations**: generation 0 under the names of
//! [`Projection::tables`], generation g > 0 under those names with the suffix `@g`
//! ([`Generation::table`]). The `generations` table holds, per projection name, the current
//! generation and the one being built (0: none); `table_generations` holds, per table name, the
//! current generation, so that every query resolves the table it reads in the same read
//! transaction as it reads it: a query sees the old generation or the new one, whole, never a
//! mix. The current generation's checkpoint is always under the projection's name in
//! [`super::CHECKPOINTS`] ([`super::checkpoint`] is unchanged); the one being built is under
//! `name@g`.
//!
//! [`rebuild`] creates the next generation's tables, runs the projection over the log from
//! position 0 in batches (each batch with the building checkpoint in one transaction), and once
//! it is within one batch of the log head, switches in one transaction that also applies the
//! records up to the head read inside it, under a lock the live host (if one runs) holds while
//! it publishes a batch, so the head is at least where the host has published. The host keeps
//! serving the old generation meanwhile; at its next batch it sees that the generation moved
//! and continues from the new generation's checkpoint, which is at least where it was (so
//! [`super::ProjectionWorker::wait_for`] stays true); its committer drops what it had not
//! committed of the old generation. A crash or an error during a rebuild
//! leaves the current generation untouched; the half-built one is dropped by the next rebuild.
//!
//! The guard: a process-wide registry of the projections running on each [`Database`]. redb
//! itself refuses a second process on the same file, so within one process is enough.

use std::sync::{Arc, Mutex, PoisonError};

use orderly_store::LogReader;
use redb::{
    Database, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle, WriteTransaction,
};

use super::pending;
use super::stage::Stage;
use super::worker::{WorkerConfig, read_batch};
use super::{CHECKPOINTS, Projection, ProjectionError};
use crate::Position;

/// Per projection name: (current generation, generation being built; 0 = none).
pub const GENERATIONS: TableDefinition<'static, &str, (u64, u64)> =
    TableDefinition::new("generations");

/// Per table name (as in [`Projection::tables`]): the generation queries read.
pub const TABLE_GENERATIONS: TableDefinition<'static, &str, u64> =
    TableDefinition::new("table_generations");

/// One generation of a projection's tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

impl Generation {
    /// The first generation: tables under their plain names.
    pub const FIRST: Generation = Generation(0);

    /// The name of table `base` in this generation: `base` itself for generation 0,
    /// `base@g` otherwise.
    #[must_use]
    pub fn table(self, base: &str) -> String {
        if self.0 == 0 { base.to_owned() } else { format!("{base}@{}", self.0) }
    }

    /// The checkpoint key of projection `name` while this generation is being built.
    fn building_key(self, name: &str) -> String {
        format!("{name}@{}", self.0)
    }
}

/// What [`rebuild`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// The generation now current.
    pub generation: Generation,
    /// The generation dropped.
    pub replaced: Generation,
    /// The new generation's checkpoint at the switch: the log head read inside it.
    pub position: Position,
}

/// The current generation of projection `name` (generation 0 if it was never rebuilt).
pub fn generation(db: &Database, name: &str) -> Result<Generation, ProjectionError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(GENERATIONS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Generation::FIRST),
        Err(e) => return Err(e.into()),
    };
    Ok(Generation(table.get(name)?.map_or(0, |v| v.value().0)))
}

/// The name under which table `base` is current, read in `txn` (for queries).
pub(super) fn current_table(txn: &ReadTransaction, base: &str) -> Result<String, ProjectionError> {
    let generation = match txn.open_table(TABLE_GENERATIONS) {
        Ok(table) => table.get(base)?.map_or(0, |v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(Generation(generation).table(base))
}

/// The (current, building) generations of projection `name`, read in a write transaction.
pub(super) fn generations(
    txn: &WriteTransaction,
    name: &str,
) -> Result<(Generation, Generation), ProjectionError> {
    let table = txn.open_table(GENERATIONS)?;
    let (current, building) = table.get(name)?.map_or((0, 0), |v| v.value());
    Ok((Generation(current), Generation(building)))
}

/// The current generation of `name` and its checkpoint, read in one snapshot.
pub(super) fn current(db: &Database, name: &str) -> Result<(Generation, u64), ProjectionError> {
    current_in(&db.begin_read()?, name)
}

/// The current generation of `name` and its checkpoint, read in `txn`.
pub(super) fn current_in(
    txn: &ReadTransaction,
    name: &str,
) -> Result<(Generation, u64), ProjectionError> {
    let generation = match txn.open_table(GENERATIONS) {
        Ok(table) => table.get(name)?.map_or(0, |v| v.value().0),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    let next = match txn.open_table(CHECKPOINTS) {
        Ok(table) => table.get(name)?.map_or(0, |v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok((Generation(generation), next))
}

/// Process-wide: (database address, key) of every running worker or rebuild.
static RUNNING: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());

/// The right to run projection `key` on one database; released on drop.
#[derive(Debug)]
pub(super) struct Lease {
    db: usize,
    key: String,
    /// Keeps the database, hence its address, alive while the lease is held.
    _db: Arc<Database>,
}

impl Lease {
    /// Takes the lease, or [`ProjectionError::AlreadyRunning`] if it is held.
    pub(super) fn acquire(db: &Arc<Database>, key: String) -> Result<Lease, ProjectionError> {
        let addr = Arc::as_ptr(db).addr();
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if running.iter().any(|(d, k)| *d == addr && *k == key) {
            return Err(ProjectionError::AlreadyRunning { name: key });
        }
        running.push((addr, key.clone()));
        Ok(Lease { db: addr, key, _db: db.clone() })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|(d, k)| !(*d == self.db && *k == self.key));
    }
}

/// Rebuilds `projection` from position 0 of `log` into a new generation of its tables, switches
/// queries (and a live worker, if one runs) to it atomically, and drops the old generation.
///
/// Blocks until done; the current read model keeps answering queries throughout, and its live
/// [`super::ProjectionWorker`] may keep running. Batches as `config` says. Errors:
/// [`ProjectionError::AlreadyRunning`] if a rebuild of the same projection runs on `db`; any
/// other error leaves the current generation as it was.
pub fn rebuild<P: Projection>(
    db: &Arc<Database>,
    log: &LogReader,
    projection: &P,
    config: &WorkerConfig,
) -> Result<Rebuilt, ProjectionError> {
    let name = projection.name().to_owned();
    let _lease = Lease::acquire(db, format!("{name} (rebuild)"))?;
    let building = begin(db, projection)?;
    let result = build(db, log, projection, config, building);
    if result.is_err() {
        // Best effort: the next rebuild drops it otherwise.
        let _ = abandon(db, projection, building);
    }
    result
}

/// Drops a half-built generation left by a crash, and registers and creates the next one.
fn begin<P: Projection>(db: &Database, projection: &P) -> Result<Generation, ProjectionError> {
    let name = projection.name();
    let txn = db.begin_write()?;
    let (current, stale) = generations(&txn, name)?;
    if stale.0 != 0 {
        drop_tables(&txn, projection, stale)?;
        txn.open_table(CHECKPOINTS)?.remove(stale.building_key(name).as_str())?;
    }
    let building = Generation(current.0.max(stale.0) + 1);
    drop_tables(&txn, projection, building)?;
    // Creates the tables (on an error the transaction is dropped: nothing is written).
    let stage = Stage::over_write(&txn, building);
    drop(projection.open(&stage)?);
    stage.write()?;
    txn.open_table(GENERATIONS)?.insert(name, (current.0, building.0))?;
    txn.open_table(CHECKPOINTS)?.insert(building.building_key(name).as_str(), 0)?;
    txn.commit()?;
    Ok(building)
}

/// Catches `building` up with the log head, then switches to it.
fn build<P: Projection>(
    db: &Arc<Database>,
    log: &LogReader,
    projection: &P,
    config: &WorkerConfig,
    building: Generation,
) -> Result<Rebuilt, ProjectionError> {
    let name = projection.name();
    let key = building.building_key(name);
    let max_batch = u64::try_from(config.max_batch.max(1)).unwrap_or(u64::MAX);
    let mut events = Vec::new();
    let mut next = 0;
    loop {
        let head = log.head().0;
        if head.saturating_sub(next) <= max_batch {
            break;
        }
        events.clear();
        let reached = read_batch(log, next, next + max_batch, &mut events)?;
        let txn = db.begin_write()?;
        check_building(&txn, name, building)?;
        apply_into(&txn, projection, building, &events)?;
        txn.open_table(CHECKPOINTS)?.insert(key.as_str(), reached)?;
        txn.commit()?;
        next = reached;
    }

    // The switch: the last records, up to the head read while holding the write lock and the
    // hosts' switch lock (so at least where a live host has published), and the swap, at once.
    let entry = pending::entry(db);
    let shared = &entry.shared;
    let _switching = shared.switch.lock().unwrap_or_else(PoisonError::into_inner);
    let txn = db.begin_write()?;
    let (current, _) = check_building(&txn, name, building)?;
    let head = log.head().0;
    let mut reached = next;
    while reached < head {
        events.clear();
        let from = reached;
        reached = read_batch(log, from, head.min(from + max_batch), &mut events)?;
        if reached == from {
            return Err(ProjectionError::Inconsistent {
                position: from,
                problem: format!("the log's head is {head} but it ends at {from}"),
            });
        }
        apply_into(&txn, projection, building, &events)?;
    }
    drop_tables(&txn, projection, current)?;
    {
        let mut checkpoints = txn.open_table(CHECKPOINTS)?;
        checkpoints.remove(key.as_str())?;
        checkpoints.insert(name, reached)?;
        txn.open_table(GENERATIONS)?.insert(name, (building.0, 0))?;
        let mut tables = txn.open_table(TABLE_GENERATIONS)?;
        for table in projection.tables() {
            tables.insert(table.as_str(), building.0)?;
        }
    }
    super::binding::raise(&txn, log, reached)?;
    txn.commit()?;
    shared.switches.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    Ok(Rebuilt { generation: building, replaced: current, position: Position(reached) })
}

/// Applies `events` to `generation` of `projection` directly in `txn`, as one batch (for
/// rebuilds and tools; running projections go through a [`super::ProjectionHost`]). On an
/// error nothing of the batch is written.
pub fn apply_into<P: Projection>(
    txn: &WriteTransaction,
    projection: &P,
    generation: Generation,
    events: &[crate::engine::CommittedEvent],
) -> Result<(), ProjectionError> {
    let stage = Stage::over_write(txn, generation);
    {
        let mut tables = projection.open(&stage)?;
        projection.apply(&mut tables, events)?;
    }
    stage.write()
}

/// Fails unless `building` is still the generation being built for `name`.
fn check_building(
    txn: &WriteTransaction,
    name: &str,
    building: Generation,
) -> Result<(Generation, Generation), ProjectionError> {
    let (current, registered) = generations(txn, name)?;
    if registered != building {
        return Err(ProjectionError::Inconsistent {
            position: 0,
            problem: format!(
                "projection {name}: generation {} was being built, the database says {}",
                building.0, registered.0
            ),
        });
    }
    Ok((current, registered))
}

/// Drops the generation being built after an error.
fn abandon<P: Projection>(
    db: &Database,
    projection: &P,
    building: Generation,
) -> Result<(), ProjectionError> {
    let name = projection.name();
    let txn = db.begin_write()?;
    let (current, registered) = generations(&txn, name)?;
    if registered == building {
        drop_tables(&txn, projection, building)?;
        txn.open_table(CHECKPOINTS)?.remove(building.building_key(name).as_str())?;
        txn.open_table(GENERATIONS)?.insert(name, (current.0, 0))?;
        txn.commit()?;
    }
    Ok(())
}

/// Deletes the tables of `generation` of `projection` (plain or multimap) that exist.
fn drop_tables<P: Projection>(
    txn: &WriteTransaction,
    projection: &P,
    generation: Generation,
) -> Result<(), ProjectionError> {
    let names: Vec<String> =
        projection.tables().iter().map(|base| generation.table(base)).collect();
    let plain: Vec<_> =
        txn.list_tables()?.filter(|t| names.iter().any(|n| n == t.name())).collect();
    for table in plain {
        txn.delete_table(table)?;
    }
    let multimap: Vec<_> =
        txn.list_multimap_tables()?.filter(|t| names.iter().any(|n| n == t.name())).collect();
    for table in multimap {
        txn.delete_multimap_table(table)?;
    }
    Ok(())
}
