//! How projections batch, the worker that runs one projection on its own (a host of one),
//! and reading a batch of the log.

use std::sync::Arc;
use std::time::Duration;

use orderly_store::LogReader;
use redb::Database;

use super::host::ProjectionHost;
use super::progress::{ProjectionHandle, WaitError};
use super::{Projection, ProjectionError};
use crate::Position;
use crate::engine::CommittedEvent;

/// How a projection host (or worker) batches and waits.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// At most this many log records (events and the engine's own records) per batch; also
    /// how many published records make the committer commit without waiting, and (four times
    /// it) how many may wait for the committer before the host waits too. A batch takes
    /// whatever is committed up to this cap, so it is small under a steady load (low lag) and
    /// reaches the cap only when catching up.
    pub max_batch: usize,
    /// How long the worker waits for new records before it looks at its stop flag again: the
    /// upper bound of how long [`ProjectionWorker::stop`] takes when the log is idle.
    pub idle_wait: Duration,
    /// When fewer than [`WorkerConfig::gather_records`] records are new and the host has
    /// nothing waiting, how long to wait for more before reading them: under a stream of small
    /// commits (one HTTP request each), a batch per few records costs more than the records.
    /// Adds at most this to the lag.
    pub gather: Duration,
    /// A batch this large goes at once, without [`WorkerConfig::gather`]ing.
    pub gather_records: u64,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            max_batch: 10_000,
            idle_wait: Duration::from_millis(50),
            gather: Duration::from_millis(1),
            gather_records: 256,
        }
    }
}

/// Runs one [`Projection`] on its own thread, from its checkpoint, until stopped or an error:
/// a [`ProjectionHost`] of one, for tests and for a projection that must run apart.
///
/// At most one thread per projection name runs on a database at a time: a second
/// [`ProjectionWorker::start`] is [`ProjectionError::AlreadyRunning`] until the first has
/// stopped. The worker writes the projection's current generation; when a
/// [`super::rebuild()`] switches generations, the worker follows at its next batch.
///
/// Dropping the worker stops it (waiting at most about [`WorkerConfig::idle_wait`] plus the
/// batch in progress, then for the commit of what it published); [`ProjectionWorker::stop`]
/// does the same and returns the error that stopped it, if any.
#[derive(Debug)]
pub struct ProjectionWorker {
    handle: ProjectionHandle,
    host: ProjectionHost,
}

impl ProjectionWorker {
    /// Starts `projection` on `db`, following `log` (for the engine: [`crate::engine::Engine::log`])
    /// from the projection's checkpoint.
    pub fn start<P: Projection>(
        db: Arc<Database>,
        log: LogReader,
        projection: P,
        config: WorkerConfig,
    ) -> Result<ProjectionWorker, ProjectionError> {
        let host = ProjectionHost::start(db, log, vec![projection.into()], config)?;
        let handle = host.projections()[0].clone();
        Ok(ProjectionWorker { handle, host })
    }

    /// What the worker has reached, its lag, and waiting for a position.
    #[must_use]
    pub fn handle(&self) -> &ProjectionHandle {
        &self.handle
    }

    /// The projection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// The position reached: every event below it is in the read model as queries see it
    /// (published; committed to redb shortly after).
    #[must_use]
    pub fn reached(&self) -> Position {
        self.handle.reached()
    }

    /// How many log positions the read model is behind the log's head.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.handle.lag()
    }

    /// How stale the read model is; see [`ProjectionHandle::lag_time`].
    #[must_use]
    pub fn lag_time(&self) -> Duration {
        self.handle.lag_time()
    }

    /// Why the worker ended, once it has (`"stopped"` when asked to); `None` while it runs.
    #[must_use]
    pub fn ended(&self) -> Option<String> {
        self.handle.ended()
    }

    /// Waits until the read model holds every event below `position` (for read-your-writes:
    /// pass [`crate::engine::Outcome::next_position`]), or `timeout` passes, or the worker ends.
    pub fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        self.handle.wait_for(position, timeout)
    }

    /// Stops the worker after the batch in progress and waits for its thread; returns the
    /// error that had stopped it, if any. A panic of the worker thread (a bug) is resumed here.
    pub fn stop(self) -> Result<(), ProjectionError> {
        self.host.stop()
    }
}

/// Reads and decodes records `from..until` of `log` into `events` (domain events only);
/// returns the position after the last record read.
pub(super) fn read_batch(
    log: &LogReader,
    from: u64,
    until: u64,
    events: &mut Vec<CommittedEvent>,
) -> Result<u64, ProjectionError> {
    let mut reader = log.read_from(Position(from));
    let mut next = from;
    while next < until {
        let record = match reader.next() {
            None => break,
            Some(Err(error)) => return Err(ProjectionError::Read { position: next, error }),
            Some(Ok(record)) => record,
        };
        let position = record.position.0;
        if position != next {
            return Err(ProjectionError::Inconsistent {
                position,
                problem: format!("the log yielded position {position} where {next} was due"),
            });
        }
        // The engine's own records (idempotency keys) hold nothing to project: passed over.
        let event = CommittedEvent::decode_record(&record)
            .map_err(|error| ProjectionError::Decode { position, error })?;
        events.extend(event);
        next += 1;
    }
    Ok(next)
}
