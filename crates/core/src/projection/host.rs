//! The projection host: follows the log once for several projections.
//!
//! ```text
//! log ─▶ reader: read + decode ─▶ host thread: apply the batch to every hosted projection
//!        each record once         behind its end (from its own checkpoint) ─▶ one Delta,
//!                                 published at once (queries see it) ─▶ `reached`
//!                                     │
//!                                     ▼
//!        committer thread: every delta waiting ─▶ ONE redb transaction: their rows and
//!                          each projection's checkpoint ─▶ the deltas, handed back to
//!                          the host thread to free
//! ```
//! Every projection keeps its own checkpoint, generation and progress: they may start at
//! different positions (a new read model starts from 0 next to ones that are caught up), and a
//! rebuild moves one of them without touching the others. Because each projection's rows and
//! its checkpoint are committed in the same transaction, a crash anywhere leaves every one of
//! them consistent; published batches not committed yet are lost with it and applied again
//! from the checkpoints (`pending.rs` says why queries see them meanwhile, consistently).
//!
//! A failing projection stops the host: its batch is not published (for any projection), the
//! batches before it are committed, and every hosted projection ends with the error. Read
//! models are derived: an error there is a bug or a damaged file, not something to skip over.
//! A failing commit stops the host too.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_store::LogReader;
use redb::{Database, ReadableTable};

use super::binding::{self, Binding};
use super::pending::{self, Delta, Entry, MemberRows, Pending, Registration, TableRows};
use super::progress::{Progress, ProjectionHandle};
use super::reader::{self, Batches, Empty};
use super::rebuild::{self, Generation, Lease};
use super::stage::{RowCache, Snapshot, Stage};
use super::worker::WorkerConfig;
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

    fn apply(&self, stage: &Stage<'_>, events: &[CommittedEvent]) -> Result<(), ProjectionError>;
}

impl<P: Projection> Erased for P {
    fn name(&self) -> &str {
        Projection::name(self)
    }

    fn apply(&self, stage: &Stage<'_>, events: &[CommittedEvent]) -> Result<(), ProjectionError> {
        let mut tables = self.open(stage)?;
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
/// in progress, then for the commit of everything published and a durable commit);
/// [`ProjectionHost::stop`] does the same and returns the error that stopped it.
#[derive(Debug)]
pub struct ProjectionHost {
    handles: Vec<ProjectionHandle>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ProjectionError>>>,
    /// Keeps the published batches visible to queries.
    _registration: Registration,
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
            let head = log.head().0;
            if next > head {
                return Err(ProjectionError::AheadOfLog { name, checkpoint: next, head });
            }
            let progress = Progress::starting_at(next);
            handles.push(ProjectionHandle::new(name, log.clone(), progress.clone()));
            let name = projection.name().into();
            members.push(Member { projection, name, progress, generation, next, _lease: lease });
        }
        // Checked after each checkpoint against the head, which says more when it fails.
        if let Binding::Broken { bound, why } = binding::check(&db, &log)? {
            return Err(ProjectionError::OtherLog { bound, why });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_name = match handles.as_slice() {
            [one] => format!("orderly-proj-{}", one.name()),
            _ => "orderly-projections".to_owned(),
        };
        let pending = Arc::new(Pending::default());
        // Held by the host object, not its thread: what the thread published stays visible
        // for as long as its `reached` can be asked, even if a commit failed.
        let registration = pending::register(&db, pending.clone());
        let run = Run {
            entry: pending::entry(&db),
            db,
            log,
            config,
            members,
            stop: stop.clone(),
            pending,
            cache: RefCell::default(),
            // Never a count: the first batch looks at the generations.
            seen_switches: u64::MAX,
        };
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run.run())
            .map_err(ProjectionError::Spawn)?;
        Ok(ProjectionHost { handles, stop, thread: Some(thread), _registration: registration })
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

    /// Stops the host after the batch in progress, commits (durably) everything published and
    /// waits for its threads; returns the error that had stopped it, if any. A panic of the
    /// thread (a bug) is resumed here.
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
    /// The projection's name, shared with the parts of the deltas it publishes.
    name: Arc<str>,
    progress: Arc<Progress>,
    generation: Generation,
    /// The next position to apply: everything below it is published.
    next: u64,
    /// Released when the thread ends.
    _lease: Lease,
}

/// How long published batches wait to be committed together: one transaction per this
/// interval rather than per batch (a redb commit rewrites every page it touches, so fewer,
/// bigger ones cost less per record). Not longer: a big commit is a burst of work that slows
/// the host thread on a busy machine (at 120k events/s on two cores the lag's p99 was
/// 10–21 ms with 100 ms, about 5–7 ms with 25 ms, 4–7 ms with 10 ms, with one outlier each).
const COMMIT_EVERY: Duration = Duration::from_millis(10);

/// Commits are made with `Durability::None`, and durable once per this interval: read models
/// are derived, so a crash that loses the last second loses models and checkpoints together,
/// and the host applies those events again. Its fsync runs behind (`file.rs`); redb's own work
/// at a durable commit (the bookkeeping of every commit since, handing over the pages changed
/// since) stays on the committer, where it delays durability but not what queries see.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

struct Run {
    db: Arc<Database>,
    log: LogReader,
    config: WorkerConfig,
    members: Vec<Member>,
    stop: Arc<AtomicBool>,
    pending: Arc<Pending>,
    /// The database's registry entry: the lock and count of rebuild switches.
    entry: Entry,
    /// Rows this host read or published, for the batches after.
    cache: RefCell<RowCache>,
    /// The count of generation switches when the host last looked at its generations.
    seen_switches: u64,
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
        let draining = Arc::new(AtomicBool::new(false));
        let committer = Committer {
            db: self.db.clone(),
            log: self.log.clone(),
            names: self.members.iter().map(|m| m.projection.name().to_owned()).collect(),
            pending: self.pending.clone(),
            stop: self.stop.clone(),
            draining: draining.clone(),
            commit_records: u64::try_from(self.config.max_batch.max(1)).unwrap_or(u64::MAX),
            last_durable: Instant::now(),
            unsynced: false,
        };
        let committer = std::thread::Builder::new()
            .name("orderly-proj-commit".to_owned())
            .spawn(move || committer.run())
            .map_err(ProjectionError::Spawn);
        let result = match committer {
            Ok(thread) => {
                let committer =
                    Draining { draining, pending: self.pending.clone(), thread: Some(thread) };
                let applied = self.follow();
                let finished = committer.finish();
                // The committer's last deltas: nothing else would free them.
                drop(self.pending.take_retired());
                applied.and(finished)
            }
            Err(e) => Err(e),
        };
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
        result
    }

