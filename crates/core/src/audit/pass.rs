//! The one pass every audit command makes: scan the log (verifying every record), decode
//! every payload, and hand over complete batches.

use std::ops::ControlFlow;
use std::path::Path;

use orderly_store::{ChainHash, ScanReport, ScannedRecord};

use super::Progress;
use super::error::{AuditError, Location};
use crate::codec::{self, DecodeError, Decoded};

/// A committed, decoded record.
#[derive(Debug)]
pub(crate) struct Entry {
    pub position: u64,
    pub timestamp: u64,
    pub record: Decoded,
    /// Where it is, for reports that name it.
    pub segment_offset: u64,
}

/// One complete batch: the unit that is applied all or nothing.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub entries: &'a [Entry],
    /// The segment the batch is in (a batch never spans segments).
    pub segment: &'a Path,
    /// The chain hash at the batch's last record.
    pub last_hash: ChainHash,
}

impl Batch<'_> {
    /// Where `entry` of this batch is.
    pub(crate) fn location(&self, entry: &Entry) -> Location {
        Location {
            segment: self.segment.to_path_buf(),
            offset: entry.segment_offset,
            position: Some(entry.position),
        }
    }
}

/// Scans the log in `dir`, decoding every record and calling `on_batch` with each complete
/// batch in log order, until the end or until `on_batch` breaks. `on_record` sees each record
/// as it is verified, before its batch is complete (for checks at a position, such as a
/// digest).
///
/// A record of a newer orderly (`DecodeError::NewerSchema`) ends the decoding, not the scan:
/// the rest is still verified as the store's records (checksums, chain, positions), and
/// `on_record` still sees it, so that damage after it, or a digest no longer extended, is
/// still found; that error then comes first, the newer record's after.
pub(crate) fn run(
    dir: &Path,
    progress: &mut dyn FnMut(Progress),
    mut on_record: impl FnMut(&ScannedRecord<'_>),
    mut on_batch: impl FnMut(&Batch<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, AuditError> {
    let mut entries: Vec<Entry> = Vec::with_capacity(1024);
    let mut failure = None;
    let mut newer = None;
    let report = orderly_store::scan(dir, progress, |record| {
        on_record(record);
        if newer.is_some() {
            return ControlFlow::Continue(());
        }
        let decoded =
            codec::decode(record.stream, record.event_type, record.schema_version, record.payload);
        match decoded {
            Ok(decoded) => entries.push(Entry {
                position: record.position.0,
                timestamp: record.timestamp,
                record: decoded,
                segment_offset: record.offset,
            }),
            Err(error) => {
                let at = Location {
                    segment: record.segment.to_path_buf(),
                    offset: record.offset,
                    position: Some(record.position.0),
                };
                if let DecodeError::NewerSchema { .. } = error {
                    newer = Some(AuditError::Undecodable { at, error });
                    entries.clear();
                    return ControlFlow::Continue(());
                }
                failure = Some(AuditError::Undecodable { at, error });
                return ControlFlow::Break(());
            }
        }
        if !record.ends_batch {
            return ControlFlow::Continue(());
        }
        let last_hash = record.chain_hash().expect("an audit's scan hashes every record");
        let batch = Batch { entries: &entries, segment: record.segment, last_hash };
        let flow = on_batch(&batch);
        entries.clear();
        flow
    })?;
    match failure.or(newer) {
        Some(failure) => Err(failure),
        None => Ok(report),
    }
}
