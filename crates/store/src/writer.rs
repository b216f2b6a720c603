//! The writer: group commit in three pipelined threads.
//!
//! Appenders encode their batches on their own threads ([`EncodedBatch`]) and queue them. The
//! encoder thread takes whatever is queued (up to [`MAX_GROUP_BYTES`]), checks expected
//! versions, assigns positions and copies everything into one buffer: a group, whose records
//! still lack their checksums and chain hashes. The seal thread fills those in, batch after
//! batch (the hash chain is sequential, and blake3 is most of a record's CPU cost). The sync
//! thread makes each group durable with one `write` and one `fdatasync`; only then does it
//! publish the new head to readers and answer the group's waiters. While group n is being
//! synced, group n+1 is being sealed and group n+2 encoded, so no single thread does all the
//! per-record work. A failed write or fsync stops the log for good (fail-stop): the outcome of
//! an fsync that failed is unknowable, so it is never retried, and every later batch is
//! refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustc_hash::FxHashMap;

use crate::checkpoint::Checkpoint;
use crate::error::AppendError;
use crate::index::{Index, SegmentMeta, StreamId};
use crate::limits::{MAX_BATCH_RECORDS, MAX_GROUP_BYTES, MAX_PAYLOAD_LEN, MAX_STREAM_ID_LEN};
use crate::limits::{MAX_POOLED_BATCH_BYTES, POOLED_BATCH_BUFFERS};
use crate::limits::{SEGMENT_HEADER_LEN, ZEROS_AHEAD};
use crate::log::{Appended, Shared};
use crate::observer::GroupSynced;
use crate::position::{Position, StreamVersion};
use crate::record::{self, ChainHash, Expected, NewRecord};
use crate::segment;
use crate::storage::DirLock;

/// Called once with the outcome of a batch: after it is durable, or when it is refused.
pub(crate) type Completion = Box<dyn FnOnce(Result<Appended, AppendError>) + Send>;

/// A batch waiting for the writer.
pub(crate) struct Request {
    pub batch: EncodedBatch,
    pub done: Completion,
}

/// A batch checked against the limits and encoded by its appender: its records back to back as
/// unsealed records (see [`record::encode_unsealed`]). Encoding here, on the appenders' threads,
/// keeps the per-record copying and freeing off the writer's threads, which every record of
/// the log passes through.
pub(crate) struct EncodedBatch {
    bytes: Vec<u8>,
    /// The records' expected versions, in order; empty when every one is [`Expected::Any`].
    expected: Vec<Expected>,
}

impl EncodedBatch {
    /// Checks `records` against the limits (and against `segment_size`: a batch never spans
    /// segments) and encodes them, into a buffer from `buffers` if one is free.
    pub(crate) fn new(
        records: &[NewRecord],
        segment_size: u64,
        buffers: &BatchBuffers,
    ) -> Result<Self, AppendError> {
        let size = check_batch(records, segment_size)?;
        let mut bytes = buffers.take();
        bytes.reserve(size);
        for rec in records {
            record::encode_unsealed(rec, &mut bytes);
        }
        let expected = if records.iter().all(|r| r.expected == Expected::Any) {
            Vec::new()
        } else {
            records.iter().map(|r| r.expected).collect()
        };
        Ok(EncodedBatch { bytes, expected })
    }

    /// The stream ids of the batch's records, in order.
    fn streams(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let rest = self.bytes.get(at..).filter(|rest| !rest.is_empty())?;
            at += record::len_at(rest);
            Some(record::stream_at(rest))
        })
    }
}

/// Batch buffers the encoder is done with, handed back to appenders. Reusing them spares each
/// append a fresh allocation (page faults, on this workload's 100 KiB batches) and the writer a
/// free of memory another thread allocated.
#[derive(Debug)]
pub(crate) struct BatchBuffers {
    give: Sender<Vec<u8>>,
    take: Receiver<Vec<u8>>,
}

impl Default for BatchBuffers {
    fn default() -> BatchBuffers {
        let (give, take) = crossbeam_channel::bounded(POOLED_BATCH_BUFFERS);
        BatchBuffers { give, take }
    }
}

impl BatchBuffers {
    /// An empty buffer: a pooled one if there is one.
    fn take(&self) -> Vec<u8> {
        self.take.try_recv().unwrap_or_default()
    }

    /// Keeps `buf` for a later batch, unless the pool is full or `buf` is unusually large.
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= MAX_POOLED_BATCH_BYTES {
            buf.clear();
            let _ = self.give.try_send(buf);
        }
    }
}

