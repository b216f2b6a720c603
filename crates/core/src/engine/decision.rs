//! The decision thread: the single writer.
//!
//! It owns all hot state. For each admitted command it stamps the admission time, checks the
//! idempotency key, decides against the in-memory state, applies the events at once (so the
//! next command sees them), and adds the command's records to the turn's batch. Each turn (the
//! commands waiting when the thread looks) goes to the log as one atomic batch, and its callers
//! are answered from the log's sync thread once that batch is durable. Rejections are answered
//! then too, since they may rest on events of the same or an earlier batch still in flight.
//! Deciding the next turn therefore overlaps with the fsync of the previous ones, yet no caller
//! is ever answered before what its answer rests on is on disk. If the log fails, every later
//! command is refused: the in-memory state may be ahead of the disk, and only reopening
//! (replay) is trusted.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use orderly_store::{Expected, Log, LogReader, NewRecord, Position};

use super::Ack;
use super::clock::Clock;
use super::error::{EngineError, ExecuteError};
use super::pipe::{Deliveries, Tagged};
use super::state::{KeyEntry, Place, World};
use crate::codec::{self, fingerprint_of};
use crate::domain::{
    Command, Context, Decider, Envelope, Event, IdempotencyKey, OrderCommand, Rejection, Tenant,
    Timestamp,
};

/// How often an idle decision thread wakes to expire holds that ran out.
const EXPIRY_TICK: Duration = Duration::from_millis(100);
/// Most commands decided per turn: then the turn goes to the log and expiry timers are checked
/// again. The answers that wait for durability (nearly all) wait until the turn's last
/// command is decided, written and synced, so a long turn keeps early answers waiting and
/// leaves the log idle while it is decided; with shorter turns the log writes and syncs one while the next is decided (and its
/// group commit still gathers the turns queued meanwhile). Measured with `benches/engine.rs`
/// and `orderly bench`: 256 to 1024 are alike, 4096 took about 30% fewer orders per second.
const MAX_DECISIONS_PER_TURN: usize = 1024;
/// How many works the decision thread takes off its queue ahead of the one it decides, loading
/// what they will look up: enough to cover a trip to memory, few enough to stay within the
/// core's outstanding misses.
const LOOKAHEAD: usize = 8;
/// How far ahead of the one decided a work has what it reaches through its order loaded (its
/// order is in cache by then): the payment and stock a ship or a cancel moves, the stock of a
/// place.
const THROUGH_AHEAD: usize = 3;
/// How many entries ahead of the next one the turn's answers are loaded into the cache.
const WRITE_AHEAD: usize = 8;
/// Most records in one turn's batch (well below the log's batch limit).
const MAX_TURN_RECORDS: usize = 8192;

/// What the decision thread answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The command's events, admitted at `at`, are durable in the decision record at
    /// `position`. `events` is empty if the request said [`Events::Drop`].
    Committed { position: u64, events: Vec<Event>, at: Timestamp },
    /// The key was seen with the same command: its events are in the `records` records from
    /// `first` on.
    Replay { first: u64, records: u32 },
}

impl Answer {
    /// Where the command's events are, as [`Engine::send_ack`](super::Engine::send_ack)
    /// answers.
    pub(crate) fn ack(&self) -> Ack {
        match *self {
            Answer::Committed { position, .. } => {
                Ack { first: Position(position), records: 1, replayed: false }
            }
            Answer::Replay { first, records } => {
                Ack { first: Position(first), records, replayed: true }
            }
        }
    }
}

/// Who gets a command's answer.
pub(crate) enum Reply {
    /// A callback ([`Engine::execute`](super::Engine::execute), `send`, `send_ack`).
    Call(Box<dyn FnOnce(Result<Answer, ExecuteError>) + Send>),
    /// A [`Pipe`](super::Pipe)'s command: its answer is handed over with its batch's.
    Tagged(Tagged),
}

impl Reply {
    pub(crate) fn call(f: impl FnOnce(Result<Answer, ExecuteError>) + Send + 'static) -> Reply {
        Reply::Call(Box::new(f))
    }