    fn apply_batches(&mut self, batches: &Batches) -> Result<(), ProjectionError> {
        // Published batches wait for the committer; beyond this many records, so does the host.
        let limit = u64::try_from(self.config.max_batch.max(1)).unwrap_or(u64::MAX / 4) * 4;
        while !self.stop.load(Ordering::Acquire) {
            // Frees what the committer finished with (see `Pending::committed`): under a live
            // load a few small deltas, microseconds next to the lag's milliseconds.
            drop(self.pending.take_retired());
            let batch = match batches.take(self.config.idle_wait) {
                Ok(batch) => batch?,
                Err(Empty::Timeout) => continue,
                Err(Empty::Ended) => break,
            };
            while self.pending.full(limit) && !self.stop.load(Ordering::Acquire) {
                self.pending.wait_below(limit, self.config.idle_wait);
            }
            // Stopped meanwhile (by a failed commit, perhaps): publish nothing more.
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            self.apply(&batch.events, batch.from, batch.reached)?;
        }
        Ok(())
    }

    /// Applies `events` (the records `from..reached`, decoded) to every projection behind
    /// `reached`, from its own checkpoint, and publishes the rows they wrote as one delta. A
    /// projection whose generation a rebuild switched meanwhile moves to the new generation's
    /// checkpoint first (at least where it was). On an error nothing of the batch is
    /// published, for any projection.
    fn apply(
        &mut self,
        events: &[CommittedEvent],
        from: u64,
        reached: u64,
    ) -> Result<(), ProjectionError> {
        // A rebuild's switch takes this lock, so it either committed before the check below
        // (which then sees it) or reads the log's head after this batch is published (so the
        // new generation holds everything published).
        let shared = &self.entry.shared;
        let _publishing = shared.switch.lock().unwrap_or_else(PoisonError::into_inner);
        // Every delta this host published and the committer has not dropped, taken before any
        // read transaction begins: a row is then in one or the other (see `pending.rs`).
        let pending = self.pending.snapshot();
        let snapshot = Snapshot::new(&self.db);
        let switches = shared.switches.load(Ordering::Acquire);
        if switches != self.seen_switches {
            let txn = snapshot.txn()?;
            for member in &mut self.members {
                let (generation, checkpoint) = rebuild::current_in(txn, member.projection.name())?;
                if generation != member.generation {
                    member.generation = generation;
                    member.next = member.next.max(checkpoint);
                }
            }
            self.seen_switches = switches;
        }
        let mut delta = Delta { members: Vec::new(), records: reached - from };
        for (index, member) in self.members.iter().enumerate() {
            if member.next >= reached {
                continue;
            }
            let first = events.partition_point(|e| e.position.0 < member.next);
            let stage = Stage::for_host(member.generation, &snapshot, &self.cache, &pending);
            member.projection.apply(&stage, &events[first..])?;
            delta.members.push(MemberRows {
                member: index,
                name: member.name.clone(),
                generation: member.generation,
                from: member.next,
                reached,
                tables: stage.into_written(),
            });
        }
        self.cache.borrow_mut().published(&delta);
        self.pending.push(delta);
        for member in &mut self.members {
            member.next = member.next.max(reached);
            member.progress.reached(member.next);
        }
        Ok(())
    }
}

