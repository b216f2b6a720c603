//! `verify` and `digest`: the whole log, checked record by record.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;

use orderly_store::ScanReport;

use super::Progress;
use super::digest::Digest;
use super::error::AuditError;
use super::pass::{self, Batch};
use crate::codec::DecodeError;

/// What [`verify`] found in an intact log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Committed records: the head of the log.
    pub records: u64,
    /// Domain events in them (a decision record holds every event of one command).
    pub events: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of committed records and segment headers.
    pub bytes: u64,
    /// The digest of the whole log: the head and the chain hash of the last record.
    pub digest: Digest,
    /// Admission time of the first and the last record (ms since the Unix epoch).
    pub first_timestamp: Option<u64>,
    /// See `first_timestamp`.
    pub last_timestamp: Option<u64>,
    /// The digest the log was checked to extend, if one was given.
    pub extends: Option<Digest>,
    /// Bytes after the last complete batch that are not a clean end. A warning, not
    /// corruption: see [`TornTailWarning`].
    pub torn_tail: Option<TornTailWarning>,
    /// A last segment file created but never written (a crash while creating it); a warning.
    pub unwritten_segment: Option<PathBuf>,
}

/// Bytes after the last complete batch of the last segment that do not form a complete
/// batch, followed by nothing but zeros.
///
/// From outside the writer, a write in progress (the folder of a running server) and a torn
/// write left by a crash look the same, and neither was ever acknowledged: the writer answers
/// only after the whole group is synced, and recovery cuts these bytes when the log is next
/// opened for writing. So they are reported, with their place, and not as corruption. One
/// caveat: damage to the very last acknowledged record looks the same; a digest published
/// after it (see [`verify`] with `expected`) is what tells the two apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TornTailWarning {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset where the committed log ends and the torn bytes begin.
    pub offset: u64,
    /// How many bytes after `offset` are not zero.
    pub bytes: u64,
}

/// Verifies the log in `dir`, read-only and without its lock: every record's checksum and
/// header, the hash chain across segments, gapless positions, consecutive stream versions, and
/// that every payload decodes with its schema version. With `expected`, it also proves that the
/// log still extends that digest: it has at least `expected.head` records and the record at
/// `expected.head - 1` has exactly that chain hash.
///
/// Returns the first problem found (with segment file, byte offset and position), or what an
/// intact log holds. A torn tail is a warning in the report, not an error.
pub fn verify(
    dir: &Path,
    expected: Option<Digest>,
    progress: &mut dyn FnMut(Progress),
) -> Result<VerifyReport, AuditError> {
    let mut at_expected = None;
    let mut summary = Summary::default();
    let wanted = expected.and_then(|d| d.head.checked_sub(1));
    let scan = pass::run(
        dir,
        progress,
        |record| {
            if Some(record.position.0) == wanted {
                at_expected = record.chain_hash();
            }
        },
        |batch| {
            summary.add(batch);
            ControlFlow::Continue(())
        },
    );
    let scan = match scan {
        // A newer orderly's record: this build cannot judge the log, unless it no longer
        // extends the digest, which the scan past that record still shows (a rewrite).
        Err(newer @ AuditError::Undecodable { error: DecodeError::NewerSchema { .. }, .. }) => {
            if let Some(expected) = expected.filter(|d| d.head > 0) {
                let found = at_expected.map(|hash| Digest { head: expected.head, hash });
                if found != Some(expected) {
                    return Err(AuditError::DigestMismatch { expected, found });
                }
            }
            return Err(newer);
        }
        other => other?,
    };
    if let Some(expected) = expected {
        // The hash counts only if its record is committed (not in a torn batch).
        let found = match expected.head {
            0 => Some(Digest { head: 0, hash: [0; 32] }),
            head if head <= scan.records => at_expected.map(|hash| Digest { head, hash }),
            _ => None,
        };
        if found != Some(expected) {
            return Err(AuditError::DigestMismatch { expected, found });
        }
    }
    Ok(summary.report(scan, expected))
}

/// What [`verify`] counts of the batches it sees, besides what the scan reports.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    first_timestamp: Option<u64>,
    pub last_timestamp: Option<u64>,
    events: u64,
}

impl Summary {
    pub(crate) fn add(&mut self, batch: &Batch<'_>) {
        if let (None, Some(first)) = (self.first_timestamp, batch.entries.first()) {
            self.first_timestamp = Some(first.timestamp);
        }
        self.last_timestamp = batch.entries.last().map(|e| e.timestamp).or(self.last_timestamp);
        self.events += batch.entries.iter().map(|e| e.record.events().len() as u64).sum::<u64>();
    }

    /// The report of an intact log that `scan` read, checked to extend `extends` if given.
    pub(crate) fn report(self, scan: ScanReport, extends: Option<Digest>) -> VerifyReport {
        VerifyReport {
            records: scan.records,
            events: self.events,
            segments: scan.segments,
            bytes: scan.bytes,
            digest: Digest { head: scan.records, hash: scan.last_hash },
            first_timestamp: self.first_timestamp,
            last_timestamp: self.last_timestamp,
            extends,
            torn_tail: TornTailWarning::of(&scan),
            unwritten_segment: scan.unwritten_segment,
        }
    }
}

impl TornTailWarning {
    /// The warning of a pass that found bytes after the last complete batch.
    pub(crate) fn of(scan: &orderly_store::ScanReport) -> Option<TornTailWarning> {
        let torn = scan.torn_tail.as_ref()?;
        Some(TornTailWarning {
            segment: torn.segment.clone(),
            offset: torn.offset,
            bytes: torn.bytes,
        })
    }
}

/// The digest of the log in `dir` (its head and the chain hash of its last record), after
/// verifying it as [`verify`] does: a digest is only worth publishing for an intact log.
pub fn digest(dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Digest, AuditError> {
    Ok(verify(dir, None, progress)?.digest)
}
