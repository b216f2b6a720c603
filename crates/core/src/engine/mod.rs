//! The engine: many callers, one decision thread, durable acknowledgements.
//!
//! ```text
//! execute(envelope) ─▶ admission queue (bounded) ─▶ decision thread ─▶ log group commit
//!        ▲                                         (state, keys, timers)        │
//!        └──────────── answered after fdatasync ◀────────────────────────────────┘
//! ```
//! [`Engine::open`] replays the log to rebuild every tenant's aggregates, the idempotency keys
//! and the expiry timers, then starts the decision thread.
//!
//! Idempotency keys are recorded with the commands they were accepted with, in the same atomic
//! batch, and never expire. A rejected command records nothing, its key included: retrying it
//! with the same key decides it again (the rejection changed nothing, so there is nothing to
//! replay). See `decision.rs` for why answers
//! are never early and `state.rs` for what is kept in memory.

mod callers;
mod caught;
mod clock;
mod decision;
mod error;
mod pages;
mod pipe;
mod snapshot;
mod state;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use orderly_store::{Log, LogConfig, LogReader, Position, Recovery, ScanProgress};

pub use callers::{yield_to_engine, yield_to_others};
pub(crate) use caught::catching;
pub use caught::install_panic_hook;
pub use clock::{Clock, ManualClock, SteadyClock, SystemClock};
pub use error::{EngineError, ExecuteError, OpenEngineError};
pub use pages::use_small_pages;
pub use pipe::{Pipe, PipedAck};

use self::decision::{Answer, DecisionThread, Events, Reply, Request, Work};
pub(crate) use self::state::World;
use crate::codec::{self, DecodeError};
use crate::domain::limits::DEFAULT_HOLD_TTL_MS;
use crate::domain::{Envelope, Event, TenantId, Timestamp};

/// Commands that may wait for the decision thread before `execute` answers `Overloaded`.
pub const DEFAULT_ADMISSION_QUEUE: usize = 65_536;

/// The file in the engine's folder where a clean shutdown leaves a snapshot of the state (see
/// [`Engine::shutdown`]). Removing it costs the next open a replay of the whole log, nothing else.
pub const SNAPSHOT_FILE: &str = "engine.snapshot";

/// How long a replayed answer waits for the original command's batch to become durable.
const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a placed order holds its stock unpaid, in milliseconds. At 0, an unpaid order
    /// expires on the decision thread's next turn, before any payment can reach it.
    pub hold_ttl_ms: u64,
    /// Commands that may wait for the decision thread (0 counts as 1); beyond them, a command
    /// is refused as [`EngineError::Overloaded`].
    pub admission_queue: usize,
    /// The log's settings.
    pub log: LogConfig,
    /// Where admission times come from: by default the system's wall clock steadied against
    /// its jumps ([`SteadyClock`]).
    pub clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hold_ttl_ms: DEFAULT_HOLD_TTL_MS,
            admission_queue: DEFAULT_ADMISSION_QUEUE,
            log: LogConfig::default(),
            clock: Arc::new(SteadyClock::new(SystemClock)),
        }
    }
}

/// One committed event and where it is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedEvent {
    /// Its position in the log.
    pub position: Position,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// The event.
    pub event: Event,
    /// The admission time of the command that recorded it.
    pub recorded_at: Timestamp,
}

/// What a command did: its events, durable, with their positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The events, in order.
    pub events: Vec<CommittedEvent>,
    /// True when the idempotency key had been seen with the same command: these are the
    /// events the first execution recorded, and nothing new was decided.
    pub replayed: bool,
}

impl Outcome {
    /// The position after the command's last event: wait for read models to reach it to read
    /// your own write.
    #[must_use]
    pub fn next_position(&self) -> Position {
        self.events.last().map_or(Position(0), |e| e.position.next())
    }
}

/// What [`Engine::send_ack`] answers: the command's events are durable, and where, without
/// the events themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The position of the first record holding the command's events (its decision record).
    pub first: Position,
    /// Records holding them: one decision record (or, for a command first accepted into a
    /// log written before decision records, one record per event).
    pub records: u32,
    /// True when the idempotency key had been seen with the same command: nothing new was
    /// decided, and `first` is where the first execution's events are.
    pub replayed: bool,
}