    /// Gives `answer` on its own (a batch's answers go through [`Deliveries`]).
    pub(crate) fn answer(self, answer: Result<Answer, ExecuteError>) {
        match self {
            Reply::Call(f) => f(answer),
            Reply::Tagged(tagged) => tagged.answer(answer),
        }
    }
}

/// What callers hand the decision thread. Commands and reads share one queue, so a read sees
/// every command admitted before it.
#[expect(
    clippy::large_enum_variant,
    reason = "commands are nearly all the work: boxing them would cost an allocation each"
)]
pub(crate) enum Work {
    /// A command to decide.
    Command(Request),
    /// A look at the state (see [`Engine::read`](super::Engine::read)).
    Read(Read),
}

/// A look at the state the commands before it left, given the position the next record gets.
pub(crate) type Read = Box<dyn FnOnce(&World, Position) + Send>;

pub(crate) struct Request {
    pub envelope: Envelope,
    /// The command's fingerprint when it carries an idempotency key, computed by the caller's
    /// thread when it submits, so that hashing commands does not load the decision thread.
    pub fingerprint: Option<codec::Fingerprint>,
    pub reply: Reply,
    /// What becomes of the events of the command, if accepted.
    pub events: Events,
}

/// Whether a reply reads the events of an accepted command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Events {
    /// The reply gets them ([`Engine::send`](super::Engine::send), `execute`).
    Keep,
    /// The reply does not read them ([`Engine::send_ack`](super::Engine::send_ack)): the
    /// decision thread frees them as soon as they are applied and encoded, where they were
    /// allocated, instead of the thread that answers freeing them across threads.
    Drop,
}

impl Request {
    pub(crate) fn new(envelope: Envelope, reply: Reply, events: Events) -> Request {
        let fingerprint = envelope.idempotency_key.as_ref().map(|_| fingerprint_of(&envelope));
        Request { envelope, fingerprint, reply, events }
    }
}

pub(crate) struct DecisionThread {
    /// The engine's folder, where its snapshot goes.
    pub dir: std::path::PathBuf,
    /// Whether the engine is shut down (not dropped): then a snapshot is written at the end.
    pub snapshot_at_stop: Arc<std::sync::atomic::AtomicBool>,
    pub world: World,
    pub log: Log,
    pub requests: Receiver<Work>,
    pub clock: Arc<dyn Clock>,
    pub hold_ttl_ms: u64,
    /// The position the next record will get: this thread is the log's only appender.
    pub next_position: u64,
    /// Admission times never go backwards, even if the wall clock does.
    pub last_now: Timestamp,
    /// The latest admission time a record holds: what a replay of the log finds, and so what
    /// a snapshot keeps (`last_now` also moves on idle ticks that record nothing).
    pub last_recorded: Timestamp,
    /// The batch being built this turn.
    pub turn: Turn,
    /// Bytes after which a turn's batch goes to the log early (it must fit in a segment).
    pub max_turn_bytes: usize,
    /// Deferred answers of turns that wrote nothing, to the thread that gives them once durable.
    pub durable: crossbeam_channel::Sender<(u64, Deferred)>,
    /// Set once the log's failure is reported: every batch in flight learns it, one says so.
    pub failure_reported: Arc<std::sync::atomic::AtomicBool>,
    /// The works taken off the queue ahead of the one being decided (empty between turns).
    pub ahead: std::collections::VecDeque<Work>,
    pub unanswered: Arc<Unanswered>,
}

