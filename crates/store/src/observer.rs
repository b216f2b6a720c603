//! Windows onto the log for metrics and progress: each group it made durable, and how far the
//! verifying pass of an open has come.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::scan::ScanProgress;

/// One group commit, as reported to a [`SyncObserver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSynced {
    /// Records the group made durable.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long the `write` and the `fdatasync` took together.
    pub sync: Duration,
}

/// A callback the log's sync thread runs after every durable group. It runs between two
/// groups, so it must be quick and must never block (update counters, not files).
#[derive(Clone)]
pub struct SyncObserver(Arc<dyn Fn(&GroupSynced) + Send + Sync>);

impl SyncObserver {
    /// Observes with `f`.
    pub fn new(f: impl Fn(&GroupSynced) + Send + Sync + 'static) -> SyncObserver {
        SyncObserver(Arc::new(f))
    }

    /// Tells the callback of `group`: the log does after each group, and an observer that
    /// wraps another passes its reports on with it.
    pub fn report(&self, group: &GroupSynced) {
        (self.0)(group);
    }
}

impl fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncObserver")
    }
}

/// Two observers are equal when they are the same callback.
impl PartialEq for SyncObserver {
    fn eq(&self, other: &SyncObserver) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SyncObserver {}

/// A callback an opening log runs as its verifying pass goes through the segments: every few
/// MiB and once at the end, with the bytes done of all the segments' bytes. A long open (a
/// large log, its chain verified from an old checkpoint) can then say how far it is, so that an
/// operator can tell it from a hang. It runs on the opening thread: quick, never blocking.
#[derive(Clone)]
pub struct OpenProgress(Arc<dyn Fn(ScanProgress) + Send + Sync>);

impl OpenProgress {
    /// Reports to `f`.
    pub fn new(f: impl Fn(ScanProgress) + Send + Sync + 'static) -> OpenProgress {
        OpenProgress(Arc::new(f))
    }

    /// Tells the callback how far the pass has come.
    pub fn report(&self, progress: ScanProgress) {
        (self.0)(progress);
    }
}

impl fmt::Debug for OpenProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpenProgress")
    }
}

/// Two progress callbacks are equal when they are the same callback.
impl PartialEq for OpenProgress {
    fn eq(&self, other: &OpenProgress) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OpenProgress {}
