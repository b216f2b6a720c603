//! Rows applied but not yet committed to redb: what makes a batch visible in about the time it
//! takes to apply it, while redb commits behind.
//!
//! ```text
//! host thread:      apply batch ─▶ Delta (its changed rows, encoded) ─▶ Pending ─▶ `reached`
//! committer thread: Pending ─▶ ONE redb transaction (rows + checkpoints) ─▶ retire those deltas
//! query:            snapshot Pending, THEN begin a read transaction; newest delta wins, then redb
//! ```
//! Why: a redb commit per small batch rewrites every B-tree page the batch touches (copy on
//! write) and its bookkeeping grows with the commits since the last durable one, so under a
//! stream of small commits the host spent most of its time there, and its periodic durable
//! commit stalled every read model for 5–25 ms. Now the commits are fewer and bigger and run on
//! their own thread; a stall there delays durability, not visibility.
//!
//! Why queries stay consistent: the committer drops deltas only after their transaction has
//! committed, and a query takes its snapshot of the deltas before it begins its read
//! transaction. A delta missing from the snapshot was therefore committed before that
//! transaction began, so the transaction sees it. The transaction may also be newer than the
//! snapshot: the query leaves out the parts it already holds (a part's end is at or below its
//! projection's checkpoint there), so an older pending row never hides a newer stored one.
//! Rows only ever get replaced (projections never delete during a batch), so "newest pending
//! part, else redb" is the row, and what a query sees is a prefix of the log per projection.
//!
//! Queries find the deltas of a database through a process-wide registry (redb refuses a
//! second process on the same file, so the registry covers every writer).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use redb::{AccessGuard, Database, Key, ReadOnlyTable, StorageError, Value};
use rustc_hash::FxHashMap;

use super::rebuild::Generation;
use super::{ProjectionError, rebuild};

/// Rows to write into one table: (encoded key, encoded value, the position that wrote the key
/// as new, if it did).
type RowsToWrite<'r> = Vec<(&'r [u8], &'r [u8], Option<u64>)>;

