//! Audit: an auditor (or an incident responder) takes a data folder and proves what happened.
//!
//! Every function here takes the log's own folder: an engine's folder, or a node's
//! `{data}/log` ([`crate::node::LOG_DIR`]; the CLI's `--data` takes the data folder and adds it).
//!
//! Every command here reads the log **read-only and without its lock**, so it works on the
//! folder of a running server and on a copy, and it never changes a byte (a torn tail is
//! reported, not cut). Each is one sequential pass over the log through
//! [`orderly_store::scan`], which verifies every record (checksum, header, position, hash
//! chain, stream version) as it reads it; every payload is decoded with its schema version.
//!
//! - [`verify`]: the whole log, and optionally that it still extends a published [`Digest`].
//! - [`digest`]: the head and the chain hash of the last record, to publish.
//! - [`replay`]: the state as of a position or a time, optionally for one tenant, rebuilt with
//!   the domain's own `evolve`.
//! - [`trace`]: every event of one order, its payments and its stock holds, in log order.
//! - [`reconcile`]: stock and money recomputed from the events alone, compared with the
//!   domain's state and with the rules money and stock must keep.
//! - [`check`]: `verify`, `reconcile` and `replay` to the head in one pass, for a caller that
//!   wants all three.
//!
//! Every command takes a progress hook ([`Progress`]: bytes done and total) for a progress
//! bar. Results are plain structs that derive `Serialize`.
//!
//! Only complete batches count: the records of a batch cut short at the end of the log (a
//! write in progress or a crash's torn write, never acknowledged) are reported as a torn tail
//! and not applied.

mod check;
mod digest;
mod error;
mod pass;
mod reconcile;
mod replay;
mod state;
mod trace;
mod verify;

pub use check::{Checked, check};
pub use digest::{Digest, DigestParseError};
pub use error::{AuditError, Location};
pub use orderly_store::ScanProgress as Progress;
pub use reconcile::{Discrepancy, MoneyTotals, Reconciliation, StockLedger, reconcile};
pub use replay::{OrderCounts, ReplayPoint, ReplayReport, SkuLevel, TenantSnapshot, replay};
pub use trace::{Trace, TraceEntry, trace};
pub use verify::{TornTailWarning, VerifyReport, digest, verify};

/// A progress hook that ignores progress, for callers without a progress bar.
pub fn no_progress(_: Progress) {}
