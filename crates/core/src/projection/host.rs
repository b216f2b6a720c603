//! The projection host: one thread that follows the log once for several projections.
//!
//! ```text
//! log ─▶ read + decode each record once ─▶ ONE redb write transaction per batch:
//!                                            for each hosted projection behind the batch's end:
//!                                              its events of the batch (from its checkpoint)
//!                                              + its checkpoint, under its own name
//! ```
//! Every projection keeps its own checkpoint, generation and progress: they may start at
//! different positions (a new read model starts from 0 next to ones that are caught up), and a
//! rebuild moves one of them without touching the others. Because each projection's rows and
//! its checkpoint are written in the same transaction, a crash anywhere leaves every one of
//! them consistent, as with one thread per projection — but the log is read and decoded once
//! and there is one commit per batch instead of one per projection.
//!
//! A failing projection stops the host: the batch is not committed (for any projection) and
//! every hosted projection ends with the error. Read models are derived: an error there is a
//! bug or a damaged file, not something to skip over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_store::LogReader;
use redb::{Database, ReadableTable, WriteTransaction};

use super::progress::{Progress, ProjectionHandle};
use super::reader::{self, Batches, Empty};
use super::rebuild::{self, Generation, Lease};
use super::worker::{WorkerConfig, read_batch};
use super::{CHECKPOINTS, Projection, ProjectionError};
use crate::engine::CommittedEvent;

/// A projection ready to be hosted: any [`Projection`], through `From`.
pub struct Hosted(Box<dyn Erased>);

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Hosted").field(&self.0.name()).finish()
    }
}

impl<P: Projection> From<P> for Hosted {
    fn from(projection: P) -> Hosted {
        Hosted(Box::new(projection))
    }
}

/// [`Projection`] without its tables type, so that projections of different types can share
/// one host.
trait Erased: Send {
    fn name(&self) -> &str;

    fn apply(
        &self,
        txn: &WriteTransaction,
        generation: Generation,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError>;
}

impl<P: Projection> Erased for P {
    fn name(&self) -> &str {
        Projection::name(self)
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        generation: Generation,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        let mut tables = self.open_generation(txn, generation)?;
        Projection::apply(self, &mut tables, events)
    }
}

/// Runs several projections on one thread, each from its own checkpoint, until stopped or an
/// error; see the module documentation.
///
/// At most one thread per projection name runs on a database at a time: starting a host with a
/// projection already running there (or twice in the list) is
/// [`ProjectionError::AlreadyRunning`]. Each projection follows its current generation; when a
/// [`super::rebuild()`] switches one, the host moves it over at its next batch.
///
/// Dropping the host stops it (waiting at most about [`WorkerConfig::idle_wait`] plus the batch
/// in progress); [`ProjectionHost::stop`] does the same and returns the error that stopped it.
#[derive(Debug)]
pub struct ProjectionHost {
    handles: Vec<ProjectionHandle>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ProjectionError>>>,
}

impl ProjectionHost {
    /// Starts `projections` on `db`, following `log` (for the engine:
    /// [`crate::engine::Engine::log`]) from each projection's checkpoint.
    pub fn start(
        db: Arc<Database>,
        log: LogReader,
        projections: Vec<Hosted>,
        config: WorkerConfig,
    ) -> Result<ProjectionHost, ProjectionError> {
        let mut members = Vec::with_capacity(projections.len());
        let mut handles = Vec::with_capacity(projections.len());
        for Hosted(projection) in projections {
            let name = projection.name().to_owned();
            let lease = Lease::acquire(&db, name.clone())?;
            let (generation, next) = rebuild::current(&db, &name)?;
            let progress = Progress::starting_at(next);
            handles.push(ProjectionHandle::new(name, log.clone(), progress.clone()));
            members.push(Member { projection, progress, generation, next, _lease: lease });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_name = match handles.as_slice() {
            [one] => format!("orderly-proj-{}", one.name()),
            _ => "orderly-projections".to_owned(),
        };
        let run = Run {
            db,
            log,
            config,
            members,
            stop: stop.clone(),
            last_durable: Instant::now(),
            unsynced: false,
        };
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run.run())
            .map_err(ProjectionError::Spawn)?;
        Ok(ProjectionHost { handles, stop, thread: Some(thread) })
    }

