//! The worker that runs one projection: follow the log from the checkpoint, one redb write
//! transaction per batch (model changes + checkpoint), publish the position reached.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_store::LogReader;
use redb::{Database, ReadableTable};

use super::rebuild::{self, Generation, Lease};
use super::{CHECKPOINTS, Projection, ProjectionError};
use crate::Position;
use crate::engine::CommittedEvent;

/// How a worker batches and waits.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// At most this many log records (events and the engine's own records) per transaction.
    pub max_batch: usize,
    /// How long the worker waits for new records before it looks at its stop flag again: the
    /// upper bound of how long [`ProjectionWorker::stop`] takes when the log is idle.
    pub idle_wait: Duration,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig { max_batch: 10_000, idle_wait: Duration::from_millis(50) }
    }
}

/// Why [`ProjectionWorker::wait_for`] returned without the position being reached.
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
    /// The worker stopped (asked to, or on an error) before reaching the position.
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

/// What the worker publishes: every position below `reached` is committed to the read model.
#[derive(Debug, Default)]
struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    reached: u64,
    /// Set when the worker thread has ended, with why.
    ended: Option<String>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reached(&self, position: u64) {
        self.lock().reached = position;
        self.changed.notify_all();
    }
}

/// Marks the progress ended when the worker thread ends, by return or by panic, so that
/// waiters never wait for a thread that is gone.
struct EndGuard {
    progress: Arc<Progress>,
    cause: Option<String>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let cause = self.cause.take().unwrap_or_else(|| {
            if std::thread::panicking() { "the worker panicked".into() } else { "stopped".into() }
        });
        self.progress.lock().ended = Some(cause);
        self.progress.changed.notify_all();
    }
}

/// Runs one [`Projection`] on its own thread, from its checkpoint, until stopped or an error.
///
/// At most one worker per projection name runs on a database at a time: a second
/// [`ProjectionWorker::start`] is [`ProjectionError::AlreadyRunning`] until the first has
/// stopped. The worker writes the projection's current generation; when a
/// [`super::rebuild()`] switches generations, the worker follows at its next batch.
///
/// Dropping the worker stops it (waiting at most about [`WorkerConfig::idle_wait`] plus the
/// batch in progress); [`ProjectionWorker::stop`] does the same and returns the error that
/// stopped it, if any.
#[derive(Debug)]
pub struct ProjectionWorker {
    name: String,
    log: LogReader,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ProjectionError>>>,
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
        let name = projection.name().to_owned();
        let lease = Lease::acquire(&db, name.clone())?;
        let (generation, from) = rebuild::current(&db, &name)?;
        let progress = Arc::new(Progress::default());
        progress.lock().reached = from;
        let stop = Arc::new(AtomicBool::new(false));
        let run = Run {
            db,
            log: log.clone(),
            projection,
            config,
            progress: progress.clone(),
            stop: stop.clone(),
            last_durable: std::cell::Cell::new(Instant::now()),
            unsynced: std::cell::Cell::new(false),
            _lease: lease,
        };
        let thread = std::thread::Builder::new()
            .name(format!("orderly-proj-{name}"))
            .spawn(move || run.run(generation, from))
            .map_err(ProjectionError::Spawn)?;
        Ok(ProjectionWorker { name, log, progress, stop, thread: Some(thread) })
    }

    /// The projection's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position reached: every event below it is in the read model (committed).
    #[must_use]
    pub fn reached(&self) -> Position {
        Position(self.progress.lock().reached)
    }

    /// How many log positions the read model is behind the log's head.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.log.head().0.saturating_sub(self.reached().0)
    }

    /// Why the worker ended, once it has (`"stopped"` when asked to); `None` while it runs.
    #[must_use]
    pub fn ended(&self) -> Option<String> {
        self.progress.lock().ended.clone()
    }

    /// Waits until the read model holds every event below `position` (for read-your-writes:
    /// pass [`crate::engine::Outcome::next_position`]), or `timeout` passes, or the worker ends.
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

    /// Stops the worker after the batch in progress and waits for its thread; returns the
    /// error that had stopped it, if any. A panic of the worker thread (a bug) is resumed here.
    pub fn stop(mut self) -> Result<(), ProjectionError> {
        match self.halt() {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(()),
        }
    }

    fn halt(&mut self) -> Option<std::thread::Result<Result<(), ProjectionError>>> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().map(JoinHandle::join)
    }
}

impl Drop for ProjectionWorker {
    fn drop(&mut self) {
        // An error was reported through `ended` (and traced) already.
        drop(self.halt());
    }
}

