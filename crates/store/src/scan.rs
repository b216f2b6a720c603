//! One verifying pass over a log's segments, shared by recovery (on open, with the lock) and by
//! audits ([`scan`]: read-only, without the lock, next to a running writer).
//!
//! Every record is checked as it is read: header and checksum ([`crate::record::decode`]),
//! position in sequence, hash chain, stream version in sequence. How the pass ends is
//! classified the same way for both callers (see `docs/design/event-log.md`): the end of a
//! batch followed by zeros is a clean end; an incomplete batch or a damaged record with nothing
//! valid after it, in the last segment, is a torn tail; anything else is corruption. The pass
//! itself never writes: recovery cuts a torn tail afterwards, from what the pass reports.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::error::{Corruption, Problem};
use crate::limits::{MAX_BATCH_RECORDS, MAX_RECORD_LEN, SEGMENT_HEADER_LEN};
use crate::position::{Position, StreamVersion};
use crate::record::{ChainHash, Damage};
use crate::recovery::TornTail;
use crate::segment::{self, ChainAt, HeaderCheck, ScanEnd};
use crate::storage::{DirStorage, Storage, StorageFile};
use crate::versions::StreamVersions;

/// Bytes between two progress reports.
const PROGRESS_EVERY: u64 = 4 << 20;

/// A verified record, as a scan hands it over. It borrows from the scan's read buffer.
///
/// A record is *committed* once its batch is: records are handed over as they are verified,
/// so the records of a batch cut short by a torn tail are handed over too, and
/// [`ScanReport::records`] then stops before them. A caller that applies records should apply
/// a batch when it sees its last record ([`ScannedRecord::ends_batch`]).
#[derive(Clone, Copy, Debug)]
pub struct ScannedRecord<'a> {
    /// The segment file the record is in.
    pub segment: &'a Path,
    /// Byte offset of the record within its segment file.
    pub offset: u64,
    /// Its place in the whole log.
    pub position: Position,
    /// Its stream.
    pub stream: &'a [u8],
    /// Its version within the stream.
    pub stream_version: StreamVersion,
    /// The caller's event type code.
    pub event_type: u16,
    /// The schema version of the payload.
    pub schema_version: u16,
    /// Milliseconds since the Unix epoch, as stamped by the appender.
    pub timestamp: u64,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Where it stands in the hash chain (see [`ScannedRecord::chain_hash`]).
    chain: ChainAt<'a>,
    /// Whether this record ends its batch.
    pub ends_batch: bool,
    /// Bytes the record takes in its segment.
    pub len: u64,
}

impl ScannedRecord<'_> {
    /// The chain hash at this record, which commits to it and to every record before it (see
    /// `docs/design/event-log.md`): the hash the next record carries, or the next batch's
    /// records if it ends its batch. Computed when asked: in the middle of a batch of record
    /// format 3, from the batch's bytes so far. `None` for the records before the checkpoint of
    /// a log being opened, whose chain is not recomputed; [`scan`] computes every record's.
    #[must_use]
    pub fn chain_hash(&self) -> Option<ChainHash> {
        self.chain.hash()
    }
}

/// How far a scan has come, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanProgress {
    /// Bytes of segment files scanned so far.
    pub bytes_done: u64,
    /// Bytes of all segment files (the last one's preallocated zeros included).
    pub bytes_total: u64,
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Committed records (in complete batches) that were scanned: the head of the log, or the
    /// position the visitor stopped at.
    pub records: u64,
    /// Segment files scanned.
    pub segments: usize,
    /// Bytes of committed records and segment headers.
    pub bytes: u64,
    /// The chain hash of the last committed record (zeros for an empty log).
    pub last_hash: ChainHash,
    /// Bytes after the last complete batch of the last segment that are not a clean end: a
    /// write in progress (next to a running writer) or a crash's torn write. Never
    /// acknowledged; recovery cuts them when it opens the log for writing.
    pub torn_tail: Option<TornTail>,
    /// A last segment whose creation was interrupted before its header was written (all
    /// zeros). Recovery removes it when it opens the log for writing.
    pub unwritten_segment: Option<PathBuf>,
    /// Whether the scan reached the end of the log (false when the visitor stopped it).
    pub complete: bool,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The file system failed.
    #[error("cannot read the log at {}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The bytes at a place are not what was written.
    #[error("the log is corrupt: {0}")]
    Corrupt(#[from] Corruption),
    /// The folder holds no segment and never held a log (no lock or checkpoint file): not a
    /// log folder (a log has its first segment from its first open), so nothing to vouch for.
    #[error("no log in {}: it holds no segment file", dir.display())]
    NoLog {
        /// The folder.
        dir: PathBuf,
    },
}

