//! The payments process: authorize every placed order through the gateways, then record the
//! outcome; move money at the gateway when the order ships, is cancelled or refunded.
//!
//! ```text
//! OrderPlaced ──▶ router.authorize (gateway IO, async) ──▶ Authorize command (confirms order)
//!                                   ├─ declined / all down ──▶ Decline + Cancel (releases stock)
//! PaymentCaptured / Voided / Refunded ──▶ gateway capture / void / refund
//! OrderCancelled, no authorization recorded ──▶ cancel the authorization key where it may be held
//! ```
//! Gateway calls run on this process's own runtime, never on the engine's decision thread.
//! Every call and every command carries a key derived from the order (`{tenant}/{order}/auth`,
//! `pm:auth:{order}`, …), so a restart mid-flow repeats calls that return their first outcome:
//! nothing is charged twice. An authorization is recorded with the gateway's reference, which
//! its capture, void or refund quotes, days later or after a restart, without asking the
//! gateway again (for one recorded before references were, it asks again under the
//! authorization's key). On start the process takes over from the engine's state the
//! orders still waiting for payment (and resumes them) and the authorized payments, without
//! rereading the log's history. It repeats the money movements it is not sure were made (each
//! returns its first outcome): with a checkpoint ([`super::settled`], as a `Node` runs it),
//! those committed since the oldest movement not settled when it last ran; without one, all of
//! them.
//!
//! An authorization the gateway approved but the log never recorded (its answer lost in a
//! crash or a timeout, or recorded too late, after the order ended) holds the customer's money
//! with nothing in the log to give it back. So a cancel (by the customer, a decline or the
//! hold running out) of an order with no authorization recorded is a movement too: the order's
//! authorization key is given up ([`PaymentGateway::cancel_authorization`], which also bars a
//! call still on its way) at every gateway taking its currency; or, for an order this run's
//! flow declined, only at the gateways that timed out ([`Declined`]). It is repeated by a
//! start until settled, like a void. An order paid through one gateway after others timed out
//! gets those cancelled too, but in memory only: a stop or a crash in between, or a gateway
//! that stays down through the retries, leaves their approvals to lapse at the gateways, as
//! does a crash after an approval whose order a later start then pays through another gateway
//! (the log records outcomes, not attempts). A start finds an order whose decline was recorded
//! but not its cancel (a stop came between them) and cancels it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::domain::{
    CancelReason, Command, DeclineReason, Envelope, Event, GatewayId, GatewayReference,
    IdempotencyKey, Money, OrderCommand, OrderEvent, OrderId, OrderStatus, PaymentCommand,
    PaymentEvent, PaymentId, PaymentStatus, RESERVED_KEY_PREFIX, TenantId,
};
use crate::engine::{CommittedEvent, Engine, EngineError, ExecuteError, World};
use crate::payments::{
    Authorization, AuthorizeRequest, BoxFuture, GatewayError, MoneyRequest, PaymentGateway, Routed,
    Router,
};
use orderly_store::LogReader;

use super::settled::{self, Ledger};

/// Payment flows in progress at once; beyond it the process stops reading new events (a batch
/// of [`START_BATCH`] starts once there is room for all of it).
const MAX_FLOWS_IN_FLIGHT: usize = 1024;
/// Orders read and waiting for their flows to start, at most: flows start together, with one
/// wake-up of the payments runtime, when this many are read or the log has no more for now.
const START_BATCH: usize = 256;
const _: () = assert!(START_BATCH <= MAX_FLOWS_IN_FLIGHT, "a batch must fit among the flows");
/// Finished movements are forgotten once more than this many are remembered.
const MOVEMENTS_KEPT: usize = 4096;
/// How often the event loop checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);
/// How long a stop waits for money movements in progress, and then for the rest.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// How often the checkpoint of settled movements is written while it moves.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The payment id the process uses for `order`: one payment per order, so a retried flow finds
/// the payment it already started.
#[must_use]
pub fn payment_id_for(order: &OrderId) -> PaymentId {
    let text = order.as_str();
    let id = if text.len() + 4 <= crate::domain::limits::MAX_ID_LEN {
        format!("{text}.pay")
    } else {
        let hash = blake3::hash(text.as_bytes()).to_hex();
        format!("pay-{}", &hash[..40])
    };
    PaymentId::new(&id).expect("built from valid characters within the length limit")
}

/// A running payments process. Stops when dropped or on [`PaymentProcess::stop`].
#[derive(Debug)]
pub struct PaymentProcess {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    unmoved: Arc<Unmoved>,
}

/// Money the log says moved and the gateways did not move, since the process started: the
/// engine records a capture, void or refund when the order ships, is cancelled or is refunded,
/// and the process makes it at the gateway after. For operators to watch (the server's
/// `/metrics`): each is also logged, with its order, as an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoneyNotMoved {
    /// Movements the gateway refused for good (it no longer knows the authorization, say);
    /// the log keeps them as recorded, and nothing repeats them.
    pub refused: u64,
    /// Movements whose tries ran out without an answer (the gateway down), or that wait
    /// behind one: the next start makes them, in order.
    pub left_for_next_start: u64,
}

/// The counts behind [`MoneyNotMoved`].
#[derive(Debug, Default)]
struct Unmoved {
    refused: std::sync::atomic::AtomicU64,
    left_for_next_start: std::sync::atomic::AtomicU64,
}