impl Ack {
    /// The position after the command's records (see [`Outcome::next_position`]).
    #[must_use]
    pub fn next_position(&self) -> Position {
        Position(self.first.0 + u64::from(self.records))
    }
}

/// An open engine. Cloning the handle is cheap; all clones share one engine.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Taken (closing the admission queue) by `shutdown`; read by every `execute`, hence a
    /// read-write lock: callers never wait for each other here.
    requests: RwLock<Option<Sender<Work>>>,
    decision: Mutex<Option<JoinHandle<()>>>,
    /// Answers rejections once what they rest on is durable, and reads replayed answers back
    /// for [`Engine::send`]; ends after the decision thread and `shutdown`.
    durable_answers: Mutex<Option<JoinHandle<()>>>,
    /// What answering needs: shared with `send`'s callbacks.
    answering: Arc<Answering>,
    log: Log,
    recovery: Recovery,
    restored_from: Option<Position>,
    /// Set by `shutdown`: the decision thread then writes a snapshot as it stops. An engine
    /// dropped without `shutdown` stops as after a crash, without one.
    snapshot_at_stop: Arc<std::sync::atomic::AtomicBool>,
    /// The batches whose answers the log's thread is still giving: `shutdown` waits for them.
    unanswered: Arc<decision::Unanswered>,
    /// Whether a payments process runs on this engine: one at most (see
    /// [`crate::process::PaymentProcess::start`]).
    payments: std::sync::atomic::AtomicBool,
}

/// Admission times never go back, so a clock behind the log's last admission time (`last`)
/// holds every admission at that time until it catches up, and unpaid holds expire late by as
/// much: said at open, with the gap, since nothing else shows it.
fn warn_if_clock_behind(now: Timestamp, last: Timestamp) {
    let behind_ms = last.0.saturating_sub(now.0);
    if behind_ms > SteadyClock::<SystemClock>::TOLERANCE_MS {
        tracing::warn!(
            behind_ms,
            last_admission_ms = last.0,
            "the clock is behind the log's last admission time: admissions are stamped with that time until the clock catches up, and unpaid holds expire that much later"
        );
    }
}

/// `config`, with the log's open reporting how far its verifying pass is every few seconds
/// (in the engine's log, as the replay after it does) unless the caller asked for its own
/// reports.
fn log_config_reporting(config: &LogConfig) -> LogConfig {
    let mut config = config.clone();
    if config.open_progress.is_none() {
        let last = std::sync::Mutex::new(std::time::Instant::now());
        config.open_progress =
            Some(orderly_store::OpenProgress::new(move |progress: &ScanProgress| {
                let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.elapsed() >= state::REPLAY_REPORT_EVERY {
                    *last = std::time::Instant::now();
                    let (done, total) = (progress.bytes_done, progress.bytes_total);
                    tracing::info!(bytes_done = done, bytes_total = total, "verifying the log");
                }
            }));
    }
    config
}