impl DecisionThread {
    pub(crate) fn run(mut self) {
        loop {
            let first = match self.requests.recv_timeout(EXPIRY_TICK) {
                Ok(work) => Some(work),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    if self.snapshot_at_stop.load(std::sync::atomic::Ordering::SeqCst) {
                        self.snapshot();
                    }
                    return;
                }
            };
            let now = self.admission_time();
            self.expire_due(now);
            if let Some(first) = first {
                self.decide_turn(first, now);
            }
            self.flush();
        }
    }

    /// Decides `first` and the works waiting after it, up to [`MAX_DECISIONS_PER_TURN`], in
    /// order. The works are taken off the queue [`LOOKAHEAD`] ahead of the one decided, and
    /// what each will look up is loaded then: a day's orders, payments and keys do not fit in
    /// cache, and each decision would otherwise wait for memory in turn.
    fn decide_turn(&mut self, first: Work, now: Timestamp) {
        let mut ahead = std::mem::take(&mut self.ahead);
        self.prefetch(&first);
        ahead.push_back(first);
        let mut taken = 1;
        while let Some(work) = ahead.pop_front() {
            while ahead.len() < LOOKAHEAD && taken < MAX_DECISIONS_PER_TURN {
                let Ok(next) = self.requests.try_recv() else { break };
                self.prefetch(&next);
                ahead.push_back(next);
                taken += 1;
            }
            if let Some(Work::Command(Request { envelope, .. })) = ahead.get(THROUGH_AHEAD) {
                self.world.prefetch_through(&envelope.tenant, &envelope.command);
            }
            self.take(work, now);
        }
        self.ahead = ahead;
    }

    fn prefetch(&self, work: &Work) {
        if let Work::Command(Request { envelope, .. }) = work {
            let key = envelope.idempotency_key.as_ref();
            self.world.prefetch(&envelope.tenant, &envelope.command, key);
        }
    }

    /// Writes the state to the snapshot file once the log holds all of it durably; not after
    /// a log failure (the state may be ahead of the disk). A snapshot that cannot be written is
    /// reported: the next open replays more, nothing is lost.
    fn snapshot(&self) {
        let position = self.next_position;
        while self.log.head().0 < position && self.log.failure().is_none() {
            self.log.wait_beyond(Position(position - 1), Duration::from_millis(100));
        }
        if self.log.failure().is_some() || position == 0 {
            return;
        }
        let started = std::time::Instant::now();
        let (dir, world) = (&self.dir, &self.world);
        match super::snapshot::write(dir, &self.log, world, self.last_recorded, position) {
            Ok(bytes) => {
                let ms = started.elapsed().as_millis();
                tracing::info!(position, bytes, ms, "engine snapshot written");
            }
            Err(e) => tracing::warn!(error = %e, "engine snapshot not written"),
        }
    }

    fn admission_time(&mut self) -> Timestamp {
        self.last_now = self.last_now.max(self.clock.now());
        self.last_now
    }

    fn context(&self, now: Timestamp) -> Context {
        Context { now, hold_ttl_ms: self.hold_ttl_ms }
    }

    fn take(&mut self, work: Work, now: Timestamp) {
        match work {
            Work::Command(request) => self.handle(request, now),
            // After a log failure the state may be ahead of the disk: a read dropped unanswered
            // tells its caller the engine stopped. A read that panics is a bug in the caller's
            // closure, which only borrowed the state: the engine goes on.
            Work::Read(read) if self.log.failure().is_none() => {
                let position = Position(self.next_position);
                let read = std::panic::AssertUnwindSafe(|| read(&self.world, position));
                let _lost = std::panic::catch_unwind(read);
            }
            Work::Read(_) => {}
        }
    }

    fn handle(&mut self, request: Request, now: Timestamp) {
        let Request { envelope, fingerprint, reply, events: for_reply } = request;
        if let Some(cause) = self.log.failure() {
            return reply.answer(Err(EngineError::Stopped { cause }.into()));
        }
        let new_tenant = !self.world.knows(&envelope.tenant);
        let place = self.world.place(&envelope.tenant);
        let key = envelope.idempotency_key.as_ref().zip(fingerprint);
        if let Some((key, fingerprint)) = key {
            // Claimed for the record this command would write: the position it gets if
            // accepted, since nothing else is decided in between.
            let claim = KeyEntry { fingerprint, first: self.next_position, records: 1 };
            if let Some(seen) = self.world.claim_key(place, key, claim) {
                if seen.fingerprint.same_command(&fingerprint, &envelope) {
                    let replay = Answer::Replay { first: seen.first, records: seen.records };
                    return reply.answer(Ok(replay));
                }
                let reused = Err(ExecuteError::IdempotencyKeyReused { key: key.clone() });
                return self.turn.deferred.push((reply, reused));
            }
        }
        let refusal = match self.decide(place, &envelope.command, now) {
            Ok(Ok(events)) => return self.commit(place, key, (events, for_reply), now, reply),
            // A rejection may rest on events not yet durable: it waits for them like an
            // acknowledgement does, so no caller is told "no" on the strength of a state that a
            // failed fsync could undo.
            Ok(Err(rejection)) => ExecuteError::Rejected(rejection),
            Err(inconsistent) => inconsistent.into(),
        };
        if let Some((key, _)) = key {
            self.world.release_key(place, key);
        }
        if new_tenant {
            self.world.forget_new(place);
        }
        self.turn.deferred.push((reply, Err(refusal)));
    }

    /// Decides `command` against its tenant's state. Deciding only reads the state, so a
    /// decision that panics (the state breaks an assumption of the domain: a bug, or a log
    /// rewritten outside the engine) leaves it as it was: that command is refused, and the
    /// engine, every other aggregate and every other tenant go on.
    fn decide(
        &self,
        place: Place,
        command: &Command,
        now: Timestamp,
    ) -> Result<Result<Vec<Event>, Rejection>, EngineError> {
        let state = self.world.state(place);
        let context = self.context(now);
        super::catching(|| Tenant::decide(state, command, &context)).map_err(|detail| {
            tracing::error!(tenant = %self.world.id(place), %detail, "a command was refused: its state is inconsistent");
            EngineError::Inconsistent { detail }
        })
    }

    /// Expires the holds of unpaid orders that ran out. These commands come from the engine
    /// itself; their timers are rebuilt from the log on open, so they survive restarts.
    fn expire_due(&mut self, now: Timestamp) {
        for (place, order) in self.world.take_due(now) {
            if self.log.failure().is_some() {
                return;
            }
            let command = Command::Order { order, command: OrderCommand::Expire };
            // A rejection means the order moved on meanwhile; nothing to expire.
            if let Ok(Ok(events)) = self.decide(place, &command, now) {
                self.commit(place, None, (events, Events::Drop), now, Reply::call(|_| {}));
            }
        }
    }

    /// Applies `events` and adds their decision record, with the command's idempotency key
    /// (claimed already), to the turn's batch.
    fn commit(
        &mut self,
        place: Place,
        key: Option<(&IdempotencyKey, codec::Fingerprint)>,
        (mut events, for_reply): (Vec<Event>, Events),
        now: Timestamp,
        reply: Reply,
    ) {
        let record = self.turn.next_record();
        codec::encode_decision_into(self.world.id(place), key, &events, now, record);
        self.last_recorded = now;
        self.turn.bytes += record.encoded_len();
        self.world.apply(place, &events);
        if for_reply == Events::Drop {
            events = Vec::new();
        }
        let position = self.next_position;
        self.next_position += 1;
        // The answers list is memory the log's threads wrote last: the entries a few ahead are
        // loaded now, so that these stores do not each wait for their lines.
        let answers = &self.turn.answers;
        if answers.len() + WRITE_AHEAD < answers.capacity() {
            orderly_store::prefetch::load(
                answers.as_ptr().wrapping_add(answers.len() + WRITE_AHEAD),
            );
        }
        self.turn.answers.push((reply, position, events, now));
        if self.turn.answers.len() >= MAX_TURN_RECORDS || self.turn.bytes >= self.max_turn_bytes {
            self.flush();
        }
    }

    /// Hands the turn's records to the log as one atomic batch; its commands are answered
    /// once it is durable. One batch per turn, not per command, keeps the log's per-batch work
    /// and the number of wake-ups low under load.
    fn flush(&mut self) {
        let deferred = std::mem::take(&mut self.turn.deferred);
        if self.turn.answers.is_empty() {
            // Nothing new to write: the deferred answers wait only for what is in flight.
            if !deferred.is_empty() {
                let durable_at = self.next_position;
                let _closed = self.durable.send((durable_at, deferred));
            }
            return;
        }
        // The next turn is likely as long as this one: its answers start that long rather than
        // growing (and being copied) a dozen times.
        let next = Vec::with_capacity(self.turn.answers.len());
        let answers = std::mem::replace(&mut self.turn.answers, next);
        let decided = answers.len();
        self.turn.bytes = 0;
        let expected_first = self.next_position - decided as u64;
        // If the log refuses the batch (it stopped or closed), the callback is dropped with it:
        // the callers learn the engine stopped, and later commands are refused through
        // `log.failure()`.
        let records = &self.turn.records[..decided];
        let reported = self.failure_reported.clone();
        let in_flight = self.unanswered.start();
        let _refused = self.log.append_or_wait(records, move |outcome| match outcome {
            Ok(appended) => {
                assert_eq!(
                    appended.first.0, expected_first,
                    "the engine is the log's only appender"
                );
                let mut deliveries = Deliveries::new();
                for (reply, position, events, at) in answers {
                    deliveries.give(reply, Ok(Answer::Committed { position, events, at }));
                }
                for (reply, answer) in deferred {
                    deliveries.give(reply, answer);
                }
                drop(deliveries);
                drop(in_flight);
            }
            Err(e) => {
                if !reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::error!(error = %e, "the log failed: the engine accepts no command until a restart");
                }
                let stopped = || EngineError::Stopped { cause: e.to_string() }.into();
                let mut deliveries = Deliveries::new();
                for (reply, ..) in answers {
                    deliveries.give(reply, Err(stopped()));
                }
                for (reply, _) in deferred {
                    deliveries.give(reply, Err(stopped()));
                }
                drop(deliveries);
                drop(in_flight);
            }
        });
    }
}

