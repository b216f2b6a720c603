//! The log handle: open (with recovery), append through the writer, read, subscribe.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::error::{AppendError, Corruption, OpenError, Problem, ReadError};
use crate::faults::{Faults, FaultyStorage};
use crate::index::{Index, SegmentMeta};
use crate::limits::{
    DEFAULT_QUEUE_DEPTH, DEFAULT_SEGMENT_SIZE, MIN_SEGMENT_SIZE, SEGMENT_HEADER_LEN,
};
use crate::observer::{OpenProgress, SyncObserver};
use crate::position::{Position, StreamVersion};
use crate::record::{self, ChainHash, NewRecord, Record, RecordView};
use crate::recovery::{self, Recovery};
use crate::segment::{self, Window};
use crate::storage::{DirLock, DirStorage, Storage};
use crate::writer::{BatchBuffers, Completion, EncodedBatch, Request, Writer};

/// How the log is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Bytes preallocated for each segment file.
    pub segment_size: u64,
    /// Batches that may wait for the writer before appends are refused.
    pub queue_depth: usize,
    /// Told of every durable group (for metrics); `None` observes nothing.
    pub observer: Option<SyncObserver>,
    /// Told how far an open's verifying pass has come; `None` reports nothing.
    pub open_progress: Option<OpenProgress>,
    /// For tests of the layers above: the log's files obey these faults (a failed write or
    /// fsync, …) as [`crate::faults::FaultyStorage`] does. `None` in production.
    pub faults: Option<FaultsHandle>,
    /// How often the writer records a checkpoint at the durable head while it runs (a clean
    /// stop records one too): after a crash, a damaged record it covers is refused as a loss,
    /// not cut as a torn write. Each costs a small file replaced with two syncs.
    pub checkpoint_every: Duration,
}

/// [`LogConfig::checkpoint_every`] by default: a few milliseconds of syncing a second.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// [`Faults`] shared with a [`LogConfig`]; two handles are equal when they are the same faults.
#[derive(Clone, Debug)]
pub struct FaultsHandle(pub Arc<Faults>);

impl PartialEq for FaultsHandle {
    fn eq(&self, other: &FaultsHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FaultsHandle {}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_size: DEFAULT_SEGMENT_SIZE,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            observer: None,
            open_progress: None,
            faults: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

/// Where an appended batch landed: positions `first..next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Position of the batch's first record.
    pub first: Position,
    /// Position after the batch's last record.
    pub next: Position,
}

/// State shared by the writer, readers and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    index: RwLock<Index>,
    /// Number of committed records: every position below it is durable.
    head: AtomicU64,
    commits: Mutex<()>,
    committed: Condvar,
    /// Why the log stopped, set once (the first failure wins). Read before every append by
    /// the engine's decision thread: a `OnceLock` reads with one atomic load, no lock.
    failure: OnceLock<String>,
    pub(crate) observer: Option<SyncObserver>,
    /// Encoded batch buffers for appenders to reuse.
    pub(crate) batch_buffers: BatchBuffers,
}

