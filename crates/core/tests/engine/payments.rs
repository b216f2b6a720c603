//! The payments process against a real engine: an approved payment confirms its order; a
//! declined one, or one no gateway could take, cancels the order and releases its stock; a
//! failing gateway's breaker opens and payments move to the healthy one; a restart resumes
//! orders still waiting for payment without authorizing anything twice; an approval whose
//! answer was lost (a timeout, a crash) does not keep holding the customer's money.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderly_core::Position;
use orderly_core::domain::{
    CancelReason, Command, Currency, DeclineReason, Envelope, Event, GatewayId, GatewayReference,
    IdempotencyKey, Money, OrderCommand, OrderEvent, OrderId, PaymentCommand, PaymentEvent,
};
use orderly_core::engine::{Engine, ExecuteError, ManualClock};
use orderly_core::payments::{
    Authorization, AuthorizeRequest, BoxFuture, BreakerState, Fee, GatewayError, MoneyRequest,
    PaymentGateway, Route, Router, RouterConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use orderly_core::process::{PaymentProcess, payment_id_for};

use super::{START, available, config, place, receive};

fn gateway(id: &str, decline_basis_points: u32) -> Arc<SimulatedGateway> {
    Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
        decline_basis_points,
        ..SimulatedGatewayConfig::new(GatewayId::new(id).unwrap())
    }))
}

fn router(gateways: &[Arc<SimulatedGateway>]) -> Arc<Router> {
    let routes = gateways
        .iter()
        .map(|g| Route { gateway: g.clone(), fees: vec![], currencies: None })
        .collect();
    Arc::new(Router::new(routes, RouterConfig::default()))
}

/// Every order event of the log, as (order id, event).
fn order_events(engine: &Engine) -> Vec<(String, OrderEvent)> {
    let mut events = engine.subscribe(Position(0));
    let mut found = Vec::new();
    while let Some(event) = events.next_timeout(Duration::from_millis(20)) {
        if let Event::Order { order, event } = event.unwrap().event {
            found.push((order.to_string(), event));
        }
    }
    found
}

fn settled(engine: &Engine, orders: usize) -> Vec<(String, OrderEvent)> {
    for _ in 0..300 {
        let events = order_events(engine);
        let done = events
            .iter()
            .filter(|(_, e)| {
                matches!(e, OrderEvent::OrderConfirmed { .. } | OrderEvent::OrderCancelled { .. })
            })
            .count();
        if done >= orders {
            return events;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the payments process did not settle {orders} orders");
}

/// An engine on `dir/log` with 10 units of acme's sku-1, and where its payments process keeps
/// its checkpoint.
fn stocked_with_checkpoint(dir: &std::path::Path) -> (Engine, std::path::PathBuf) {
    let engine = Engine::open(&dir.join("log"), config(&ManualClock::at(START))).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    (engine, dir.join("payments.checkpoint"))
}

/// `command` on acme's order `order`.
fn on_order(order: &str, command: OrderCommand) -> Envelope {
    let order = OrderId::new(order).unwrap();
    Envelope::new(super::tenant("acme"), Command::Order { order, command })
}

/// Ships order `order` of acme (which commits its capture to the log).
fn ship(order: &str) -> Envelope {
    on_order(order, OrderCommand::Ship)
}

/// Waits up to 10 s for `check` to hold (the assertions after it say what must).
fn wait_until(check: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The position a payments checkpoint file names (its digest's, `POSITION:HASH`).
fn stored_position(checkpoint: &str) -> Option<&str> {
    checkpoint.lines().last()?.split(':').next()
}

/// Waits for `gateway` to have captured `total`, and checks it has, no more.
fn captured(gateway: &SimulatedGateway, total: u64) {
    wait_until(|| gateway.captured_total() >= total);
    assert_eq!(gateway.captured_total(), total);
}

#[test]
fn an_approved_payment_confirms_and_a_declined_one_cancels_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();

    let approving = gateway("approves", 0);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&approving)));
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 3)])).unwrap();
    let events = settled(&engine, 1);
    assert!(
        events.iter().any(|(o, e)| o == "o-1" && matches!(e, OrderEvent::OrderConfirmed { .. }))
    );
    process.stop();
    assert_eq!(approving.approvals(), 1);

    let declining = gateway("declines", 10_000);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&declining)));
    engine.execute_blocking(place("acme", "o-2", &[("sku-1", 4)])).unwrap();
    let events = settled(&engine, 2);
    assert!(events.iter().any(|(o, e)| o == "o-2"
        && *e == OrderEvent::OrderCancelled { reason: CancelReason::PaymentDeclined }));
    process.stop();
    assert_eq!(declining.declines(), 1);
    assert_eq!(available(&engine, "acme", "sku-1"), 7, "o-2's four units are back, o-1's held");
}