impl Engine {
    /// Opens the engine on the data folder `dir`: recovers the log, replays it into memory, and
    /// starts the decision thread.
    pub fn open(dir: &Path, config: Config) -> Result<Engine, OpenEngineError> {
        check_folder(dir)?;
        // A folder another process holds is refused at once (the log's open says so), not
        // after the snapshot is read.
        if Log::held_elsewhere(dir).unwrap_or(false) {
            drop(Log::open(dir, config.log.clone())?);
        }
        // The snapshot is read while the log opens (each reads a file of its own and builds
        // its maps), then checked against the log.
        let (opened, loaded) = std::thread::scope(|scope| {
            let loaded = std::thread::Builder::new()
                .name("orderly-snapshot".into())
                .spawn_scoped(scope, || snapshot::load(dir));
            let opened = Log::open(dir, log_config_reporting(&config.log));
            let loaded = match loaded {
                Ok(reading) => reading
                    .join()
                    .unwrap_or_else(|_| Err(snapshot::Ignored::because("its reader panicked"))),
                Err(e) => Err(snapshot::Ignored::because(format!("no thread to read it: {e}"))),
            };
            (opened, loaded)
        });
        let (log, recovery) = opened?;
        // Also a snapshot this build cannot use (of an older format, say) proves it, if intact.
        let taken_at = match &loaded {
            Ok(Some(loaded)) => Some(loaded.position()),
            Ok(None) => None,
            Err(ignored) => ignored.intact_at,
        };
        if let Some(snapshot) = taken_at
            && snapshot > log.head().0
        {
            return Err(OpenEngineError::LogEndsBeforeSnapshot {
                snapshot,
                head: log.head().0,
                path: dir.join(SNAPSHOT_FILE),
            });
        }
        let snapshot = loaded
            .and_then(|loaded| {
                loaded
                    .map(|loaded| loaded.fits(&log).map_err(snapshot::Ignored::because))
                    .transpose()
            })
            .unwrap_or_else(|why| {
                tracing::warn!(%why, "engine snapshot ignored: the whole log is replayed");
                None
            });
        let restored_from = snapshot.as_ref().map(|(.., position)| Position(*position));
        let (world, last_now) = World::recovered(&log, snapshot)?;
        if let Some(from) = restored_from {
            let replayed = log.head().0 - from.0;
            tracing::info!(position = from.0, replayed, "engine state from its snapshot");
        }
        warn_if_clock_behind(config.clock.now(), last_now);
        let (sender, requests) = crossbeam_channel::bounded(config.admission_queue.max(1));
        let (durable, waiting) = crossbeam_channel::unbounded();
        let waiter_log = log.reader();
        let durable_answers = std::thread::Builder::new()
            .name("orderly-durable".into())
            .spawn(move || decision::answer_when_durable(&waiter_log, &waiting))
            .map_err(|source| orderly_store::OpenError::Io { path: dir.to_path_buf(), source })?;
        let snapshot_at_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let unanswered = Arc::new(decision::Unanswered::default());
        let thread = DecisionThread {
            dir: dir.to_path_buf(),
            snapshot_at_stop: snapshot_at_stop.clone(),
            world,
            log: log.clone(),
            requests,
            clock: config.clock.clone(),
            hold_ttl_ms: config.hold_ttl_ms,
            next_position: log.head().0,
            last_now,
            last_recorded: last_now,
            turn: decision::Turn::default(),
            durable: durable.clone(),
            failure_reported: Arc::default(),
            unanswered: unanswered.clone(),
            ahead: std::collections::VecDeque::new(),
            // A turn's batch must fit in a segment with room to spare; 1 MiB keeps it short.
            max_turn_bytes: usize::try_from(config.log.segment_size / 4)
                .unwrap_or(usize::MAX)
                .min(1 << 20),
        };
        let decision = std::thread::Builder::new()
            .name("orderly-decide".into())
            .spawn(move || thread.run())
            .map_err(|source| orderly_store::OpenError::Io { path: dir.to_path_buf(), source })?;
        let inner = Inner {
            requests: RwLock::new(Some(sender)),
            decision: Mutex::new(Some(decision)),
            durable_answers: Mutex::new(Some(durable_answers)),
            answering: Arc::new(Answering {
                log: log.reader(),
                read_back: Mutex::new(Some(durable)),
            }),
            log,
            recovery,
            restored_from,
            snapshot_at_stop,
            unanswered,
            payments: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    /// Executes one command: answered once its events are durable, or with why not. Runs on a
    /// tokio runtime (a replayed answer reads the log on its blocking pool).
    ///
    /// Dropping the future (a timeout around it, say) does not withdraw the command: once
    /// admitted, it is decided and may be committed. To learn its outcome, send it with an
    /// idempotency key and send it again: the retry answers what the first one did.
    pub async fn execute(&self, envelope: Envelope) -> Result<Outcome, ExecuteError> {
        let tenant = envelope.tenant.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(envelope, Reply::call(move |answer| drop(tx.send(answer))))?;
        let answer = rx.await.map_err(|_| self.gone())??;
        match answer {
            Answer::Committed { .. } => self.outcome(tenant, answer),
            Answer::Replay { .. } => {
                // Waiting for the first execution's batch and reading it back block: on a tokio
                // runtime that goes to its blocking pool, elsewhere it runs here.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return self.outcome(tenant, answer);
                };
                let engine = self.clone();
                match runtime.spawn_blocking(move || engine.outcome(tenant, answer)).await {
                    Ok(outcome) => outcome,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => Err(EngineError::ShuttingDown.into()),
                }
            }
        }
    }

    /// Admits `envelope` and returns at once; `on_answer` gets what [`Engine::execute`] would
    /// have returned, exactly once, when that answer is durable (or the engine stops). For
    /// callers that keep many commands in flight without an async runtime — a bulk import, a
    /// load driver — with no future, task or wake-up per command.
    ///
    /// `on_answer` runs on one of the engine's own threads (the log's; for a replayed command,
    /// the one that reads answers back; after a failure, the decision thread), which answer the
    /// other callers too: it must be quick, must not block and must not call the engine's
    /// blocking methods or `shutdown` (hand the outcome to a channel); if it panics, only its
    /// own answer is lost. A command the engine cannot take
    /// at once (a full queue, shutting down) is answered so before `send` returns, on the
    /// caller's thread.
    pub fn send<F>(&self, envelope: Envelope, on_answer: F)
    where
        F: FnOnce(Result<Outcome, ExecuteError>) + Send + 'static,
    {
        let on_answer =
            OnAnswer::new(self.inner.answering.clone(), envelope.tenant.clone(), on_answer);
        let reply = Reply::call(move |answer| match answer {
            Ok(Answer::Replay { first, records }) => on_answer.read_back(first, records),
            Ok(committed) => {
                let outcome = on_answer.answering.outcome(on_answer.tenant.clone(), committed);
                on_answer.answer(outcome);
            }
            Err(error) => on_answer.answer(Err(error)),
        });
        if let Err((refused, reply)) = self.try_submit(envelope, reply, Events::Keep) {
            reply.answer(Err(refused));
        }
    }

    /// [`Engine::send`] for callers that need only to know that a command is durable, and
    /// where: `on_ack` gets an [`Ack`] where `send`'s callback gets an [`Outcome`], or the same
    /// error, exactly once, under the same rules. No copy of the events is made for it, and a
    /// replayed command is not read back from the log (its answer still waits until the first
    /// execution is durable).
    pub fn send_ack<F>(&self, envelope: Envelope, on_ack: F)
    where
        F: FnOnce(Result<Ack, ExecuteError>) + Send + 'static,
    {
        let on_ack = OnAnswer::new(self.inner.answering.clone(), envelope.tenant.clone(), on_ack);
        let reply = Reply::call(move |answer| match answer {
            Ok(Answer::Replay { first, records }) => on_ack.when_durable(first, records),
            Ok(committed) => on_ack.answer(Ok(committed.ack())),
            Err(error) => on_ack.answer(Err(error)),
        });
        if let Err((refused, reply)) = self.try_submit(envelope, reply, Events::Drop) {
            reply.answer(Err(refused));
        }
    }

    /// A [`Pipe`] into this engine: commands sent with tags, their acknowledgements received
    /// in batches. For callers that keep thousands of commands in flight, where even
    /// [`Engine::send_ack`]'s one callback per command costs.
    #[must_use]
    pub fn pipe(&self) -> Pipe {
        Pipe::new(self.clone())
    }

    /// Commands admitted and waiting for the decision thread (a gauge for metrics).
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        let requests = self.inner.requests.read().unwrap_or_else(PoisonError::into_inner);
        requests.as_ref().map_or(0, Sender::len)
    }