impl Shared {
    pub(crate) fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Makes every position below `head` visible to readers and wakes subscribers.
    pub(crate) fn publish(&self, head: u64) {
        self.head.store(head, Ordering::Release);
        let _guard = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        self.committed.notify_all();
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    pub(crate) fn set_failure(&self, cause: String) {
        let _first_wins = self.failure.set(cause);
        let _guard = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        self.committed.notify_all();
    }

    /// The head once it is past `position`, or after `timeout` (one too long to be a time,
    /// such as `Duration::MAX`, waits for as long as it takes).
    fn wait_beyond(&self, position: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let head = self.head();
            if head > position || self.failure().is_some() {
                return head;
            }
            guard = match deadline {
                None => self.committed.wait(guard).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return head;
                    };
                    self.committed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// A durable append-only log of records in segment files, with one writer (three pipelined
/// threads: encode, seal, sync).
///
/// Cloning the handle is cheap; the writer stops when the last handle is dropped, after
/// answering every queued batch.
#[derive(Clone, Debug)]
pub struct Log {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: Option<Sender<Request>>,
    /// Size of new segments: no batch may be larger.
    segment_size: u64,
    /// The writer's thread (which, with the seal and sync threads, holds the folder's lock
    /// until they have answered every batch).
    writer: Option<JoinHandle<()>>,
    /// The log's identity on its own threads ([`crate::writer::log_id`]).
    id: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            // The last handle dropped by an append's callback is dropped on one of the log's
            // own threads, which the writer waits for as it stops: waiting for the writer
            // there would never end. It then stops on its own, and releases the lock when it
            // has.
            if crate::writer::on_threads_of(self.id) {
                return;
            }
            // A panic in the writer is a bug already reported on stderr; nothing more to do.
            let _ = writer.join();
        }
    }
}

impl Log {
    /// Opens (or creates) the log in `dir` for writing: takes the folder's lock, verifies the
    /// log, cuts a torn tail, and starts the writer.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, Recovery), OpenError> {
        let io_err = |source| OpenError::Io { path: dir.to_path_buf(), source };
        Log::refuse_an_empty_path(dir)?;
        crate::storage::create_dir_durably(dir).map_err(io_err)?;
        let lock = DirLock::acquire(dir).map_err(|e| match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => OpenError::Locked { dir: dir.to_path_buf() },
            _ => io_err(e),
        })?;
        let storage: Arc<dyn Storage> = match &config.faults {
            Some(faults) => Arc::new(FaultyStorage::new(dir, faults.0.clone())),
            None => Arc::new(DirStorage::new(dir)),
        };
        Log::open_with(storage, config, Some(lock))
    }

    /// Whether another process holds the writer's lock on the log in `dir` (a server running
    /// on it), so that a program can refuse early and clearly; [`Log::open`] still takes the
    /// lock for real (the answer may change right after). A folder with no log is not held.
    pub fn held_elsewhere(dir: &Path) -> std::io::Result<bool> {
        if !dir.join(crate::storage::LOCK_FILE).exists() {
            return Ok(false);
        }
        match DirLock::acquire(dir) {
            Ok(_released_at_once) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Refuses an empty path for a log's folder: joined with a file's name, it names a file in
    /// the working folder (a lock left there). For programs that look in the folder before
    /// they open it.
    pub fn refuse_an_empty_path(dir: &Path) -> Result<(), OpenError> {
        if !dir.as_os_str().is_empty() {
            return Ok(());
        }
        let empty = std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is empty");
        Err(OpenError::Io { path: dir.to_path_buf(), source: empty })
    }

    /// Whether `dir` itself is (or was) a log's folder: it holds a segment file, or the lock
    /// or checkpoint file a log leaves. For programs that take a folder holding a log, to
    /// refuse the log's own folder given by mistake rather than put a new log inside it.
    pub fn is_log_folder(dir: &Path) -> std::io::Result<bool> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if crate::segment::parse_name(&name).is_some()
                || name == crate::storage::LOCK_FILE
                || name == crate::checkpoint::FILE_NAME
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Opens the log on any [`Storage`] (tests use [`crate::faults::FaultyStorage`]). The
    /// caller is responsible for there being one writer per log.
    pub fn open_on(
        storage: Arc<dyn Storage>,
        config: LogConfig,
    ) -> Result<(Log, Recovery), OpenError> {
        Log::open_with(storage, config, None)
    }

    fn open_with(
        storage: Arc<dyn Storage>,
        config: LogConfig,
        lock: Option<DirLock>,
    ) -> Result<(Log, Recovery), OpenError> {
        if config.segment_size < MIN_SEGMENT_SIZE || config.queue_depth == 0 {
            return Err(OpenError::InvalidConfig(format!(
                "segment_size must be at least {MIN_SEGMENT_SIZE} and queue_depth at least 1, \
                 got {config:?}"
            )));
        }
        let recovered = recovery::recover(&*storage, true, config.open_progress.clone())?;
        let mut index = recovered.index;
        let segment = match index.segments.last() {
            Some(last) if !older_format(last).map_err(segment_io(&*storage, last))? => last.clone(),
            Some(last) if !holds_records(last) => {
                // Nothing in it to protect: its header is rewritten in the current format (64
                // bytes within the first sector, which the device writes whole).
                let header = segment::encode_header(last.first);
                last.file
                    .write_at(&header, 0)
                    .and_then(|()| last.file.sync_data())
                    .map_err(segment_io(&*storage, last))?;
                last.clone()
            }
            last => {
                if let Some(last) = last {
                    close_segment(last).map_err(segment_io(&*storage, last))?;
                }
                begin_segment(&*storage, &mut index, recovered.next_position, config.segment_size)?
            }
        };
        let mut capacity = segment.file.size().map_err(segment_io(&*storage, &segment))?;
        // A last segment with little room left is rolled over now, not at the first append
        // after the open: a disk too full for the next segment (as after a roll that failed)
        // then fails the open, rather than the first command after a start said it was ready.
        let room = capacity.saturating_sub(segment.committed_end.load(Ordering::Acquire));
        let segment = if holds_records(&segment) && room < config.segment_size / ROOM_TO_KEEP {
            close_segment(&segment).map_err(segment_io(&*storage, &segment))?;
            let next = recovered.next_position;
            let segment = begin_segment(&*storage, &mut index, next, config.segment_size)?;
            capacity = config.segment_size;
            segment
        } else {
            segment
        };
        // An empty last segment made with a smaller segment size would be rolled over to a file
        // of its own name when a batch does not fit: it grows to the size configured now.
        if !holds_records(&segment) && capacity < config.segment_size {
            segment
                .file
                .set_len(config.segment_size)
                .and_then(|()| segment.file.sync_data())
                .map_err(segment_io(&*storage, &segment))?;
            capacity = config.segment_size;
        }
        let offset = segment.committed_end.load(Ordering::Acquire);
        let shared = Arc::new(Shared {
            storage,
            index: RwLock::new(index),
            head: AtomicU64::new(recovered.next_position),
            commits: Mutex::new(()),
            committed: Condvar::new(),
            failure: OnceLock::new(),
            observer: config.observer.clone(),
            batch_buffers: BatchBuffers::default(),
        });
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_depth);
        let writer = Writer {
            shared: shared.clone(),
            requests: receiver,
            segment,
            capacity,
            segment_size: config.segment_size,
            offset,
            // After the last record, the segment may still be unwritten extents.
            written: offset,
            next_position: recovered.next_position,
            last_hash: recovered.last_hash,
            checkpoint_every: config.checkpoint_every,
            buf: Vec::with_capacity(crate::limits::MAX_GROUP_BYTES),
            waiting: Vec::new(),
            lock: lock.map(Arc::new),
        };
        let writer = std::thread::Builder::new()
            .name("orderly-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| OpenError::Io { path: ".".into(), source })?;
        let inner = Inner {
            requests: Some(sender),
            segment_size: config.segment_size,
            writer: Some(writer),
            id: crate::writer::log_id(&shared),
        };
        Ok((Log { shared, inner: Arc::new(inner) }, recovered.report))
    }

    /// Queues `records` as one batch and calls `done` once it is durable (or refused). The
    /// batch is atomic: after a crash it is either all there or not at all. Returns
    /// [`AppendError::QueueFull`] at once when the writer is too far behind, and
    /// [`AppendError::Invalid`] at once for a batch outside the limits; `done` is not called
    /// then. The records are encoded on the calling thread, before they are queued.
    pub fn append_with(
        &self,
        records: Vec<NewRecord>,
        done: impl FnOnce(Result<Appended, AppendError>) + Send + 'static,
    ) -> Result<(), AppendError> {
        let request = self.request(&records, Box::new(done))?;
        self.requests()?.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => AppendError::QueueFull,
            TrySendError::Disconnected(_) => AppendError::Closed,
        })
    }

    /// Like [`Log::append_with`], but waits for room in the queue instead of refusing: for a
    /// single upstream writer (the engine) that applies its own back-pressure further up. The
    /// records are only borrowed (they are encoded before this returns), so that such a writer
    /// can reuse their buffers for its next batch.
    pub fn append_or_wait(
        &self,
        records: &[NewRecord],
        done: impl FnOnce(Result<Appended, AppendError>) + Send + 'static,
    ) -> Result<(), AppendError> {
        let request = self.request(records, Box::new(done))?;
        self.requests()?.send(request).map_err(|_| AppendError::Closed)
    }

    /// Checks and encodes a batch for the writer.
    fn request(&self, records: &[NewRecord], done: Completion) -> Result<Request, AppendError> {
        let batch =
            EncodedBatch::new(records, self.inner.segment_size, &self.shared.batch_buffers)?;
        Ok(Request { batch, done })
    }

    /// The writer's queue, unless the log stopped or is closing.
    fn requests(&self) -> Result<&Sender<Request>, AppendError> {
        if let Some(cause) = self.shared.failure() {
            return Err(AppendError::Stopped { cause });
        }
        self.inner.requests.as_ref().ok_or(AppendError::Closed)
    }

    /// Appends `records` as one batch and returns once it is durable (fdatasync returned).
    pub fn append(&self, records: Vec<NewRecord>) -> Result<Appended, AppendError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.append_with(records, move |outcome| {
            // The receiver waits below, so this send cannot fail.
            let _ = tx.send(outcome);
        })?;
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// The number of committed records; the next record will get this position.
    #[must_use]
    pub fn head(&self) -> Position {
        self.reader().head()
    }

    /// The committed version of `stream`: how many committed records it has.
    #[must_use]
    pub fn stream_version(&self, stream: &[u8]) -> StreamVersion {
        self.reader().stream_version(stream)
    }

    /// Number of distinct streams (committed or being committed).
    #[must_use]
    pub fn stream_count(&self) -> usize {
        self.shared.index().stream_count()
    }

    /// The storage error that stopped the log, if one did.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Reads committed records from `from` up to the head as it is now.
    #[must_use]
    pub fn read_from(&self, from: Position) -> Reader {
        self.reader().read_from(from)
    }

    /// The chain hash at the committed record at `position` (see `docs/design/event-log.md`):
    /// it commits to that record and, through the hash each record or batch carries of what is
    /// before it, to every record before it. `None` if `position` is not committed. Read from
    /// the disk, checksums verified; the hash is computed (over the record's batch up to it,
    /// for record format 3), not taken from the next record.
    pub fn chain_hash_at(&self, position: Position) -> Option<Result<ChainHash, ReadError>> {
        self.reader().chain_hash_at(position)
    }

    /// Reads every committed record of `stream`, in order.
    pub fn read_stream(&self, stream: &[u8]) -> Result<Vec<Record>, ReadError> {
        self.reader().read_stream(stream)
    }

    /// Blocks until the head moves past `position` or `timeout` passes; returns the head.
    pub fn wait_beyond(&self, position: Position, timeout: Duration) -> Position {
        self.reader().wait_beyond(position, timeout)
    }

    /// A handle that can read this log but not append to it.
    #[must_use]
    pub fn reader(&self) -> LogReader {
        LogReader { shared: self.shared.clone() }
    }

    /// Follows the log from `from`: yields committed records and waits for new ones.
    #[must_use]
    pub fn subscribe(&self, from: Position) -> Subscription {
        self.reader().subscribe(from)
    }
}

