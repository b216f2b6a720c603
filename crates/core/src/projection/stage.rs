//! What a projection reads and writes while it applies a batch.
//!
//! A [`Stage`] is one batch of one projection: a row read comes from the newest of what this
//! batch wrote, the host's cache of rows it read or published (a host is the only writer of
//! its tables, so a cached row is the row), the batches published but not yet committed
//! (`pending.rs`), and redb; rows written are kept, encoded, until the batch is published
//! (host) or written into the write transaction it reads (rebuild). A projection opens its
//! tables on the stage as [`Rows`].
//!
//! Why the cache: reading redb while the committer commits waits on redb's locks (measured:
//! up to 11 ms for a read transaction to begin, 0.2–4.5 ms for one projection's reads of a
//! 60-record batch), and that was most of the lag left. Hot rows (stock levels, the minute's
//! KPIs, orders being paid and shipped) are read from memory instead, and a batch that needs
//! nothing from redb does not open a read transaction at all.

use std::borrow::{Borrow, Cow};
use std::cell::{OnceCell, RefCell};
use std::collections::hash_map::Entry;
use std::marker::PhantomData;
use std::sync::Arc;

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value,
};
use rustc_hash::FxHashMap;

use super::ProjectionError;
use super::pending::{Delta, TableRows, Written};
use super::rebuild::Generation;

/// A host's cache: table name → encoded key → encoded value, of rows it read or published.
#[derive(Default)]
pub(super) struct RowCache {
    tables: FxHashMap<String, FxHashMap<Vec<u8>, Vec<u8>>>,
    bytes: usize,
}

/// Bytes of rows the cache holds at most; beyond, it starts over (hot rows come back at once).
const CACHE_BYTES: usize = 64 << 20;

impl RowCache {
    fn get(&self, table: &str, key: &[u8]) -> Option<&[u8]> {
        self.tables.get(table)?.get(key).map(Vec::as_slice)
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        if self.bytes > CACHE_BYTES {
            self.tables.clear();
            self.bytes = 0;
        }
        let rows = match self.tables.get_mut(table) {
            Some(rows) => rows,
            None => self.tables.entry(table.to_owned()).or_default(),
        };
        match rows.get_mut(key) {
            // A hot row (a stock level, the minute's KPIs) is rewritten in place.
            Some(cached) => {
                self.bytes = self.bytes + value.len() - cached.len();
                cached.clear();
                cached.extend_from_slice(value);
            }
            None => {
                self.bytes += key.len() + value.len();
                rows.insert(key.to_vec(), value.to_vec());
            }
        }
    }

    /// Takes in the rows of a published batch.
    pub(super) fn published(&mut self, delta: &Delta) {
        for table in delta.tables() {
            // Rows written as new (orders placed) are rarely read soon; leaving them out keeps
            // the cache for the rows read and changed again and again.
            for (key, row) in table.rows.iter().filter(|(_, row)| row.fresh.is_none()) {
                self.put(&table.name, key, &row.value);
            }
        }
    }
}

/// A read transaction begun only if a batch needs something from redb.
pub(super) struct Snapshot<'a> {
    db: &'a Database,
    txn: OnceCell<ReadTransaction>,
}

impl<'a> Snapshot<'a> {
    pub(super) fn new(db: &'a Database) -> Snapshot<'a> {
        Snapshot { db, txn: OnceCell::new() }
    }

    pub(super) fn txn(&self) -> Result<&ReadTransaction, ProjectionError> {
        if let Some(txn) = self.txn.get() {
            return Ok(txn);
        }
        let txn = self.db.begin_read()?;
        Ok(self.txn.get_or_init(|| txn))
    }
}

/// Where a stage reads what redb holds.
enum Source<'a> {
    /// A host's batch.
    Host { snapshot: &'a Snapshot<'a>, cache: &'a RefCell<RowCache>, pending: &'a [Arc<Delta>] },
    /// A rebuild: the write transaction the batch goes into.
    Write(&'a redb::WriteTransaction),
}

/// One batch of one projection: where its rows are read and where they are written. See the
/// module documentation.
pub struct Stage<'a> {
    generation: Generation,
    source: Source<'a>,
    written: RefCell<Vec<TableRows>>,
}