    /// Every hosted projection, in the order they were given to [`ProjectionHost::start`].
    #[must_use]
    pub fn projections(&self) -> &[ProjectionHandle] {
        &self.handles
    }

    /// The hosted projection named `name`, if there is one.
    #[must_use]
    pub fn projection(&self, name: &str) -> Option<&ProjectionHandle> {
        self.handles.iter().find(|handle| handle.name() == name)
    }

    /// Stops the host after the batch in progress and waits for its thread; returns the error
    /// that had stopped it, if any. A panic of the thread (a bug) is resumed here.
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

impl Drop for ProjectionHost {
    fn drop(&mut self) {
        // An error was reported through `ended` (and traced) already.
        drop(self.halt());
    }
}

/// One hosted projection, as the host thread sees it.
struct Member {
    projection: Box<dyn Erased>,
    progress: Arc<Progress>,
    generation: Generation,
    /// The next position to apply: its committed checkpoint.
    next: u64,
    /// Released when the thread ends.
    _lease: Lease,
}

/// Batch commits in between are atomic and visible at once but not fsync'd: read models are
/// derived, so a crash that loses the last second loses models and checkpoints together, and
/// the host applies those events again. One durable commit per this interval bounds that
/// replay. Its fsync runs behind, off this thread (`file.rs`), but redb's own work at a durable
/// commit (the page bookkeeping of every commit since, handing over the pages changed since)
/// stays here and grows with the interval: at 120k events/s on a busy 2-core machine it took
/// 3–9 ms every 250 ms, 5–14 ms every second and 10–23 ms every 2 s.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

struct Run {
    db: Arc<Database>,
    log: LogReader,
    config: WorkerConfig,
    members: Vec<Member>,
    stop: Arc<AtomicBool>,
    /// When a batch was last committed durably (fsync'd).
    last_durable: Instant,
    /// Whether batches were committed since, without a sync.
    unsynced: bool,
}

/// Marks every hosted projection ended when the thread ends, by return or by panic, so that
/// waiters never wait for a thread that is gone.
struct EndGuard {
    progress: Vec<Arc<Progress>>,
    cause: Option<String>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let cause = self.cause.take().unwrap_or_else(|| {
            if std::thread::panicking() { "the worker panicked".into() } else { "stopped".into() }
        });
        for progress in &self.progress {
            progress.end(cause.clone());
        }
    }
}

impl Run {
    fn run(mut self) -> Result<(), ProjectionError> {
        let progress = self.members.iter().map(|m| m.progress.clone()).collect();
        let mut guard = EndGuard { progress, cause: None };
        let result = self.follow();
        if let Err(e) = &result {
            let names: Vec<&str> = self.members.iter().map(|m| m.projection.name()).collect();
            tracing::error!(projections = ?names, error = %e, "projections stopped");
            guard.cause = Some(e.to_string());
        }
        result
    }

    fn follow(&mut self) -> Result<(), ProjectionError> {
        let Some(from) = self.members.iter().map(|m| m.next).min() else {
            while !self.stop.load(Ordering::Acquire) {
                std::thread::sleep(self.config.idle_wait);
            }
            return Ok(());
        };
        // The batch starts where the projection furthest behind is; members only move
        // forward, so the reader can go on from there in contiguous batches.
        let (batches, reader) =
            reader::start(self.log.clone(), from, &self.config, self.stop.clone())?;
        let result = self.apply_batches(&batches);
        // The reader sees the stop flag (or, on an error here, the dropped `Batches`) and ends.
        self.stop.store(true, Ordering::Release);
        drop(batches);
        if reader.join().is_err() {
            tracing::error!("the projection reader panicked");
        }
        result?;
        // Leaving: make the batches committed since the last sync durable.
        if self.unsynced {
            self.sync()?;
        }
        Ok(())
    }