/// How many batches handed to the log still have answers to give, for `shutdown` to wait for.
#[derive(Debug, Default)]
pub(crate) struct Unanswered {
    count: std::sync::Mutex<usize>,
    none: std::sync::Condvar,
}

impl Unanswered {
    /// Counts a batch until the returned guard is dropped: by the batch's callback once it
    /// has given every answer, or with the callback if the log drops it uncalled.
    fn start(self: &Arc<Self>) -> BatchInFlight {
        *self.lock() += 1;
        BatchInFlight(self.clone())
    }

    /// Waits until every batch counted has given its answers.
    pub(crate) fn wait_none(&self) {
        let mut count = self.lock();
        while *count > 0 {
            count = self.none.wait(count).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A batch counted in [`Unanswered`] until dropped.
struct BatchInFlight(Arc<Unanswered>);

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        let mut count = self.0.lock();
        *count -= 1;
        if *count == 0 {
            self.0.none.notify_all();
        }
    }
}

/// Answers that must wait until the log is durable up to a position, with nothing of their
/// own to write: rejections decided against events still in flight.
pub(crate) type Deferred = Vec<(Reply, Result<Answer, ExecuteError>)>;

/// Answers deferred answers once the log's head reaches their position, in order. Runs on its
/// own thread so that the decision thread never waits for the disk.
pub(crate) fn answer_when_durable(log: &LogReader, waiting: &Receiver<(u64, Deferred)>) {
    for (durable_at, deferred) in waiting {
        while log.head().0 < durable_at && log.failure().is_none() {
            log.wait_beyond(orderly_store::Position(durable_at - 1), Duration::from_millis(100));
        }
        let failure = log.failure().filter(|_| log.head().0 < durable_at);
        let mut deliveries = Deliveries::new();
        for (reply, answer) in deferred {
            match &failure {
                None => deliveries.give(reply, answer),
                Some(cause) => {
                    deliveries
                        .give(reply, Err(EngineError::Stopped { cause: cause.clone() }.into()));
                }
            }
        }
    }
}

/// The records and answers of the commands decided in one turn, not yet handed to the log.
#[derive(Default)]
pub(crate) struct Turn {
    /// The turn's decision records are the first of these, one per answer. The log only
    /// borrows them (it encodes a batch before `append_or_wait` returns), so the next turn
    /// writes its records into the same buffers: no allocation per record, and memory still
    /// in cache.
    records: Vec<NewRecord>,
    bytes: usize,
    answers: Vec<(Reply, u64, Vec<Event>, Timestamp)>,
    /// Answers without records of their own, given once the turn's batch is durable.
    deferred: Deferred,
}

impl Turn {
    /// The buffer for the turn's next record (that of the next answer).
    fn next_record(&mut self) -> &mut NewRecord {
        let next = self.answers.len();
        if next == self.records.len() {
            self.records.push(NewRecord {
                stream: Vec::new(),
                expected: Expected::Any,
                event_type: 0,
                schema_version: 0,
                timestamp: 0,
                payload: Vec::new(),
            });
        }
        &mut self.records[next]
    }
}