#[test]
fn a_caller_cannot_take_a_key_the_payments_process_will_need() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    let taken = IdempotencyKey::new("pm:auth:o-1").unwrap();
    let refused = |answer: Result<(), ExecuteError>| match answer {
        Err(ExecuteError::IdempotencyKeyReserved { key }) => assert_eq!(key, taken),
        other => panic!("a caller's `pm:` key is refused, got {other:?}"),
    };
    let stock = receive("acme", "sku-1", 10).with_key(taken.clone());
    refused(engine.execute_blocking(stock.clone()).map(drop));
    let (tx, rx) = std::sync::mpsc::channel();
    engine.send_ack(stock, move |answer| tx.send(answer.map(drop)).unwrap());
    refused(rx.recv().unwrap());
    assert_eq!(engine.head(), Position(0), "nothing was admitted");

    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let pay = gateway("pay", 0);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    let events = settled(&engine, 1);
    process.stop();
    assert!(
        events.iter().any(|(o, e)| o == "o-1" && matches!(e, OrderEvent::OrderConfirmed { .. })),
        "the process records its authorization under its own key: {events:?}"
    );
    assert_eq!(pay.voids(), 0);
}

#[test]
fn traffic_moves_off_a_failing_gateway_and_nothing_is_charged_twice_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 100)).unwrap();
    let down = gateway("down", 0);
    down.set_down(true);
    let healthy = gateway("healthy", 0);
    let routes = router(&[down.clone(), healthy.clone()]);
    let process = PaymentProcess::start(engine.clone(), routes.clone());
    for n in 0..20 {
        engine.execute_blocking(place("acme", &format!("o-{n}"), &[("sku-1", 1)])).unwrap();
    }
    settled(&engine, 20);
    let down_id = GatewayId::new("down").unwrap();
    let now = std::time::Instant::now();
    assert_eq!(routes.breaker_state(&down_id, now), Some(BreakerState::Open));
    // While the breaker is open, payments go straight to the healthy gateway.
    let calls_when_opened = down.calls();
    for n in 20..30 {
        engine.execute_blocking(place("acme", &format!("o-{n}"), &[("sku-1", 1)])).unwrap();
    }
    let events = settled(&engine, 30);
    process.stop();
    assert_eq!(down.calls(), calls_when_opened, "no call reached the failing gateway");
    let confirmed = events.iter().filter(|(_, e)| matches!(e, OrderEvent::OrderConfirmed { .. }));
    assert_eq!(confirmed.count(), 30, "every order was paid through the healthy gateway");
    assert_eq!(healthy.approvals(), 30);

    // A restart finds nothing waiting and authorizes nothing again.
    engine.execute_blocking(place("acme", "o-late", &[("sku-1", 1)])).unwrap();
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&healthy)));
    let events = settled(&engine, 31);
    process.stop();
    let payments_authorized = {
        let mut events = engine.subscribe(Position(0));
        let mut n = 0;
        while let Some(e) = events.next_timeout(Duration::from_millis(20)) {
            if let Event::Payment { event: PaymentEvent::PaymentAuthorized { .. }, .. } =
                e.unwrap().event
            {
                n += 1;
            }
        }
        n
    };
    assert_eq!(payments_authorized, 31, "one authorization per order, none repeated");
    assert_eq!(healthy.approvals(), 31);
    assert!(
        events.iter().any(|(o, e)| o == "o-late" && matches!(e, OrderEvent::OrderConfirmed { .. }))
    );
}

#[test]
fn a_capture_committed_while_the_process_was_down_is_made_when_it_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let pay = gateway("pay", 0);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    process.stop();

    // Shipped (and captured in the log) while no payments process runs.
    engine.execute_blocking(ship("o-1")).unwrap();
    assert_eq!(pay.captured_total(), 0);

    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    wait_until(|| pay.captured_total() > 0);
    process.stop();
    assert_eq!(pay.captured_total(), 2_000, "the order's total was captured once");
    // A third start repeats the capture call, which returns its first outcome.
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    std::thread::sleep(Duration::from_millis(200));
    process.stop();
    assert_eq!(pay.captured_total(), 2_000, "never captured twice");
}

