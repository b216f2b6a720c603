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
/// groups, so it must be quick and must never block (update counters, not files). An observer
/// that wraps another passes its reports on with [`Callback::report`].
pub type SyncObserver = Callback<GroupSynced>;

/// A callback an opening log runs as its verifying pass goes through the segments: every few
/// MiB and once at the end, with the bytes done of all the segments' bytes. A long open (a
/// large log, its chain verified from an old checkpoint) can then say how far it is, so that an
/// operator can tell it from a hang. It runs on the opening thread: quick, never blocking.
pub type OpenProgress = Callback<ScanProgress>;

/// A callback the log runs with reports of `T` ([`SyncObserver`], [`OpenProgress`]). Two are
/// equal when they are the same callback.
pub struct Callback<T>(Arc<dyn Fn(&T) + Send + Sync>);

impl<T> Callback<T> {
    /// Reports to `f`.
    pub fn new(f: impl Fn(&T) + Send + Sync + 'static) -> Callback<T> {
        Callback(Arc::new(f))
    }

    /// Tells the callback of `report`.
    pub fn report(&self, report: &T) {
        (self.0)(report);
    }
}

// By hand: a derive would ask `T: Clone`, `T: Debug` and `T: PartialEq` of the reports.
impl<T> Clone for Callback<T> {
    fn clone(&self) -> Self {
        Callback(self.0.clone())
    }
}

impl<T> fmt::Debug for Callback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Callback<{}>", std::any::type_name::<T>())
    }
}

impl<T> PartialEq for Callback<T> {
    fn eq(&self, other: &Callback<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for Callback<T> {}
