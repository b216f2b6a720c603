//! The read-model file: redb with a bounded cache, on a **write-behind** file whose writes and
//! syncs a background thread carries out, in order.
//!
//! Why: the host commits batches with `Durability::None` and makes them durable with a
//! periodic durable commit (see `host.rs`). On a plain file that commit writes every page the
//! batches since changed and fsyncs them while the host waits: measured under 120k events/s
//! (`benches/projections.rs`, a busy 2-core machine), 9–24 ms per durable commit every 100 ms
//! to 2 s, of which the fsync was 5–12 ms and the page writes 2–15 ms; that stall was the lag's
//! p99. Here redb's `write` only queues a copy of the page and `sync_data` only queues a sync,
//! so the host goes on with its next batch while the disk catches up.
//!
//! Why it is safe: the thread performs the queued operations strictly in the order redb issued
//! them — writes, then the sync, then later writes — so whatever a crash (kill or power loss)
//! leaves on disk is a state redb itself could have left had it been stopped at some point of
//! its own sequence of writes and syncs, which its commit protocol recovers from. The only
//! difference is that a durable commit returns before it is on disk; read models are derived,
//! and what such a commit promised (models and checkpoints together) is kept either way, so
//! that costs at most replaying a few more events after a crash. Reads see queued writes (each
//! is kept until it is on the file); resizing waits until the queue is empty, so it stays in
//! order too; closing drains the queue (redb's last sync included). A failed write or sync
//! stops the thread for good (later operations never reach the file) and fails every later
//! write, sync and resize: fail-stop, never retried.
//!
//! The thread is woken by a sync (or by [`WRITE_BEHIND_BYTES`]` / 4` of queued writes) and then
//! carries out everything queued, so handing a page over costs a copy, not a syscall.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use super::ProjectionError;

/// redb's cache for the read models (read cache and write buffer together). Half of it bounds
/// the pages a durable commit hands over at once, which is most of that commit's time on the
/// host (at 120k events/s, about 2,000 pages and 4–9 ms with 16 MiB; 2–7 ms with 8 MiB, 9–16 ms
/// with 32 MiB); the OS page cache still holds the rest of the file for reads. 8 MiB made
/// catch-up slower (570–645k against 635–660k events/s over 1M events, paired runs).
pub const CACHE_BYTES: usize = 16 << 20;

/// Most bytes of page writes queued ahead of the disk; a write that would go beyond waits for
/// the background thread (backpressure instead of unbounded memory).
pub const WRITE_BEHIND_BYTES: usize = 64 << 20;

/// Queued writes that wake the thread without a sync.
const WAKE_BYTES: usize = WRITE_BEHIND_BYTES / 4;

const _: () = assert!(WRITE_BEHIND_BYTES >= CACHE_BYTES, "a durable commit's pages fit at once");
const _: () =
    assert!(WAKE_BYTES > 0 && WAKE_BYTES < WRITE_BEHIND_BYTES, "woken before writers wait");

/// Opens (or creates) the read-model database at `path` on a [`WriteBehindFile`].
pub(super) fn open(path: &Path) -> Result<Database, ProjectionError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(redb::DatabaseError::from)?;
    if creation_was_interrupted(&file).map_err(redb::DatabaseError::from)? {
        tracing::info!(path = %path.display(), "the read models' file was never completed (its creation was interrupted): created again");
        file.set_len(0).map_err(redb::DatabaseError::from)?;
    }
    let backend = WriteBehindFile::start(file).map_err(ProjectionError::Spawn)?;
    Ok(Database::builder().set_cache_size(CACHE_BYTES).create_with_backend(backend)?)
}

/// Whether `file` is what an interrupted creation leaves: redb sizes a new file and writes its
/// header before its magic number, which comes last, once the rest is on disk; a file with
/// bytes but no magic number was never a database, and redb refuses to open it ("not a redb
/// database"). Nothing was ever committed to such a file, so creating it again loses nothing;
/// a file that starts with anything else than zeros is left for redb to refuse.
fn creation_was_interrupted(mut file: &File) -> io::Result<bool> {
    use std::io::Read;
    /// The length of redb's magic number, at the start of the file.
    const MAGIC_LEN: u64 = 9;
    let mut start = Vec::new();
    file.by_ref().take(MAGIC_LEN).read_to_end(&mut start)?;
    Ok(!start.is_empty() && start.iter().all(|&b| b == 0))
}