    fn apply_batches(&mut self, batches: &Batches) -> Result<(), ProjectionError> {
        while !self.stop.load(Ordering::Acquire) {
            let batch = match batches.take(self.config.idle_wait) {
                Ok(batch) => batch?,
                Err(Empty::Timeout) => {
                    self.sync_if_due()?;
                    continue;
                }
                Err(Empty::Ended) => break,
            };
            // Every member is at `batch.from` or beyond (see `catch_up_to`).
            self.catch_up_to(batch.from)?;
            self.write(&batch.events, batch.reached)?;
            self.catch_up_to(batch.reached)?;
            for member in &self.members {
                member.progress.reached(member.next);
            }
        }
        Ok(())
    }

    /// A rebuild's switch can leave a projection behind the batch just written (it moves to
    /// the new generation's checkpoint, the head the switch saw): it gets the records up to
    /// `position` here, read directly, before the reader's next batch.
    fn catch_up_to(&mut self, position: u64) -> Result<(), ProjectionError> {
        let mut gap = Vec::new();
        while let Some(behind) = self.members.iter().map(|m| m.next).min().filter(|b| *b < position)
        {
            gap.clear();
            let reached = read_batch(&self.log, behind, position, &mut gap)?;
            if reached == behind {
                return Err(ProjectionError::Inconsistent {
                    position: behind,
                    problem: format!("the log ends at {behind}, before {position}"),
                });
            }
            self.write(&gap, reached)?;
        }
        Ok(())
    }

    /// When idle, makes unsynced batches durable once the interval has passed.
    fn sync_if_due(&mut self) -> Result<(), ProjectionError> {
        if self.unsynced && self.last_durable.elapsed() >= DURABLE_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// A durable empty commit, which makes every earlier commit durable too.
    fn sync(&mut self) -> Result<(), ProjectionError> {
        self.db.begin_write()?.commit()?;
        self.last_durable = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    /// Applies `events` (the records up to `reached`, decoded) to every projection behind
    /// `reached`, from its own checkpoint, and moves each checkpoint to `reached`, all in one
    /// transaction. A projection whose generation a rebuild switched meanwhile gets nothing
    /// and moves to the new generation's checkpoint. On any error the transaction is dropped
    /// uncommitted: nothing of the batch is written, for any projection.
    fn write(&mut self, events: &[CommittedEvent], reached: u64) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write()?;
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        // A store that cannot commit without syncing simply syncs every batch.
        let durable = durable || txn.set_durability(redb::Durability::None).is_err();
        let mut moves = Vec::new();
        {
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            for (index, member) in self.members.iter().enumerate() {
                if member.next >= reached {
                    continue;
                }
                let name = member.projection.name();
                let (current, _) = rebuild::generations(&txn, name)?;
                let stored = checkpoints.get(name)?.map_or(0, |v| v.value());
                if current != member.generation {
                    moves.push((index, current, stored));
                    continue;
                }
                if stored != member.next {
                    return Err(ProjectionError::Inconsistent {
                        position: member.next,
                        problem: format!("projection {name}: checkpoint {stored}, another writer?"),
                    });
                }
                let first = events.partition_point(|e| e.position.0 < member.next);
                member.projection.apply(&txn, member.generation, &events[first..])?;
                checkpoints.insert(name, reached)?;
            }
        }
        txn.commit()?;
        if durable {
            self.last_durable = Instant::now();
        }
        self.unsynced = !durable;
        for (index, member) in self.members.iter_mut().enumerate() {
            match moves.iter().find(|(moved, ..)| *moved == index) {
                // The switch applied everything up to a head at least as far as the member
                // had come.
                Some(&(_, generation, at)) => {
                    member.generation = generation;
                    member.next = at.max(member.next);
                }
                None => member.next = member.next.max(reached),
            }
        }
        Ok(())
    }
}