/// Scans the log in `dir` read-only: every record is verified (checksum, header, position,
/// hash chain, stream version) and handed to `visit` in log order; `progress` hears how far the
/// scan has come every few MiB. Takes no lock and writes nothing, so it works next to a
/// running writer (it then sees the log as it was when each segment was reached) and on a
/// read-only copy. `visit` may stop the scan early with `ControlFlow::Break`.
///
/// Stream versions are checked against a map of every stream the scan has seen, so memory
/// grows with the number of streams. A folder with no segment is [`ScanError::NoLog`], or, if
/// a log once lived there (its lock or checkpoint file remains), missing every segment.
pub fn scan(
    dir: &Path,
    mut progress: impl FnMut(ScanProgress),
    mut visit: impl FnMut(&ScannedRecord<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, ScanError> {
    let storage = DirStorage::new(dir);
    let mut visitor = ReadOnly {
        versions: StreamVersions::default(),
        progress: &mut progress,
        visit: &mut visit,
    };
    // The log's own checkpoint (what its writer verified on its last open) is a digest kept
    // beside it: a log that ends before it, or whose record before it hashes otherwise, lost
    // or changed records. The whole chain is recomputed all the same. A checkpoint that
    // cannot be read is left aside, as an open does.
    let checkpoint = crate::checkpoint::load(&storage)
        .map_err(io_error(&storage, crate::checkpoint::FILE_NAME))?
        .unwrap_or(None);
    let report = scan_storage(&storage, false, checkpoint, Chained::Whole, &mut visitor)?;
    if report.segments > 0 || report.unwritten_segment.is_some() {
        return Ok(report);
    }
    // No segment: a folder a log once lived in (its lock or checkpoint file remains) has lost
    // every segment, which is damage; any other folder is not a log at all (a mistyped path).
    let once_a_log = [crate::storage::LOCK_FILE, crate::checkpoint::FILE_NAME]
        .iter()
        .any(|file| dir.join(file).exists());
    if !once_a_log {
        return Err(ScanError::NoLog { dir: dir.to_path_buf() });
    }
    let problem = Problem::MissingSegment;
    let segment = dir.to_path_buf();
    Err(Corruption { segment, offset: 0, position: Some(0), problem }.into())
}

/// The stream versions a read-only scan has seen.
struct ReadOnly<'v, P, V> {
    versions: StreamVersions,
    progress: &'v mut P,
    visit: &'v mut V,
}

impl<P, V> Visitor for ReadOnly<'_, P, V>
where
    P: FnMut(ScanProgress),
    V: FnMut(&ScannedRecord<'_>) -> ControlFlow<()>,
{
    fn stream_version(&mut self, stream: &[u8], found: u64) -> Result<(), u64> {
        self.versions.count(stream, found)
    }

    fn upcoming(&mut self, stream: &[u8]) {
        self.versions.prefetch(stream);
    }

    fn record(&mut self, record: &ScannedRecord<'_>) -> ControlFlow<()> {
        (self.visit)(record)
    }

    fn progress(&mut self, progress: ScanProgress) {
        (self.progress)(progress);
    }
}

/// What the shared pass asks of its caller.
pub(crate) trait Visitor {
    /// Checks that `found` is the next version of `stream` and counts it; `Err(expected)` when
    /// it is not.
    fn stream_version(&mut self, stream: &[u8], found: u64) -> Result<(), u64>;

    /// The record after the one being verified probably belongs to `stream` (its header, not
    /// yet verified, says so): a hint to start loading its entry while this record is hashed.
    fn upcoming(&mut self, _stream: &[u8]) {}

    /// A segment is about to be scanned.
    fn segment_start(&mut self, _name: &str, _first: u64, _file: &Arc<dyn StorageFile>) {}

    /// A verified record.
    fn record(&mut self, record: &ScannedRecord<'_>) -> ControlFlow<()>;

    /// The segment just scanned ends its committed records at `committed_end`.
    fn segment_end(&mut self, _committed_end: u64) {}

    /// How far the pass has come.
    fn progress(&mut self, _progress: ScanProgress) {}
}

/// Segment files of `storage` by first position, in log order.
fn segment_names(storage: &dyn Storage) -> Result<Vec<(u64, String)>, ScanError> {
    let mut names: Vec<(u64, String)> = storage
        .list()
        .map_err(io_error(storage, "."))?
        .into_iter()
        .filter_map(|n| segment::parse_name(&n).map(|first| (first, n)))
        .collect();
    names.sort();
    Ok(names)
}

fn io_error(storage: &dyn Storage, name: &str) -> impl FnOnce(io::Error) -> ScanError {
    let path = storage.path_of(name);
    move |source| ScanError::Io { path, source }
}

/// How much of the hash chain a pass with a checkpoint recomputes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chained {
    /// From the checkpoint on: an open (see [`crate::checkpoint`]).
    FromCheckpoint,
    /// All of it: an audit.
    Whole,
}

/// The pass itself: verifies every segment of `storage` in order, telling `visitor` about each
/// segment and record. Opens the last segment for writing when `writable_last` (recovery
/// writes there next) and never writes anything itself. With a `checkpoint`, the log must
/// reach it and the record before it must hash as it says; with [`Chained::FromCheckpoint`],
/// the chain hashes of the records before it are not recomputed. Everything else is checked
/// all the same.
pub(crate) fn scan_storage(
    storage: &dyn Storage,
    writable_last: bool,
    checkpoint: Option<Checkpoint>,
    chained: Chained,
    visitor: &mut dyn Visitor,
) -> Result<ScanReport, ScanError> {
    let mut names = segment_names(storage)?;
    let mut report = ScanReport { complete: true, ..ScanReport::default() };

    // A last segment whose creation was cut short (never written at all) is set aside first,
    // so that the segment before it is treated as the last one.
    let mut unwritten_first = None;
    if let Some((_, name)) = names.last() {
        let file = storage.open(name, false).map_err(io_error(storage, name))?;
        let len = file.size().map_err(io_error(storage, name))?;
        if segment::check_header(&*file).map_err(io_error(storage, name))? == HeaderCheck::Unwritten
            && segment::is_zero(&*file, 0, len).map_err(io_error(storage, name))?
        {
            report.unwritten_segment = Some(storage.path_of(name));
            unwritten_first = names.pop().map(|(first, _)| first);
        }
    }

    let mut files = Vec::with_capacity(names.len());
    let mut bytes_total = 0;
    for (i, (_, name)) in names.iter().enumerate() {
        let writable = writable_last && i + 1 == names.len();
        let file = storage.open(name, writable).map_err(io_error(storage, name))?;
        let len = file.size().map_err(io_error(storage, name))?;
        bytes_total += len;
        files.push((file, len));
    }
    // The last segment, synced at the end of a read-only pass.
    let last = names.last().map(|(_, name)| name.clone()).zip(files.last().map(|(f, _)| f.clone()));

    let mut chain = Chain {
        next_position: 0,
        last_hash: [0; 32],
        checkpoint,
        chained,
        bytes_before: 0,
        bytes_total,
    };
    let count = names.len();
    let mut end_of_log = (storage.path_of("."), 0);
    for (i, ((first, name), (file, len))) in names.into_iter().zip(files).enumerate() {
        visitor.segment_start(&name, first, &file);
        let segment = Segment { path: storage.path_of(&name), file: &*file, first, len };
        let end = chain.scan_segment(&segment, i + 1 == count, visitor, &mut report)?;
        visitor.segment_end(end);
        report.segments += 1;
        end_of_log = (segment.path, end);
        if !report.complete {
            break;
        }
        chain.bytes_before += len;
    }
    // Records the checkpoint vouches for were durable: a log that ends before it lost them
    // (every segment of them, when none is left).
    if let Some(checkpoint) = checkpoint
        && report.complete
        && chain.next_position < checkpoint.position
    {
        let (segment, offset) = end_of_log;
        let problem = if count == 0 {
            Problem::MissingSegment
        } else {
            Problem::EndsBeforeCheckpoint { checkpoint: checkpoint.position }
        };
        return Err(
            Corruption { segment, offset, position: Some(chain.next_position), problem }.into()
        );
    }
    // The unwritten segment was created to follow the one before it; if that one ends
    // elsewhere, records are missing in between.
    if report.complete
        && let Some(first) = unwritten_first
        && first != chain.next_position
        && let Some(segment) = report.unwritten_segment.clone()
    {
        let position = Some(chain.next_position);
        let problem = Problem::MissingSegment;
        return Err(Corruption { segment, offset: 0, position, problem }.into());
    }
    // Read-only, next to a running writer, the pass may have counted a group written but not
    // yet synced: syncing the last segment now makes every record it counted durable, so that a
    // digest never vouches for records a crash could still take back. (Recovery syncs what it
    // keeps itself.)
    if !writable_last && let Some((name, file)) = last {
        match file.sync_data() {
            // A copy on read-only media has nothing unsynced to sync.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::EINVAL)) => {}
            Err(e) => {
                // The pages a failed fsync left in the cache are dropped, as recovery does, so
                // that an audit run again does not count them (and a digest vouch for them).
                let _ = file.forget_cached();
                return Err(io_error(storage, &name)(e));
            }
            Ok(()) => {}
        }
    }
    visitor.progress(ScanProgress { bytes_done: bytes_total, bytes_total });
    report.records = chain.next_position;
    report.last_hash = chain.last_hash;
    Ok(report)
}

/// One segment file to scan.
struct Segment<'a> {
    path: PathBuf,
    file: &'a dyn StorageFile,
    first: u64,
    len: u64,
}

/// Where the chain of committed records stands between segments.
struct Chain {
    /// The position the next committed record gets: the head so far.
    next_position: u64,
    /// The chain hash of the last committed record.
    last_hash: ChainHash,
    /// The record before its position must hash as it says.
    checkpoint: Option<Checkpoint>,
    /// Whether chain hashes before the checkpoint are recomputed.
    chained: Chained,
    /// Bytes of the segments before this one, for progress.
    bytes_before: u64,
    bytes_total: u64,
}

impl Chain {
    /// Verifies one segment, handing its records to `visitor`, and returns the offset where
    /// its committed records end.
    fn scan_segment(
        &mut self,
        segment: &Segment<'_>,
        is_last: bool,
        visitor: &mut dyn Visitor,
        report: &mut ScanReport,
    ) -> Result<u64, ScanError> {
        let io_err = |source| ScanError::Io { path: segment.path.clone(), source };
        let corrupt = |offset: u64, position: u64, problem: Problem| -> ScanError {
            let (segment, position) = (segment.path.clone(), Some(position));
            Corruption { segment, offset, position, problem }.into()
        };
        match segment::check_header(segment.file).map_err(io_err)? {
            HeaderCheck::Valid(p) if p == segment.first && p == self.next_position => {}
            HeaderCheck::Valid(p) if p == segment.first && p > self.next_position => {
                return Err(corrupt(0, self.next_position, Problem::MissingSegment));
            }
            _ => return Err(corrupt(0, self.next_position, Problem::BadSegmentHeader)),
        }

        // Records of the current batch count once its last record is verified.
        let mut committed_end = SEGMENT_HEADER_LEN as u64;
        let mut position = self.next_position;
        let mut hash = self.last_hash;
        let mut pending = false;
        let mut next_progress = 0;
        let mut failure: Option<(u64, u64, Problem)> = None;
        let mut stopped = false;
        // Before the checkpoint of a log being opened, the chain is not verified. Of the batches
        // there, those that start at most a batch's length of records before it are hashed,
        // which includes the one that ends at it, whose hash the checkpoint names.
        let hash_from = match self.checkpoint {
            Some(c) if self.chained == Chained::FromCheckpoint => {
                c.position.saturating_sub(MAX_BATCH_RECORDS as u64)
            }
            _ => 0,
        };
        // The record format of the batch being read: a batch's records share one.
        let mut batch_format = None;
        let (stop_offset, stop) = segment::scan(
            segment.file,
            committed_end,
            segment.len,
            hash_from,
            |offset, view, chain, next| {
                let checkpoint = self.checkpoint.filter(|c| position < c.position);
                let skipped = checkpoint.is_some() && self.chained == Chained::FromCheckpoint;
                // `hash` is the chain hash at the last chain point: the record before, or the
                // record before the batch for a record of format 3.
                let problem = if view.position != position {
                    Some(Problem::PositionGap { found: view.position })
                } else if batch_format.is_some_and(|format| format != view.version)
                    || (!skipped && *view.prev_hash != hash)
                {
                    Some(Problem::BrokenChain)
                } else {
                    visitor.stream_version(view.stream, view.stream_version).err().map(|expected| {
                        Problem::StreamVersionGap { expected, found: view.stream_version }
                    })
                };
                if let Some(problem) = problem {
                    failure = Some((offset, position, problem));
                    return ControlFlow::Break(());
                }
                if let Some(next) = next {
                    visitor.upcoming(next);
                }
                let chain_point = !view.chains_by_batch() || view.ends_batch();
                batch_format = (!view.ends_batch()).then_some(view.version);
                let chain = match checkpoint {
                    // The record just before the checkpoint ties it to these bytes: the chain
                    // is verified onwards from its hash. A checkpoint is at a batch's end.
                    Some(c) if position + 1 == c.position => {
                        if !view.ends_batch() || chain.hash() != Some(c.hash) {
                            failure = Some((offset, position, Problem::CheckpointMismatch));
                            return ControlFlow::Break(());
                        }
                        ChainAt::Known(c.hash)
                    }
                    Some(_) if skipped => ChainAt::Unhashed,
                    _ if chain_point => match chain.hash() {
                        Some(known) => ChainAt::Known(known),
                        // Unhashed after the checkpoint: it is not at a batch's end.
                        None => {
                            failure = Some((offset, position, Problem::CheckpointMismatch));
                            return ControlFlow::Break(());
                        }
                    },
                    _ => chain,
                };
                if chain_point {
                    hash = chain.hash().unwrap_or([0; 32]);
                }
                let len = view.bytes.len() as u64;
                let record = ScannedRecord {
                    segment: &segment.path,
                    offset,
                    position: Position(position),
                    stream: view.stream,
                    stream_version: StreamVersion(view.stream_version),
                    event_type: view.event_type,
                    schema_version: view.schema_version,
                    timestamp: view.timestamp,
                    payload: view.payload,
                    chain,
                    ends_batch: view.ends_batch(),
                    len,
                };
                position += 1;
                pending = !view.ends_batch();
                if view.ends_batch() {
                    committed_end = offset + len;
                    self.next_position = position;
                    self.last_hash = hash;
                }
                if offset >= next_progress {
                    next_progress = offset + PROGRESS_EVERY;
                    let bytes_done = self.bytes_before + offset;
                    visitor.progress(ScanProgress { bytes_done, bytes_total: self.bytes_total });
                }
                if visitor.record(&record).is_break() {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )
        .map_err(io_err)?;
        if let Some((offset, position, problem)) = failure {
            return Err(corrupt(offset, position, problem));
        }
        report.bytes += committed_end;
        if stopped {
            report.complete = false;
            return Ok(committed_end);
        }

        // Classify how the scan ended. Acknowledged records are contiguous and each was
        // fsynced before the next group was written, so only the last group of the last
        // segment can be torn: a damaged record there with no valid record and no other data
        // after it. Anything else is corruption. A damaged record is named by the position it
        // should have had; a segment cut inside a batch by the position the batch starts at.
        let (at, batch_start) = (position, self.next_position);
        let torn_end = match stop {
            ScanEnd::End | ScanEnd::Stopped => stop_offset,
            ScanEnd::Unused => {
                let clean_end =
                    segment::is_zero(segment.file, stop_offset, segment.len).map_err(io_err)?;
                let appended =
                    !clean_end && is_last && grew(segment, stop_offset).map_err(io_err)?;
                if !clean_end && !appended {
                    return Err(corrupt(stop_offset, at, Problem::DataAfterEnd));
                }
                stop_offset
            }
            ScanEnd::Damaged(damage) => {
                let limit = (stop_offset + MAX_RECORD_LEN as u64).min(segment.len);
                let torn = is_last
                    && segment::is_zero(segment.file, limit, segment.len).map_err(io_err)?
                    && !segment::has_record_within(segment.file, stop_offset + 1, limit)
                        .map_err(io_err)?;
                if torn {
                    limit
                } else if is_last && grew(segment, stop_offset).map_err(io_err)? {
                    stop_offset
                } else {
                    return Err(corrupt(stop_offset, at, problem_of(damage)));
                }
            }
        };
        if !is_last && pending {
            return Err(corrupt(committed_end, batch_start, Problem::SegmentEndsInsideBatch));
        }
        if torn_end > committed_end {
            // A torn write: an incomplete batch and/or a record cut short, then zeros.
            let mut torn = vec![0u8; usize::try_from(torn_end - committed_end).unwrap_or(0)];
            let n = segment.file.read_at(&mut torn, committed_end).map_err(io_err)?;
            let bytes = torn[..n].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
            if bytes > 0 {
                let (path, offset, bytes) = (segment.path.clone(), committed_end, bytes as u64);
                report.torn_tail = Some(TornTail { segment: path, offset, bytes });
            }
        }
        Ok(committed_end)
    }
}

/// Whether a valid record now starts at `offset`, where the pass found none: a writer appended
/// while the pass was reading (audits run next to a running writer). The pass then ends where it
/// stopped, as at the end of a snapshot. On a log nobody writes, this is never true.
fn grew(segment: &Segment<'_>, offset: u64) -> io::Result<bool> {
    let mut window = segment::Window::default();
    Ok(window.record_at(segment.file, offset, segment.len)?.is_ok())
}

fn problem_of(damage: Damage) -> Problem {
    match damage {
        Damage::BadChecksum => Problem::BadChecksum,
        Damage::BadHeader | Damage::Unused => Problem::BadHeader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-only scan counts each stream's versions apart, however alike their ids, and
    /// names the version it expected when one is skipped or repeated.
    #[test]
    fn a_read_only_scan_counts_each_stream_apart_and_names_the_version_expected() {
        let (mut progress, mut visit) = (|_| {}, |_: &ScannedRecord<'_>| ControlFlow::Continue(()));
        let mut scan = ReadOnly {
            versions: StreamVersions::default(),
            progress: &mut progress,
            visit: &mut visit,
        };
        let long = [b'x'; 200];
        for (stream, version) in [
            (&b"t/o/1"[..], 0),
            (b"t/o/1", 1),
            (b"t/o/10", 0),
            (b"", 0),
            (&long[..], 0),
            (b"t/o/1", 2),
            (&long[..], 1),
        ] {
            assert_eq!(scan.stream_version(stream, version), Ok(()), "{stream:?} {version}");
        }
        assert_eq!(scan.stream_version(b"t/o/10", 2), Err(1), "a version skipped");
        assert_eq!(scan.stream_version(b"t/o/1", 2), Err(3), "a version repeated");
        assert_eq!(scan.stream_version(b"t/o/2", 1), Err(0), "a stream's first is 0");
    }
}
