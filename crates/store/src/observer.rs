//! A window onto group commit for metrics: the log reports each group it made durable.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