struct Run<P> {
    db: Arc<Database>,
    log: LogReader,
    projection: P,
    config: WorkerConfig,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    /// When a batch was last committed durably (fsync'd).
    last_durable: std::cell::Cell<Instant>,
    /// Whether batches were committed since, without a sync.
    unsynced: std::cell::Cell<bool>,
    /// Released when the thread ends.
    _lease: Lease,
}

/// Batch commits in between are atomic and visible at once but not fsync'd: read models are
/// derived, so a crash that loses the last fraction of a second loses model and checkpoint
/// together, and the worker applies those events again. One durable commit per this interval
/// bounds that replay and keeps an fsync off every batch.
const DURABLE_EVERY: Duration = Duration::from_millis(500);

/// What a batch transaction found.
enum Written {
    /// The batch and its checkpoint are committed.
    Committed,
    /// A rebuild switched generations: nothing was written; go on from here.
    Moved(Generation, u64),
}

impl<P: Projection> Run<P> {
    fn run(self, generation: Generation, from: u64) -> Result<(), ProjectionError> {
        let mut guard = EndGuard { progress: self.progress.clone(), cause: None };
        let result = self.follow(generation, from);
        if let Err(e) = &result {
            tracing::error!(projection = self.projection.name(), error = %e, "projection stopped");
            guard.cause = Some(e.to_string());
        }
        result
    }

    fn follow(&self, mut generation: Generation, mut next: u64) -> Result<(), ProjectionError> {
        let max_batch = u64::try_from(self.config.max_batch.max(1)).unwrap_or(u64::MAX);
        let mut events = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            let head = self.log.wait_beyond(Position(next), self.config.idle_wait).0;
            if head <= next {
                self.sync_if_due()?;
                if self.log.failure().is_some() {
                    // A failed log answers at once and will not grow: do not spin.
                    std::thread::sleep(self.config.idle_wait);
                }
                continue;
            }
            let until = head.min(next.saturating_add(max_batch));
            events.clear();
            let reached = read_batch(&self.log, next, until, &mut events)?;
            match self.write(&events, generation, next, reached)? {
                Written::Committed => next = reached,
                Written::Moved(to, at) => {
                    // The switch applied everything up to a head at least as far as `next`.
                    debug_assert!(at >= next, "a rebuild moved the checkpoint back");
                    (generation, next) = (to, at.max(next));
                }
            }
            self.progress.reached(next);
        }
        // Leaving: make the batches committed since the last sync durable.
        if self.unsynced.get() {
            self.sync()?;
        }
        Ok(())
    }

    /// When idle, makes unsynced batches durable once the interval has passed.
    fn sync_if_due(&self) -> Result<(), ProjectionError> {
        if self.unsynced.get() && self.last_durable.get().elapsed() >= DURABLE_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// A durable empty commit, which makes every earlier commit durable too.
    fn sync(&self) -> Result<(), ProjectionError> {
        self.db.begin_write()?.commit()?;
        self.last_durable.set(Instant::now());
        self.unsynced.set(false);
        Ok(())
    }

    /// Applies `events` to `generation` and moves the checkpoint from `from` to `reached`, in
    /// one transaction, unless a rebuild has switched generations meanwhile. On any error the
    /// transaction is dropped uncommitted: nothing of the batch is written.
    fn write(
        &self,
        events: &[CommittedEvent],
        generation: Generation,
        from: u64,
        reached: u64,
    ) -> Result<Written, ProjectionError> {
        let name = self.projection.name();
        let mut txn = self.db.begin_write()?;
        let durable = self.last_durable.get().elapsed() >= DURABLE_EVERY;
        // A store that cannot commit without syncing simply syncs every batch.
        let durable = durable || txn.set_durability(redb::Durability::None).is_err();
        let (current, _) = rebuild::generations(&txn, name)?;
        {
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let stored = checkpoints.get(name)?.map_or(0, |v| v.value());
            if current != generation {
                return Ok(Written::Moved(current, stored));
            }
            if stored != from {
                return Err(ProjectionError::Inconsistent {
                    position: from,
                    problem: format!("projection {name}: checkpoint {stored}, another writer?"),
                });
            }
            let mut tables = self.projection.open_generation(&txn, generation)?;
            for event in events {
                self.projection.apply(&mut tables, event)?;
            }
            checkpoints.insert(name, reached)?;
        }
        txn.commit()?;
        if durable {
            self.last_durable.set(Instant::now());
        }
        self.unsynced.set(!durable);
        Ok(Written::Committed)
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
