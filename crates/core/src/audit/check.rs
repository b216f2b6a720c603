//! `check`: verify, reconcile and replay in one pass, for a caller that wants all three (the
//! Black Friday bench checks its day so). Each record is read, verified and decoded once, not
//! three times.

use std::path::Path;

use serde::Serialize;

use super::Progress;
use super::error::AuditError;
use super::reconcile::{self, Reconciliation};
use super::replay::{self, ReplayReport};
use super::verify::{Summary, VerifyReport};

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// As [`super::verify()`] without a digest to extend.
    pub verify: VerifyReport,
    /// As [`super::reconcile()`].
    pub reconciliation: Reconciliation,
    /// As [`super::replay()`] to the head, without the tenants whose state broke on an event
    /// (each is named by a `domain_rejects_event` discrepancy of the reconciliation, where
    /// `replay` would stop with [`AuditError::Inconsistent`]).
    pub state: ReplayReport,
}

/// Verifies, reconciles and replays the log in `dir` to its head in one read-only pass,
/// without the lock. The first problem with the log itself (checksum, chain, position,
/// version, payload) is an error, as for [`super::verify()`]; broken rules of the books are
/// discrepancies in the reconciliation.
pub fn check(dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Checked, AuditError> {
    let mut summary = Summary::default();
    let (scan, reconciliation, domain) =
        reconcile::book_log(dir, progress, |batch| summary.add(batch))?;
    let torn_tail = reconciliation.torn_tail.clone();
    let state = replay::report(reconciliation.digest, summary.last_timestamp, &domain);
    let state = ReplayReport { torn_tail, ..state };
    Ok(Checked { verify: summary.report(scan, None), reconciliation, state })
}
