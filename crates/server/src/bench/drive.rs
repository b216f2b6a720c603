//! Runs the day's steps through the engine as fast as it takes them: the virtual times order
//! the work and set the engine's clock, and are never slept on.
//!
//! Many commands are in flight at once so that group commit fills its batches (as
//! `benches/engine.rs` does with concurrent callers), within two bounds: a count, and
//! [`MAX_ADMISSION_LAG_MS`] of virtual time ahead of the oldest step not yet answered. The
//! engine's clock stands at that oldest step, so every command is admitted no later than its
//! virtual time and no earlier than the model allows (see the constant). An order's later
//! steps wait for its placement's answer (other orders' steps go on meanwhile); those of a
//! placement refused (a flash-sale product sold out) are not sent.
//!
//! Commands go in through a [`Pipe`], tagged with their step's number, and their answers come
//! back a durable batch at a time: a day's millions of commands cost no future, task, callback
//! or wake-up each, and no copy of their events (the judge needs only whether a retry was
//! replayed).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use orderly_core::Position;
use orderly_core::audit::OrderCounts;
use orderly_core::codec::{self, Decoded};
use orderly_core::domain::{
    Command, Event, IdempotencyKey, Money, OrderCommand, OrderEvent, OrderLine, OrderRejection,
    OrderStatus, PaymentCommand, PaymentEvent, Rejection, TenantId, Timestamp,
};
use orderly_core::engine::{Clock, Engine, ExecuteError, ManualClock, Pipe, PipedAck};
use orderly_core::workload::{
    Fate, MAX_ADMISSION_LAG_MS, OrderTag, Step, StepKind, Workload, is_flash_sale,
};

use super::threads::{self, ThreadCpu};

/// What the run saw, answer by answer.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Latency of every answer, in microseconds.
    pub latency: Histogram<u64>,
    /// Per second of the run: answers, placements answered, and their latency.
    pub seconds: Vec<Second>,
    pub commands: u64,
    pub placed: u64,
    pub sold_out: u64,
    /// Follow-ups not sent because their order's placement was refused.
    pub skipped: u64,
    pub retries_replayed: u64,
    /// Retries answered with something else than the first outcome: must be none.
    pub retries_not_replayed: u64,
    /// Every retry answered as a replay, with where the answer says the first send's events
    /// are: checked against the log after the day ([`misplaced_replays`]).
    pub replays: Vec<Replay>,
    /// Refusals other than a sold-out placement, by code: must be none.
    pub unexpected: BTreeMap<String, u64>,
    /// Order statuses the model expects at the end, per tenant, from the placements accepted.
    pub expected: BTreeMap<String, OrderCounts>,
    /// Money the acknowledged commands moved, per currency: what the log must add up to.
    pub money: BTreeMap<String, MoneyMoved>,
    /// Wall time from the first step sent to the last answer.
    pub elapsed: Duration,
    /// CPU of the process's threads by role over that same time (Linux only).
    pub cpu: Option<ThreadCpu>,
    /// The driver ran as a batch thread ([`orderly_core::engine::yield_to_engine`]).
    pub driver_yields: bool,
}

/// Money moved in one currency by the acknowledged commands (first sends; a replay moves
/// nothing): authorizations, declines and refunds as sent, captures as the totals of the
/// placements the model ships (a shipment captures its order's authorization whole), and voids
/// as the totals of those the shopper cancels once paid (a cancel voids the authorization).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MoneyMoved {
    pub authorized: u64,
    pub declined: u64,
    pub captured: u64,
    pub voided: u64,
    pub refunded: u64,
}

/// Whether `rejection` refuses a placement because flash-sale products, and only they, sold
/// out: the model stocks every other product for twice its day's demand.
fn sold_out_in_flash_sale(rejection: &Rejection) -> bool {
    match rejection {
        Rejection::Order { rejection: OrderRejection::InsufficientStock { shortages }, .. } => {
            shortages.iter().all(|short| is_flash_sale(&short.sku))
        }
        _ => false,
    }
}

