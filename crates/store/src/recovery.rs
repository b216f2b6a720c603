//! Recovery on open: verify every segment, rebuild the index, and cut a torn tail.
//!
//! Every record is checked by the verifying pass recovery shares with audits
//! ([`crate::scan`]): checksum, position in sequence, stream version in sequence, and the hash
//! chain from the last checkpoint on ([`crate::checkpoint`]; a log opened for writing then
//! checkpoints what it verified). A batch counts only with its last record (flag `batch end`), so a batch cut by a
//! crash disappears whole. Only the last segment can end in a torn write; there, a damaged
//! record followed by nothing but zeros is a torn tail and is cut (and reported). Damage
//! anywhere else is corruption, reported with segment and byte offset, and the log does not
//! open. See `docs/design/event-log.md` for why this is safe.

use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::checkpoint::{self, Checkpoint};
use crate::error::OpenError;
use crate::index::{Index, SegmentMeta, StreamId, StreamMap};
use crate::limits::SEGMENT_HEADER_LEN;
use crate::observer::OpenProgress;
use crate::record::ChainHash;
use crate::scan::{self, Chained, ScanError, ScanProgress, ScannedRecord, Visitor};
use crate::storage::{Storage, StorageFile};

/// What opening the log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed records in the log.
    pub records: u64,
    /// Segment files.
    pub segments: usize,
    /// A torn write at the end of the log, cut when the log was opened for writing. It held
    /// only records that were never acknowledged.
    pub torn_tail: Option<TornTail>,
    /// A last segment whose creation was interrupted before its header was written, removed.
    pub removed_segment: Option<PathBuf>,
    /// Where the hash chain was recomputed from: the position of the log's checkpoint (0
    /// without one). Every record's checksum was checked all the same.
    pub chain_verified_from: u64,
    /// Why a checkpoint file was ignored (unreadable, damaged, unknown version), if it was;
    /// the whole chain was then verified.
    pub checkpoint_ignored: Option<String>,
}

/// A torn write at the end of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset where the committed log ends and the torn bytes begin.
    pub offset: u64,
    /// How many bytes after `offset` were not zero.
    pub bytes: u64,
}

/// The verified log, ready for a writer.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub index: Index,
    /// The position the next record will get.
    pub next_position: u64,
    /// The chain hash of the last record.
    pub last_hash: ChainHash,
    pub report: Recovery,
}

/// A record seen since the last batch end; it counts once its batch is complete.
struct Pending {
    stream: Box<[u8]>,
    position: u64,
    offset: u64,
}

/// Builds the index from the shared verifying pass. Stream versions are checked against the
/// index itself, with the versions of the batch in progress on top (they count only once the
/// batch is complete).
#[derive(Default)]
struct IndexBuilder {
    index: Index,
    pending: Vec<Pending>,
    pending_versions: StreamMap<u64>,
    progress: Option<OpenProgress>,
}

impl Visitor for IndexBuilder {
    fn stream_version(&mut self, stream: &[u8], found: u64) -> Result<(), u64> {
        let index = &self.index;
        let id = StreamId::of(stream);
        let next = self.pending_versions.entry(id).or_insert_with(|| index.stream_len(id));
        if *next != found {
            return Err(*next);
        }
        *next += 1;
        Ok(())
    }

    fn upcoming(&mut self, stream: &[u8]) {
        self.index.prefetch_stream(stream);
    }

    fn progress(&mut self, progress: ScanProgress) {
        if let Some(report) = &self.progress {
            report.report(&progress);
        }
    }

    fn segment_start(&mut self, name: &str, first: u64, file: &Arc<dyn StorageFile>) {
        self.pending.clear();
        self.pending_versions.clear();
        self.index.add_segment(Arc::new(SegmentMeta {
            name: name.to_owned(),
            first,
            file: file.clone(),
            committed_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
        }));
    }