impl Unmoved {
    fn count(&self, moved: Moved) {
        let counter = match moved {
            Moved::Yes => return,
            Moved::Refused => &self.refused,
            Moved::NotYet => &self.left_for_next_start,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl PaymentProcess {
    /// Starts the process for `engine`, paying through `router`. Without a checkpoint, every
    /// start repeats every money movement in the log (see [`PaymentProcess::start_checkpointed`]).
    ///
    /// Returns once the process has taken over the orders waiting for payment (one read of the
    /// engine's state): those are resumed as orders an earlier run may have sent to any
    /// gateway, and every order placed after it returns is the process's own.
    ///
    /// # Panics
    ///
    /// If another payments process runs on `engine`: two would each take the other's flows
    /// for their own, and one could void an authorization the other recorded.
    #[must_use]
    pub fn start(engine: Engine, router: Arc<Router>) -> PaymentProcess {
        Self::spawn(engine, router, None)
    }

    /// Starts the process with its checkpoint of settled money movements in the file
    /// `checkpoint` (created if missing): a start repeats only the movements committed since
    /// the oldest one not settled when the process last ran. Returns, and panics, as
    /// [`PaymentProcess::start`] does.
    #[must_use]
    pub fn start_checkpointed(
        engine: Engine,
        router: Arc<Router>,
        checkpoint: PathBuf,
    ) -> PaymentProcess {
        Self::spawn(engine, router, Some(checkpoint))
    }

    fn spawn(engine: Engine, router: Arc<Router>, checkpoint: Option<PathBuf>) -> PaymentProcess {
        assert!(
            engine.claim_payments(),
            "a payments process runs on this engine already: stop it before starting another"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let unmoved = Arc::new(Unmoved::default());
        let counting = unmoved.clone();
        let (taken_over, took_over) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("orderly-payments".into())
            .spawn(move || {
                // Given back however the process ends (a panic included), so that another may
                // start on the engine.
                let _place = PaymentsPlace(engine.clone());
                run(&engine, &router, &stopping, checkpoint.as_ref(), counting, &taken_over);
            })
            .expect("the payments thread starts");
        // Also answered if the engine stopped before the take-over (or the thread panicked).
        let _ = took_over.recv();
        PaymentProcess { stop, thread: Some(thread), unmoved }
    }

    /// Money the log says moved and the gateways did not move, since the process started.
    #[must_use]
    pub fn money_not_moved(&self) -> MoneyNotMoved {
        MoneyNotMoved {
            refused: self.unmoved.refused.load(Ordering::Relaxed),
            left_for_next_start: self.unmoved.left_for_next_start.load(Ordering::Relaxed),
        }
    }

    /// Stops reading events, lets the money movements in progress finish (for a few seconds at
    /// most), drops the authorization flows still running (the next start resumes their
    /// orders), and waits.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // A panic in the process is a bug already printed; the engine is unaffected.
            let _ = thread.join();
        }
    }
}

impl Drop for PaymentProcess {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The engine's one place for a payments process, held by the process's thread.
struct PaymentsPlace(Engine);

impl Drop for PaymentsPlace {
    fn drop(&mut self) {
        self.0.release_payments();
    }
}

/// What moving a payment's money needs to know of it.
#[derive(Clone, Debug)]
struct Known {
    gateway: GatewayId,
    /// The authorization's reference at the gateway, if the log recorded it.
    reference: Option<GatewayReference>,
    order: OrderId,
    amount: Money,
}

fn run(
    engine: &Engine,
    router: &Arc<Router>,
    stop: &AtomicBool,
    checkpoint: Option<&PathBuf>,
    unmoved: Arc<Unmoved>,
    taken_over: &std::sync::mpsc::SyncSender<()>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("orderly-payments-io")
        .build()
        .expect("the payments runtime starts");
    let mut flows = Flows {
        engine: engine.clone(),
        router: router.clone(),
        runtime,
        permits: Arc::new(Semaphore::new(MAX_FLOWS_IN_FLIGHT)),
        waiting: Waiting::new(),
        movements: HashMap::new(),
        ledger: Arc::new(Mutex::new(Ledger::default())),
        unmoved,
        settled_before: 0,
        unknown_gateways: HashSet::new(),
        to_look_up: Vec::new(),
        to_start: Vec::new(),
        declined: Declined::default(),
        taken_over_at: 0,
    };
    let log = engine.log();
    if let Some(path) = checkpoint {
        let (position, ignored) = settled::load(path, &log);
        if let Some(why) = ignored {
            tracing::warn!(path = %path.display(), %why, "payments checkpoint ignored: every money movement is repeated");
            // Replaced at once, not with the next settled movement: a crash before that would
            // leave it for the next start, which might then take it for this log's.
            if let Err(e) = settled::store(path, &log, 0) {
                tracing::warn!(path = %path.display(), error = %e, "payments checkpoint not reset");
            }
        }
        flows.settled_before = position;
        flows.ledger = Arc::new(Mutex::new(Ledger::resuming_at(position)));
    }
    let mut stored = (flows.settled_before, Instant::now());
    let mut checkpoint_failing = false;
    let mut last_read = None;
    // The orders waiting for payment are taken over from the engine's state at `resume_at`
    // instead of rereading the log's whole history, and resumed once the log is durable up to
    // there; before it, the log is read only from the checkpoint on, to repeat the movements
    // not known settled.
    let read = Instant::now();
    let took_over = waiting_for_payment(engine, stop);
    let _ = taken_over.send(());
    let Some((waiting, resume_at)) = took_over else { return };
    tracing::info!(
        waiting = waiting.len(),
        at = resume_at.0,
        ms = read.elapsed().as_millis(),
        "payments process took over the orders waiting for payment"
    );
    flows.waiting = waiting;
    flows.taken_over_at = resume_at.0;
    let from = flows.settled_before.min(resume_at.0);
    let mut events = engine.subscribe(crate::Position(from));
    let mut resumed = false;
    while !stop.load(Ordering::SeqCst) {
        let pending = !flows.to_look_up.is_empty() || !flows.to_start.is_empty();
        let wait = if pending { Duration::ZERO } else { POLL };
        let next = events.next_timeout(wait);
        // Every record before this one was read (on `None`, every record the log holds).
        let read_before = match &next {
            Some(Ok(event)) => event.position.0,
            _ => last_read.map_or(from, |last| last + 1),
        };
        if read_before >= resume_at.0 && !resumed {
            resumed = true;
            flows.resume();
        }
        match next {
            Some(Ok(event)) => {
                last_read = Some(event.position.0);
                flows.on_event(event);
                if flows.to_look_up.len() >= LOOK_UP_BATCH {
                    flows.look_up(stop);
                }
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the payments process cannot read the log and stops");
                break;
            }
            None => {
                flows.start();
                flows.look_up(stop);
                if let Some(last) = last_read {
                    flows.ledger().caught_up(last);
                }
            }
        }
        if let Some(path) = checkpoint
            && stored.1.elapsed() >= CHECKPOINT_EVERY
        {
            stored = (
                store_if_moved(
                    path,
                    &log,
                    flows.ledger().settled_before(),
                    stored.0,
                    &mut checkpoint_failing,
                ),
                Instant::now(),
            );
        }
    }
    // Stopped with nothing more waiting: every event of the last record read was read, so the
    // checkpoint may pass that record. (A stop that came right after an event, before an idle
    // poll marked it, left the checkpoint on that record, and the next start repeated its money
    // movement: harmless with its key, but a needless gateway call.)
    if let Some(last) = last_read
        && events.next_timeout(Duration::ZERO).is_none()
    {
        flows.ledger().caught_up(last);
    }
    flows.look_up(stop);
    // Flows read but not started are not started now: their orders are still waiting for
    // payment in the engine's state, where the next start takes them over.
    let Flows { runtime, ledger, movements, .. } = flows;
    // Money movements in progress finish (bounded) and count as settled in the checkpoint;
    // one cut short is repeated, idempotently, by the next start.
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    runtime.block_on(async {
        for movement in movements.into_values() {
            let _ = tokio::time::timeout_at(deadline, movement.task).await;
        }
    });
    runtime.shutdown_timeout(STOP_WAIT);
    if let Some(path) = checkpoint {
        let settled = ledger.lock().unwrap_or_else(PoisonError::into_inner).settled_before();
        store_if_moved(path, &log, settled, stored.0, &mut checkpoint_failing);
    }
}

/// Writes `settled_before` if it is past `stored`; returns where the file stands. A failed
/// write is tried again later (without it, a start only repeats more), and logged when the
/// writes start failing and when they succeed again, not every second of a full disk.
fn store_if_moved(
    path: &Path,
    log: &LogReader,
    settled_before: u64,
    stored: u64,
    failing: &mut bool,
) -> u64 {
    if settled_before <= stored {
        return stored;
    }
    let written = settled::store(path, log, settled_before);
    match (&written, *failing) {
        (Err(e), false) => {
            tracing::warn!(path = %path.display(), error = %e, "payments checkpoint not written; tried again every second")
        }
        (Ok(()), true) => {
            tracing::info!(path = %path.display(), "payments checkpoint written again")
        }
        _ => {}
    }
    *failing = written.is_err();
    if *failing { stored } else { settled_before }
}

/// The orders placed and not yet confirmed or cancelled, as flows to resume, with the position
/// the engine's state is at; `None` if the engine stopped or is shutting down (then no command
/// could be sent).
fn waiting_for_payment(engine: &Engine, stop: &AtomicBool) -> Option<(Waiting, crate::Position)> {
    let read = ask(engine, stop, |world| {
        let mut waiting = Waiting::new();
        for (tenant, state, _) in world.tenants_and_keys() {
            for (order, placed) in state.orders() {
                if placed.status() == Some(OrderStatus::Placed)
                    && let Some(amount) = placed.total()
                {
                    let declined = state
                        .payment(&payment_id_for(order))
                        .is_some_and(|p| p.status() == Some(PaymentStatus::Declined));
                    let began =
                        if declined { Began::DeclinedBeforeRestart } else { Began::Resumed };
                    waiting.push(Flow {
                        tenant: tenant.clone(),
                        order: order.clone(),
                        amount,
                        began,
                    });
                }
            }
        }
        waiting
    });
    read.inspect_err(|e| {
        if !stop.load(Ordering::SeqCst) {
            tracing::error!(error = %e, "the payments process cannot start");
        }
    })
    .ok()
}

/// Orders waiting for payment when the process started: the flows it resumes.
type Waiting = Vec<Flow>;

/// The payment flow of one order, to start.
struct Flow {
    tenant: TenantId,
    order: OrderId,
    /// What the order asks.
    amount: Money,
    began: Began,
}

/// Where an order's payment flow begins, which says what gateways may have seen its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Began {
    /// Its `OrderPlaced` was read in this run: only this flow calls the gateways for it.
    Placed,
    /// It was waiting for payment when the process started. A flow of an earlier run may have
    /// reached any gateway (its answer lost in a crash or a stop): if this one declines it,
    /// its cancel gives the order's key up at every gateway.
    Resumed,
    /// It was waiting with its payment already declined (a stop came between the decline and
    /// the cancel): only the cancel is left to send.
    DeclinedBeforeRestart,
}

/// How long one read of the engine's state waits for its answer before it is asked again (or,
/// once the process stops, given up).
const READ_WAIT: Duration = Duration::from_secs(1);

/// Reads the engine's state with `read`, asking again while the engine is too busy to answer
/// in time, until the process stops.
fn ask<R: Send + 'static>(
    engine: &Engine,
    stop: &AtomicBool,
    read: impl Fn(&World) -> R + Clone + Send + 'static,
) -> Result<(R, crate::Position), EngineError> {
    loop {
        match engine.read(read.clone(), READ_WAIT) {
            Err(EngineError::Overloaded) if !stop.load(Ordering::SeqCst) => {}
            answer => return answer,
        }
    }
}

/// A money movement on its way to its gateway.
struct Moving {
    task: tokio::task::JoinHandle<()>,
    /// Set once the movement, and every one of its payment's before it, settled: read when
    /// the task is done (a task that panicked leaves it unset).
    settled: Arc<AtomicBool>,
}

/// The process's memory and the runtime its gateway calls run on.
struct Flows {
    engine: Engine,
    router: Arc<Router>,
    runtime: tokio::runtime::Runtime,
    permits: Arc<Semaphore>,
    /// Orders that were waiting for payment when the process started, until it resumes them.
    waiting: Waiting,
    /// The last money movement started per payment; the next one waits for it.
    movements: HashMap<(TenantId, PaymentId), Moving>,
    /// Which movements are settled at the gateways.
    ledger: Arc<Mutex<Ledger>>,
    /// Movements the gateways did not make, counted.
    unmoved: Arc<Unmoved>,
    /// Movements committed before this position were settled when the process last ran.
    settled_before: u64,
    /// Gateways named by authorizations in the log but not configured, each reported once.
    unknown_gateways: HashSet<GatewayId>,
    /// The position the engine's state was at when the process took over the orders waiting
    /// for payment: it starts a flow for each order placed from there on.
    taken_over_at: u64,
    /// Movements read and not yet started, waiting for their payments to be looked up in the
    /// engine's state together (the process keeps no copy of it).
    to_look_up: Vec<Movement>,
    /// Flows that start with the next batch (see [`START_BATCH`]).
    to_start: Vec<Flow>,
    /// Orders this run's flows declined, until their cancels are read.
    declined: Declined,
}

/// The orders this run's flows declined, each with the gateways that may still hold an
/// authorization for it (those that timed out): its committed cancel gives up only there. An
/// order not in it (its flow ran before a restart, or had not ended) is given up at every
/// gateway, since nothing says which ones it reached. Without this, a gateway outage, in which
/// every order is declined, would send a cancel to every gateway, the down ones included, for
/// every order.
#[derive(Clone, Default)]
struct Declined(Arc<Mutex<MayHold>>);

/// Per order, the gateways that may hold an authorization for it.
type MayHold = HashMap<(TenantId, OrderId), Vec<GatewayId>>;

impl Declined {
    fn note(&self, tenant: &TenantId, order: &OrderId, holding: Vec<GatewayId>) {
        self.lock().insert((tenant.clone(), order.clone()), holding);
    }