    /// [`Engine::execute`] for code without an async runtime: blocks the calling thread.
    pub fn execute_blocking(&self, envelope: Envelope) -> Result<Outcome, ExecuteError> {
        let tenant = envelope.tenant.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(envelope, Reply::call(move |answer| drop(tx.send(answer))))?;
        let answer = rx.recv().map_err(|_| self.gone())??;
        self.outcome(tenant, answer)
    }

    /// Follows the committed events from `from` on (domain events only). From beyond the head,
    /// it waits until the log reaches `from` and starts there: the positions before it are
    /// not given.
    #[must_use]
    pub fn subscribe(&self, from: Position) -> Subscription {
        Subscription { inner: self.inner.log.subscribe(from), pending: Default::default() }
    }

    /// The position the next record will get: everything below it is durable.
    #[must_use]
    pub fn head(&self) -> Position {
        self.inner.log.head()
    }

    /// What opening the log found: records, segments, and a torn tail it cut, if any.
    #[must_use]
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    /// Where the state this engine opened with came from a snapshot (the one its last clean
    /// shutdown wrote): the position it was at, the records from there on replayed. `None`
    /// when the open replayed the whole log.
    #[must_use]
    pub fn restored_from(&self) -> Option<Position> {
        self.inner.restored_from
    }