/// The committer thread as the host thread holds it: finished (everything published
/// committed, then joined) however the host thread ends, a panic included.
struct Draining {
    draining: Arc<AtomicBool>,
    pending: Arc<Pending>,
    thread: Option<JoinHandle<Result<(), ProjectionError>>>,
}

impl Draining {
    /// Drains and joins the committer; a panic of it (a bug) is resumed here.
    fn finish(mut self) -> Result<(), ProjectionError> {
        match self.join() {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(()),
        }
    }

    fn join(&mut self) -> Option<std::thread::Result<Result<(), ProjectionError>>> {
        let thread = self.thread.take()?;
        self.draining.store(true, Ordering::Release);
        self.pending.wake();
        Some(thread.join())
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        // Only when the host thread is unwinding (`finish` took the thread otherwise): the
        // committer's own outcome cannot be reported then.
        drop(self.join());
    }
}

/// Commits what the host published, in batches of at least [`COMMIT_EVERY`].
struct Committer {
    db: Arc<Database>,
    /// What the checkpoints are positions of (see [`binding`]).
    log: LogReader,
    /// The hosted projections' names, by member index.
    names: Vec<String>,
    pending: Arc<Pending>,
    /// The host's: set on a failed commit, so that the host stops too.
    stop: Arc<AtomicBool>,
    /// Set when the host has ended: commit everything left, then end.
    draining: Arc<AtomicBool>,
    /// Records waiting that are committed without waiting for [`COMMIT_EVERY`].
    commit_records: u64,
    /// When a commit was last durable (fsync'd).
    last_durable: Instant,
    /// Whether commits were made since, without a sync.
    unsynced: bool,
}

impl Committer {
    fn run(mut self) -> Result<(), ProjectionError> {
        crate::engine::yield_to_others();
        let result = self.commit_all();
        if result.is_err() {
            self.stop.store(true, Ordering::Release);
        }
        result
    }

    fn commit_all(&mut self) -> Result<(), ProjectionError> {
        let mut last_commit = Instant::now();
        loop {
            let draining = self.draining.load(Ordering::Acquire);
            let waiting = self.pending.records();
            if waiting == 0 {
                if draining {
                    break;
                }
                self.sync_if_due()?;
                self.pending.wait_any(COMMIT_EVERY);
                continue;
            }
            let since = last_commit.elapsed();
            if since < COMMIT_EVERY && waiting < self.commit_records && !draining {
                std::thread::sleep(COMMIT_EVERY - since);
                continue;
            }
            let deltas = self.pending.snapshot();
            self.commit(&deltas)?;
            self.pending.committed(deltas);
            last_commit = Instant::now();
        }
        // Leaving: make the commits since the last sync durable.
        if self.unsynced {
            self.sync()?;
        }
        Ok(())
    }

    /// When idle, makes unsynced commits durable once the interval has passed.
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

    /// Writes `deltas` (oldest first) and moves each projection's checkpoint to the end of its
    /// part, binding the database to the log there, in one transaction. Parts for a generation a rebuild has replaced are dropped
    /// with it. On any error the transaction is dropped uncommitted.
    fn commit(&mut self, deltas: &[Arc<Delta>]) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write()?;
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        // A store that cannot commit without syncing simply syncs every commit.
        let durable = durable || txn.set_durability(redb::Durability::None).is_err();
        let mut furthest = 0;
        {
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            for (index, name) in self.names.iter().enumerate() {
                let (current, _) = rebuild::generations(&txn, name)?;
                let mut parts = deltas
                    .iter()
                    .flat_map(|delta| &delta.members)
                    .filter(|part| part.member == index && part.generation == current);
                let Some(first) = parts.next() else { continue };
                let stored = checkpoints.get(name.as_str())?.map_or(0, |v| v.value());
                if stored != first.from {
                    return Err(ProjectionError::Inconsistent {
                        position: first.from,
                        problem: format!("projection {name}: checkpoint {stored}, another writer?"),
                    });
                }
                let mut next = first.from;
                let mut tables: Vec<(&str, Vec<&TableRows>)> = Vec::new();
                for part in std::iter::once(first).chain(parts) {
                    if part.from != next {
                        return Err(ProjectionError::Inconsistent {
                            position: next,
                            problem: format!("projection {name}: a batch from {}", part.from),
                        });
                    }
                    for table in &part.tables {
                        match tables.iter_mut().find(|(name, _)| *name == table.name) {
                            Some((_, parts)) => parts.push(table),
                            None => tables.push((&table.name, vec![table])),
                        }
                    }
                    next = part.reached;
                }
                for (_, parts) in &tables {
                    TableRows::write_all(&txn, parts)?;
                }
                checkpoints.insert(name.as_str(), next)?;
                furthest = furthest.max(next);
            }
        }
        binding::raise(&txn, &self.log, furthest)?;
        txn.commit()?;
        if durable {
            self.last_durable = Instant::now();
        }
        self.unsynced = !durable;
        Ok(())
    }
}