/// A read-only handle on a [`Log`]: for readers next to a single appender that must stay the
/// only one (the engine). It does not keep the writer or the folder lock alive.
#[derive(Clone, Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogReader {
    /// See [`Log::head`].
    #[must_use]
    pub fn head(&self) -> Position {
        Position(self.shared.head())
    }

    /// See [`Log::read_from`].
    #[must_use]
    pub fn read_from(&self, from: Position) -> Reader {
        Reader::new(self.shared.clone(), from.0, self.shared.head())
    }

    /// See [`Log::chain_hash_at`].
    pub fn chain_hash_at(&self, position: Position) -> Option<Result<ChainHash, ReadError>> {
        if position >= self.head() {
            return None;
        }
        Some(self.compute_chain_hash_at(position.0))
    }

    /// The chain hash at the committed record at `position`: from its own bytes for record
    /// formats 1 and 2; for format 3, from its batch's bytes up to it. The batch is found back
    /// by the hash all its records carry, in doubling steps (1, 2, 4, … records), within the
    /// record's segment (a batch never spans two).
    fn compute_chain_hash_at(&self, position: u64) -> Result<ChainHash, ReadError> {
        let mut reader = Reader::new(self.shared.clone(), position, position + 1);
        // `Ok`: the key its format 3 batch carries, to hash the batch with; `Err`: the record
        // of an older format is its own chain point, and this is the hash at it.
        let key = reader.read_next_with(|view| {
            view.chains_by_batch()
                .then_some(*view.prev_hash)
                .ok_or_else(|| record::record_chain_hash(view.bytes))
        })?;
        let key = match key {
            Ok(key) => key,
            Err(hash) => return Ok(hash),
        };
        let carries_key = |view: RecordView<'_>| view.chains_by_batch() && *view.prev_hash == key;
        let segment_first = self.shared.index().locate(position).map_or(0, |(s, _)| s.first);
        // `inside` is in the batch; the batch starts after `from` or at it.
        let (mut inside, mut step) = (position, 1);
        let from = loop {
            let at = inside.saturating_sub(step).max(segment_first);
            if at == inside {
                break at;
            }
            reader.seek(at);
            if !reader.read_next_with(carries_key)? {
                break at;
            }
            (inside, step) = (at, step * 2);
        };
        // The batch's bytes, hashed a piece at a time (a batch may fill a segment).
        let mut hasher = blake3::Hasher::new_keyed(&key);
        let mut piece = Vec::new();
        let mut reader = Reader::new(self.shared.clone(), from, position + 1);
        for _ in from..=position {
            reader.read_next_with(|view| {
                if carries_key(view) {
                    piece.extend_from_slice(view.bytes);
                }
            })?;
            if piece.len() as u64 >= segment::HASH_EVERY {
                hasher.update(&piece);
                piece.clear();
            }
        }
        Ok(*hasher.update(&piece).finalize().as_bytes())
    }

    /// See [`Log::read_stream`].
    pub fn read_stream(&self, stream: &[u8]) -> Result<Vec<Record>, ReadError> {
        let head = self.shared.head();
        let positions = self.shared.index().stream_positions(stream, head);
        // One reader, moved from position to position, so its read buffer serves every record
        // of the stream that lies in it.
        let mut reader = Reader::new(self.shared.clone(), 0, 0);
        let mut records = Vec::with_capacity(positions.len());
        for p in positions {
            reader.seek(p);
            match reader.next() {
                Some(record) => records.push(record?),
                None => unreachable!("a committed position below the head is readable"),
            }
        }
        Ok(records)
    }

    /// See [`Log::stream_version`].
    #[must_use]
    pub fn stream_version(&self, stream: &[u8]) -> StreamVersion {
        let head = self.shared.head();
        StreamVersion(self.shared.index().stream_len_below(stream, head))
    }

    /// See [`Log::subscribe`].
    #[must_use]
    pub fn subscribe(&self, from: Position) -> Subscription {
        Subscription {
            shared: self.shared.clone(),
            reader: Reader::new(self.shared.clone(), from.0, from.0),
        }
    }

    /// See [`Log::wait_beyond`].
    pub fn wait_beyond(&self, position: Position, timeout: Duration) -> Position {
        Position(self.shared.wait_beyond(position.0, timeout))
    }

    /// See [`Log::failure`].
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }
}

