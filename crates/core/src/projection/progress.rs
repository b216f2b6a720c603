//! What a running projection publishes, and the handle that reads it: the position reached
//! (for read-your-writes), the lag behind the log's head in positions and in time, and why it
//! ended.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orderly_store::LogReader;

use crate::Position;

/// Why [`ProjectionHandle::wait_for`] returned without the position being reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The timeout passed first.
    #[error("timed out waiting for position {wanted}: the projection has reached {reached}")]
    TimedOut {
        /// The position waited for.
        wanted: u64,
        /// The position the projection had reached (all below it applied).
        reached: u64,
    },
    /// The projection stopped (asked to, or on an error) before reaching the position.
    #[error("the projection stopped at position {reached} before reaching {wanted}: {cause}")]
    Stopped {
        /// The position waited for.
        wanted: u64,
        /// The position the projection had reached.
        reached: u64,
        /// Why it stopped.
        cause: String,
    },
}

/// What the thread running a projection publishes: every position below `reached` is in the
/// read model as queries see it (published; redb commits it shortly after).
#[derive(Debug, Default)]
pub(super) struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    reached: u64,
    /// Set when the thread has ended, with why.
    ended: Option<String>,
}

impl Progress {
    pub(super) fn starting_at(reached: u64) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        progress.lock().reached = reached;
        progress
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn reached(&self, position: u64) {
        let mut state = self.lock();
        if state.reached != position {
            state.reached = position;
            drop(state);
            self.changed.notify_all();
        }
    }

    pub(super) fn end(&self, cause: String) {
        self.lock().ended.get_or_insert(cause);
        self.changed.notify_all();
    }
}

/// One running projection, seen from outside: what it has reached, how far behind it is, and
/// waiting for a position (read-your-writes). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProjectionHandle {
    name: String,
    log: LogReader,
    progress: Arc<Progress>,
}

impl ProjectionHandle {
    pub(super) fn new(name: String, log: LogReader, progress: Arc<Progress>) -> ProjectionHandle {
        ProjectionHandle { name, log, progress }
    }

    /// The projection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position reached: every event below it is in the read model as queries see it
    /// (published; committed to redb shortly after).
    #[must_use]
    pub fn reached(&self) -> Position {
        Position(self.progress.lock().reached)
    }

    /// How many log positions the read model is behind the log's head.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.log.head().0.saturating_sub(self.reached().0)
    }

    /// How stale the read model is: the age (now minus admission time) of the oldest record
    /// not yet in it; zero when it has every record of the log.
    ///
    /// Unlike the admission time of the head minus that of the last record applied, this
    /// keeps growing while a projection is stuck and the log is quiet, which is what an alert
    /// should see. Reads one record of the log: meant for metrics, not for a hot path.
    #[must_use]
    pub fn lag_time(&self) -> Duration {
        let reached = self.reached();
        if reached >= self.log.head() {
            return Duration::ZERO;
        }
        let Some(Ok(oldest)) = self.log.read_from(reached).next() else { return Duration::ZERO };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(Duration::from_millis(oldest.timestamp))
    }

    /// Why the projection ended, once it has (`"stopped"` when asked to); `None` while it
    /// runs.
    #[must_use]
    pub fn ended(&self) -> Option<String> {
        self.progress.lock().ended.clone()
    }

    /// Waits until the read model holds every event below `position` (for read-your-writes:
    /// pass [`crate::engine::Outcome::next_position`]), or `timeout` passes, or the projection
    /// ends.
    pub fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now().checked_add(timeout);
        let wanted = position.0;
        let mut state = self.progress.lock();
        loop {
            if state.reached >= wanted {
                return Ok(());
            }
            if let Some(cause) = &state.ended {
                return Err(WaitError::Stopped {
                    wanted,
                    reached: state.reached,
                    cause: cause.clone(),
                });
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Err(WaitError::TimedOut { wanted, reached: state.reached });
            }
            state = self
                .progress
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
