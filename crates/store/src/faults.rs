//! Fault injection for tests: a [`Storage`] that fails the Nth write or fsync, cuts a write
//! short, or flips a bit of what it writes. Not for production use.
//!
//! A failed fsync behaves as Linux's does: the writes since the last good fsync stay readable
//! (the page cache keeps them, marked clean) but never reached the device. The storage
//! remembers them, and a [`StorageFile::forget_cached`] of their file (which dropping the
//! cache would do) shows zeros there, as the device would.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use crate::storage::{DirStorage, Storage, StorageFile};

/// Which fault to inject next; shared by the storage and the test that arms it.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct FaultState {
    writes: u64,
    syncs: u64,
    fail_write: Option<u64>,
    fail_sync: Option<u64>,
    cut_write: Option<(u64, usize)>,
    flip_write: Option<(u64, usize)>,
    syncs_held: bool,
    /// No room for another file: creating one fails as `fallocate` does on a full disk.
    disk_full: bool,
    /// Cached pages dropped ([`StorageFile::forget_cached`]), by any file.
    forgotten: u64,
    /// Per file, the writes a failed fsync left only in the cache.
    lost: HashMap<String, Vec<(u64, usize)>>,
}

impl Faults {
    /// Shared fault settings, none armed.
    #[must_use]
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// The write after `n` more successful ones fails with an IO error, writing nothing.
    pub fn fail_write_after(&self, n: u64) {
        let mut s = self.lock();
        s.fail_write = Some(s.writes + n);
    }

    /// The fsync after `n` more successful ones fails with an IO error.
    pub fn fail_sync_after(&self, n: u64) {
        let mut s = self.lock();
        s.fail_sync = Some(s.syncs + n);
    }

    /// The write after `n` more writes stores only its first `keep` bytes, then fails.
    pub fn cut_write_after(&self, n: u64, keep: usize) {
        let mut s = self.lock();
        s.cut_write = Some((s.writes + n, keep));
    }

    /// The write after `n` more writes stores its bytes with bit `bit` flipped, and succeeds.
    pub fn flip_bit_after(&self, n: u64, bit: usize) {
        let mut s = self.lock();
        s.flip_write = Some((s.writes + n, bit));
    }

    /// Writes made so far (failed ones included).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// How many times a file's cached pages were dropped ([`StorageFile::forget_cached`]).
    #[must_use]
    pub fn forgotten(&self) -> u64 {
        self.lock().forgotten
    }

    /// While held, every fsync waits (so the writer's queue fills up); released by
    /// [`Faults::release_syncs`].
    pub fn hold_syncs(&self) {
        self.lock().syncs_held = true;
    }

    /// Lets waiting and later fsyncs go on.
    pub fn release_syncs(&self) {
        self.lock().syncs_held = false;
        self.released.notify_all();
    }

    /// From now on the disk has no room for another file: a file created is left empty and
    /// the creation fails with [`io::ErrorKind::StorageFull`], as `fallocate` fails.
    pub fn fill_disk(&self) {
        self.lock().disk_full = true;
    }

    /// Makes room on the disk again (see [`Faults::fill_disk`]).
    pub fn free_disk(&self) {
        self.lock().disk_full = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A [`DirStorage`] whose files obey a [`Faults`].
#[derive(Debug)]
pub struct FaultyStorage {
    inner: DirStorage,
    faults: Arc<Faults>,
}

impl FaultyStorage {
    /// Storage in `dir` with faults armed through `faults`.
    #[must_use]
    pub fn new(dir: &std::path::Path, faults: Arc<Faults>) -> FaultyStorage {
        FaultyStorage { inner: DirStorage::new(dir), faults }
    }
}

impl Storage for FaultyStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        if self.faults.lock().disk_full {
            std::fs::OpenOptions::new().write(true).create_new(true).open(self.path_of(name))?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left (injected)"));
        }
        let file = self.inner.create(name, len)?;
        Ok(Arc::new(FaultyFile::new(name, file, &self.faults)))
    }

    fn open(&self, name: &str, writable: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(name, writable)?;
        Ok(Arc::new(FaultyFile::new(name, file, &self.faults)))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.inner.replace(name, bytes)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.inner.path_of(name)
    }
}

#[derive(Debug)]
struct FaultyFile {
    name: String,
    inner: Arc<dyn StorageFile>,
    faults: Arc<Faults>,
    /// Writes since the last good fsync: `(offset, length)`.
    unsynced: Mutex<Vec<(u64, usize)>>,
}

impl FaultyFile {
    fn new(name: &str, inner: Arc<dyn StorageFile>, faults: &Arc<Faults>) -> FaultyFile {
        let (name, faults) = (name.to_owned(), faults.clone());
        FaultyFile { name, inner, faults, unsynced: Mutex::default() }
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, Vec<(u64, usize)>> {
        self.unsynced.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)?;
        self.unsynced().push((offset, buf.len()));
        Ok(())
    }
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (nth, fail, cut, flip) = {
            let mut s = self.faults.lock();
            s.writes += 1;
            (s.writes - 1, s.fail_write, s.cut_write, s.flip_write)
        };
        if fail == Some(nth) {
            return Err(io::Error::other("injected write failure"));
        }
        if let Some((at, keep)) = cut
            && at == nth
        {
            self.write(&buf[..keep.min(buf.len())], offset)?;
            return Err(io::Error::other("injected short write"));
        }
        if let Some((at, bit)) = flip
            && at == nth
        {
            let mut flipped = buf.to_vec();
            flipped[(bit / 8) % buf.len()] ^= 1 << (bit % 8);
            return self.write(&flipped, offset);
        }
        self.write(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.faults.lock();
        while s.syncs_held {
            s = self.faults.released.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        s.syncs += 1;
        if s.fail_sync == Some(s.syncs - 1) {
            let lost = std::mem::take(&mut *self.unsynced());
            s.lost.entry(self.name.clone()).or_default().extend(lost);
            return Err(io::Error::other("injected fsync failure"));
        }
        drop(s);
        self.inner.sync_data()?;
        self.unsynced().clear();
        Ok(())
    }

    fn forget_cached(&self) -> io::Result<()> {
        let lost = {
            let mut state = self.faults.lock();
            state.forgotten += 1;
            state.lost.remove(&self.name).unwrap_or_default()
        };
        for (offset, len) in lost {
            self.inner.write_at(&vec![0; len], offset)?;
        }
        self.inner.sync_data()?;
        self.inner.forget_cached()
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn deleted(&self) -> io::Result<bool> {
        self.inner.deleted()
    }
}