/// The amount a step's command names or, for a placement, its total.
fn amount_of(command: &Command) -> Option<Money> {
    match command {
        Command::Order { command: OrderCommand::Place { currency, lines, .. }, .. } => {
            Some(Money::new(lines.iter().map(OrderLine::amount).sum(), *currency))
        }
        Command::Order { command: OrderCommand::Refund { amount }, .. }
        | Command::Payment {
            command:
                PaymentCommand::Authorize { amount, .. } | PaymentCommand::Decline { amount, .. },
            ..
        } => Some(*amount),
        _ => None,
    }
}

/// One second of the run.
#[derive(Debug)]
pub(crate) struct Second {
    pub commands: u64,
    pub orders: u64,
    pub latency: Histogram<u64>,
}

impl Second {
    fn new() -> Second {
        Second { commands: 0, orders: 0, latency: histogram() }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// Where an order's placement is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    NotSent,
    InFlight,
    Accepted,
    Refused,
}

/// A step taken from the workload and not yet answered or skipped.
struct Pending {
    /// Its virtual time.
    at: u64,
    /// Once sent, what judging its answer needs. Kept here, not in the answer's callback, so
    /// that the engine's threads carry and copy only the step's sequence number.
    sent: Option<Sent>,
}

/// A step on its way, with what is needed to judge its answer.
struct Sent {
    at: Instant,
    kind: StepKind,
    order: Option<OrderTag>,
    tenant: TenantId,
    /// A retry's key, to find its first send in the log.
    retry_key: Option<IdempotencyKey>,
    /// The amount its command moves ([`amount_of`]).
    amount: Option<Money>,
}

/// A retry answered as a replay of its first send.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Where the answer says the first send's decision is.
    position: u64,
    tenant: TenantId,
    key: IdempotencyKey,
    kind: StepKind,
}

/// How many of `replays` point at anything but their first send: a decision record of the same
/// tenant under the same key, holding the placement (for a placement retry) or the
/// authorization (for an authorization retry). Read back from the log, not taken from the
/// engine's memory.
pub(crate) fn misplaced_replays(engine: &Engine, replays: &[Replay]) -> anyhow::Result<u64> {
    let log = engine.log();
    let mut misplaced = 0;
    for replay in replays {
        let record = log
            .read_from(Position(replay.position))
            .next()
            .with_context(|| format!("no record at position {}", replay.position))??;
        let decoded = codec::decode_stored(&record)?;
        let home = match decoded {
            Decoded::Decision { tenant, key: Some((key, _)), events } => {
                tenant == replay.tenant
                    && key == replay.key
                    && events.iter().any(|event| match (replay.kind, event) {
                        (StepKind::RetryPlace, Event::Order { event, .. }) => {
                            matches!(event, OrderEvent::OrderPlaced { .. })
                        }
                        (StepKind::RetryAuthorize, Event::Payment { event, .. }) => {
                            matches!(event, PaymentEvent::PaymentAuthorized { .. })
                        }
                        _ => false,
                    })
            }
            _ => false,
        };
        if !home {
            misplaced += 1;
        }
    }
    Ok(misplaced)
}

