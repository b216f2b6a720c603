//! What can stop an audit, each naming where in the log it happened.

use std::path::PathBuf;

use orderly_store::{Corruption, Problem, ScanError};
use serde::Serialize;

use super::digest::Digest;
use crate::codec::DecodeError;

/// A place in the log: segment file, byte offset within it, and the record's position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the record within the segment file.
    pub offset: u64,
    /// The position of the record there (or the position it should have had).
    pub position: Option<u64>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte offset {}", self.segment.display(), self.offset)?;
        if let Some(position) = self.position {
            write!(f, " (position {position})")?;
        }
        Ok(())
    }
}

/// Why an audit could not vouch for the log. The first problem found stops the pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file system failed.
    #[error("cannot read the log at {}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The folder holds no log segment at all: it is not a log folder (a log, even an empty
    /// one, has its first segment from the start), so there is nothing to vouch for.
    #[error("no log in {}: it holds no segment file", dir.display())]
    NoLog {
        /// The folder.
        dir: PathBuf,
    },
    /// A replay was asked for a position past the log's head.
    #[error("position {asked} is beyond the log's head {head}")]
    BeyondHead {
        /// The position asked for (records `0..asked`).
        asked: u64,
        /// Records in the log.
        head: u64,
    },
    /// The bytes of the log are not what was written: a checksum, header, position, hash
    /// chain or stream version is wrong, a segment is missing, or data follows the end.
    #[error("the log is corrupt: {0}")]
    Corrupt(Corruption),
    /// A record is intact but its payload does not decode with its event type and schema
    /// version.
    #[error("undecodable record in {at}: {error}")]
    Undecodable {
        /// Where.
        at: Location,
        /// Why.
        error: DecodeError,
    },
    /// The log does not extend the expected digest: a record before it was rewritten, or the
    /// log ends before it.
    #[error("digest mismatch: expected {expected}, the log has {}", found.map_or_else(
        || "fewer records".to_owned(), |d| d.to_string()))]
    DigestMismatch {
        /// The digest the log was expected to extend.
        expected: Digest,
        /// What the log has at the digest's position, when it has that many records.
        found: Option<Digest>,
    },
    /// An intact, decodable event that the domain cannot apply to the state before it (its
    /// `evolve` asserts an invariant): the log records something that could not have been
    /// decided.
    #[error("the domain cannot apply the event in {at}: {message}")]
    Inconsistent {
        /// Where.
        at: Location,
        /// The invariant the domain names.
        message: String,
    },
}

impl AuditError {
    /// A stable snake_case code for the kind of problem, for exit reports and JSON.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Io { .. } => "io",
            AuditError::NoLog { .. } => "no_log",
            AuditError::BeyondHead { .. } => "beyond_head",
            AuditError::Corrupt(c) => match c.problem {
                Problem::BadChecksum => "bad_checksum",
                Problem::BadHeader => "bad_header",
                Problem::BrokenChain => "broken_chain",
                Problem::PositionGap { .. } => "position_gap",
                Problem::StreamVersionGap { .. } => "stream_version_gap",
                Problem::BadSegmentHeader => "bad_segment_header",
                Problem::SegmentEndsInsideBatch => "segment_ends_inside_batch",
                Problem::DataAfterEnd => "data_after_end",
                Problem::MissingSegment => "missing_segment",
                _ => "corrupt",
            },
            AuditError::Undecodable { error: DecodeError::NewerSchema { .. }, .. } => {
                "newer_schema"
            }
            AuditError::Undecodable { .. } => "undecodable",
            AuditError::DigestMismatch { .. } => "digest_mismatch",
            AuditError::Inconsistent { .. } => "inconsistent",
        }
    }

    /// Where in the log the problem is, when it is at one place.
    #[must_use]
    pub fn location(&self) -> Option<Location> {
        match self {
            AuditError::Corrupt(c) => Some(Location {
                segment: c.segment.clone(),
                offset: c.offset,
                position: c.position,
            }),
            AuditError::Undecodable { at, .. } | AuditError::Inconsistent { at, .. } => {
                Some(at.clone())
            }
            AuditError::Io { .. }
            | AuditError::NoLog { .. }
            | AuditError::BeyondHead { .. }
            | AuditError::DigestMismatch { .. } => None,
        }
    }
}

impl From<ScanError> for AuditError {
    fn from(error: ScanError) -> AuditError {
        match error {
            ScanError::Io { path, source } => AuditError::Io { path, source },
            ScanError::Corrupt(corruption) => AuditError::Corrupt(corruption),
            ScanError::NoLog { dir } => AuditError::NoLog { dir },
            // A scan error this build does not know yet is still a failure to read the log.
            other => AuditError::Io { path: PathBuf::new(), source: std::io::Error::other(other) },
        }
    }
}