#[test]
fn with_a_checkpoint_a_start_repeats_no_settled_movement_and_makes_the_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, checkpoint) = stocked_with_checkpoint(dir.path());
    let pay = gateway("pay", 0);
    let start = || {
        PaymentProcess::start_checkpointed(
            engine.clone(),
            router(std::slice::from_ref(&pay)),
            checkpoint.clone(),
        )
    };

    let process = start();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    engine.execute_blocking(ship("o-1")).unwrap();
    captured(&pay, 2_000);
    process.stop();
    assert!(checkpoint.exists(), "the stop wrote the checkpoint");
    let calls = pay.calls();

    // A start with nothing new makes no gateway call: the capture is behind the checkpoint.
    let process = start();
    std::thread::sleep(Duration::from_millis(300));
    process.stop();
    assert_eq!(pay.calls(), calls, "no settled movement repeated");

    // What was committed while no process ran is still made.
    let process = start();
    engine.execute_blocking(place("acme", "o-2", &[("sku-1", 3)])).unwrap();
    settled(&engine, 2);
    process.stop();
    engine.execute_blocking(ship("o-2")).unwrap();
    let process = start();
    captured(&pay, 5_000);
    process.stop();
}

/// A checkpoint names the record before its position: one copied from another data folder
/// (whose history has as many records) is not taken for this log's, and hides no movement.
#[test]
fn a_checkpoint_from_another_data_folder_hides_no_movement() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pay = gateway("pay", 0);
    let paid_and_shipped = |dir: &std::path::Path, order: &str| {
        let (engine, checkpoint) = stocked_with_checkpoint(dir);
        let routes = router(std::slice::from_ref(&pay));
        let process = PaymentProcess::start_checkpointed(engine.clone(), routes, checkpoint);
        engine.execute_blocking(place("acme", order, &[("sku-1", 2)])).unwrap();
        settled(&engine, 1);
        process.stop();
        // Shipped while no process runs: the capture is committed, not yet made.
        engine.execute_blocking(ship(order)).unwrap();
        engine
    };
    let theirs_engine = paid_and_shipped(theirs.path(), "o-1");
    let process = PaymentProcess::start_checkpointed(
        theirs_engine.clone(),
        router(std::slice::from_ref(&pay)),
        theirs.path().join("payments.checkpoint"),
    );
    captured(&pay, 2_000);
    process.stop();
    let engine = paid_and_shipped(ours.path(), "o-2");
    assert_eq!(engine.head(), theirs_engine.head(), "as many records in both");

    let checkpoint = ours.path().join("payments.checkpoint");
    std::fs::copy(theirs.path().join("payments.checkpoint"), &checkpoint).unwrap();
    let routes = router(std::slice::from_ref(&pay));
    let process = PaymentProcess::start_checkpointed(engine.clone(), routes, checkpoint);
    captured(&pay, 4_000);
    process.stop();
}

/// A start reads the log only from its checkpoint on: what it must know of older payments (the
/// gateway that holds their money) comes from the engine's state.
#[test]
fn a_refund_of_a_payment_settled_before_the_checkpoint_reaches_the_gateway_that_captured_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, checkpoint) = stocked_with_checkpoint(dir.path());
    let (first, second) = (gateway("first", 0), gateway("second", 0));
    let start = |gateways: [Arc<SimulatedGateway>; 2]| {
        PaymentProcess::start_checkpointed(engine.clone(), router(&gateways), checkpoint.clone())
    };
    let process = start([first.clone(), second.clone()]);
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    engine.execute_blocking(ship("o-1")).unwrap();
    wait_until(|| first.captured_total() + second.captured_total() > 0);
    process.stop();
    let (paid, other) =
        if first.captured_total() > 0 { (&first, &second) } else { (&second, &first) };
    assert_eq!(paid.captured_total(), 2_000);
    let stored = std::fs::read_to_string(&checkpoint).unwrap();
    let head = engine.head().0.to_string();
    assert_eq!(stored_position(&stored), Some(head.as_str()), "the checkpoint is past the capture");

    // Configured the other way round: the refund goes where the money is, not to the first.
    let process = start([second.clone(), first.clone()]);
    let refund = OrderCommand::Refund { amount: Money::new(500, Currency::new("EUR").unwrap()) };
    engine.execute_blocking(on_order("o-1", refund)).unwrap();
    wait_until(|| paid.refunded_total() > 0);
    process.stop();
    assert_eq!(paid.refunded_total(), 500, "refunded where it was captured");
    assert_eq!(other.refunded_total() + other.captured_total(), 0);
}