impl<'a> Stage<'a> {
    /// A host's batch.
    pub(super) fn for_host(
        generation: Generation,
        snapshot: &'a Snapshot<'a>,
        cache: &'a RefCell<RowCache>,
        pending: &'a [Arc<Delta>],
    ) -> Stage<'a> {
        let source = Source::Host { snapshot, cache, pending };
        Stage { generation, source, written: RefCell::default() }
    }

    /// A batch read from and written into `txn` (rebuilds, tools).
    pub(super) fn over_write(txn: &'a redb::WriteTransaction, generation: Generation) -> Stage<'a> {
        Stage { generation, source: Source::Write(txn), written: RefCell::default() }
    }

    /// The generation whose tables this stage reads and writes.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Opens table `base` (in this stage's generation) for the batch.
    pub fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        base: TableDefinition<'_, K, V>,
    ) -> Result<Rows<'_, K, V>, ProjectionError> {
        let name = self.generation.table(redb::TableHandle::name(&base));
        let stored = OnceCell::new();
        if let Source::Write(txn) = self.source {
            // Created now, so that a rebuild's new generation has every table.
            let table = txn.open_table(TableDefinition::<K, V>::new(&name))?;
            let _ = stored.set(Stored::Write(table));
        }
        // This table's rows in the batches not committed yet, newest first: found once here
        // rather than by name at every lookup (a tenth of the host's time when it was).
        let pending = match self.source {
            Source::Host { pending, .. } => pending
                .iter()
                .rev()
                .flat_map(|delta| delta.tables())
                .filter(|table| table.name == name)
                .collect(),
            Source::Write(_) => Vec::new(),
        };
        let mut written = self.written.borrow_mut();
        let slot = written.len();
        written.push(TableRows::new::<K, V>(name));
        Ok(Rows { stage: self, slot, stored, pending })
    }

    /// What the batch wrote, per table.
    pub(super) fn into_written(self) -> Vec<TableRows> {
        self.written.into_inner()
    }

    /// Writes what the batch wrote into the write transaction it read (rebuilds, tools).
    pub(super) fn write(self) -> Result<(), ProjectionError> {
        let Source::Write(txn) = self.source else {
            unreachable!("only a stage over a write transaction writes itself");
        };
        for table in self.written.into_inner() {
            TableRows::write_all(txn, &[&table])?;
        }
        Ok(())
    }

    fn table_name(&self, slot: usize) -> String {
        self.written.borrow()[slot].name.clone()
    }
}

impl std::fmt::Debug for Stage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: Vec<String> = self.written.borrow().iter().map(|t| t.name.clone()).collect();
        f.debug_struct("Stage")
            .field("generation", &self.generation)
            .field("tables", &tables)
            .finish_non_exhaustive()
    }
}

enum Stored<'s, K: Key + 'static, V: Value + 'static> {
    Read(redb::ReadOnlyTable<K, V>),
    Write(redb::Table<'s, K, V>),
    Missing,
}

/// One table of a projection during a batch: `get` sees what the batch, the batches before it
/// and redb hold, newest first; `insert` and `insert_new` write for the batch.
pub struct Rows<'s, K: Key + 'static, V: Value + 'static> {
    stage: &'s Stage<'s>,
    slot: usize,
    /// redb's table, opened at the first row not found elsewhere.
    stored: OnceCell<Stored<'s, K, V>>,
    /// The table's rows in the host's batches not committed yet, newest first.
    pending: Vec<&'s TableRows>,
}

impl<K: Key + 'static, V: Value + 'static> std::fmt::Debug for Rows<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("table", &self.stage.table_name(self.slot))
            .finish_non_exhaustive()
    }
}

/// A row read through [`Rows::get`]: its encoded value, borrowed from a batch not committed
/// yet or copied.
pub struct Row<'a, V: Value + 'static> {
    bytes: Cow<'a, [u8]>,
    _value: PhantomData<V>,
}

impl<V: Value + 'static> std::fmt::Debug for Row<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Row").field(&self.value()).finish()
    }
}

impl<'a, V: Value + 'static> Row<'a, V> {
    /// The row's value.
    pub fn value(&self) -> V::SelfType<'_> {
        V::from_bytes(&self.bytes)
    }

    fn new(bytes: Cow<'a, [u8]>) -> Row<'a, V> {
        Row { bytes, _value: PhantomData }
    }
}