    /// The engine's log, read-only, for readers (projections, audit): the engine must stay its
    /// only appender.
    #[must_use]
    pub fn log(&self) -> LogReader {
        self.inner.log.reader()
    }

    /// Stops admitting commands, decides and commits what was admitted, and waits for the
    /// decision thread to finish and for every admitted command's answer to be given (the
    /// callbacks of [`Engine::send`] and [`Engine::send_ack`], which must not call it, have
    /// run when it returns, and a [`Pipe`]'s answers are in it). The decision thread writes a snapshot of the state once all of
    /// it is durable, so that the next open replays only what comes after.
    ///
    /// The log closes, and the folder is free for another open, when the last handle is
    /// dropped. An engine dropped without `shutdown` stops as after a crash: no snapshot, and
    /// the commands already admitted are still decided and committed first, by the decision
    /// thread on its own (an open of the folder meanwhile is refused as locked).
    pub fn shutdown(&self) {
        self.inner.snapshot_at_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self.inner.requests.write().unwrap_or_else(PoisonError::into_inner).take());
        // Held until the replays the decision thread handed out can no longer come: a second
        // `shutdown` at the same time waits here, and does not close the way for them early.
        let mut decision = self.inner.decision.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(decision) = decision.take() {
            // A panic on the decision thread is a bug already printed; the log keeps what was
            // acknowledged.
            let _ = decision.join();
        }
        drop(self.inner.answering.read_back.lock().unwrap_or_else(PoisonError::into_inner).take());
        drop(decision);
        let durable =
            self.inner.durable_answers.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(durable) = durable {
            let _ = durable.join();
        }
        self.inner.unanswered.wait_none();
    }

    fn submit(&self, envelope: Envelope, reply: Reply) -> Result<(), ExecuteError> {
        self.try_submit(envelope, reply, Events::Keep).map_err(|(refused, _)| refused)
    }

    /// Admits a command, or gives its reply back with why not.
    fn try_submit(
        &self,
        envelope: Envelope,
        reply: Reply,
        events: Events,
    ) -> Result<(), (ExecuteError, Reply)> {
        if envelope.takes_a_reserved_key() {
            let key = envelope.idempotency_key.expect("a reserved key");
            return Err((ExecuteError::IdempotencyKeyReserved { key }, reply));
        }
        let request = Work::Command(Request::new(envelope, reply, events));
        let requests = self.inner.requests.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = requests.as_ref() else {
            return Err((EngineError::ShuttingDown.into(), reply_of(request)));
        };
        sender.try_send(request).map_err(|e| match e {
            TrySendError::Full(r) => (EngineError::Overloaded.into(), reply_of(r)),
            TrySendError::Disconnected(r) => (EngineError::ShuttingDown.into(), reply_of(r)),
        })
    }

    /// Runs `read` on the decision thread against the state every command admitted before it
    /// left, and returns its answer with the position the next record then gets: the state is
    /// the log's up to that position, once it is durable (which the caller waits for if it
    /// acts on it). For the engine's own processes, not for every command: the decision thread
    /// does nothing else meanwhile. `Overloaded` when no answer came within `wait` (the queue
    /// stayed full, or the thread is held up, as by a stalled disk): the caller may ask again.
    pub(crate) fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&World) -> R + Send + 'static,
        wait: Duration,
    ) -> Result<(R, Position), EngineError> {
        let deadline = std::time::Instant::now() + wait;
        let (answer, answered) = crossbeam_channel::bounded(1);
        let work = Work::Read(Box::new(move |world, next| drop(answer.send((read(world), next)))));
        let sender = self.inner.requests.read().unwrap_or_else(PoisonError::into_inner).clone();
        let stopped = || self.inner.answering.why_gone();
        let sender = sender.ok_or_else(stopped)?;
        sender.send_deadline(work, deadline).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(_) => EngineError::Overloaded,
            crossbeam_channel::SendTimeoutError::Disconnected(_) => stopped(),
        })?;
        drop(sender);
        answered.recv_deadline(deadline).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => EngineError::Overloaded,
            crossbeam_channel::RecvTimeoutError::Disconnected => stopped(),
        })
    }

    fn gone(&self) -> ExecuteError {
        self.inner.answering.gone()
    }

    /// Takes the engine's one place for a payments process; false if one runs already.
    pub(crate) fn claim_payments(&self) -> bool {
        !self.inner.payments.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Gives the place back, once the payments process that took it has stopped.
    pub(crate) fn release_payments(&self) {
        self.inner.payments.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn outcome(&self, tenant: TenantId, answer: Answer) -> Result<Outcome, ExecuteError> {
        self.inner.answering.outcome(tenant, answer)
    }
}

/// Refuses an empty path (which would put the lock in the working folder), and a node's data
/// folder given for an engine's own (a folder that holds no log but whose `log` folder does).
fn check_folder(dir: &Path) -> Result<(), OpenEngineError> {
    Log::refuse_an_empty_path(dir)?;
    let io_err = |source| orderly_store::OpenError::Io { path: dir.to_path_buf(), source };
    let is_log = |dir: &Path| Log::is_log_folder(dir).map_err(io_err);
    if !is_log(dir)? && is_log(&dir.join(crate::node::LOG_DIR))? {
        return Err(OpenEngineError::NodeFolder { path: dir.to_path_buf() });
    }
    Ok(())
}

/// The reply of a command the queue gave back.
fn reply_of(work: Work) -> Reply {
    match work {
        Work::Command(request) => request.reply,
        Work::Read(_) => unreachable!("only commands are tried"),
    }
}

/// What answering a command needs, shared with [`Engine::send`]'s callbacks. It holds a
/// reader of the log, not the engine: the callbacks keep no engine open, and the last of them
/// may be dropped on one of the log's own threads.
#[derive(Debug)]
struct Answering {
    log: LogReader,
    /// Hands `send`'s replayed answers to the durable-answers thread (reading the log back
    /// blocks, which the thread that answers must not); taken by `shutdown`.
    read_back: Mutex<Option<crossbeam_channel::Sender<(u64, decision::Deferred)>>>,
}

impl Answering {
    /// Hands `then` to the durable-answers thread, which calls it with the replay once the
    /// records from `first` on are durable, or with why they never will be. If the thread is
    /// gone, `then` is dropped, and answers why.
    fn after_durable(&self, first: u64, records: u32, then: Reply) {
        let read_back = self.read_back.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(durable) = read_back.clone() else { return };
        drop(read_back);
        let replay = Answer::Replay { first, records };
        let _gone = durable.send((first + u64::from(records), vec![(then, Ok(replay))]));
    }

    /// Why an answer never came: the log stopped (and dropped the batch) or the engine closed.
    fn gone(&self) -> ExecuteError {
        self.why_gone().into()
    }

    fn why_gone(&self) -> EngineError {
        match self.log.failure() {
            Some(cause) => EngineError::Stopped { cause },
            None => EngineError::ShuttingDown,
        }
    }

    fn outcome(&self, tenant: TenantId, answer: Answer) -> Result<Outcome, ExecuteError> {
        match answer {
            Answer::Committed { position, events, at: recorded_at } => {
                let events = events
                    .into_iter()
                    .map(|event| CommittedEvent {
                        position: Position(position),
                        tenant: tenant.clone(),
                        event,
                        recorded_at,
                    })
                    .collect();
                Ok(Outcome { events, replayed: false })
            }
            Answer::Replay { first, records } => {
                let next = first + u64::from(records);
                // The first execution may still be on its way to the disk: wait for it.
                if next > 0 && self.log.wait_beyond(Position(next - 1), REPLAY_WAIT).0 < next {
                    return Err(self.gone());
                }
                let mut events = Vec::new();
                for record in self.log.read_from(Position(first)).take(records as usize) {
                    let record =
                        record.map_err(|e| EngineError::Stopped { cause: e.to_string() })?;
                    events.extend(committed(&record));
                }
                Ok(Outcome { events, replayed: true })
            }
        }
    }
}

/// A [`Engine::send`] or [`Engine::send_ack`] caller's callback, called exactly once: with
/// the answer, or, if the command is dropped unanswered (the engine stopped or shut down),
/// with why.
struct OnAnswer<T, F: FnOnce(Result<T, ExecuteError>)> {
    answering: Arc<Answering>,
    tenant: TenantId,
    f: Option<F>,
    answers: std::marker::PhantomData<fn(T)>,
}

impl<T: 'static, F: FnOnce(Result<T, ExecuteError>) + Send + 'static> OnAnswer<T, F> {
    fn new(answering: Arc<Answering>, tenant: TenantId, f: F) -> OnAnswer<T, F> {
        OnAnswer { answering, tenant, f: Some(f), answers: std::marker::PhantomData }
    }

    fn answer(mut self, answer: Result<T, ExecuteError>) {
        if let Some(f) = self.f.take() {
            call(f, answer);
        }
    }

    /// Hands `then` to the durable-answers thread, which calls it once the records from
    /// `first` on are durable (with the replay), or with why they never will be. The thread
    /// that found the key (the decision thread) must not wait for the disk.
    fn after_durable(
        self,
        first: u64,
        records: u32,
        then: impl FnOnce(Self, Answer) + Send + 'static,
    ) {
        let answering = self.answering.clone();
        let reply = Reply::call(move |answer| match answer {
            Ok(answer) => then(self, answer),
            Err(error) => self.answer(Err(error)),
        });
        answering.after_durable(first, records, reply);
    }
}

impl<F: FnOnce(Result<Outcome, ExecuteError>) + Send + 'static> OnAnswer<Outcome, F> {
    /// A replayed answer: its records are read back on the durable-answers thread once they
    /// are durable, not on the decision thread that found the key.
    fn read_back(self, first: u64, records: u32) {
        self.after_durable(first, records, |on_answer, answer| {
            // Reading back cannot fail but by a bug; the thread answers the others all the
            // same (and this callback, dropped, answers why it got nothing).
            let answering = &on_answer.answering;
            let read = || answering.outcome(on_answer.tenant.clone(), answer);
            if let Ok(outcome) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
                on_answer.answer(outcome);
            }
        });
    }
}

