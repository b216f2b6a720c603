//! The read-model file: redb with a bounded cache, on a file whose dirty pages a background
//! thread writes back early.
//!
//! Why: the host commits batches with `Durability::None`, and redb keeps the pages of such
//! commits in its write buffer (up to half its cache, 1 GiB by default) until the next durable
//! commit, which then writes them all and fsyncs them while the host waits. Measured under
//! 120k events/s (`benches/projections.rs`), that durable commit wrote 7,000–23,000 pages and
//! took 50–220 ms, every [`super::host`] durable interval: the lag's p99. With the cache bounded
//! to [`CACHE_BYTES`], redb writes buffered pages to the file as it goes (oldest first), and the
//! [`WRITEBACK_EVERY`] background `fdatasync` moves them on to the disk, so a durable commit is
//! left with at most half the cache to write and little to sync.
//!
//! The background sync never decides durability: redb's own sync at a durable commit still
//! does. It only starts the disk's work early. A failed background sync is kept and returned by
//! the next [`StorageBackend::sync_data`], so an error the kernel reports once is never lost.

use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use super::ProjectionError;

/// redb's cache for the read models (read cache and write buffer together). Half of it bounds
/// what a durable commit has to write; the OS page cache still holds the rest of the file for
/// reads. On a busy 2-core machine, 16 MiB took the bench's lag p99 from 32–209 ms to 23–137 ms
/// (paired runs; durable commits from 50–220 ms to 17–35 ms), but catch-up may be slower: its
/// 10,000-record batches overflow the write buffer (4 and 8 MiB were clearly slower; the
/// 16 MiB figures were too noisy to say). The trade-off to revisit on a quiet machine.
pub const CACHE_BYTES: usize = 16 << 20;

/// How often the background thread syncs the file when pages were written since.
pub const WRITEBACK_EVERY: Duration = Duration::from_millis(50);

/// Opens (or creates) the read-model database at `path` on a [`WritebackFile`].
pub(super) fn open(path: &Path) -> Result<Database, ProjectionError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(redb::DatabaseError::from)?;
    let backend = WritebackFile::start(file).map_err(ProjectionError::Spawn)?;
    Ok(Database::builder().set_cache_size(CACHE_BYTES).create_with_backend(backend)?)
}

/// redb's file backend, plus a thread that syncs the file every [`WRITEBACK_EVERY`] while it is
/// being written.
#[derive(Debug)]
struct WritebackFile {
    file: FileBackend,
    shared: Arc<Shared>,
    /// Dropped by `close`, which wakes the thread and ends it.
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Pages were written since the last background sync.
    written: AtomicBool,
    /// A background sync failed: the next `sync_data` reports it.
    failed: Mutex<Option<std::io::Error>>,
}

impl WritebackFile {
    fn start(file: File) -> std::io::Result<WritebackFile> {
        let syncing = file.try_clone()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("orderly-proj-sync".to_owned()).spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WRITEBACK_EVERY) {
                    if shared.written.swap(false, Ordering::AcqRel)
                        && let Err(e) = syncing.sync_data()
                    {
                        shared
                            .failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e);
                    }
                }
            })?
        };
        let file = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(WritebackFile {
            file,
            shared,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl StorageBackend for WritebackFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.shared.written.store(true, Ordering::Release);
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        if let Some(e) = self.shared.failed.lock().unwrap_or_else(PoisonError::into_inner).take() {
            return Err(e);
        }
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.shared.written.store(true, Ordering::Release);
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        drop(self.stop.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // The thread only syncs; a panic there has nothing to hand over.
            drop(thread.join());
        }
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }
}