/// An iterator over committed records in position order.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    next: u64,
    until: u64,
    segment: Option<Arc<SegmentMeta>>,
    offset: u64,
    window: Window,
}

impl Reader {
    fn new(shared: Arc<Shared>, next: u64, until: u64) -> Reader {
        Reader { shared, next, until, segment: None, offset: 0, window: Window::default() }
    }

    /// The position of the next record this reader yields.
    #[must_use]
    pub fn position(&self) -> Position {
        Position(self.next)
    }

    /// Makes the next record read the one at `position` (and only it), keeping what the read
    /// buffer holds.
    fn seek(&mut self, position: u64) {
        self.next = position;
        self.until = position + 1;
        // Located afresh from the index on the next read; the buffer stays if the segment does.
        self.offset = u64::MAX;
    }

    fn read_next(&mut self) -> Result<Record, ReadError> {
        self.read_next_with(|view| view.to_record())
    }

    /// Reads the next record and gives what `take` makes of it.
    fn read_next_with<T>(
        &mut self,
        take: impl FnOnce(RecordView<'_>) -> T,
    ) -> Result<T, ReadError> {
        let mut take = Some(take);
        loop {
            let segment = match &self.segment {
                Some(s) if self.offset < s.committed_end.load(Ordering::Acquire) => s.clone(),
                _ => {
                    let (segment, offset) = self
                        .shared
                        .index()
                        .locate(self.next)
                        .expect("a committed position has a segment");
                    self.offset = offset;
                    // The window caches bytes of one file: a new segment starts afresh.
                    if self.segment.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &segment)) {
                        self.window = Window::default();
                    }
                    self.segment = Some(segment.clone());
                    segment
                }
            };
            let end = segment.committed_end.load(Ordering::Acquire);
            let corrupt = |offset, problem| Corruption {
                segment: self.shared.storage.path_of(&segment.name),
                offset,
                position: Some(self.next),
                problem,
            };
            let view = match self.window.record_at(&*segment.file, self.offset, end)? {
                Ok(view) => view,
                Err(damage) => {
                    let problem = match damage {
                        crate::record::Damage::BadChecksum => Problem::BadChecksum,
                        _ => Problem::BadHeader,
                    };
                    return Err(corrupt(self.offset, problem).into());
                }
            };
            let (position, len) = (view.position, view.bytes.len() as u64);
            if position > self.next {
                return Err(corrupt(self.offset, Problem::PositionGap { found: position }).into());
            }
            let record =
                (position == self.next).then(|| take.take().expect("a record is taken once")(view));
            self.offset += len;
            if let Some(record) = record {
                self.next += 1;
                return Ok(record);
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.until {
            return None;
        }
        let result = self.read_next();
        if result.is_err() {
            // Stop after an error rather than yield records past a hole.
            self.until = self.next;
        }
        Some(result)
    }
}

/// The longest a subscription to a failed log waits in one call, for a caller that asked to
/// wait for as long as it takes.
const FAILED_LOG_WAIT: Duration = Duration::from_secs(1);

/// Follows the log: yields committed records, waiting for commits when caught up.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
    reader: Reader,
}