/// Runs every step of `workload`, at most `max_in_flight` at once, and waits until the engine
/// has expired the holds still open when the day's last step is answered.
pub(crate) fn run(
    engine: &Engine,
    clock: &ManualClock,
    workload: Workload,
    orders: u64,
    max_in_flight: usize,
    hold_ttl_ms: u64,
    progress: &ProgressBar,
) -> anyhow::Result<Tally> {
    let cpu_at_start = threads::Snapshot::take();
    let driver_yields = orderly_core::engine::yield_to_engine();
    let mut driver = Driver {
        tally: Tally {
            latency: histogram(),
            seconds: Vec::new(),
            commands: 0,
            placed: 0,
            sold_out: 0,
            skipped: 0,
            retries_replayed: 0,
            retries_not_replayed: 0,
            replays: Vec::new(),
            money: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            expected: BTreeMap::new(),
            elapsed: Duration::ZERO,
            cpu: None,
            driver_yields,
        },
        placements: vec![Placement::NotSent; usize::try_from(orders)?],
        held: HashMap::new(),
        pending: VecDeque::new(),
        first_pending: 0,
        started: Instant::now(),
        progress,
    };
    let mut in_flight = InFlight { count: 0, pipe: engine.pipe() };
    let mut last = 0u64;
    for step in workload {
        while in_flight.count >= max_in_flight
            || driver.oldest_pending().is_some_and(|o| step.at.0 > o + MAX_ADMISSION_LAG_MS)
        {
            for answered in in_flight.next()? {
                for (sequence, step) in driver.judge(answered)? {
                    driver.send(clock, sequence, step, &mut in_flight);
                }
            }
        }
        last = last.max(step.at.0);
        let sequence = driver.first_pending + driver.pending.len() as u64;
        driver.pending.push_back(Some(Pending { at: step.at.0, sent: None }));
        let placement = step.order.map(|o| usize::try_from(o.number)).transpose()?;
        match (step.kind, placement.map(|n| (n, driver.placements[n]))) {
            (StepKind::Place, Some((n, _))) => driver.placements[n] = Placement::InFlight,
            (_, Some((n, Placement::InFlight))) => {
                driver.held.entry(n).or_default().push_back((sequence, step));
                continue;
            }
            (_, Some((_, Placement::Refused))) => {
                driver.skip(sequence);
                continue;
            }
            (_, Some((n, Placement::NotSent))) => {
                bail!("order {n} has a step before its placement")
            }
            _ => {}
        }
        driver.send(clock, sequence, step, &mut in_flight);
    }
    while in_flight.count > 0 {
        for answered in in_flight.next()? {
            for (sequence, step) in driver.judge(answered)? {
                driver.send(clock, sequence, step, &mut in_flight);
            }
        }
    }
    driver.tally.elapsed = driver.started.elapsed();
    driver.tally.cpu = threads::Snapshot::take().since(&cpu_at_start);
    assert!(driver.held.is_empty(), "every held step was sent or skipped");
    // Holds still open run out once the clock passes them; the engine expires them on its
    // own tick. Wait until its log stops growing.
    clock.set(Timestamp(last + hold_ttl_ms + 60_000));
    let mut head = engine.head();
    let mut quiet = 0;
    while quiet < 5 {
        std::thread::sleep(Duration::from_millis(100));
        let now_head = engine.head();
        quiet = if now_head == head { quiet + 1 } else { 0 };
        head = now_head;
    }
    Ok(driver.tally)
}

/// How many steps are sent and not yet answered, and the pipe their answers come back on.
struct InFlight {
    count: usize,
    pipe: Pipe,
}

impl InFlight {
    /// The next answers, waiting for them. Every command is answered (the engine answers even
    /// those it drops), so a long silence means the engine is stuck: the run fails, not hangs.
    fn next(&mut self) -> anyhow::Result<Vec<PipedAck>> {
        const PATIENCE: Duration = Duration::from_secs(60);
        let answered = self.pipe.recv(PATIENCE);
        if answered.is_empty() {
            bail!("no answer from the engine for {PATIENCE:?}");
        }
        self.count -= answered.len();
        Ok(answered)
    }
}

struct Driver<'a> {
    tally: Tally,
    placements: Vec<Placement>,
    /// Steps waiting for their order's placement to be answered, by order number.
    held: HashMap<usize, VecDeque<(u64, Step)>>,
    /// The steps taken from the workload, from `first_pending` on; `None` once answered or
    /// skipped.
    pending: VecDeque<Option<Pending>>,
    first_pending: u64,
    started: Instant,
    progress: &'a ProgressBar,
}

