//! What can go wrong when executing a command.

use orderly_store::{OpenError, ReadError};

use crate::codec::DecodeError;
use crate::domain::{IdempotencyKey, Rejection};

/// The engine could not do its job; nothing about the command itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The admission queue is full: shed load or retry later (HTTP 429/503).
    #[error("the engine is overloaded; retry later")]
    Overloaded,
    /// The log stopped after a storage error; nothing more is accepted until the engine is
    /// reopened. A command not acknowledged may or may not have reached the disk: after the
    /// reopen, a retry with its idempotency key tells which.
    #[error("the engine stopped after a storage error: {cause}")]
    Stopped {
        /// The storage error.
        cause: String,
    },
    /// The engine is shutting down, or was shut down: it admits no more commands.
    #[error("the engine is shut down or shutting down")]
    ShuttingDown,
    /// Deciding the command broke an assumption the domain makes of its state (a bug, or a
    /// log rewritten outside the engine that its open did not catch): the command was
    /// refused and nothing recorded; the engine goes on with other commands.
    #[error("the state the command is about is inconsistent; nothing was recorded: {detail}")]
    Inconsistent {
        /// What the domain found.
        detail: String,
    },
}

/// Why a command was not executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// The domain refused the command; nothing was recorded.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The idempotency key was first used with a different command.
    #[error("idempotency key {key} was already used with a different command")]
    IdempotencyKeyReused {
        /// The key.
        key: IdempotencyKey,
    },
    /// The idempotency key starts with [`RESERVED_KEY_PREFIX`](crate::domain::RESERVED_KEY_PREFIX):
    /// it belongs to the payments process, and nothing was admitted.
    #[error(
        "idempotency key {key} is reserved: keys starting with `pm:` are the payments process's"
    )]
    IdempotencyKeyReserved {
        /// The key.
        key: IdempotencyKey,
    },
    /// The engine could not take the command.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ExecuteError {
    /// Stable snake_case code, part of the API.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ExecuteError::Rejected(rejection) => rejection.code(),
            ExecuteError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            ExecuteError::IdempotencyKeyReserved { .. } => "idempotency_key_reserved",
            ExecuteError::Engine(EngineError::Overloaded) => "overloaded",
            ExecuteError::Engine(EngineError::Stopped { .. }) => "engine_stopped",
            ExecuteError::Engine(EngineError::ShuttingDown) => "shutting_down",
            ExecuteError::Engine(EngineError::Inconsistent { .. }) => "state_inconsistent",
        }
    }
}

/// Why the engine could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenEngineError {
    /// The log could not be opened (IO, lock, corruption).
    #[error(transparent)]
    Log(#[from] OpenError),
    /// A committed record could not be read back.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The folder is a node's data folder, whose log is in its `log` folder
    /// ([`crate::node::LOG_DIR`]): an engine opened on it would start a second, empty log
    /// beside the node's.
    #[error(
        "{} is a node's data folder, its log is in {}: open it with Node::open, or the engine on its log folder",
        path.display(),
        path.join(crate::node::LOG_DIR).display()
    )]
    NodeFolder {
        /// The folder given.
        path: std::path::PathBuf,
    },
    /// A committed record does not decode: the log was written by an unknown version, or is
    /// damaged in a way its checksums did not catch.
    #[error("record at position {position} does not decode: {error}")]
    Decode {
        /// The record's position.
        position: u64,
        /// Why.
        error: DecodeError,
    },
    /// The engine's snapshot was written once every record before `snapshot` was durable
    /// (and acknowledged), yet the log now ends at `head`, before it: the log lost records
    /// whose commands were acknowledged (damage that recovery took for a torn write and cut,
    /// or a log put back from an older copy). The engine does not decide again what it
    /// already answered. Put back a copy of the log that holds them, or, to go on without
    /// them, remove the snapshot file.
    #[error(
        "the log ends at position {head}, before the engine's snapshot at {snapshot}: records \
         of acknowledged commands are missing; restore the log from a copy that holds them, or \
         remove {} to open without them",
        path.display()
    )]
    LogEndsBeforeSnapshot {
        /// Where the snapshot was taken: every record before it was acknowledged.
        snapshot: u64,
        /// Where the log ends now.
        head: u64,
        /// The snapshot file.
        path: std::path::PathBuf,
    },
    /// A committed record holds an event the state before it cannot take: the log was
    /// rewritten with recomputed checksums, or written by a bug. The engine will not decide on
    /// a state that is not the log's; `orderly audit reconcile` names every such record.
    #[error("record at position {position} breaks the domain's rules: {invariant}")]
    Inconsistent {
        /// The record's position.
        position: u64,
        /// The rule it breaks, as the domain names it.
        invariant: String,
    },
}