    fn record(&mut self, record: &ScannedRecord<'_>) -> ControlFlow<()> {
        let (position, offset) = (record.position.0, record.offset);
        self.pending.push(Pending { stream: record.stream.into(), position, offset });
        if record.ends_batch {
            for p in self.pending.drain(..) {
                let _version = self.index.add_record(&p.stream, p.position, p.offset);
            }
            self.pending_versions.clear();
        }
        ControlFlow::Continue(())
    }

    fn segment_end(&mut self, committed_end: u64) {
        let segment = self.index.segments.last().expect("segment_start added it");
        segment.committed_end.store(committed_end, Ordering::Release);
    }
}

/// Verifies the log in `storage` and rebuilds its index, telling `progress` how far it is.
/// With `writable`, a torn tail is cut and an unwritten last segment removed; without, they
/// are only reported.
pub(crate) fn recover(
    storage: &dyn Storage,
    writable: bool,
    progress: Option<OpenProgress>,
) -> Result<Recovered, OpenError> {
    let checkpoint_path = storage.path_of(checkpoint::FILE_NAME);
    let checkpoint_io = |source| OpenError::Io { path: checkpoint_path.clone(), source };
    let (checkpoint, checkpoint_ignored) = match checkpoint::load(storage).map_err(checkpoint_io)? {
        Ok(checkpoint) => (checkpoint, None),
        Err(why) => (None, Some(why)),
    };
    let mut builder = IndexBuilder { progress, ..IndexBuilder::default() };
    let scanned =
        scan::scan_storage(storage, writable, checkpoint, Chained::FromCheckpoint, &mut builder)
            .map_err(|e| match e {
                ScanError::Io { path, source } => OpenError::Io { path, source },
                ScanError::Corrupt(corruption) => OpenError::Corrupt(corruption),
                // Only the read-only `scan` refuses a folder with no log; opening starts one there.
                ScanError::NoLog { .. } => {
                    unreachable!("scan_storage takes an empty folder as empty")
                }
            })?;
    let index = builder.index;
    let io_err = |path: &PathBuf| {
        let path = path.clone();
        move |source: io::Error| OpenError::Io { path, source }
    };
    if writable {
        if let Some(path) = &scanned.unwritten_segment {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            storage.remove(name).map_err(io_err(path))?;
        }
        if let Some(torn) = &scanned.torn_tail {
            // Only the last segment can be torn; it was opened for writing.
            let last = index.segments.last().expect("a torn tail lies in a segment");
            let zeros =
                vec![0u8; usize::try_from(torn.bytes).expect("at most a record and a batch")];
            last.file.write_at(&zeros, torn.offset).map_err(io_err(&torn.segment))?;
            last.file.sync_data().map_err(io_err(&torn.segment))?;
        }
    }
    let chain_verified_from = checkpoint.map_or(0, |c| c.position);
    if writable && (checkpoint.is_none() || scanned.records > chain_verified_from) {
        // The checkpoint vouches only for what is on disk: a writer killed between its write
        // and its fdatasync left a group that this pass read from the page cache.
        if let Some(last) = index.segments.last()
            && let Err(e) = last.file.sync_data()
        {
            // As the writer's syncer does: Linux keeps the pages a failed fsync could not
            // write, marked clean. Dropped now, so that an open tried again does not read them
            // back as records on the disk, and vouch for them.
            let _ = last.file.forget_cached();
            return Err(io_err(&storage.path_of(&last.name))(e));
        }
        let verified = Checkpoint { position: scanned.records, hash: scanned.last_hash };
        checkpoint::store(storage, &verified).map_err(checkpoint_io)?;
    }
    let report = Recovery {
        records: scanned.records,
        segments: index.segments.len(),
        torn_tail: scanned.torn_tail,
        removed_segment: scanned.unwritten_segment,
        chain_verified_from,
        checkpoint_ignored,
    };
    Ok(Recovered { index, next_position: scanned.records, last_hash: scanned.last_hash, report })
}
