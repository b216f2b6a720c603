//! orderly-store: a generic, durable, append-only log of records in segment files.
//!
//! Appenders hand batches to one writer ([`Log::append`], [`Log::append_with`]), a pipeline of
//! three threads that commits whatever is queued with one `write` and one `fdatasync` (group
//! commit) and only then answers. Positions are assigned at commit, gapless and in order. Every
//! record carries a CRC32C and the blake3 chain hash at the record before its batch (each
//! batch is hashed whole, keyed by it), so any change to the log is detected.
//! `docs/design/event-log.md` documents the format and why commit and recovery are safe.
//!
//! **Architecture Invariant:** this crate knows nothing of orders, tenants or HTTP; stream ids,
//! event types and payloads are opaque.

mod checkpoint;
mod error;
pub mod faults;
mod index;
pub mod limits;
mod log;
mod observer;
mod position;
pub mod prefetch;
mod record;
mod recovery;
mod scan;
mod segment;
mod storage;
mod versions;
mod writer;

pub use error::{AppendError, Corruption, OpenError, Problem, ReadError};
pub use log::{
    Appended, DEFAULT_CHECKPOINT_EVERY, FaultsHandle, Log, LogConfig, LogReader, Reader,
    Subscription,
};
pub use observer::{Callback, GroupSynced, OpenProgress, SyncObserver};
pub use position::{Position, StreamVersion};
pub use record::{ChainHash, Expected, NewRecord, Record};
pub use recovery::{Recovery, TornTail};
pub use scan::{ScanError, ScanProgress, ScanReport, ScannedRecord, scan};
pub use storage::{DirStorage, Storage, StorageFile};
