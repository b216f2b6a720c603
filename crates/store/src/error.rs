//! Errors of the log, one small enum per operation.

use std::path::PathBuf;

use crate::position::StreamVersion;

/// A place in the log where the bytes are not what was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem} in {} at byte offset {offset}{}", segment.display(),
    position.map(|p| format!(" (position {p})")).unwrap_or_default())]
pub struct Corruption {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset within the segment file.
    pub offset: u64,
    /// The position the record there should have had, when known.
    pub position: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong at a corrupt place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A record's checksum does not match its bytes.
    #[error("record checksum mismatch")]
    BadChecksum,
    /// A record's header is impossible (version, lengths, flags) or runs past the segment.
    #[error("malformed record header")]
    BadHeader,
    /// A record does not carry the chain hash at the record before it (format 3: before its
    /// batch), or its format differs from the rest of its batch's.
    #[error("hash chain broken")]
    BrokenChain,
    /// A record's position is not the one after the previous record's.
    #[error("position out of sequence (found {found})")]
    PositionGap {
        /// The position the record carries.
        found: u64,
    },
    /// A record's stream version is not the one after its stream's previous record's.
    #[error("stream version out of sequence (expected {expected}, found {found})")]
    StreamVersionGap {
        /// The version the record should carry.
        expected: u64,
        /// The version it carries.
        found: u64,
    },
    /// A segment header is damaged or names the wrong first position.
    #[error("bad segment header")]
    BadSegmentHeader,
    /// A closed segment does not end with the last record of a batch.
    #[error("segment ends inside a batch")]
    SegmentEndsInsideBatch,
    /// Bytes were found after the end of the log, beyond what a torn write could leave.
    #[error("data after the end of the log")]
    DataAfterEnd,
    /// A closed segment is missing between two others.
    #[error("segment missing before this one")]
    MissingSegment,
    /// The record before the log's checkpoint does not hash to the checkpoint's hash: the log
    /// was rewritten, or the checkpoint file belongs to another log.
    #[error(
        "the record before the checkpoint does not match it (the log was rewritten, or the \
         `checkpoint` file belongs to another log; removing it verifies the whole chain)"
    )]
    CheckpointMismatch,
    /// The log ends before the position its checkpoint recorded: durable records are gone,
    /// or the folder is a copy taken while its log ran, whose checkpoint file was copied after
    /// its segments.
    #[error(
        "the log ends before its checkpoint at position {checkpoint}: records are missing (if this folder is a copy taken while a server ran, its `checkpoint` file may be newer than its segments: remove that file from the copy, and the next open verifies the whole log)"
    )]
    EndsBeforeCheckpoint {
        /// The checkpoint's position.
        checkpoint: u64,
    },
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file system failed.
    #[error("cannot open the log in {}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another writer holds the log open: another process, or a log (or engine) still open,
    /// or still stopping, in this one.
    #[error("the log in {} is held by another writer (another process, or a handle still open in this one)", dir.display())]
    Locked {
        /// The data folder.
        dir: PathBuf,
    },
    /// The log is corrupt before its tail; it refuses to open for writing.
    #[error("the log is corrupt: {0}")]
    Corrupt(#[from] Corruption),
    /// The configuration is unusable.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
}

/// Why a batch was not appended. Nothing of a batch that got an error was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// A record's expected stream version did not match; nothing of the batch was written.
    #[error(
        "version conflict on stream {}: expected {expected}, actual {actual}",
        String::from_utf8_lossy(stream)
    )]
    Conflict {
        /// The stream.
        stream: Vec<u8>,
        /// The version the record expected.
        expected: StreamVersion,
        /// The stream's version when the batch was decided.
        actual: StreamVersion,
    },
    /// The writer's queue is full: back off and retry, or shed load.
    #[error("the log's queue is full")]
    QueueFull,
    /// The batch is empty, too large, or has a record outside the limits.
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// A write or fsync failed, so the log stopped accepting appends (fail-stop); reopen it to
    /// recover. Whether this batch reached the disk is unknown; it was not acknowledged.
    #[error("the log stopped after a storage error: {cause}")]
    Stopped {
        /// The first storage error.
        cause: String,
    },
    /// The log is shutting down.
    #[error("the log is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file system failed.
    #[error("cannot read the log: {0}")]
    Io(#[from] std::io::Error),
    /// A committed record no longer matches its checksum.
    #[error("the log is corrupt: {0}")]
    Corrupt(#[from] Corruption),
}