/// The first stage of the writer: decides batches, places their records in the log and gathers
/// them into groups.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub requests: Receiver<Request>,
    pub segment: Arc<SegmentMeta>,
    /// Bytes the current segment file can hold.
    pub capacity: u64,
    /// Size of new segments.
    pub segment_size: u64,
    /// Byte offset in the current segment where the next group is written.
    pub offset: u64,
    /// Bytes of the current segment written with records or zeros (see [`ZEROS_AHEAD`]).
    pub written: u64,
    pub next_position: u64,
    /// The chain hash of the last record written so far; the seal thread takes it over.
    pub last_hash: ChainHash,
    /// How often the syncer records a checkpoint at the durable head (see [`sync_groups`]).
    pub checkpoint_every: Duration,
    pub buf: Vec<u8>,
    pub waiting: Vec<(Completion, Appended)>,
    /// The folder's lock, held by each of the log's threads until it ends: no other writer
    /// opens the folder while any of them may still write (a panic in one included).
    pub lock: Option<Arc<DirLock>>,
}

/// A group on its way to the disk.
struct Group {
    buf: Vec<u8>,
    segment: Arc<SegmentMeta>,
    offset: u64,
    /// Bytes after the group written with zeros before it is synced (see [`ZEROS_AHEAD`]).
    zeros: u64,
    /// The head once the group is durable.
    head: u64,
    /// The chain hash of the group's last record, once the sealer has sealed it.
    last_hash: ChainHash,
    waiting: Vec<(Completion, Appended)>,
}

/// What the encoder hands down the pipeline (sealer, then syncer), in order.
enum Stage {
    Group(Group),
    /// Answered once every earlier group is done.
    Barrier(Sender<()>),
}

/// The encoder's end of the pipeline.
struct Pipeline {
    stages: Sender<Stage>,
    /// Buffers the syncer is done with, reused to avoid reallocating a group buffer each time.
    spare: Receiver<Vec<u8>>,
}

/// Groups on their way through the pipeline besides the one each stage works on: one between
/// each pair of stages, so that a stage that finishes early finds its next group waiting. More
/// would only add latency and memory.
const STAGE_QUEUE: usize = 1;

/// How many records ahead of the one being placed the writer loads the index entry of: enough
/// to cover a lookup's trip to memory, few enough to stay within the core's outstanding misses.
const LOOKUPS_AHEAD: usize = 8;

impl Writer {
    /// Runs the writer: this thread gathers group n+2 while a second one seals group n+1 and a
    /// third writes and syncs group n, so neither the CPU nor the disk waits for the other.
    pub(crate) fn run(mut self) {
        mark_log_thread(&self.shared);
        let (stages, sealer_rx) = crossbeam_channel::bounded(STAGE_QUEUE);
        let (sealed, syncer_rx) = crossbeam_channel::bounded(STAGE_QUEUE);
        // One spare per group that can be in flight behind the encoder.
        let (spare_tx, spare) = crossbeam_channel::bounded(3);
        let last_hash = self.last_hash;
        let sealer = std::thread::Builder::new()
            .name("orderly-log-seal".into())
            .spawn({
                let (shared, lock) = (self.shared.clone(), self.lock.clone());
                move || {
                    let _lock = lock;
                    mark_log_thread(&shared);
                    seal_groups(last_hash, &sealer_rx, &sealed)
                }
            })
            .expect("the log's seal thread starts");
        let shared = self.shared.clone();
        let checkpoint_every = self.checkpoint_every;
        let syncer = std::thread::Builder::new()
            .name("orderly-log-sync".into())
            .spawn({
                let lock = self.lock.clone();
                move || {
                    let _lock = lock;
                    mark_log_thread(&shared);
                    sync_groups(&shared, checkpoint_every, &syncer_rx, &spare_tx);
                }
            })
            .expect("the log's sync thread starts");
        let pipeline = Pipeline { stages, spare };
        while let Ok(first) = self.requests.recv() {
            self.take(first, &pipeline);
            while self.buf.len() < MAX_GROUP_BYTES {
                match self.requests.try_recv() {
                    Ok(request) => self.take(request, &pipeline),
                    Err(_) => break,
                }
            }
            self.send_group(&pipeline);
        }
        drop(pipeline);
        // A panic in the sealer or syncer is a bug already reported on stderr.
        let last_hash = sealer.join();
        let _ = syncer.join();
        if let Ok(last_hash) = last_hash {
            self.checkpoint_at_stop(last_hash);
        }
    }