impl<'s, K: Key + 'static, V: Value + 'static> Rows<'s, K, V> {
    /// The row of `key` as the batches so far left it.
    pub fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Row<'s, V>>, ProjectionError> {
        let bytes = K::as_bytes(key.borrow());
        let bytes = bytes.as_ref();
        let written = self.stage.written.borrow();
        let table = &written[self.slot];
        if let Some(row) = table.rows.get(bytes) {
            return Ok(Some(Row::new(Cow::Owned(row.value.clone()))));
        }
        let name = table.name.as_str();
        if let Source::Host { cache, .. } = &self.stage.source {
            if let Some(value) = RefCell::borrow(cache).get(name, bytes) {
                return Ok(Some(Row::new(Cow::Owned(value.to_vec()))));
            }
            if let Some(value) = self.pending_row(bytes) {
                return Ok(Some(Row::new(Cow::Borrowed(value))));
            }
        }
        let value = match self.stored(name)? {
            Stored::Read(table) => table.get(key.borrow())?.map(|v| copy::<V>(&v.value())),
            Stored::Write(table) => table.get(key.borrow())?.map(|v| copy::<V>(&v.value())),
            Stored::Missing => None,
        };
        if let (Source::Host { cache, .. }, Some(value)) = (&self.stage.source, &value) {
            cache.borrow_mut().put(name, bytes, value);
        }
        Ok(value.map(|value| Row::new(Cow::Owned(value))))
    }

    /// The value of `key` in the newest batch not committed yet that wrote it.
    fn pending_row(&self, key: &[u8]) -> Option<&'s [u8]> {
        self.pending.iter().find_map(|table| table.rows.get(key)).map(|row| row.value.as_slice())
    }

    fn stored(&self, name: &str) -> Result<&Stored<'s, K, V>, ProjectionError> {
        if let Some(stored) = self.stored.get() {
            return Ok(stored);
        }
        let Source::Host { snapshot, .. } = &self.stage.source else {
            unreachable!("a stage over a write transaction opens its tables at once");
        };
        let stored = match snapshot.txn()?.open_table(TableDefinition::<K, V>::new(name)) {
            Ok(table) => Stored::Read(table),
            Err(redb::TableError::TableDoesNotExist(_)) => Stored::Missing,
            Err(e) => return Err(e.into()),
        };
        Ok(self.stored.get_or_init(|| stored))
    }

    /// Writes the row of `key`.
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) {
        let key = K::as_bytes(key.borrow()).as_ref().to_vec();
        let value = V::as_bytes(value.borrow()).as_ref().to_vec();
        match self.stage.written.borrow_mut()[self.slot].rows.entry(key) {
            // A key written as new earlier in the batch stays new.
            Entry::Occupied(mut row) => row.get_mut().value = value,
            Entry::Vacant(slot) => {
                slot.insert(Written { value, fresh: None });
            }
        }
    }

    /// Writes the row of `key`, which must be new: returns `false` (writing nothing) if this
    /// batch, the host's cache or a batch not committed yet has it. Whether redb holds it is
    /// checked without a lookup here, when the batch is committed: one there is
    /// [`ProjectionError::Inconsistent`] at `position`, and the commit fails.
    pub fn insert_new<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
        position: u64,
    ) -> bool {
        let key = K::as_bytes(key.borrow()).as_ref().to_vec();
        let mut written = self.stage.written.borrow_mut();
        let table = &mut written[self.slot];
        let known = table.rows.contains_key(&key)
            || match &self.stage.source {
                Source::Host { cache, .. } => {
                    RefCell::borrow(cache).get(&table.name, &key).is_some()
                        || self.pending_row(&key).is_some()
                }
                Source::Write(_) => false,
            };
        if known {
            return false;
        }
        let value = V::as_bytes(value.borrow()).as_ref().to_vec();
        table.rows.insert(key, Written { value, fresh: Some(position) });
        true
    }
}

fn copy<V: Value + 'static>(value: &V::SelfType<'_>) -> Vec<u8> {
    V::as_bytes(value).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TableDefinition<'static, u64, u64> = TableDefinition::new("t");

    #[test]
    fn a_row_written_as_new_stays_new_when_the_batch_writes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let stage = Stage::over_write(&txn, Generation::FIRST);
        let mut rows = stage.table(T).unwrap();
        assert!(rows.insert_new(1, 10, 5));
        assert!(!rows.insert_new(1, 10, 6), "known in this batch");
        rows.insert(1, 11);
        rows.insert(2, 20);
        assert_eq!(rows.get(1).unwrap().unwrap().value(), 11);
        drop(rows);
        let written = stage.into_written();
        let row = |key: u64| &written[0].rows[key.to_le_bytes().as_slice()];
        assert_eq!(
            (row(1).value.as_slice(), row(1).fresh),
            (11u64.to_le_bytes().as_slice(), Some(5))
        );
        assert_eq!(row(2).fresh, None);
    }
}