impl<F: FnOnce(Result<Ack, ExecuteError>) + Send + 'static> OnAnswer<Ack, F> {
    /// A replayed acknowledgement: given once the first execution's records are durable.
    fn when_durable(self, first: u64, records: u32) {
        self.after_durable(first, records, |on_ack, replay| on_ack.answer(Ok(replay.ack())));
    }
}

impl<T, F: FnOnce(Result<T, ExecuteError>)> Drop for OnAnswer<T, F> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            call(f, Err(self.answering.gone()));
        }
    }
}

/// Calls a caller's callback on one of the engine's threads. A callback that panics loses its
/// own answer only (the panic is reported as usual); the thread goes on answering the others.
fn call<T, F: FnOnce(Result<T, ExecuteError>)>(f: F, answer: Result<T, ExecuteError>) {
    let _lost = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(answer)));
}

/// The committed domain events of a log record. Records appended by this engine always
/// decode: they were verified when it opened or written by it.
fn committed(record: &orderly_store::Record) -> Vec<CommittedEvent> {
    CommittedEvent::decode_record(record).expect("records of this engine's log decode")
}

impl CommittedEvent {
    /// Decodes a log record into the domain events it holds, in order, all at the record's
    /// position: a decision record's events, an older single-event record's event, or none
    /// (an older key record).
    pub fn decode_record(
        record: &orderly_store::Record,
    ) -> Result<Vec<CommittedEvent>, DecodeError> {
        let decoded = codec::decode_stored(record)?;
        let tenant = decoded.tenant().clone();
        let at = Timestamp(record.timestamp);
        Ok(decoded
            .into_events()
            .into_iter()
            .map(|event| CommittedEvent {
                position: record.position,
                tenant: tenant.clone(),
                event,
                recorded_at: at,
            })
            .collect())
    }
}

/// Follows committed domain events, one at a time.
#[derive(Debug)]
pub struct Subscription {
    inner: orderly_store::Subscription,
    /// Events of the last record read not handed out yet.
    pending: std::collections::VecDeque<CommittedEvent>,
}

impl Subscription {
    /// The next committed event, waiting up to `timeout`; `None` on timeout (also, once its
    /// committed events are read, on a log that failed: nothing more is committed then).
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<CommittedEvent, orderly_store::ReadError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match self.inner.next_timeout(timeout)? {
                Ok(record) => self.pending.extend(committed(&record)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