    /// Records, once every group is durable, that the log holds all the records it wrote: a
    /// checkpoint at the head. An open that then finds fewer (a damaged last record looks
    /// like a torn write and would be cut) reports the loss instead of cutting what was
    /// acknowledged. Not after a failure: what the groups left on disk is then unknown. A
    /// checkpoint that cannot be written is reported, and the next open verifies more.
    fn checkpoint_at_stop(&self, last_hash: ChainHash) {
        let head = self.shared.head();
        if self.shared.failure().is_some() || head == 0 || head != self.next_position {
            return;
        }
        record_checkpoint(&self.shared, Checkpoint { position: head, hash: last_hash });
    }

    /// Checks one batch and, if it may be written, places its records in the log and copies
    /// them into the group buffer.
    fn take(&mut self, Request { batch, done }: Request, pipeline: &Pipeline) {
        if let Some(cause) = self.shared.failure() {
            return done(Err(AppendError::Stopped { cause }));
        }
        if let Err(e) = self.check_versions(&batch) {
            return done(Err(e));
        }
        if self.offset + (self.buf.len() + batch.bytes.len()) as u64 > self.capacity {
            self.send_group(pipeline);
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            if pipeline.stages.send(Stage::Barrier(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
            // A group that failed while we waited leaves positions that never reached the disk:
            // rolling now would name the next segment after them.
            if let Some(cause) = self.shared.failure() {
                return done(Err(AppendError::Stopped { cause }));
            }
            if let Err(cause) = self.roll() {
                self.fail(cause);
            }
            if let Some(cause) = self.shared.failure() {
                return done(Err(AppendError::Stopped { cause }));
            }
        }
        let first = self.next_position;
        let mut at = self.buf.len();
        self.buf.extend_from_slice(&batch.bytes);
        self.shared.batch_buffers.give(batch.bytes);
        let mut index = self.shared.index_mut();
        // The index entries of the streams a few records ahead are loaded while these are
        // placed: the index of a day's streams does not fit in cache, and each lookup would
        // otherwise wait for memory in turn.
        let mut ahead = at;
        for _ in 0..LOOKUPS_AHEAD {
            prefetch_stream_at(&index, &self.buf, &mut ahead);
        }
        while at < self.buf.len() {
            prefetch_stream_at(&index, &self.buf, &mut ahead);
            let rec = &self.buf[at..];
            let len = record::len_at(rec);
            let offset = self.offset + at as u64;
            let version = index.add_record(record::stream_at(rec), self.next_position, offset);
            let batch_end = at + len == self.buf.len();
            record::place(&mut self.buf[at..], self.next_position, version, batch_end);
            self.next_position += 1;
            at += len;
        }
        drop(index);
        let appended = Appended { first: Position(first), next: Position(self.next_position) };
        self.waiting.push((done, appended));
    }

    /// Refuses the batch if any record's expected version does not hold, counting earlier
    /// records of the same batch.
    fn check_versions(&self, batch: &EncodedBatch) -> Result<(), AppendError> {
        if batch.expected.is_empty() {
            return Ok(());
        }
        let index = self.shared.index();
        let mut in_batch: FxHashMap<&[u8], u64> = FxHashMap::default();
        for (stream, &expected) in batch.streams().zip(&batch.expected) {
            let actual =
                *in_batch.entry(stream).or_insert_with(|| index.stream_len(StreamId::of(stream)));
            if let Expected::Exactly(expected) = expected
                && expected.0 != actual
            {
                return Err(AppendError::Conflict {
                    stream: stream.to_vec(),
                    expected,
                    actual: StreamVersion(actual),
                });
            }
            in_batch.insert(stream, actual + 1);
        }
        Ok(())
    }

    /// Hands the encoded group to the syncer and starts a new one.
    fn send_group(&mut self, pipeline: &Pipeline) {
        if self.waiting.is_empty() {
            return;
        }
        let spare = pipeline.spare.try_recv().unwrap_or_default();
        let end = self.offset + self.buf.len() as u64;
        let zeros = if end > self.written {
            self.capacity.saturating_sub(end).min(ZEROS_AHEAD as u64)
        } else {
            0
        };
        self.written = self.written.max(end + zeros);
        let group = Group {
            buf: std::mem::replace(&mut self.buf, spare),
            segment: self.segment.clone(),
            offset: self.offset,
            zeros,
            head: self.next_position,
            last_hash: [0; 32],
            waiting: std::mem::take(&mut self.waiting),
        };
        self.offset = end;
        let sent = pipeline.stages.send(Stage::Group(group));
        assert!(sent.is_ok(), "the sealer runs until the encoder stops");
    }

    /// Closes the current segment at its last record and starts the next one.
    fn roll(&mut self) -> Result<(), String> {
        let old = &self.segment;
        old.file
            .set_len(self.offset)
            .and_then(|()| old.file.sync_data())
            .map_err(|e| format!("cannot close segment {}: {e}", old.name))?;
        let name = segment::name(self.next_position);
        let file = self
            .shared
            .storage
            .create(&name, self.segment_size)
            .and_then(|file| {
                file.write_at(&segment::encode_header(self.next_position), 0)?;
                file.sync_data()?;
                Ok(file)
            })
            .map_err(|e| format!("cannot create segment {name}: {e}"))?;
        let meta = Arc::new(SegmentMeta {
            name,
            first: self.next_position,
            file,
            committed_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
        });
        self.shared.index_mut().add_segment(meta.clone());
        self.segment = meta;
        self.capacity = self.segment_size;
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.written = self.offset;
        Ok(())
    }

    fn fail(&self, cause: String) {
        self.shared.set_failure(cause);
    }
}

/// The sealing stage: completes each group's records with their chain hashes and checksums,
/// chaining from the last record before them.
/// Returns the chain hash of the last record it sealed.
fn seal_groups(
    mut last_hash: ChainHash,
    stages: &Receiver<Stage>,
    sealed: &Sender<Stage>,
) -> ChainHash {
    for mut stage in stages {
        if let Stage::Group(group) = &mut stage {
            last_hash = record::seal_all(&mut group.buf, last_hash);
            group.last_hash = last_hash;
        }
        let sent = sealed.send(stage);
        assert!(sent.is_ok(), "the syncer runs until the sealer stops");
    }
    last_hash
}

thread_local! {
    /// On a log's own threads (writer, sealer, syncer), where appends' callbacks run: which
    /// log's ([`log_id`]); 0 elsewhere.
    static LOG_OF_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A log's identity for [`on_threads_of`]: where its shared state lives.
pub(crate) fn log_id(shared: &Arc<Shared>) -> usize {
    Arc::as_ptr(shared) as usize
}

fn mark_log_thread(shared: &Arc<Shared>) {
    LOG_OF_THREAD.with(|log| log.set(log_id(shared)));
}

/// Whether this thread is one of the log `id`'s own: an append's callback runs on one, and the
/// log must not wait for its threads to stop there.
pub(crate) fn on_threads_of(id: usize) -> bool {
    LOG_OF_THREAD.with(std::cell::Cell::get) == id
}

/// The syncing stage of the writer: writes each group with one `write` (and, at times, the
/// zeros after it) and one `fdatasync`, then publishes it and answers its waiters, in order.
///
/// At most every `checkpoint_every`, it also records a checkpoint at the durable head before
/// answering, as a clean stop does: after a crash, a damaged record at or before it (which,
/// last in the log, would look like a torn write) is then refused as a loss instead of cut.
/// A head synced sooner is recorded once the log has been quiet for the rest of that time, so
/// only records acknowledged within `checkpoint_every` before a crash are left to that
/// ambiguity, however long the log then stays idle.
fn sync_groups(
    shared: &Shared,
    checkpoint_every: Duration,
    stages: &Receiver<Stage>,
    spare: &Sender<Vec<u8>>,
) {
    let mut checkpointed = Instant::now();
    let mut unrecorded: Option<Checkpoint> = None;
    let mut checkpoints = Checkpoints::default();
    loop {
        let next = match unrecorded {
            None => stages.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(_) => stages.recv_timeout(checkpoint_every.saturating_sub(checkpointed.elapsed())),
        };
        let stage = match next {
            Ok(stage) => stage,
            Err(RecvTimeoutError::Timeout) => {
                // Not after a failure: what the groups left on disk is then unknown.
                if let Some(at) = unrecorded.take().filter(|_| shared.failure().is_none()) {
                    checkpointed = Instant::now();
                    checkpoints.record(shared, at);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut group = match stage {
            Stage::Group(group) => group,
            Stage::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if shared.failure().is_none() {
            let file = &group.segment.file;
            let started = Instant::now();
            let end = group.offset + group.buf.len() as u64;
            let zeros =
                &segment::ZEROS[..usize::try_from(group.zeros).expect("at most ZEROS_AHEAD")];
            let written = file
                .write_at(&group.buf, group.offset)
                .and_then(|()| if zeros.is_empty() { Ok(()) } else { file.write_at(zeros, end) })
                .and_then(|()| file.sync_data())
                // A segment deleted under the log (a cleanup gone wrong) takes every record
                // written to it with it at the next restart: the log stops before it
                // acknowledges one (an `fstat` a group, next to its `fdatasync`).
                .and_then(|()| match file.deleted()? {
                    true => {
                        Err(std::io::Error::other("the segment file was deleted while the log ran"))
                    }
                    false => Ok(()),
                });
            match written {
                Ok(()) => {
                    group.segment.committed_end.store(end, Ordering::Release);
                    let records = group.head - shared.head();
                    shared.publish(group.head);
                    if let Some(observer) = &shared.observer {
                        let bytes = group.buf.len() as u64;
                        observer.report(&GroupSynced { records, bytes, sync: started.elapsed() });
                    }
                    let at = Checkpoint { position: group.head, hash: group.last_hash };
                    unrecorded = Some(at);
                    if checkpointed.elapsed() >= checkpoint_every {
                        checkpointed = Instant::now();
                        checkpoints.record(shared, at);
                        unrecorded = None;
                    }
                }
                Err(e) => {
                    // Linux keeps the pages a failed fsync could not write in its cache, marked
                    // clean: dropped now, so that no later read (a reopen, an audit) takes them
                    // for records on the disk. Best effort: the log stops either way.
                    let _ = file.forget_cached();
                    shared.set_failure(format!("{e} (segment {})", group.segment.name));
                    unrecorded = None;
                }
            }
        }
        let failure = shared.failure();
        for (done, appended) in group.waiting.drain(..) {
            match &failure {
                None => done(Ok(appended)),
                Some(cause) => done(Err(AppendError::Stopped { cause: cause.clone() })),
            }
        }
        group.buf.clear();
        // The encoder may have enough spares already; then this buffer is simply freed.
        let _ = spare.try_send(group.buf);
    }
}

/// Writes `checkpoint`, as the writer does while it runs and when it stops. One that cannot be
/// written is reported and the log goes on: the next checkpoint, or the next open, covers it.
fn record_checkpoint(shared: &Shared, checkpoint: Checkpoint) {
    if let Err(e) = crate::checkpoint::store(shared.storage.as_ref(), &checkpoint) {
        let head = checkpoint.position;
        tracing::warn!(error = %e, head, "the log's checkpoint was not written");
    }
}

/// Writes checkpoints while the log runs, saying once, not each second of a full disk, that
/// they cannot be written, and once that they can again.
#[derive(Default)]
struct Checkpoints {
    failing: bool,
}

impl Checkpoints {
    fn record(&mut self, shared: &Shared, checkpoint: Checkpoint) {
        let written = crate::checkpoint::store(shared.storage.as_ref(), &checkpoint);
        let head = checkpoint.position;
        match (&written, self.failing) {
            (Err(e), false) => {
                tracing::warn!(error = %e, head, "the log's checkpoint was not written; tried again at the next")
            }
            (Ok(()), true) => tracing::info!(head, "the log's checkpoint is written again"),
            _ => {}
        }
        self.failing = written.is_err();
    }
}

/// Starts loading the index entry of the stream of the record at `at` in `buf`, if there is
/// one there, and moves `at` past it.
fn prefetch_stream_at(index: &Index, buf: &[u8], at: &mut usize) {
    if let Some(rec) = buf.get(*at..).filter(|rec| !rec.is_empty()) {
        index.prefetch_stream(record::stream_at(rec));
        *at += record::len_at(rec);
    }
}

/// Checks a batch against the limits and returns its encoded size.
fn check_batch(records: &[NewRecord], segment_size: u64) -> Result<usize, AppendError> {
    if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
        return Err(AppendError::Invalid(format!(
            "a batch holds 1 to {MAX_BATCH_RECORDS} records, got {}",
            records.len()
        )));
    }
    let mut size = 0;
    for rec in records {
        if rec.stream.is_empty() || rec.stream.len() > MAX_STREAM_ID_LEN {
            return Err(AppendError::Invalid(format!(
                "a stream id is 1 to {MAX_STREAM_ID_LEN} bytes, got {}",
                rec.stream.len()
            )));
        }
        if rec.payload.len() > MAX_PAYLOAD_LEN {
            return Err(AppendError::Invalid(format!(
                "a payload is at most {MAX_PAYLOAD_LEN} bytes, got {}",
                rec.payload.len()
            )));
        }
        size += rec.encoded_len();
    }
    if (size + SEGMENT_HEADER_LEN) as u64 > segment_size {
        return Err(AppendError::Invalid(format!(
            "a batch of {size} bytes does not fit in a segment of {segment_size} bytes"
        )));
    }
    Ok(size)
}