/// More older payments than one look-up takes: every capture is made.
#[test]
fn captures_of_more_older_payments_than_one_look_up_takes_are_all_made() {
    const ORDERS: usize = 1_100;
    let dir = tempfile::tempdir().unwrap();
    let (engine, checkpoint) = stocked_with_checkpoint(dir.path());
    engine.execute_blocking(receive("acme", "sku-1", ORDERS as u64)).unwrap();
    let pay = gateway("pay", 0);
    let start = || {
        let gateways = std::slice::from_ref(&pay);
        PaymentProcess::start_checkpointed(engine.clone(), router(gateways), checkpoint.clone())
    };
    let process = start();
    for n in 0..ORDERS {
        engine.execute_blocking(place("acme", &format!("o-{n}"), &[("sku-1", 1)])).unwrap();
    }
    settled(&engine, ORDERS);
    process.stop();
    for n in 0..ORDERS {
        engine.execute_blocking(ship(&format!("o-{n}"))).unwrap();
    }

    let process = start();
    let all = ORDERS as u64 * 1_000;
    wait_until(|| pay.captured_total() >= all);
    process.stop();
    assert_eq!(pay.captured_total(), all, "every order captured");
    let stored = std::fs::read_to_string(&checkpoint).unwrap();
    let head = engine.head().0.to_string();
    assert_eq!(stored_position(&stored), Some(head.as_str()), "every capture settled");
}

/// A capture through a gateway that is not configured any more is not made and not forgotten:
/// the checkpoint stays before it, captures through the configured gateway go on, and the
/// first start that has the gateway again makes it, once.
#[test]
fn a_capture_through_a_gateway_not_configured_waits_for_a_start_that_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, checkpoint) = stocked_with_checkpoint(dir.path());
    let (old, new) = (gateway("old", 0), gateway("new", 0));
    let start = |gateways: &[Arc<SimulatedGateway>]| {
        PaymentProcess::start_checkpointed(engine.clone(), router(gateways), checkpoint.clone())
    };

    // o-1 is authorized through "old", then shipped (its capture committed) with no process.
    let process = start(std::slice::from_ref(&old));
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    process.stop();
    engine.execute_blocking(ship("o-1")).unwrap();

    // Only "new" is configured: o-2 is paid and captured through it; o-1's capture waits.
    let process = start(std::slice::from_ref(&new));
    engine.execute_blocking(place("acme", "o-2", &[("sku-1", 3)])).unwrap();
    settled(&engine, 2);
    engine.execute_blocking(ship("o-2")).unwrap();
    captured(&new, 3_000);
    process.stop();
    assert_eq!(old.captured_total(), 0);

    // "old" is back: o-1's capture is made, and nothing is captured twice.
    let process = start(&[old.clone(), new.clone()]);
    captured(&old, 2_000);
    process.stop();
    assert_eq!(new.captured_total(), 3_000, "o-2 is not captured again");
}

/// A simulated gateway behind a faulty network.
#[derive(Debug)]
struct Faulty {
    inner: Arc<SimulatedGateway>,
    /// Authorizations are made, but their answers never arrive.
    answers_lost: bool,
    /// The first capture times out (after which captures behave), to make a capture retry.
    first_capture_times_out: AtomicBool,
    /// Captures fail as unavailable while set.
    captures_down: AtomicBool,
    /// Captures tried, made or not.
    captures_tried: std::sync::atomic::AtomicU32,
    /// The gateway has pruned its idempotency keys (as some providers do after a day): an
    /// authorization asked again under a key it had approved reserves the amount anew.
    forgot_keys: AtomicBool,
    /// Authorizations asked while `forgot_keys` was set.
    asked_after_forgetting: std::sync::atomic::AtomicU32,
}