impl Subscription {
    /// The next committed record, waiting up to `timeout` for one; `None` on timeout. A log
    /// that failed ([`Log::failure`]) commits nothing more: once its committed records are
    /// read, every call waits out its timeout (a second at most) and gives `None`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<Record, ReadError>> {
        if self.reader.next >= self.reader.until {
            let head = self.shared.wait_beyond(self.reader.next, timeout);
            self.reader.until = head;
            if head <= self.reader.next && self.shared.failure().is_some() {
                // The wait ends at once on a failed log: without this, a caller that loops on
                // `None` would spin a core until it stops.
                std::thread::sleep(timeout.min(FAILED_LOG_WAIT));
                return None;
            }
        }
        self.reader.next()
    }

    /// The position of the next record this subscription yields.
    #[must_use]
    pub fn position(&self) -> Position {
        self.reader.position()
    }
}

/// Whether `last` is of an older segment format than this build writes. Format 2 records
/// appended to it would sit where a binary that knows only its format takes them for a torn
/// write and cuts them: opening gives such a log a new segment (or, if it holds no record, a
/// new header) first, so that an older binary refuses it instead.
fn older_format(last: &SegmentMeta) -> std::io::Result<bool> {
    Ok(segment::header_version(&*last.file)? < segment::SEGMENT_FORMAT_VERSION)
}

