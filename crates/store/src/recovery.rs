//! Recovery on open: verify every segment, rebuild the index, and cut a torn tail.
//!
//! Every record is checked: checksum, position in sequence, hash chain, stream version in
//! sequence. A batch counts only with its last record (flag `batch end`), so a batch cut by a
//! crash disappears whole. Only the last segment can end in a torn write; there, a damaged
//! record followed by nothing but zeros is a torn tail and is cut (and reported). Damage
//! anywhere else is corruption, reported with segment and byte offset, and the log does not
//! open. See `docs/design/event-log.md` for why this is safe.

use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rustc_hash::FxHashMap;

use crate::error::{Corruption, OpenError, Problem};
use crate::index::{Index, SegmentMeta};
use crate::limits::{MAX_RECORD_LEN, SEGMENT_HEADER_LEN};
use crate::record::{ChainHash, Damage};
use crate::segment::{self, HeaderCheck, ScanEnd};
use crate::storage::Storage;

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

/// Verifies the log in `storage` and rebuilds its index. With `writable`, a torn tail is cut
/// and an unwritten last segment removed; without, they are only reported.
pub(crate) fn recover(storage: &dyn Storage, writable: bool) -> Result<Recovered, OpenError> {
    let io_err = |name: &str| {
        let path = storage.path_of(name);
        move |source: io::Error| OpenError::Io { path, source }
    };
    let mut names: Vec<(u64, String)> = storage
        .list()
        .map_err(io_err("."))?
        .into_iter()
        .filter_map(|n| segment::parse_name(&n).map(|first| (first, n)))
        .collect();
    names.sort();

    let mut report = Recovery::default();
    let mut removed_first = None;
    // A last segment whose creation was cut short (never written at all) is dropped first, so
    // that the segment before it is treated, and opened, as the last one.
    if let Some((_, name)) = names.last() {
        let file = storage.open(name, false).map_err(io_err(name))?;
        let len = file.size().map_err(io_err(name))?;
        if segment::check_header(&*file).map_err(io_err(name))? == HeaderCheck::Unwritten
            && segment::is_zero(&*file, 0, len).map_err(io_err(name))?
        {
            drop(file);
            if writable {
                storage.remove(name).map_err(io_err(name))?;
            }
            report.removed_segment = Some(storage.path_of(name));
            removed_first = names.pop().map(|(first, _)| first);
        }
    }

    let mut index = Index::default();
    let mut next_position = 0u64;
    let mut last_hash: ChainHash = [0; 32];
    let count = names.len();
    for (i, (first, name)) in names.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let path = storage.path_of(&name);
        let corrupt = |offset: u64, position: Option<u64>, problem: Problem| {
            OpenError::Corrupt(Corruption { segment: path.clone(), offset, position, problem })
        };
        let file = storage.open(&name, writable && is_last).map_err(io_err(&name))?;
        match segment::check_header(&*file).map_err(io_err(&name))? {
            HeaderCheck::Valid(p) if p == first && p == next_position => {}
            HeaderCheck::Valid(p) if p == first && p > next_position => {
                return Err(corrupt(0, Some(next_position), Problem::MissingSegment));
            }
            _ => return Err(corrupt(0, Some(next_position), Problem::BadSegmentHeader)),
        }
        let len = file.size().map_err(io_err(&name))?;
        index.add_segment(Arc::new(SegmentMeta {
            name: name.clone(),
            first,
            file: file.clone(),
            committed_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
        }));

        // Scan, keeping the records of the current batch aside until its end.
        let mut pending: Vec<Pending> = Vec::new();
        let mut pending_versions: FxHashMap<Box<[u8]>, u64> = FxHashMap::default();
        let mut committed_end = SEGMENT_HEADER_LEN as u64;
        let mut position = next_position;
        let mut hash = last_hash;
        let mut failure: Option<(u64, Option<u64>, Problem)> = None;
        let (stop_offset, stop) = segment::scan(&*file, committed_end, len, |offset, view| {
            let problem = if view.position != position {
                Some(Problem::PositionGap { found: view.position })
            } else if *view.prev_hash != hash {
                Some(Problem::BrokenChain)
            } else {
                let expected = pending_versions
                    .get(view.stream)
                    .copied()
                    .unwrap_or_else(|| index.stream_len(view.stream));
                (view.stream_version != expected)
                    .then_some(Problem::StreamVersionGap { expected, found: view.stream_version })
            };
            if let Some(problem) = problem {
                failure = Some((offset, Some(position), problem));
                return ControlFlow::Break(());
            }
            pending_versions.insert(view.stream.into(), view.stream_version + 1);
            pending.push(Pending { stream: view.stream.into(), position, offset });
            position += 1;
            hash = view.hash();
            if view.ends_batch() {
                for p in pending.drain(..) {
                    let _version = index.add_record(&p.stream, p.position, p.offset);
                }
                pending_versions.clear();
                committed_end = offset + view.bytes.len() as u64;
                next_position = position;
                last_hash = hash;
            }
            ControlFlow::Continue(())
        })
        .map_err(io_err(&name))?;
        if let Some((offset, position, problem)) = failure {
            return Err(corrupt(offset, position, problem));
        }

        // Classify how the scan ended. Acknowledged records are contiguous and each was
        // fsynced before the next group was written, so only the last group of the last
        // segment can be torn: a damaged record there with no valid record and no other data
        // after it. Anything else is corruption.
        let at = Some(next_position);
        let torn_end = match stop {
            ScanEnd::End | ScanEnd::Stopped => stop_offset,
            ScanEnd::Unused => {
                if !segment::is_zero(&*file, stop_offset, len).map_err(io_err(&name))? {
                    return Err(corrupt(stop_offset, at, Problem::DataAfterEnd));
                }
                stop_offset
            }
            ScanEnd::Damaged(damage) => {
                let limit = (stop_offset + MAX_RECORD_LEN as u64).min(len);
                let torn = is_last
                    && segment::is_zero(&*file, limit, len).map_err(io_err(&name))?
                    && !segment::has_record_within(&*file, stop_offset + 1, limit)
                        .map_err(io_err(&name))?;
                if !torn {
                    return Err(corrupt(stop_offset, at, problem_of(damage)));
                }
                limit
            }
        };
        if !is_last && !pending.is_empty() {
            return Err(corrupt(committed_end, at, Problem::SegmentEndsInsideBatch));
        }
        if torn_end > committed_end {
            // A torn write: an incomplete batch and/or a record cut short, then zeros.
            let mut torn = vec![0u8; usize::try_from(torn_end - committed_end).expect("fits")];
            let n = file.read_at(&mut torn, committed_end).map_err(io_err(&name))?;
            let bytes = torn[..n].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
            if bytes > 0 {
                if writable {
                    torn[..bytes].fill(0);
                    file.write_at(&torn[..bytes], committed_end).map_err(io_err(&name))?;
                    file.sync_data().map_err(io_err(&name))?;
                }
                let (segment, offset, bytes) = (path.clone(), committed_end, bytes as u64);
                report.torn_tail = Some(TornTail { segment, offset, bytes });
            }
        }
        let segment = index.segments.last().expect("just added");
        segment.committed_end.store(committed_end, std::sync::atomic::Ordering::Release);
    }
    // The dropped segment was created to follow the one before it; if that one ends elsewhere,
    // records are missing in between.
    if let Some(first) = removed_first
        && first != next_position
        && let Some(segment) = report.removed_segment.clone()
    {
        let position = Some(next_position);
        let problem = Problem::MissingSegment;
        return Err(OpenError::Corrupt(Corruption { segment, offset: 0, position, problem }));
    }
    report.records = next_position;
    report.segments = index.segments.len();
    Ok(Recovered { index, next_position, last_hash, report })
}

fn problem_of(damage: Damage) -> Problem {
    match damage {
        Damage::BadChecksum => Problem::BadChecksum,
        Damage::BadHeader | Damage::Unused => Problem::BadHeader,
    }
}