impl Faulty {
    fn new(inner: &Arc<SimulatedGateway>) -> Faulty {
        Faulty {
            inner: inner.clone(),
            answers_lost: false,
            first_capture_times_out: AtomicBool::new(false),
            captures_down: AtomicBool::new(false),
            captures_tried: Default::default(),
            forgot_keys: AtomicBool::new(false),
            asked_after_forgetting: Default::default(),
        }
    }
}

impl PaymentGateway for Faulty {
    fn id(&self) -> &GatewayId {
        self.inner.id()
    }
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<Authorization, GatewayError>> {
        if self.answers_lost {
            return Box::pin(async {
                let _made = self.inner.authorize(request).await;
                std::future::pending().await
            });
        }
        if self.forgot_keys.load(Ordering::SeqCst) {
            self.asked_after_forgetting.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async move {
                let again = AuthorizeRequest {
                    idempotency_key: format!("{}:forgotten", request.idempotency_key),
                    ..request.clone()
                };
                self.inner.authorize(&again).await
            });
        }
        self.inner.authorize(request)
    }
    fn capture<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.captures_tried.fetch_add(1, Ordering::SeqCst);
        if self.first_capture_times_out.swap(false, Ordering::SeqCst) {
            return Box::pin(async { Err(GatewayError::Timeout) });
        }
        if self.captures_down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(GatewayError::Unavailable("captures are down".into())) });
        }
        self.inner.capture(request)
    }
    fn void<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.inner.void(request)
    }
    fn refund<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.inner.refund(request)
    }
    fn cancel_authorization<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        self.inner.cancel_authorization(request)
    }
}

/// A router over `gateways` in this order, giving up on a call after `call_timeout`.
fn router_timing_out(
    gateways: Vec<Arc<dyn PaymentGateway>>,
    call_timeout: Duration,
) -> Arc<Router> {
    let routes = gateways
        .into_iter()
        .map(|gateway| Route { gateway, fees: vec![], currencies: None })
        .collect();
    Arc::new(Router::new(routes, RouterConfig { call_timeout, ..RouterConfig::default() }))
}

/// An order whose authorization was approved while its answer was lost, its payments process
/// stopped (as by a crash) while still waiting for the answer: (engine, clock, the gateway
/// holding the authorization, the payments checkpoint).
fn approved_but_unrecorded(
    dir: &std::path::Path,
) -> (Engine, ManualClock, Arc<SimulatedGateway>, std::path::PathBuf) {
    let clock = ManualClock::at(START);
    let engine = Engine::open(&dir.join("log"), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let checkpoint = dir.join("payments.checkpoint");
    let holder = gateway("holder", 0);
    let lost = Arc::new(Faulty { answers_lost: true, ..Faulty::new(&holder) });
    let routes = router_timing_out(vec![lost], Duration::from_secs(3_600));
    let process = PaymentProcess::start_checkpointed(engine.clone(), routes, checkpoint.clone());
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    wait_until(|| holder.approvals() == 1);
    process.stop();
    assert_eq!(holder.holding(), 1, "the customer's money is held, the log knows nothing of it");
    (engine, clock, holder, checkpoint)
}

#[test]
fn an_authorization_approved_but_unrecorded_is_given_up_once_its_order_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock, holder, checkpoint) = approved_but_unrecorded(dir.path());
    // The hold runs out while no payments process runs.
    clock.advance(super::TTL);
    wait_until(|| available(&engine, "acme", "sku-1") == 10);

    let routes = router(std::slice::from_ref(&holder));
    let process = PaymentProcess::start_checkpointed(engine.clone(), routes, checkpoint);
    wait_until(|| holder.holding() == 0);
    process.stop();
    assert_eq!(holder.holding(), 0, "the approval was given up");
    assert_eq!((holder.voids(), holder.approvals(), holder.captured_total()), (1, 1, 0));
}

#[test]
fn an_approval_whose_answer_timed_out_is_given_up_when_another_gateway_approves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let (slow, fast) = (gateway("slow", 0), gateway("fast", 0));
    let lost = Arc::new(Faulty { answers_lost: true, ..Faulty::new(&slow) });
    let routes = router_timing_out(vec![lost, fast.clone()], Duration::from_millis(200));
    let process = PaymentProcess::start(engine.clone(), routes);
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    let events = settled(&engine, 1);
    wait_until(|| slow.holding() == 0);
    process.stop();
    assert!(
        events.iter().any(|(o, e)| o == "o-1" && matches!(e, OrderEvent::OrderConfirmed { .. }))
    );
    assert_eq!(slow.approvals(), 1, "the slow gateway had approved");
    assert_eq!((fast.holding(), slow.holding()), (1, 0), "only the recorded approval holds");
}