/// Writes rows into the table named, typed (see [`TableRows::write_all`]).
type WriteFn = fn(&redb::WriteTransaction, &str, RowsToWrite<'_>) -> Result<(), ProjectionError>;

/// The rows of one table that a batch changed, encoded as redb encodes them.
pub(super) struct TableRows {
    /// The table's name, generation included.
    pub(super) name: String,
    /// Encoded key → the row written.
    pub(super) rows: FxHashMap<Vec<u8>, Written>,
    write: WriteFn,
}

/// A row as a batch left it.
pub(super) struct Written {
    /// The encoded value.
    pub(super) value: Vec<u8>,
    /// If the key was written as new (an order placed), the position that wrote it: the
    /// commit refuses a key new here that redb already holds.
    pub(super) fresh: Option<u64>,
}

impl TableRows {
    pub(super) fn new<K: Key + 'static, V: Value + 'static>(name: String) -> TableRows {
        TableRows { name, rows: FxHashMap::default(), write: write_rows::<K, V> }
    }

    /// Writes `parts` (the rows of one table from successive batches, oldest first) into
    /// `txn`: each row once, as the newest batch left it, neighbouring keys together (they
    /// share B-tree pages).
    pub(super) fn write_all(
        txn: &redb::WriteTransaction,
        parts: &[&TableRows],
    ) -> Result<(), ProjectionError> {
        let Some(first) = parts.first() else { return Ok(()) };
        let mut rows: Vec<(&[u8], usize, &Written)> = Vec::new();
        for (batch, part) in parts.iter().enumerate() {
            rows.extend(part.rows.iter().map(|(key, row)| (key.as_slice(), batch, row)));
        }
        // Sorted as bytes, not in the table's order (a tuple key decodes its lengths at every
        // comparison): redb's tuple bytes put each element's length first, so rows of one
        // tenant (and customer) with ids of a length still come together, which is all the
        // order is for (a little-endian number inside a key sorts by its low byte: rows of a
        // customer, or KPI minutes, land in the same pages, not in their order). A key's rows
        // come oldest batch first, so the last one stays.
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        let mut merged: RowsToWrite<'_> = Vec::with_capacity(rows.len());
        for (key, _, row) in rows {
            match merged.last_mut() {
                // A key new in an earlier batch stays new: redb must not hold it.
                Some(last) if last.0 == key => *last = (key, &row.value, last.2.or(row.fresh)),
                _ => merged.push((key, &row.value, row.fresh)),
            }
        }
        (first.write)(txn, &first.name, merged)
    }
}

/// Inserts `rows` in the order given.
fn write_rows<K: Key + 'static, V: Value + 'static>(
    txn: &redb::WriteTransaction,
    name: &str,
    rows: RowsToWrite<'_>,
) -> Result<(), ProjectionError> {
    let mut table = txn.open_table(redb::TableDefinition::<K, V>::new(name))?;
    for (key, value, fresh) in rows {
        let existed = table.insert(K::from_bytes(key), V::from_bytes(value))?.is_some();
        if existed && let Some(position) = fresh {
            return Err(ProjectionError::Inconsistent {
                position,
                problem: format!(
                    "table {name}: row {:?} is new here but was already stored (placed twice)",
                    K::from_bytes(key)
                ),
            });
        }
    }
    Ok(())
}

/// One projection's part of a batch: the records `from..reached` applied to `generation`.
pub(super) struct MemberRows {
    /// The projection's index in its host.
    pub(super) member: usize,
    /// The projection's name (its checkpoint's key).
    pub(super) name: Arc<str>,
    pub(super) generation: Generation,
    pub(super) from: u64,
    pub(super) reached: u64,
    pub(super) tables: Vec<TableRows>,
}

/// What one applied batch changed, for every projection of its host.
#[derive(Default)]
pub(super) struct Delta {
    pub(super) members: Vec<MemberRows>,
    /// Records in the batch (for the bound on what waits for the committer).
    pub(super) records: u64,
}

impl Delta {
    /// The rows of every table the batch changed, of every projection.
    pub(super) fn tables(&self) -> impl Iterator<Item = &TableRows> {
        self.members.iter().flat_map(|member| &member.tables)
    }
}

/// Deltas waiting for the committer beyond which the host waits too: a lookup scans them.
const MAX_DELTAS: usize = 256;

/// The deltas of one host, oldest first, shared by its host thread (which adds), its committer
/// (which drops those committed) and queries (which read a snapshot).
#[derive(Default)]
pub(super) struct Pending {
    state: Mutex<PendingState>,
    /// Signalled when a delta is added or dropped.
    changed: Condvar,
}

#[derive(Default)]
struct PendingState {
    deltas: Vec<Arc<Delta>>,
    records: u64,
    /// Deltas committed, left for the host thread to free: freeing them (many small rows,
    /// allocated by the host) would otherwise take the committer's time, the scarcer one.
    retired: Vec<Arc<Delta>>,
}

impl PendingState {
    fn full(&self, records: u64) -> bool {
        self.records >= records || self.deltas.len() >= MAX_DELTAS
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Pending")
            .field("deltas", &state.deltas.len())
            .field("records", &state.records)
            .finish()
    }
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every delta not committed yet, oldest first.
    pub(super) fn snapshot(&self) -> Vec<Arc<Delta>> {
        self.lock().deltas.clone()
    }

    pub(super) fn push(&self, delta: Delta) {
        let mut state = self.lock();
        state.records += delta.records;
        state.deltas.push(Arc::new(delta));
        drop(state);
        self.changed.notify_all();
    }

    /// Drops the oldest deltas, `committed`, once committed; the host frees them
    /// ([`Pending::take_retired`]).
    pub(super) fn committed(&self, committed: Vec<Arc<Delta>>) {
        let mut state = self.lock();
        let dropped: u64 = state.deltas.drain(..committed.len()).map(|d| d.records).sum();
        state.records -= dropped;
        state.retired.extend(committed);
        drop(state);
        self.changed.notify_all();
    }

    /// The deltas committed since the last call, for the caller to free.
    pub(super) fn take_retired(&self) -> Vec<Arc<Delta>> {
        std::mem::take(&mut self.lock().retired)
    }

    /// Records waiting for the committer.
    pub(super) fn records(&self) -> u64 {
        self.lock().records
    }

    /// Whether at least `records` records, or [`MAX_DELTAS`] deltas, wait.
    pub(super) fn full(&self, records: u64) -> bool {
        self.lock().full(records)
    }

    /// Waits until [`Pending::full`] is false, or `timeout` passes.
    pub(super) fn wait_below(&self, records: u64, timeout: std::time::Duration) {
        let state = self.lock();
        if state.full(records) {
            drop(self.changed.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Waits until some delta is pending, or `timeout` passes.
    pub(super) fn wait_any(&self, timeout: std::time::Duration) {
        let state = self.lock();
        if state.deltas.is_empty() {
            drop(self.changed.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Wakes the committer (to stop).
    pub(super) fn wake(&self) {
        self.changed.notify_all();
    }
}

/// Per database (by address): the pending rows of each host running on it, and the lock a
/// rebuild's switch takes against the hosts' publishing (see `host.rs`).
#[derive(Debug, Default)]
pub(super) struct Shared {
    hosts: Mutex<Vec<Arc<Pending>>>,
    pub(super) switch: Mutex<()>,
    /// Generation switches made (under `switch`): a host looks at generations again only
    /// when this moved.
    pub(super) switches: std::sync::atomic::AtomicU64,
}

static REGISTRY: Mutex<Vec<(usize, Arc<Shared>)>> = Mutex::new(Vec::new());

/// What the registry holds for `db`, while the returned [`Entry`] lives (a host's
/// registration, a rebuild's switch): every user of one database meets the same entry.
pub(super) fn entry(db: &Arc<Database>) -> Entry {
    let addr = Arc::as_ptr(db).addr();
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let shared = match registry.iter().find(|(a, _)| *a == addr) {
        Some((_, shared)) => shared.clone(),
        None => {
            let shared = Arc::new(Shared::default());
            registry.push((addr, shared.clone()));
            shared
        }
    };
    Entry { db: db.clone(), shared }
}

/// A user's hold on the registry entry of a database; the entry goes when its last user does.
#[derive(Debug)]
pub(super) struct Entry {
    /// Keeps the database, hence its address, alive while the entry is used.
    db: Arc<Database>,
    pub(super) shared: Arc<Shared>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let addr = Arc::as_ptr(&self.db).addr();
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        // Users take their `Arc` under this lock: two left (the registry's and this one)
        // means no other user.
        if Arc::strong_count(&self.shared) == 2
            && let Some(at) = registry.iter().position(|(a, _)| *a == addr)
        {
            registry.swap_remove(at);
        }
    }
}

/// Registers a host's pending rows on `db` until the returned registration is dropped.
pub(super) fn register(db: &Arc<Database>, pending: Arc<Pending>) -> Registration {
    let entry = entry(db);
    entry.shared.hosts.lock().unwrap_or_else(PoisonError::into_inner).push(pending.clone());
    Registration { entry, pending }
}

/// Keeps a host's pending rows visible to queries.
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) entry: Entry,
    pending: Arc<Pending>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut hosts = self.entry.shared.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.retain(|p| !Arc::ptr_eq(p, &self.pending));
    }
}

/// Every pending delta of every host on `db`.
fn pending_on(db: &Database) -> Vec<Arc<Delta>> {
    let addr = std::ptr::from_ref(db).addr();
    let shared = {
        let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.iter().find(|(a, _)| *a == addr).map(|(_, s)| s.clone())
    };
    let Some(shared) = shared else { return Vec::new() };
    let hosts = shared.hosts.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // Hosts own disjoint tables: their deltas never compete for a row.
    hosts.iter().flat_map(|pending| pending.snapshot()).collect()
}

/// A read-model table as queries see it: the current generation in redb, with the rows
/// applied but not committed yet on top.
pub(super) struct ModelTable<K: Key + 'static, V: Value + 'static> {
    stored: Option<ReadOnlyTable<K, V>>,
    /// The rows of the parts of pending deltas that the read transaction does not hold yet
    /// (this table's only), newest first.
    pending: Vec<(Arc<Delta>, usize, usize)>,
}

/// A key or value read from a [`ModelTable`].
pub(super) enum Cell<'a, T: Value + 'static> {
    Stored(AccessGuard<'a, T>),
    Pending(&'a [u8]),
}

impl<T: Value + 'static> Cell<'_, T> {
    pub(super) fn value(&self) -> T::SelfType<'_> {
        match self {
            Cell::Stored(guard) => guard.value(),
            Cell::Pending(bytes) => T::from_bytes(bytes),
        }
    }
}

/// Opens table `base` (its current generation) for a query.
pub(super) fn read_table<K: Key + 'static, V: Value + 'static>(
    db: &Database,
    base: redb::TableDefinition<'_, K, V>,
) -> Result<ModelTable<K, V>, ProjectionError> {
    // The snapshot first, then the transaction: see the module documentation.
    let deltas = pending_on(db);
    let txn = redb::ReadableDatabase::begin_read(db)?;
    let name = rebuild::current_table(&txn, redb::TableHandle::name(&base))?;
    let stored = match txn.open_table(redb::TableDefinition::<K, V>::new(&name)) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // The transaction may be newer than the snapshot: parts it holds already (committed, by
    // their projection's checkpoint) are left out, or they would hide newer stored rows.
    let checkpoints = match txn.open_table(super::CHECKPOINTS) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut committed: Vec<(Arc<str>, u64)> = Vec::new();
    let mut pending = Vec::new();
    for delta in deltas.iter().rev() {
        for (p, part) in delta.members.iter().enumerate() {
            let Some(t) = part.tables.iter().position(|t| t.name == name) else { continue };
            let checkpoint = match committed.iter().find(|(n, _)| *n == part.name) {
                Some((_, checkpoint)) => *checkpoint,
                None => {
                    let checkpoint = match &checkpoints {
                        Some(table) => table.get(&*part.name)?.map_or(0, |v| v.value()),
                        None => 0,
                    };
                    committed.push((part.name.clone(), checkpoint));
                    checkpoint
                }
            };
            if part.reached > checkpoint {
                pending.push((delta.clone(), p, t));
            }
        }
    }
    Ok(ModelTable { stored, pending })
}

impl<K: Key + 'static, V: Value + 'static> ModelTable<K, V> {
    /// The row of `key`.
    pub(super) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Cell<'_, V>>, StorageError> {
        let bytes = K::as_bytes(key.borrow());
        if let Some(row) = self.pending_rows().find_map(|rows| rows.rows.get(bytes.as_ref())) {
            return Ok(Some(Cell::Pending(&row.value)));
        }
        match &self.stored {
            Some(table) => Ok(table.get(key.borrow())?.map(Cell::Stored)),
            None => Ok(None),
        }
    }

    /// The rows in `range`, in key order (reversible).
    pub(super) fn range<'k, KR>(
        &self,
        range: impl RangeBounds<KR> + 'k,
    ) -> Result<Merged<'_, K, V>, StorageError>
    where
        KR: Borrow<K::SelfType<'k>> + 'k,
    {
        let encode = |bound: Bound<&KR>| match bound {
            Bound::Included(k) => Bound::Included(K::as_bytes(k.borrow()).as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(K::as_bytes(k.borrow()).as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (low, high) = (encode(range.start_bound()), encode(range.end_bound()));
        let within = |key: &[u8]| {
            let above = match &low {
                Bound::Included(b) => K::compare(key, b) != Ordering::Less,
                Bound::Excluded(b) => K::compare(key, b) == Ordering::Greater,
                Bound::Unbounded => true,
            };
            let below = match &high {
                Bound::Included(b) => K::compare(key, b) != Ordering::Greater,
                Bound::Excluded(b) => K::compare(key, b) == Ordering::Less,
                Bound::Unbounded => true,
            };
            above && below
        };
        // Newest delta wins: the first seen of a key stays.
        let mut rows: FxHashMap<&[u8], &[u8]> = FxHashMap::default();
        for table in self.pending_rows() {
            for (key, row) in &table.rows {
                if within(key) {
                    rows.entry(key).or_insert(&row.value);
                }
            }
        }
        let mut pending: Vec<_> = rows.into_iter().collect();
        pending.sort_unstable_by(|a, b| K::compare(a.0, b.0));
        let stored = match &self.stored {
            Some(table) => Some(table.range(range)?),
            None => None,
        };
        Ok(Merged { stored, front: None, back: None, pending: pending.into() })
    }

    /// This table's rows in the pending parts, newest first.
    fn pending_rows(&self) -> impl Iterator<Item = &TableRows> {
        self.pending.iter().map(|(delta, part, table)| &delta.members[*part].tables[*table])
    }

    /// Every row, in key order.
    pub(super) fn iter(&self) -> Result<Merged<'_, K, V>, StorageError> {
        self.range::<K::SelfType<'_>>(..)
    }
}

type StoredRow<'a, K, V> = (AccessGuard<'a, K>, AccessGuard<'a, V>);

/// The rows of a stored range merged with the pending rows in it, in key order; a pending row
/// replaces the stored row of the same key.
pub(super) struct Merged<'a, K: Key + 'static, V: Value + 'static> {
    stored: Option<redb::Range<'a, K, V>>,
    /// A stored row taken from the front (back) of `stored` and not returned yet.
    front: Option<StoredRow<'a, K, V>>,
    back: Option<StoredRow<'a, K, V>>,
    pending: VecDeque<(&'a [u8], &'a [u8])>,
}

/// A row of a [`Merged`] range.
pub(super) type MergedRow<'a, K, V> = (Cell<'a, K>, Cell<'a, V>);

impl<'a, K: Key + 'static, V: Value + 'static> Merged<'a, K, V> {
    /// The next stored row from the front (`back` false) or the back, buffered.
    fn peek_stored(&mut self, back: bool) -> Result<(), StorageError> {
        let (slot, other) = if back {
            (&mut self.back, &mut self.front)
        } else {
            (&mut self.front, &mut self.back)
        };
        if slot.is_none() {
            let next = match &mut self.stored {
                Some(range) if back => range.next_back().transpose()?,
                Some(range) => range.next().transpose()?,
                None => None,
            };
            // The range is used up from this side: the other side's buffered row is the last.
            *slot = next.or_else(|| other.take());
        }
        Ok(())
    }

    fn step(&mut self, back: bool) -> Option<Result<MergedRow<'a, K, V>, StorageError>> {
        if let Err(e) = self.peek_stored(back) {
            return Some(Err(e));
        }
        let slot = if back { &mut self.back } else { &mut self.front };
        let pending = if back { self.pending.back() } else { self.pending.front() };
        // Which comes first: the stored row, the pending row, or (same key) the pending row
        // in place of the stored one.
        let (stored_first, same) = match (slot.as_ref(), pending) {
            (None, None) => return None,
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, false),
            (Some((key, _)), Some((pending, _))) => {
                let order = K::compare(K::as_bytes(&key.value()).as_ref(), pending);
                // From the back, the greater key comes first.
                let first = if back { Ordering::Greater } else { Ordering::Less };
                (order == first, order == Ordering::Equal)
            }
        };
        if stored_first {
            let (key, value) = slot.take()?;
            return Some(Ok((Cell::Stored(key), Cell::Stored(value))));
        }
        if same {
            // Replaced by the pending row.
            *slot = None;
        }
        let (key, value) =
            if back { self.pending.pop_back()? } else { self.pending.pop_front()? };
        Some(Ok((Cell::Pending(key), Cell::Pending(value))))
    }
}

impl<'a, K: Key + 'static, V: Value + 'static> Iterator for Merged<'a, K, V> {
    type Item = Result<MergedRow<'a, K, V>, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

impl<K: Key + 'static, V: Value + 'static> DoubleEndedIterator for Merged<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableTable, TableDefinition};

    use super::*;

    const T: TableDefinition<'static, u64, u64> = TableDefinition::new("t");

    /// A delta of table `t` holding `rows`.
    fn delta(rows: &[(u64, u64)]) -> Arc<Delta> {
        let rows: Vec<_> = rows.iter().map(|&(key, value)| (key, value, None)).collect();
        let table = part(&rows);
        let member = MemberRows {
            member: 0,
            name: "p".into(),
            generation: Generation::FIRST,
            from: 0,
            reached: 1,
            tables: vec![table],
        };
        Arc::new(Delta { members: vec![member], records: 1 })
    }

    /// Rows of table `t`: (key, value, the position that wrote it as new).
    pub(super) fn part(rows: &[(u64, u64, Option<u64>)]) -> TableRows {
        let mut table = TableRows::new::<u64, u64>("t".to_owned());
        for &(key, value, fresh) in rows {
            let row = Written { value: value.to_le_bytes().to_vec(), fresh };
            table.rows.insert(key.to_le_bytes().to_vec(), row);
        }
        table
    }

    #[test]
    fn the_committer_writes_each_row_as_the_newest_part_left_it_and_refuses_a_new_key_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let oldest = part(&[(1, 10, Some(5)), (2, 20, None), (7, 70, None)]);
        let middle = part(&[(1, 11, None), (3, 30, Some(6))]);
        let newest = part(&[(2, 22, None), (7, 71, None)]);
        let txn = db.begin_write().unwrap();
        TableRows::write_all(&txn, &[&oldest, &middle, &newest]).unwrap();
        txn.commit().unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let table = txn.open_table(T).unwrap();
        let stored: Vec<(u64, u64)> = table
            .iter()
            .unwrap()
            .map(|r| r.unwrap())
            .map(|(k, v)| (k.value(), v.value()))
            .collect();
        assert_eq!(stored, [(1, 11), (2, 22), (3, 30), (7, 71)]);

        // Key 1 is stored now: new in an older part, it stays new under a newer part's write.
        let again = part(&[(1, 12, Some(8))]);
        let later = part(&[(1, 13, None)]);
        let txn = db.begin_write().unwrap();
        match TableRows::write_all(&txn, &[&again, &later]) {
            Err(ProjectionError::Inconsistent { position: 8, problem }) => {
                assert!(problem.contains("placed twice"), "{problem}");
            }
            other => panic!("expected the new key 1 refused at 8, got {other:?}"),
        }
    }

    fn rows(range: Merged<'_, u64, u64>, back: bool) -> Vec<(u64, u64)> {
        let row = |row: Result<MergedRow<'_, u64, u64>, StorageError>| {
            let (key, value) = row.unwrap();
            (key.value(), value.value())
        };
        if back { range.rev().map(row).collect() } else { range.map(row).collect() }
    }

    #[test]
    fn queries_merge_pending_rows_over_stored_ones_newest_first_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(T).unwrap();
            for key in [1, 3, 5, 7] {
                table.insert(key, key * 10).unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let stored = Some(txn.open_table(T).unwrap());
        // Key 3 replaced twice (the newer delta wins), key 5 once; 0, 4 and 9 are new.
        let (older, newer) =
            (delta(&[(3, 31), (4, 40), (9, 90)]), delta(&[(0, 0), (3, 32), (5, 51)]));
        let pending = vec![(newer, 0, 0), (older, 0, 0)];
        let table = ModelTable { stored, pending };

        let all = [(0, 0), (1, 10), (3, 32), (4, 40), (5, 51), (7, 70), (9, 90)];
        assert_eq!(rows(table.iter().unwrap(), false), all);
        let mut reversed = all.to_vec();
        reversed.reverse();
        assert_eq!(rows(table.iter().unwrap(), true), reversed);
        assert_eq!(rows(table.range(2..=5).unwrap(), false), [(3, 32), (4, 40), (5, 51)]);
        assert_eq!(rows(table.range(2..5).unwrap(), true), [(4, 40), (3, 32)]);
        // Taking from both ends meets in the middle without losing or repeating a row.
        let mut both = table.iter().unwrap();
        let mut met = Vec::new();
        while let Some(front) = both.next() {
            met.push(front.unwrap().0.value());
            if let Some(back) = both.next_back() {
                met.push(back.unwrap().0.value());
            }
        }
        met.sort_unstable();
        assert_eq!(met, [0, 1, 3, 4, 5, 7, 9]);

        assert_eq!(table.get(3).unwrap().map(|v| v.value()), Some(32));
        assert_eq!(table.get(7).unwrap().map(|v| v.value()), Some(70));
        assert_eq!(table.get(9).unwrap().map(|v| v.value()), Some(90));
        assert!(table.get(2).unwrap().is_none());
        // No table in redb yet: the pending rows alone.
        let fresh = ModelTable::<u64, u64> { stored: None, pending: table.pending.clone() };
        assert_eq!(rows(fresh.iter().unwrap(), true), [(9, 90), (5, 51), (4, 40), (3, 32), (0, 0)]);
    }
}