/// redb's file backend with writes and syncs queued for a background thread; see the module
/// documentation.
#[derive(Debug)]
struct WriteBehindFile {
    /// Reads, length, resizing and locks; writes and syncs go through the queue.
    file: FileBackend,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when an operation is queued or closing starts.
    queued: Condvar,
    /// Signalled when the thread has finished an operation (or failed).
    done: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    ops: VecDeque<Op>,
    /// Every queued write not on the file yet, by (offset, sequence number), for reads.
    pending: BTreeMap<(u64, u64), Arc<[u8]>>,
    /// The length of the longest write queued so far: how far back a read looks for overlaps.
    longest: u64,
    next_seq: u64,
    /// Bytes of the queued writes (the one in progress included).
    bytes: usize,
    /// The thread is carrying out operations it took off the queue.
    busy: bool,
    /// The thread waits for operations.
    sleeping: bool,
    /// Why the thread stopped: an operation failed. Kept for every later caller.
    failed: Option<(io::ErrorKind, String)>,
    closing: bool,
}

#[derive(Debug)]
enum Op {
    Write { seq: u64, offset: u64, data: Arc<[u8]> },
    Sync,
}

impl Queue {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, why)) => Err(io::Error::new(
                *kind,
                format!("an earlier write or sync of the read-model file failed: {why}"),
            )),
        }
    }

    fn drained(&self) -> bool {
        self.failed.is_some() || (self.ops.is_empty() && !self.busy)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_done<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.done.wait(queue).unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every queued operation is carried out (or the thread failed).
    fn drain(&self) -> MutexGuard<'_, Queue> {
        let mut queue = self.lock();
        while !queue.drained() {
            if queue.sleeping {
                self.queued.notify_one();
            }
            queue = self.wait_done(queue);
        }
        queue
    }

    /// The background thread: carries out the queued operations in order until closed or an
    /// operation fails.
    fn run(&self, file: &File) {
        loop {
            // Everything queued so far, taken at once: one lock and one wake-up per round, not
            // per page.
            let ops = {
                let mut queue = self.lock();
                loop {
                    if queue.failed.is_some() {
                        return;
                    }
                    if !queue.ops.is_empty() {
                        queue.busy = true;
                        break std::mem::take(&mut queue.ops);
                    }
                    if queue.closing {
                        return;
                    }
                    queue.sleeping = true;
                    queue = self.queued.wait(queue).unwrap_or_else(PoisonError::into_inner);
                    queue.sleeping = false;
                }
            };
            let mut failure = None;
            let mut done = 0;
            for op in &ops {
                let result = match op {
                    Op::Write { offset, data, .. } => write_at(file, *offset, data),
                    Op::Sync => file.sync_data(),
                };
                if let Err(e) = result {
                    failure = Some(e);
                    break;
                }
                done += 1;
            }
            let mut queue = self.lock();
            queue.busy = false;
            for op in ops.into_iter().take(done) {
                if let Op::Write { seq, offset, data } = op {
                    queue.bytes -= data.len();
                    queue.pending.remove(&(offset, seq));
                }
            }
            if let Some(e) = failure {
                // Nothing queued after a failed operation may reach the file. The copies in
                // `pending` stay, so reads keep seeing what redb wrote.
                queue.failed = Some((e.kind(), e.to_string()));
                queue.ops.clear();
            }
            drop(queue);
            self.done.notify_all();
        }
    }

    /// Wakes the thread if it waits for work.
    fn wake(&self, queue: MutexGuard<'_, Queue>) {
        let sleeping = queue.sleeping;
        drop(queue);
        if sleeping {
            self.queued.notify_one();
        }
    }
}

impl WriteBehindFile {
    fn start(file: File) -> io::Result<WriteBehindFile> {
        let writing = file.try_clone()?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("orderly-proj-write".to_owned()).spawn(move || {
                crate::engine::yield_to_others();
                shared.run(&writing)
            })?
        };
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(WriteBehindFile { file, shared, thread: Mutex::new(Some(thread)) })
    }

    /// Drains the queue and ends the thread; the failure that stopped it, if any.
    fn finish(&self) -> io::Result<()> {
        let result = {
            let mut queue = self.shared.drain();
            queue.closing = true;
            queue.check()
        };
        self.shared.queued.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // The thread holds no result; a panic there (a bug) shows in the queue state.
            drop(thread.join());
        }
        result
    }
}

impl Drop for WriteBehindFile {
    fn drop(&mut self) {
        // Closed already, or dropped without a close (redb failed to open): queued writes
        // still reach the file in order.
        drop(self.finish());
    }
}