fn holds_records(segment: &SegmentMeta) -> bool {
    segment.committed_end.load(Ordering::Acquire) > SEGMENT_HEADER_LEN as u64
}

/// The share of a segment (one in this many) below which the room left in the last segment
/// makes an open roll over to the next one.
const ROOM_TO_KEEP: u64 = 16;

/// Creates the segment whose first record will be at `first`, with its header, durably, and
/// adds it to `index`.
fn begin_segment(
    storage: &dyn Storage,
    index: &mut Index,
    first: u64,
    size: u64,
) -> Result<Arc<SegmentMeta>, OpenError> {
    let name = segment::name(first);
    let io_err = |source| OpenError::Io { path: storage.path_of(&name), source };
    let file = storage.create(&name, size).map_err(io_err)?;
    file.write_at(&segment::encode_header(first), 0)
        .and_then(|()| file.sync_data())
        .map_err(io_err)?;
    let meta = Arc::new(SegmentMeta {
        name,
        first,
        file,
        committed_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
    });
    index.add_segment(meta.clone());
    Ok(meta)
}

/// Closes `last` at its last record, as a roll does, so the next segment can follow it.
fn close_segment(last: &SegmentMeta) -> std::io::Result<()> {
    last.file.set_len(last.committed_end.load(Ordering::Acquire))?;
    last.file.sync_data()
}

fn segment_io<'a>(
    storage: &'a dyn Storage,
    segment: &'a SegmentMeta,
) -> impl FnOnce(std::io::Error) -> OpenError + 'a {
    move |source| OpenError::Io { path: storage.path_of(&segment.name), source }
}