#[cfg(test)]
mod query_tests {
    use redb::TableDefinition;

    use super::*;

    const T: TableDefinition<'static, u64, u64> = TableDefinition::new("t");

    fn part(name: &str, reached: u64, rows: &[(u64, u64)]) -> Delta {
        let rows: Vec<_> = rows.iter().map(|&(key, value)| (key, value, None)).collect();
        let table = super::tests::part(&rows);
        let member = MemberRows {
            member: 0,
            name: name.into(),
            generation: Generation::FIRST,
            from: reached - 1,
            reached,
            tables: vec![table],
        };
        Delta { members: vec![member], records: 1 }
    }

    /// Commits `rows` into table `t` and moves checkpoint `p` to `checkpoint`.
    fn commit(db: &Database, rows: &[(u64, u64)], checkpoint: u64) {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(T).unwrap();
            for (key, value) in rows {
                table.insert(key, value).unwrap();
            }
            txn.open_table(crate::projection::CHECKPOINTS)
                .unwrap()
                .insert("p", checkpoint)
                .unwrap();
        }
        txn.commit().unwrap();
    }

    fn read(db: &Database, key: u64) -> Option<u64> {
        let table = read_table(db, T).unwrap();
        table.get(key).unwrap().map(|v| v.value())
    }

    #[test]
    fn a_query_sees_published_rows_and_never_a_committed_part_over_newer_stored_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        commit(&db, &[(1, 10)], 1);
        let pending = Arc::new(Pending::default());
        let _registration = register(&db, pending.clone());
        pending.push(part("p", 2, &[(1, 11), (2, 20)]));
        assert_eq!((read(&db, 1), read(&db, 2)), (Some(11), Some(20)), "published, not committed");

        // The committer commits that part and a newer one, but the deltas are still listed
        // (as when a query took its snapshot just before): the stored rows win.
        pending.push(part("p", 3, &[(1, 12)]));
        commit(&db, &[(1, 13), (2, 20)], 3);
        assert_eq!((read(&db, 1), read(&db, 2)), (Some(13), Some(20)));
        pending.committed(pending.snapshot()[..2].to_vec());
        assert_eq!((read(&db, 1), read(&db, 2)), (Some(13), Some(20)));
        drop(_registration);
        assert_eq!(pending_on(&db).len(), 0, "nothing listed once the host is gone");
    }
}