    fn take(&self, tenant: &TenantId, order: &OrderId) -> Option<Vec<GatewayId>> {
        self.lock().remove(&(tenant.clone(), order.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MayHold> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A capture, void or refund committed in the log, to be made at the gateway; or a cancelled
/// order's authorization to give up.
struct Movement {
    position: u64,
    tenant: TenantId,
    payment: PaymentId,
    what: What,
}

/// Which movement, and how much (a void gives up the whole authorization).
enum What {
    Capture(u64),
    Void,
    Refund(u64),
    /// The order was cancelled; if no authorization was recorded, whatever its key reserved
    /// at any gateway is given up.
    GiveUp(OrderId),
}

/// What the engine's state says a movement is about.
enum Found {
    /// The payment, for a capture, void or refund.
    Payment(Known),
    /// A cancelled order with no authorization recorded, and its total.
    Unrecorded(Money),
    /// A cancelled order whose authorization was recorded: the cancel voided it, a movement
    /// of its own.
    Recorded,
}

/// Movements looked up in one read of the engine's state, at most.
const LOOK_UP_BATCH: usize = 1024;

impl Flows {
    fn on_event(&mut self, committed: CommittedEvent) {
        let CommittedEvent { position, tenant, event, .. } = committed;
        self.ledger().read(position.0);
        match event {
            // Before `taken_over_at`, the orders still waiting are those taken over, with
            // whatever paid or cancelled them until then already applied.
            Event::Order { order, event: OrderEvent::OrderPlaced { total, currency, .. } }
                if position.0 >= self.taken_over_at =>
            {
                let amount = Money::new(total, currency);
                self.queue_flow(Flow { tenant, order, amount, began: Began::Placed });
            }
            Event::Order { order, event: OrderEvent::OrderCancelled { .. } }
                if position.0 >= self.settled_before =>
            {
                self.ledger().started(position.0);
                let payment = payment_id_for(&order);
                let what = What::GiveUp(order);
                self.to_look_up.push(Movement { position: position.0, tenant, payment, what });
            }
            // Money movements are issued for history too, from the checkpoint on: the process
            // cannot know whether the gateway call after a commit was made before it last
            // stopped, and the keys (which include the event's position) make a repeated call
            // return its first outcome.
            Event::Payment { .. } if position.0 < self.settled_before => {}
            Event::Payment { payment, event } => {
                let what = match event {
                    PaymentEvent::PaymentCaptured { amount } => What::Capture(amount),
                    PaymentEvent::PaymentVoided => What::Void,
                    PaymentEvent::PaymentRefunded { amount } => What::Refund(amount),
                    _ => return,
                };
                // Counted from here, so that the checkpoint never passes a movement still to
                // be looked up or made.
                self.ledger().started(position.0);
                self.to_look_up.push(Movement { position: position.0, tenant, payment, what });
            }
            _ => {}
        }
    }

    /// Starts `movement` at the gateway that holds the payment's money (or, to give up an
    /// unrecorded authorization, at every gateway), after the payment's movements before it.
    /// Its ledger entry was started when it was read.
    fn make(&mut self, movement: Movement, found: Found) {
        let Movement { position, tenant, payment, what } = movement;
        let (what, minor, known) = match (what, found) {
            (What::GiveUp(order), Found::Unrecorded(amount)) => {
                let gateways = match self.declined.take(&tenant, &order) {
                    Some(holding) => {
                        holding.iter().filter_map(|id| self.router.gateway(id)).collect()
                    }
                    None => self.router.gateways_taking(amount.currency),
                };
                if gateways.is_empty() {
                    self.ledger().settled(position);
                    return;
                }
                let request = authorize_request(&tenant, order, amount);
                let timeout = self.router.config().call_timeout;
                let call = Box::pin(give_up(gateways, request, timeout));
                self.spawn_after(position, tenant, payment, call);
                return;
            }
            (_, Found::Recorded) => {
                self.ledger().settled(position);
                return;
            }
            (What::Capture(amount), Found::Payment(known)) => ("capture", amount, known),
            (What::Void, Found::Payment(known)) => ("void", known.amount.minor, known),
            (What::Refund(amount), Found::Payment(known)) => ("refund", amount, known),
            (What::GiveUp(_), Found::Payment(_)) | (_, Found::Unrecorded(_)) => {
                unreachable!("a cancel is looked up as an order, a movement as a payment")
            }
        };
        let Some(gateway) = self.router.gateway(&known.gateway) else {
            // Nothing can move this money until the gateway is configured: the checkpoint
            // stays before the movement, so a later start makes it. A log from elsewhere (a
            // bench day) names gateways of its own for every payment, so each gateway is
            // reported once, not each payment.
            let mut ledger = self.ledger();
            ledger.unmade(position);
            ledger.settled(position);
            drop(ledger);
            if self.unknown_gateways.insert(known.gateway.clone()) {
                tracing::warn!(%tenant, order = %known.order, gateway = %known.gateway, what, "unknown gateway: its captures, voids and refunds wait for a start where it is configured (reported once per gateway)");
            }
            return;
        };
        let key = format!("{tenant}/{payment}/{what}/{position}");
        let timeout = self.router.config().call_timeout;
        let call = Box::pin({
            let tenant = tenant.clone();
            async move { move_money(&*gateway, &tenant, &known, what, minor, key, timeout).await }
        });
        self.spawn_after(position, tenant, payment, call);
    }

    /// Runs `call`, the movement committed at `position`, once the payment's movements before
    /// it are settled: one payment's movements reach the gateway in log order (a refund must
    /// not come before the capture it gives back). If one of them did not settle (its retries
    /// ran out), `call` is not made either: the gateway would refuse a refund of money it
    /// never captured, and keep that answer under the refund's key. Both then hold the
    /// checkpoint back, and the next start makes them again, in order. Settles the movement in
    /// the ledger if `call` says so.
    fn spawn_after(
        &mut self,
        position: u64,
        tenant: TenantId,
        payment: PaymentId,
        call: BoxFuture<'static, Moved>,
    ) {
        let permit = self
            .runtime
            .block_on(self.permits.clone().acquire_owned())
            .expect("the semaphore stays open");
        let previous = self.movements.remove(&(tenant.clone(), payment.clone()));
        let (ledger, unmoved) = (self.ledger.clone(), self.unmoved.clone());
        let settled = Arc::new(AtomicBool::new(false));
        let task = self.runtime.spawn({
            let settled = settled.clone();
            async move {
                let after_settled = match previous {
                    Some(previous) => {
                        let _ = previous.task.await;
                        previous.settled.load(Ordering::Acquire)
                    }
                    None => true,
                };
                let moved = if after_settled { call.await } else { Moved::NotYet };
                unmoved.count(moved);
                if moved.settled() {
                    ledger.lock().unwrap_or_else(PoisonError::into_inner).settled(position);
                    settled.store(true, Ordering::Release);
                }
                drop(permit);
            }
        });
        self.movements.insert((tenant, payment), Moving { task, settled });
        if self.movements.len() > MOVEMENTS_KEPT {
            // A payment whose last movement did not settle is remembered: its later movements
            // must not be made before the next start makes that one.
            self.movements
                .retain(|_, m| !m.task.is_finished() || !m.settled.load(Ordering::Acquire));
        }
    }

    /// Makes the movements read, in their order, with what the engine's state holds of their
    /// payments (gateway, order, amount): one read for the batch, not one per movement. If the
    /// engine cannot answer (it stopped, or is held up as the process stops), they hold the
    /// checkpoint back for the next start.
    fn look_up(&mut self, stop: &AtomicBool) {
        if self.to_look_up.is_empty() {
            return;
        }
        let movements = std::mem::take(&mut self.to_look_up);
        let subjects: Arc<[(TenantId, PaymentId, Option<OrderId>)]> = movements
            .iter()
            .map(|m| {
                let cancelled = match &m.what {
                    What::GiveUp(order) => Some(order.clone()),
                    _ => None,
                };
                (m.tenant.clone(), m.payment.clone(), cancelled)
            })
            .collect();
        let read = ask(&self.engine, stop, move |world| {
            let found = |(tenant, payment, cancelled): &(TenantId, PaymentId, Option<OrderId>)| {
                let state = world.tenant(tenant)?;
                let started = state.payment(payment);
                if let Some(order) = cancelled {
                    let placed = state.order(order)?;
                    // Confirmed by a payment (the process's or another), or authorized under
                    // the process's id (a declined payment authorized nothing: zero).
                    let recorded = placed.payment().is_some()
                        || started.and_then(|p| p.authorized()).is_some_and(|m| m.minor > 0);
                    return if recorded {
                        Some(Found::Recorded)
                    } else {
                        placed.total().map(Found::Unrecorded)
                    };
                }
                let started = started?;
                Some(Found::Payment(Known {
                    gateway: started.gateway()?.clone(),
                    reference: started.reference().cloned(),
                    order: started.order()?.clone(),
                    amount: started.authorized()?,
                }))
            };
            subjects.iter().map(found).collect::<Vec<_>>()
        });
        let found = match read {
            Ok((found, _)) => found,
            Err(_) => movements.iter().map(|_| None).collect(),
        };
        for (movement, found) in movements.into_iter().zip(found) {
            match found {
                Some(found) => self.make(movement, found),
                None => {
                    let mut ledger = self.ledger();
                    ledger.unmade(movement.position);
                    ledger.settled(movement.position);
                }
            }
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Restarts the flows of orders that were waiting for payment when the process started.
    fn resume(&mut self) {
        for flow in std::mem::take(&mut self.waiting) {
            self.queue_flow(flow);
        }
        self.start();
    }

    /// Queues `flow`, and starts the queued flows once [`START_BATCH`] wait.
    fn queue_flow(&mut self, flow: Flow) {
        self.to_start.push(flow);
        if self.to_start.len() >= START_BATCH {
            self.start();
        }
    }

    /// Starts the flows of the orders in `to_start`, once there is room for all of them among
    /// the flows in flight. They are spawned from one task inside the payments runtime: a
    /// spawn from this thread wakes the runtime's thread each time (an eventfd write and a
    /// context switch per order: a fifth of this process's time in a profile under load).
    fn start(&mut self) {
        if self.to_start.is_empty() {
            return;
        }
        let flows = std::mem::take(&mut self.to_start);
        let count = u32::try_from(flows.len()).expect("at most START_BATCH");
        let mut permits = self
            .runtime
            .block_on(self.permits.clone().acquire_many_owned(count))
            .expect("the semaphore stays open");
        let (engine, router) = (self.engine.clone(), self.router.clone());
        let declined = self.declined.clone();
        self.runtime.spawn(async move {
            for flow in flows {
                let permit = permits.split(1).expect("a permit per flow");
                let (engine, router, declined) = (engine.clone(), router.clone(), declined.clone());
                tokio::spawn(async move {
                    authorize_order(&engine, &router, &declined, flow).await;
                    drop(permit);
                });
            }
        });
    }
}

/// Authorizes one order and records the outcome; on a decline or when every gateway is down,
/// records the decline and cancels the order, which releases its stock (and, as a committed
/// cancel, gives up the order's authorization key where it may be held: see [`Declined`]).
async fn authorize_order(engine: &Engine, router: &Router, declined: &Declined, flow: Flow) {
    let Flow { tenant, order, amount, began } = flow;
    if began == Began::DeclinedBeforeRestart {
        return cancel_declined(engine, declined, &tenant, &order).await;
    }
    let payment = payment_id_for(&order);
    let request = authorize_request(&tenant, order.clone(), amount);
    let Routed { answer, timed_out } = router.authorize(&request, Instant::now()).await;
    let (gateway, reason) = match answer {
        Ok((gateway, Authorization::Approved { reference })) => {
            let reference = GatewayReference::new(&reference)
                .inspect_err(|e| {
                    tracing::warn!(%tenant, %order, %gateway, error = %e, "the gateway's reference is not recorded: its capture, void or refund asks for it again under the authorization's key");
                })
                .ok();
            let command = PaymentCommand::Authorize {
                order: order.clone(),
                amount,
                gateway: gateway.clone(),
                reference,
            };
            let payment = Command::Payment { payment, command };
            let recorded = execute(engine, &tenant, "pm:auth", &order, payment).await;
            // Gateways that may hold another authorization under this key: those that timed
            // out before this one answered. When the engine definitively refused the
            // authorization (the order expired or was cancelled meanwhile), this one too: the
            // committed cancel gives it up as well, this is sooner. When the engine could not
            // answer, none: the next start resumes the order, maybe at one of them.
            let holding: Vec<GatewayId> = match recorded {
                Recorded::Yes => timed_out,
                Recorded::Refused => timed_out.into_iter().chain([gateway]).collect(),
                Recorded::Unknown => return,
            };
            let holding: Vec<_> = holding.iter().filter_map(|id| router.gateway(id)).collect();
            if holding.is_empty() {
                return;
            }
            let ids: Vec<String> = holding.iter().map(|g| g.id().to_string()).collect();
            if !give_up(holding, request, router.config().call_timeout).await.settled() {
                // Not a committed movement: nothing repeats it.
                tracing::error!(%tenant, %order, gateways = ?ids, "an authorization that may be held was not cancelled; it lapses at the gateway");
            }
            return;
        }
        Ok((gateway, Authorization::Declined)) => (gateway, DeclineReason::Refused),
        Err(_) => (fallback_gateway(router), DeclineReason::GatewayUnavailable),
    };
    // Noted before the cancel is sent, so that the event loop finds it when it reads the
    // cancel. A resumed flow notes nothing: an earlier run's flow may have reached any gateway,
    // so its cancel gives the key up at all of them.
    if began == Began::Placed {
        declined.note(&tenant, &order, timed_out);
    }
    let command = PaymentCommand::Decline { order: order.clone(), amount, gateway, reason };
    execute(engine, &tenant, "pm:decline", &order, Command::Payment { payment, command }).await;
    cancel_declined(engine, declined, &tenant, &order).await;
}

/// Cancels an order whose payment was declined, which releases its stock.
async fn cancel_declined(engine: &Engine, declined: &Declined, tenant: &TenantId, order: &OrderId) {
    let cancel = OrderCommand::Cancel { reason: CancelReason::PaymentDeclined };
    let cancel = Command::Order { order: order.clone(), command: cancel };
    if execute(engine, tenant, "pm:cancel", order, cancel).await != Recorded::Yes {
        // The order ended otherwise (its cancel, read or to be read, is not this one), or the
        // engine stopped: the note would only be in the way.
        declined.take(tenant, order);
    }
}

/// The request authorizing `order` at any gateway: one key per order, so a retry anywhere
/// returns the first outcome there, and a cancel names what to give up.
fn authorize_request(tenant: &TenantId, order: OrderId, amount: Money) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: authorization_key(tenant, &order),
        tenant: tenant.clone(),
        order,
        amount,
    }
}

/// The key of an order's authorization at the gateways. Ids cannot contain `/`, so no two
/// (tenant, order) pairs share a key.
fn authorization_key(tenant: &TenantId, order: &OrderId) -> String {
    format!("{tenant}/{order}/auth")
}

/// The gateway named on a decline when no gateway answered: the first configured one. (Asking
/// the router for candidates would use up a half-open breaker's trial.)
fn fallback_gateway(router: &Router) -> GatewayId {
    router.gateway_ids().next().unwrap_or_else(|| GatewayId::new("none").expect("a valid id"))
}

/// What became of a command the process sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recorded {
    /// Recorded, now or by an earlier attempt with the same key.
    Yes,
    /// Refused for good: a rejection, or the key already used with another command.
    Refused,
    /// The engine could not answer (shutting down, stopped); the next start tries again.
    Unknown,
}

/// Longest pause between two tries of a command the engine was too busy to take.
const OVERLOADED_BACKOFF_CAP: Duration = Duration::from_secs(1);

/// Sends a command with a key derived from the order. An overloaded engine is asked again,
/// with growing pauses, until it answers: the engine is alive and the flow must not be
/// dropped (an authorization made at the gateway would otherwise stay held with nothing to
/// record or void it). Only a stopping engine ends the flow; the next start resumes it.
async fn execute(
    engine: &Engine,
    tenant: &TenantId,
    step: &str,
    order: &OrderId,
    command: Command,
) -> Recorded {
    let envelope = Envelope::new(tenant.clone(), command)
        .with_key(idempotency_key(step, order))
        .from_payments_process();
    let mut pause = Duration::from_millis(10);
    loop {
        match engine.execute(envelope.clone()).await {
            Ok(_) => return Recorded::Yes,
            Err(ExecuteError::Rejected(_)) => return Recorded::Refused,
            // Only a caller's command recorded under this key before the engine reserved the
            // process's keys can have taken it.
            Err(
                taken @ (ExecuteError::IdempotencyKeyReused { .. }
                | ExecuteError::IdempotencyKeyReserved { .. }),
            ) => {
                tracing::error!(%tenant, %order, step, error = %taken, "payment step refused: another command holds its key");
                return Recorded::Refused;
            }
            Err(ExecuteError::Engine(EngineError::Overloaded)) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(OVERLOADED_BACKOFF_CAP);
            }
            Err(ExecuteError::Engine(e)) => {
                tracing::warn!(%tenant, %order, step, error = %e, "payment step not recorded");
                return Recorded::Unknown;
            }
        }
    }
}

fn idempotency_key(step: &str, order: &OrderId) -> IdempotencyKey {
    debug_assert!(step.starts_with(RESERVED_KEY_PREFIX), "the process's keys are reserved");
    let text = format!("{step}:{order}");
    IdempotencyKey::new(&text).unwrap_or_else(|_| {
        let hash = blake3::hash(text.as_bytes()).to_hex();
        IdempotencyKey::new(&format!("{step}:{}", &hash[..40])).expect("short and valid")
    })
}

/// How often a money movement is tried before it is left for the next start.
const MONEY_ATTEMPTS: u32 = 8;

/// Captures, voids or refunds at `gateway`, the one that authorized the payment, quoting the
/// authorization's reference as the log recorded it. A log written before references were
/// recorded (schema version 1) does not hold it: it is then asked again with the
/// authorization's own key, which returns the first outcome. Each call is given up after
/// `timeout` (the router's, so that a gateway that hangs holds no movement up for ever).
async fn move_money(
    gateway: &dyn PaymentGateway,
    tenant: &TenantId,
    known: &Known,
    what: &str,
    minor: u64,
    key: String,
    timeout: Duration,
) -> Moved {
    let request = authorize_request(tenant, known.order.clone(), known.amount);
    until_answered(&request, what, || {
        Box::pin(async {
            let reference = match &known.reference {
                Some(reference) => reference.to_string(),
                None => match within(timeout, gateway.authorize(&request)).await? {
                    Authorization::Approved { reference } => reference,
                    Authorization::Declined => {
                        return Err(GatewayError::Rejected("no authorization".into()));
                    }
                },
            };
            let money = MoneyRequest {
                idempotency_key: key.clone(),
                reference,
                amount: Money::new(minor, known.amount.currency),
            };
            within(
                timeout,
                match what {
                    "capture" => gateway.capture(&money),
                    "void" => gateway.void(&money),
                    _ => gateway.refund(&money),
                },
            )
            .await
        })
    })
    .await
}

/// Gives up what `request`'s key authorized at each of `gateways`, all at once (one that is
/// down or hangs does not hold the others up); settled once each is, refused if one was.
async fn give_up(
    gateways: Vec<Arc<dyn PaymentGateway>>,
    request: AuthorizeRequest,
    timeout: Duration,
) -> Moved {
    let request = Arc::new(request);
    let mut cancels = tokio::task::JoinSet::new();
    for gateway in gateways {
        let request = request.clone();
        cancels.spawn(async move {
            let cancel = || within(timeout, gateway.cancel_authorization(&request));
            until_answered(&request, "cancel authorization", cancel).await
        });
    }
    let mut moved = Moved::Yes;
    while let Some(done) = cancels.join_next().await {
        match done.unwrap_or(Moved::NotYet) {
            Moved::Yes => {}
            Moved::Refused if moved == Moved::Yes => moved = Moved::Refused,
            Moved::Refused => {}
            Moved::NotYet => moved = Moved::NotYet,
        }
    }
    moved
}

/// `call`, or [`GatewayError::Timeout`] once `timeout` has passed.
fn within<'a, T: Send + 'a>(
    timeout: Duration,
    call: BoxFuture<'a, Result<T, GatewayError>>,
) -> BoxFuture<'a, Result<T, GatewayError>> {
    Box::pin(async move {
        tokio::time::timeout(timeout, call).await.unwrap_or(Err(GatewayError::Timeout))
    })
}

/// How a money movement ended at the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moved {
    /// Made.
    Yes,
    /// Refused for good: repeating it could not change that.
    Refused,
    /// The retries ran out: a committed movement then holds the checkpoint back, so that the
    /// next start makes it.
    NotYet,
}

impl Moved {
    /// Whether nothing is left to try.
    fn settled(self) -> bool {
        self != Moved::NotYet
    }
}

/// Makes the gateway call `call` for `request`'s order, retrying with backoff until the
/// gateway answers.
async fn until_answered<'a>(
    request: &AuthorizeRequest,
    what: &str,
    call: impl Fn() -> BoxFuture<'a, Result<(), GatewayError>>,
) -> Moved {
    let (tenant, order) = (&request.tenant, &request.order);
    for attempt in 0..MONEY_ATTEMPTS {
        match call().await {
            Ok(()) => return Moved::Yes,
            Err(GatewayError::Rejected(why)) => {
                tracing::error!(%tenant, %order, what, %why, "gateway refused a money movement");
                return Moved::Refused;
            }
            Err(e) => {
                tracing::warn!(%tenant, %order, what, error = %e, attempt, "gateway call failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
        }
    }
    tracing::error!(%tenant, %order, what, attempts = MONEY_ATTEMPTS, "money not moved");
    Moved::NotYet
}