#[test]
fn in_an_outage_declined_orders_send_no_cancels_to_the_gateways_that_were_down() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let (a, b) = (gateway("a", 0), gateway("b", 0));
    a.set_down(true);
    b.set_down(true);
    let process = PaymentProcess::start(engine.clone(), router(&[a.clone(), b.clone()]));
    for n in 0..3 {
        engine.execute_blocking(place("acme", &format!("o-{n}"), &[("sku-1", 1)])).unwrap();
    }
    let events = settled(&engine, 3);
    std::thread::sleep(Duration::from_millis(300));
    process.stop();
    let declined = OrderEvent::OrderCancelled { reason: CancelReason::PaymentDeclined };
    assert_eq!(events.iter().filter(|(_, e)| *e == declined).count(), 3);
    // One authorization call each, refused at once: nothing to cancel anywhere.
    assert_eq!((a.calls(), b.calls()), (3, 3));
}

#[test]
fn an_order_cancelled_while_its_answer_is_lost_gives_up_the_approval() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let holder = gateway("holder", 0);
    let lost = Arc::new(Faulty { answers_lost: true, ..Faulty::new(&holder) });
    let routes = router_timing_out(vec![lost], Duration::from_secs(3_600));
    let process = PaymentProcess::start(engine.clone(), routes);
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    wait_until(|| holder.approvals() == 1);
    let cancel = OrderCommand::Cancel { reason: CancelReason::Requested };
    engine.execute_blocking(on_order("o-1", cancel)).unwrap();
    wait_until(|| holder.holding() == 0);
    process.stop();
    assert_eq!((holder.holding(), holder.voids()), (0, 1), "the approval was given up");
}

/// A run whose approval at `holder` was lost, then stopped: the order waits for payment, and
/// a start resumes it. The next start routes through `gateways`, in this order.
fn resumed_after_a_lost_approval(
    engine: &Engine,
    holder: &Arc<SimulatedGateway>,
    gateways: Vec<Route>,
) -> PaymentProcess {
    let lost = Arc::new(Faulty { answers_lost: true, ..Faulty::new(holder) });
    let first = PaymentProcess::start(engine.clone(), router_timing_out(vec![lost], HOUR));
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    wait_until(|| holder.approvals() == 1);
    first.stop();
    assert_eq!(holder.holding(), 1, "the customer's money is held, the log knows nothing of it");
    PaymentProcess::start(engine.clone(), Arc::new(Router::new(gateways, RouterConfig::default())))
}

const HOUR: Duration = Duration::from_secs(3_600);

fn route(gateway: &Arc<SimulatedGateway>, fees: Vec<Fee>) -> Route {
    Route { gateway: gateway.clone(), fees, currencies: None }
}

#[test]
fn a_resumed_order_declined_elsewhere_gives_up_the_approval_of_the_run_before() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let (holder, refuses) = (gateway("holder", 0), gateway("refuses", 10_000));
    // The start after the stop tries the gateway that declines first (the holder costs more).
    let eur = Currency::new("EUR").unwrap();
    let cheap = vec![Fee { currency: eur, fixed_minor: 1, basis_points: 0 }];
    let costly = vec![Fee { currency: eur, fixed_minor: 99, basis_points: 0 }];
    let routes = vec![route(&holder, costly), route(&refuses, cheap)];
    let process = resumed_after_a_lost_approval(&engine, &holder, routes);
    let events = settled(&engine, 1);
    wait_until(|| holder.holding() == 0);
    process.stop();
    let declined = OrderEvent::OrderCancelled { reason: CancelReason::PaymentDeclined };
    assert!(events.iter().any(|(o, e)| o == "o-1" && *e == declined), "{events:?}");
    assert_eq!(refuses.declines(), 1);
    assert_eq!((holder.holding(), holder.voids()), (0, 1), "the approval was given up");
    assert_eq!(available(&engine, "acme", "sku-1"), 10);
}