impl StorageBackend for WriteBehindFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let end = offset + out.len() as u64;
        // The queued writes overlapping the range. Taken before the file is read: one the
        // thread finishes meanwhile is on the file by then, and is copied again here.
        let mut overlaps: Vec<(u64, u64, Arc<[u8]>)> = {
            let queue = self.shared.lock();
            let from = offset.saturating_sub(queue.longest.saturating_sub(1));
            queue
                .pending
                .range((from, 0)..(end, 0))
                .filter(|((at, _), data)| at + data.len() as u64 > offset)
                .map(|((at, seq), data)| (*seq, *at, data.clone()))
                .collect()
        };
        overlaps.sort_unstable_by_key(|(seq, ..)| *seq);
        // From the newest write that covers the whole range (usually a page read back as it
        // was written), else from the file; then every later write, oldest first.
        let covering = overlaps
            .iter()
            .rposition(|(_, at, data)| *at <= offset && at + data.len() as u64 >= end);
        let later = match covering {
            Some(newest) => newest,
            None => {
                self.file.read(offset, out)?;
                0
            }
        };
        for (_, at, data) in &overlaps[later..] {
            let (from, to) = ((*at).max(offset), (at + data.len() as u64).min(end));
            let source = &data[usize::try_from(from - at).expect("within a write")..]
                [..usize::try_from(to - from).expect("within a write")];
            out[usize::try_from(from - offset).expect("within the read")..][..source.len()]
                .copy_from_slice(source);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        // In order with the writes and syncs before it: only once they are all carried out.
        // The queue stays locked, so no write slips in between.
        let queue = self.shared.drain();
        queue.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut queue = self.shared.lock();
        queue.check()?;
        queue.ops.push_back(Op::Sync);
        self.shared.wake(queue);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let data: Arc<[u8]> = data.into();
        let mut queue = self.shared.lock();
        queue.check()?;
        while queue.bytes > 0 && queue.bytes + data.len() > WRITE_BEHIND_BYTES {
            if queue.sleeping {
                self.shared.queued.notify_one();
            }
            queue = self.shared.wait_done(queue);
            queue.check()?;
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.bytes += data.len();
        queue.longest = queue.longest.max(data.len() as u64);
        queue.pending.insert((offset, seq), data.clone());
        queue.ops.push_back(Op::Write { seq, offset, data });
        // Writes wait for the next sync (or for enough of them): woken per page, the thread
        // would take the pages of a durable commit a few at a time, contending for the queue and
        // a core with the host while redb hands them over.
        if queue.bytes >= WAKE_BYTES {
            self.shared.wake(queue);
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.finish()?;
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

/// Writes all of `data` at `offset`.
#[cfg(unix)]
fn write_at(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

/// Writes all of `data` at `offset`.
#[cfg(windows)]
fn write_at(file: &File, offset: u64, mut data: &[u8]) -> io::Result<()> {
    let mut at = offset;
    while !data.is_empty() {
        match std::os::windows::fs::FileExt::seek_write(file, data, at)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                data = &data[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &WriteBehindFile, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        file.read(offset, &mut out).unwrap();
        out
    }

    #[test]
    fn reads_see_queued_writes_newest_last_and_close_leaves_them_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = WriteBehindFile::start(File::create_new(&path).unwrap()).unwrap();
        file.set_len(64).unwrap();
        file.write(0, &[1; 16]).unwrap();
        file.write(8, &[2; 16]).unwrap();
        file.sync_data().unwrap();
        file.write(4, &[3; 8]).unwrap();
        file.write(0, &[4; 2]).unwrap();
        let mut expected = vec![0_u8; 64];
        expected[..16].fill(1);
        expected[8..24].fill(2);
        expected[4..12].fill(3);
        expected[..2].fill(4);
        // Whatever the thread has carried out so far, reads see every write in order.
        assert_eq!(read(&file, 0, 64), expected);
        assert_eq!(read(&file, 6, 4), expected[6..10]);
        // Resizing waits for the queue, so it cannot cut a write queued before it.
        file.set_len(20).unwrap();
        assert_eq!(read(&file, 0, 20), expected[..20]);
        file.close().unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), expected[..20]);
    }

    /// What a kill during redb's creation of the file leaves (sized with zeros; or with its
    /// header but not yet its magic number) opens as a new database; a file that is something
    /// else is refused and left as it was.
    #[test]
    fn a_file_whose_creation_was_interrupted_is_created_again_and_a_foreign_one_refused() {
        const T: redb::TableDefinition<'static, u64, u64> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let mut header_only = vec![0_u8; 1 << 20];
        header_only[9..64].fill(7);
        for (name, bytes) in [("zeros", vec![0_u8; 1 << 20]), ("header", header_only)] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let db = open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
            drop(db);
            let db = open(&path).unwrap();
            let read = redb::ReadableDatabase::begin_read(&db).unwrap();
            assert_eq!(read.open_table(T).unwrap().get(1).unwrap().unwrap().value(), 2, "{name}");
        }
        let foreign = dir.path().join("foreign");
        std::fs::write(&foreign, b"not a database, and not empty").unwrap();
        assert!(open(&foreign).is_err());
        assert_eq!(std::fs::read(&foreign).unwrap(), b"not a database, and not empty");
    }
}