impl Driver<'_> {
    /// Sends `step`, with the clock at the oldest step not yet answered.
    fn send(&mut self, clock: &ManualClock, sequence: u64, step: Step, in_flight: &mut InFlight) {
        let oldest = self.oldest_pending().unwrap_or(step.at.0);
        if clock.now().0 != oldest {
            clock.set(Timestamp(oldest));
        }
        let retry = matches!(step.kind, StepKind::RetryPlace | StepKind::RetryAuthorize);
        let sent = Sent {
            at: Instant::now(),
            kind: step.kind,
            order: step.order,
            tenant: step.envelope.tenant.clone(),
            retry_key: step.envelope.idempotency_key.clone().filter(|_| retry),
            amount: amount_of(&step.envelope.command),
        };
        let index = usize::try_from(sequence - self.first_pending).expect("a pending step");
        self.pending[index].as_mut().expect("sent once").sent = Some(sent);
        in_flight.count += 1;
        in_flight.pipe.send(step.envelope, sequence);
    }

    /// The virtual time of the oldest step taken from the workload and not yet answered.
    fn oldest_pending(&mut self) -> Option<u64> {
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
            self.first_pending += 1;
        }
        self.pending.front().map(|step| step.as_ref().expect("popped if none").at)
    }

    /// Adds what an acknowledged first send moved to [`Tally::money`].
    fn count_money(&mut self, sent: &Sent) {
        let Some(amount) = sent.amount.filter(|amount| amount.minor > 0) else { return };
        let shipped = sent.order.is_some_and(|o| o.fate.final_status() == OrderStatus::Shipped);
        let cancelled_once_paid = sent.order.is_some_and(|o| o.fate == Fate::CancelledByShopper);
        let sum: fn(&mut MoneyMoved) -> &mut u64 = match sent.kind {
            StepKind::Place if shipped => |moved| &mut moved.captured,
            StepKind::Place if cancelled_once_paid => |moved| &mut moved.voided,
            StepKind::Authorize => |moved| &mut moved.authorized,
            StepKind::Decline | StepKind::DeclineUnavailable => |moved| &mut moved.declined,
            StepKind::Refund => |moved| &mut moved.refunded,
            // A currency appears only once it moved money: the log's books list no other.
            _ => return,
        };
        let money = &mut self.tally.money;
        if !money.contains_key(amount.currency.as_str()) {
            money.insert(amount.currency.as_str().to_owned(), MoneyMoved::default());
        }
        let moved = money.get_mut(amount.currency.as_str()).expect("inserted just above");
        let total = sum(moved);
        *total = total.saturating_add(amount.minor);
    }

    fn skip(&mut self, sequence: u64) {
        let index = usize::try_from(sequence - self.first_pending).expect("a pending step");
        self.pending[index] = None;
        self.tally.skipped += 1;
    }

    /// Counts one answer and checks it against what the model expects; returns the steps it
    /// releases (those held for a placement now accepted).
    fn judge(
        &mut self,
        PipedAck { tag: sequence, answer, at: answered_at }: PipedAck,
    ) -> anyhow::Result<Vec<(u64, Step)>> {
        let index = usize::try_from(sequence - self.first_pending)?;
        let sent = self.pending[index].take().and_then(|step| step.sent);
        let sent = sent.with_context(|| format!("step {sequence} answered but not sent"))?;
        let latency = answered_at.saturating_duration_since(sent.at);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.tally.latency.saturating_record(micros);
        let second =
            usize::try_from(answered_at.saturating_duration_since(self.started).as_secs())?;
        while self.tally.seconds.len() <= second {
            self.tally.seconds.push(Second::new());
        }
        let this_second = &mut self.tally.seconds[second];
        this_second.commands += 1;
        this_second.latency.saturating_record(micros);
        self.tally.commands += 1;
        let placement = sent.order.map(|o| usize::try_from(o.number)).transpose()?;
        if sent.kind == StepKind::Place {
            this_second.orders += 1;
            self.progress.inc(1);
        }
        match answer {
            Ok(ack) => {
                match (&sent.retry_key, ack.replayed) {
                    (Some(key), true) => {
                        self.tally.retries_replayed += 1;
                        self.tally.replays.push(Replay {
                            position: ack.first.0,
                            tenant: sent.tenant.clone(),
                            key: key.clone(),
                            kind: sent.kind,
                        });
                    }
                    (Some(_), false) => self.tally.retries_not_replayed += 1,
                    (None, true) => self.unexpected("replayed_first_send"),
                    (None, false) => self.count_money(&sent),
                }
                if let (StepKind::Place, Some(n), Some(order)) = (sent.kind, placement, sent.order)
                {
                    self.placements[n] = Placement::Accepted;
                    self.tally.placed += 1;
                    // Looked up by reference: a new string only for a tenant's first order.
                    let expected = &mut self.tally.expected;
                    if !expected.contains_key(sent.tenant.as_str()) {
                        expected.insert(sent.tenant.to_string(), OrderCounts::default());
                    }
                    let counts =
                        expected.get_mut(sent.tenant.as_str()).expect("inserted just above");
                    match order.fate.final_status() {
                        OrderStatus::Shipped => counts.shipped += 1,
                        OrderStatus::Cancelled => counts.cancelled += 1,
                        other => bail!("the model ends no order as {other:?}"),
                    }
                }
            }
            Err(ExecuteError::Rejected(rejection)) => {
                if let (StepKind::Place, Some(n)) = (sent.kind, placement) {
                    self.placements[n] = Placement::Refused;
                }
                if sent.kind == StepKind::Place && sold_out_in_flash_sale(&rejection) {
                    self.tally.sold_out += 1;
                } else {
                    self.unexpected(rejection.code());
                }
            }
            Err(error) => bail!("the engine failed a {:?}: {error}", sent.kind),
        }
        let Some(n) = placement.filter(|_| sent.kind == StepKind::Place) else {
            return Ok(Vec::new());
        };
        let held: Vec<(u64, Step)> = self.held.remove(&n).unwrap_or_default().into();
        if self.placements[n] == Placement::Accepted {
            return Ok(held);
        }
        for (sequence, _) in held {
            self.skip(sequence);
        }
        Ok(Vec::new())
    }

    fn unexpected(&mut self, code: &str) {
        *self.tally.unexpected.entry(code.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use orderly_core::domain::{
        Command, Currency, CustomerId, Envelope, OrderCommand, OrderId, OrderLine, Quantity, Sku,
    };
    use orderly_core::engine::Config;

    use super::*;

    #[test]
    fn only_flash_sale_products_may_sell_out() {
        let short = |skus: &[&str]| Rejection::Order {
            order: OrderId::new("o-1").expect("an id"),
            rejection: OrderRejection::InsufficientStock {
                shortages: skus
                    .iter()
                    .map(|sku| orderly_core::domain::Shortage {
                        sku: Sku::new(sku).expect("an id"),
                        requested: 1,
                        available: 0,
                    })
                    .collect(),
            },
        };
        assert!(sold_out_in_flash_sale(&short(&["flash-0", "flash-3"])));
        assert!(!sold_out_in_flash_sale(&short(&["flash-0", "sku-0007"])), "a regular one");
        assert!(!sold_out_in_flash_sale(&short(&["sku-0007"])));
    }

    #[test]
    fn a_replay_must_point_at_its_first_send() {
        let dir = tempfile::tempdir().expect("a folder");
        let engine = Engine::open(dir.path(), Config::default()).expect("an engine");
        let tenant = TenantId::new("t").expect("an id");
        let sku = Sku::new("mug").expect("an id");
        let quantity = Quantity::new(5).expect("a quantity");
        let receive = Command::ReceiveStock { sku: sku.clone(), quantity };
        engine.execute_blocking(Envelope::new(tenant.clone(), receive)).expect("stocked");
        let key = IdempotencyKey::new("place-1").expect("a key");
        let place = Command::Order {
            order: OrderId::new("o-1").expect("an id"),
            command: OrderCommand::Place {
                customer: CustomerId::new("c").expect("an id"),
                currency: Currency::new("EUR").expect("a currency"),
                lines: vec![OrderLine { sku, quantity, unit_price: 100 }],
            },
        };
        let placed = engine
            .execute_blocking(Envelope::new(tenant.clone(), place).with_key(key.clone()))
            .expect("placed");
        let at = placed.events[0].position.0;
        let replay =
            |position, kind| Replay { position, tenant: tenant.clone(), key: key.clone(), kind };
        let count = |replays: &[Replay]| misplaced_replays(&engine, replays).expect("read back");
        assert_eq!(count(&[replay(at, StepKind::RetryPlace)]), 0);
        assert_eq!(count(&[replay(at - 1, StepKind::RetryPlace)]), 1, "the stock's record");
        assert_eq!(count(&[replay(at, StepKind::RetryAuthorize)]), 1, "no authorization there");
        let other_key = Replay {
            key: IdempotencyKey::new("place-2").expect("a key"),
            ..replay(at, StepKind::RetryPlace)
        };
        assert_eq!(count(&[other_key]), 1, "another key's");
    }
}