#[test]
fn a_start_cancels_an_order_whose_decline_was_recorded_but_not_its_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    // What a flow had recorded when a stop came between its decline and its cancel.
    let order = OrderId::new("o-1").unwrap();
    let decline = PaymentCommand::Decline {
        order: order.clone(),
        amount: Money::new(2_000, Currency::new("EUR").unwrap()),
        gateway: GatewayId::new("pay").unwrap(),
        reason: DeclineReason::Refused,
    };
    let payment = Command::Payment { payment: payment_id_for(&order), command: decline };
    let key = IdempotencyKey::new("pm:decline:o-1").unwrap();
    let recorded = Envelope::new(super::tenant("acme"), payment).with_key(key);
    engine.execute_blocking(recorded.from_payments_process()).unwrap();
    assert_eq!(available(&engine, "acme", "sku-1"), 8, "the order still holds its stock");

    let pay = gateway("pay", 0);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    let events = settled(&engine, 1);
    wait_until(|| pay.voids() == 1);
    process.stop();
    let declined = OrderEvent::OrderCancelled { reason: CancelReason::PaymentDeclined };
    assert!(events.iter().any(|(o, e)| o == "o-1" && *e == declined), "{events:?}");
    assert_eq!(available(&engine, "acme", "sku-1"), 10, "its stock is released at once");
    assert_eq!(pay.approvals(), 0, "a declined order is not authorized again");
}

#[test]
fn a_refund_waits_for_the_capture_it_gives_back_even_when_the_capture_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let pay = gateway("pay", 0);
    let flaky =
        Arc::new(Faulty { first_capture_times_out: AtomicBool::new(true), ..Faulty::new(&pay) });
    let routes = vec![Route { gateway: flaky, fees: vec![], currencies: None }];
    let process = PaymentProcess::start(
        engine.clone(),
        Arc::new(Router::new(routes, RouterConfig::default())),
    );
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 1)])).unwrap();
    settled(&engine, 1);
    engine.execute_blocking(ship("o-1")).unwrap();
    let refund = OrderCommand::Refund { amount: Money::new(1_000, Currency::new("EUR").unwrap()) };
    engine.execute_blocking(on_order("o-1", refund)).unwrap();
    wait_until(|| pay.refunded_total() > 0);
    process.stop();
    assert_eq!(pay.captured_total(), 1_000);
    assert_eq!(pay.refunded_total(), 1_000, "the refund reached the gateway after the capture");
}

#[test]
fn a_refund_behind_a_capture_whose_retries_ran_out_waits_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, checkpoint) = stocked_with_checkpoint(dir.path());
    let pay = gateway("pay", 0);
    let faulty = Arc::new(Faulty { captures_down: AtomicBool::new(true), ..Faulty::new(&pay) });
    let start = || {
        let routes = vec![Route { gateway: faulty.clone(), fees: vec![], currencies: None }];
        let router = Arc::new(Router::new(routes, RouterConfig::default()));
        PaymentProcess::start_checkpointed(engine.clone(), router, checkpoint.clone())
    };
    let process = start();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 1)])).unwrap();
    settled(&engine, 1);
    engine.execute_blocking(ship("o-1")).unwrap();
    let refund = OrderCommand::Refund { amount: Money::new(1_000, Currency::new("EUR").unwrap()) };
    engine.execute_blocking(on_order("o-1", refund)).unwrap();
    // Eight capture attempts, the last about 6 s in; the stop then waits for the capture to
    // give up.
    for _ in 0..300 {
        if faulty.captures_tried.load(Ordering::SeqCst) >= 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    process.stop();
    assert_eq!(faulty.captures_tried.load(Ordering::SeqCst), 8);
    // A refund sent now would be refused (nothing captured) and that answer kept under its key.
    // The gateway saw the authorization alone: the captures quote its recorded reference.
    assert_eq!((pay.calls(), pay.captured_total(), pay.refunded_total()), (1, 0, 0));

    faulty.captures_down.store(false, Ordering::SeqCst);
    let process = start();
    wait_until(|| pay.refunded_total() > 0);
    process.stop();
    assert_eq!(pay.captured_total(), 1_000, "captured once, by the next start");
    assert_eq!(pay.refunded_total(), 1_000, "the refund after it");
}

/// One payments process per engine: a second would take the first's flows for its own (and
/// could void an authorization the first recorded). Once the first stops, another may start.
#[test]
fn a_second_payments_process_on_one_engine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    let pay = gateway("pay", 0);
    let first = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)))
    }));
    let refused = second.expect_err("a second process does not start");
    let why = refused.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(why.contains("runs on this engine already"), "{why}");
    first.stop();
    let again = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    again.stop();
    assert_eq!(pay.approvals(), 1, "the process started after the first stopped pays");
}

#[test]
fn a_log_reader_does_not_keep_the_engine_s_folder_locked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let reader = engine.log();
    engine.shutdown();
    drop(engine);
    let again = Engine::open(dir.path(), config(&clock)).expect("the folder is free again");
    assert_eq!(reader.head(), again.head());
}

/// The reference the log's first authorization records, if any.
fn first_authorization_reference(engine: &Engine) -> Option<GatewayReference> {
    let mut events = engine.subscribe(Position(0));
    std::iter::from_fn(|| events.next_timeout(Duration::from_millis(20)))
        .find_map(|event| match event.unwrap().event {
            Event::Payment { event: PaymentEvent::PaymentAuthorized { reference, .. }, .. } => {
                Some(reference)
            }
            _ => None,
        })
        .flatten()
}

/// The log records the gateway's reference with the authorization, so a capture days later,
/// after the engine and the process restarted, quotes it: a gateway that has forgotten the
/// authorization's key is not asked for it again, and reserves nothing twice.
#[test]
fn a_capture_quotes_the_recorded_reference_and_asks_no_authorization_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let inner = gateway("pay", 0);
    let forgetful = Arc::new(Faulty::new(&inner));
    let start = |engine: &Engine| {
        let gateways: Vec<Arc<dyn PaymentGateway>> = vec![forgetful.clone()];
        PaymentProcess::start(engine.clone(), router_timing_out(gateways, Duration::from_secs(5)))
    };
    let process = start(&engine);
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    process.stop();
    let recorded = first_authorization_reference(&engine);
    assert!(recorded.is_some(), "the reference is recorded");

    // Days later: the engine restarted (from its snapshot), and the gateway forgot the key.
    engine.shutdown();
    drop(engine);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    forgetful.forgot_keys.store(true, Ordering::SeqCst);
    engine.execute_blocking(ship("o-1")).unwrap();
    let process = start(&engine);
    captured(&inner, 2_000);
    process.stop();
    let asked = forgetful.asked_after_forgetting.load(Ordering::SeqCst);
    assert_eq!(asked, 0, "no authorization asked again");
    assert_eq!(inner.approvals(), 1, "one reservation, captured");
}

/// An authorization recorded without a reference (as logs written before schema version 2
/// hold them) is still captured: its reference is asked again under the authorization's key.
#[test]
fn an_authorization_recorded_without_a_reference_is_captured_by_asking_its_key_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 2)])).unwrap();
    let order = OrderId::new("o-1").unwrap();
    let eur = Currency::new("EUR").unwrap();
    let authorize = PaymentCommand::Authorize {
        order: order.clone(),
        amount: Money::new(2_000, eur),
        gateway: GatewayId::new("pay").unwrap(),
        reference: None,
    };
    let payment = Command::Payment { payment: payment_id_for(&order), command: authorize };
    engine.execute_blocking(Envelope::new(super::tenant("acme"), payment)).unwrap();
    engine.execute_blocking(ship("o-1")).unwrap();
    let pay = gateway("pay", 0);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    captured(&pay, 2_000);
    process.stop();
    assert_eq!(pay.approvals(), 1, "asked once under the key, then captured");
}

/// The simulated gateways name an authorization by their id and its key, which holds the
/// tenant and the order: with ids as long as the domain allows, the reference is still
/// recorded (not left out as too long, which would send the capture back to ask for it).
#[test]
fn the_reference_of_an_order_with_the_longest_ids_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    let (tenant, order) = ("t".repeat(64), "o".repeat(64));
    engine.execute_blocking(receive(&tenant, "sku-1", 10)).unwrap();
    let pay = gateway("a-gateway-with-a-long-name", 0);
    let process = PaymentProcess::start(engine.clone(), router(std::slice::from_ref(&pay)));
    engine.execute_blocking(place(&tenant, &order, &[("sku-1", 2)])).unwrap();
    settled(&engine, 1);
    process.stop();
    let reference = first_authorization_reference(&engine).expect("the reference is recorded");
    assert!(reference.as_str().len() > 128, "{reference}");
}
