//! Random command sequences over a few SKUs, orders and payments, with the clock moving on,
//! keep the domain's invariants after every step: stock matches an independent count of its
//! events and is never oversold, holds and orders stay in step, money moves with the goods (a
//! confirmed order's payment authorized its total, a shipped or delivered order's payment
//! captured it and refunded what the order refunded, a cancelled order's authorization was
//! voided, and no order has two live payments), money is never captured beyond the
//! authorization nor refunded beyond the capture or the total, and deciding never changes the
//! state.

use std::collections::{BTreeMap, BTreeSet};

use orderly_core::domain::{
    CancelReason, Command, Context, Decider, DeclineReason, Event, InventoryEvent, InventoryState,
    Money, OrderCommand, OrderEvent, OrderId, OrderLine, OrderRejection, OrderState, OrderStatus,
    PaymentCommand, PaymentEvent, PaymentId, PaymentState, PaymentStatus, Rejection, Shortage, Sku,
    Tenant, TenantState, Timestamp,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::fixtures::{currency, customer, eur, gateway, line, order_id, payment_id, qty, sku};

// The workload: a small alphabet, so that commands often meet the same aggregates.

const SKUS: &[&str] = &["sku-a", "sku-b", "sku-c"];
const ORDERS: &[&str] = &["o1", "o2", "o3"];
/// Enough payment ids for a few orders to be declined once and paid; each id is used once.
const PAYMENTS: &[&str] = &["p1", "p2", "p3", "p4", "p5"];
/// The longest a command sequence gets.
const MAX_STEPS: usize = 60;
/// The most the clock moves between two commands: a third of the hold time-to-live, so that
/// some orders are paid in time and others expire.
const MAX_TICK_MS: u64 = 5 * 60 * 1000;
const CASES: u32 = 256;

fn one_of(ids: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(ids)
}

/// Mostly euros; dollars now and then to meet the currency checks.
fn any_currency() -> impl Strategy<Value = &'static str> {
    prop_oneof![9 => Just("EUR"), 1 => Just("USD")]
}

/// Amounts in the range of the orders' totals, zero included.
fn any_money() -> impl Strategy<Value = Money> {
    (any_currency(), 0u64..=150).prop_map(|(code, minor)| Money::new(minor, currency(code)))
}

/// A line of up to 6 units at up to 30 minor units each, zero included to meet the price check.
fn any_line_of(sku: &'static str) -> impl Strategy<Value = OrderLine> {
    (1u64..=6, 0u64..=30).prop_map(move |(units, price)| line(sku, units, price))
}

/// Mostly lines of distinct SKUs; now and then anything, to meet the checks of the lines.
fn any_lines() -> impl Strategy<Value = Vec<OrderLine>> {
    prop_oneof![
        9 => prop::sample::subsequence(SKUS, 1..=SKUS.len())
            .prop_flat_map(|skus| skus.into_iter().map(any_line_of).collect::<Vec<_>>()),
        1 => vec(one_of(SKUS).prop_flat_map(any_line_of), 0..=3),
    ]
}

fn any_order_command() -> impl Strategy<Value = OrderCommand> {
    let place = (any_currency(), any_lines()).prop_map(|(code, lines)| OrderCommand::Place {
        customer: customer("c1"),
        currency: currency(code),
        lines,
    });
    let reason = prop_oneof![
        Just(CancelReason::Requested),
        Just(CancelReason::PaymentDeclined),
        Just(CancelReason::HoldExpired),
    ];
    // An authorization confirms its order, so a confirm is seldom accepted; it is here to meet
    // its checks.
    prop_oneof![
        5 => place,
        1 => one_of(PAYMENTS).prop_map(|p| OrderCommand::Confirm { payment: payment_id(p) }),
        3 => Just(OrderCommand::Ship),
        2 => Just(OrderCommand::Deliver),
        2 => reason.prop_map(|reason| OrderCommand::Cancel { reason }),
        3 => any_money().prop_map(|amount| OrderCommand::Refund { amount }),
        1 => Just(OrderCommand::Expire),
    ]
}

/// Authorizations and declines of random amounts (so mostly not the order's total), and now
/// and then a capture, void or refund, which callers may not send.
fn any_payment_command() -> impl Strategy<Value = PaymentCommand> {
    let reason = prop_oneof![Just(DeclineReason::Refused), Just(DeclineReason::GatewayUnavailable)];
    prop_oneof![
        3 => (one_of(ORDERS), any_money()).prop_map(|(o, amount)| PaymentCommand::Authorize { reference: None,
            order: order_id(o),
            amount,
            gateway: gateway("g1"),
        }),
        1 => (one_of(ORDERS), any_money(), reason).prop_map(|(o, amount, reason)| {
            PaymentCommand::Decline {
                order: order_id(o),
                amount,
                gateway: gateway("g2"),
                reason,
            }
        }),
        1 => any_money().prop_map(|amount| PaymentCommand::Capture { amount }),
        1 => Just(PaymentCommand::Void),
        1 => any_money().prop_map(|amount| PaymentCommand::Refund { amount }),
    ]
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (one_of(SKUS), 1u64..=20).prop_map(|(s, units)| Command::ReceiveStock {
            sku: sku(s),
            quantity: qty(units),
        }),
        1 => (one_of(SKUS), -12i64..=12).prop_map(|(s, delta)| Command::AdjustStock {
            sku: sku(s),
            delta,
        }),
        8 => (one_of(ORDERS), any_order_command()).prop_map(|(o, command)| Command::Order {
            order: order_id(o),
            command,
        }),
        6 => (one_of(PAYMENTS), any_payment_command()).prop_map(|(p, command)| {
            Command::Payment {
                payment: payment_id(p),
                command,
            }
        }),
    ]
}

/// One order's life told in order, cut short at a random point: placed; maybe declined once;
/// authorized for its total under another payment id, which confirms it; maybe authorized again
/// under a third id (a retry the tenant refuses); then either shipped (capturing the total),
/// delivered and refunded twice, or cancelled (voiding the authorization). Mixed into the
/// random commands, it takes the workload to the late steps of a life, which independent
/// random commands rarely chain up to.
fn any_order_life() -> impl Strategy<Value = Vec<Command>> {
    let ids = prop::sample::subsequence(PAYMENTS, 3).prop_shuffle();
    let refunds = (0u64..=150, 0u64..=150);
    let parts = (one_of(ORDERS), ids, any_lines(), any::<[bool; 3]>(), refunds, 1..=9usize);
    parts.prop_map(|(o, ids, lines, [declined_first, retried, cancelled], refunds, length)| {
        let total = eur(lines.iter().map(OrderLine::amount).sum());
        let on_order = |command| Command::Order { order: order_id(o), command };
        let on_payment = |p, command| Command::Payment { payment: payment_id(p), command };
        let authorize = PaymentCommand::Authorize {
            reference: None,
            order: order_id(o),
            amount: total,
            gateway: gateway("g1"),
        };
        let decline = PaymentCommand::Decline {
            order: order_id(o),
            amount: total,
            gateway: gateway("g2"),
            reason: DeclineReason::Refused,
        };
        let place =
            OrderCommand::Place { customer: customer("c1"), currency: currency("EUR"), lines };
        let mut life = vec![on_order(place)];
        if declined_first {
            life.push(on_payment(ids[0], decline));
        }
        life.push(on_payment(ids[1], authorize.clone()));
        if retried {
            life.push(on_payment(ids[2], authorize));
        }
        if cancelled {
            life.push(on_order(OrderCommand::Cancel { reason: CancelReason::Requested }));
        } else {
            let (first, rest) = refunds;
            life.extend([
                on_order(OrderCommand::Ship),
                on_order(OrderCommand::Deliver),
                on_order(OrderCommand::Refund { amount: eur(first) }),
                on_order(OrderCommand::Refund { amount: eur(rest) }),
            ]);
        }
        life.truncate(length);
        life
    })
}

/// Receipts for some SKUs, so that orders can be placed early, then up to [`MAX_STEPS`]
/// commands (single ones and parts of lives), each after the clock moved on by up to
/// [`MAX_TICK_MS`].
fn any_workload() -> impl Strategy<Value = Vec<(u64, Command)>> {
    let receipt = |s: &'static str| {
        (1u64..=20)
            .prop_map(move |units| Command::ReceiveStock { sku: sku(s), quantity: qty(units) })
    };
    let stocked = prop::sample::subsequence(SKUS, 0..=SKUS.len())
        .prop_flat_map(move |skus| skus.into_iter().map(receipt).collect::<Vec<_>>());
    let step = prop_oneof![
        9 => any_command().prop_map(|command| vec![command]),
        1 => any_order_life(),
    ];
    let steps = vec(step, 0..=MAX_STEPS);
    let ticks = vec(0..=MAX_TICK_MS, MAX_STEPS);
    (stocked, steps, ticks).prop_map(|(stocked, steps, ticks)| {
        let stocked = stocked.into_iter().map(|command| (0, command));
        let steps = steps.into_iter().flatten().take(MAX_STEPS);
        stocked.chain(ticks.into_iter().zip(steps)).collect()
    })
}

// The independent model: stock counted from the events alone.

/// What the events of one SKU add up to.
#[derive(Debug, Default)]
struct StockCount {
    received: u64,
    adjusted: i64,
    committed: u64,
    holds: BTreeMap<OrderId, u64>,
}

impl StockCount {
    fn on_hand(&self) -> i128 {
        i128::from(self.received) + i128::from(self.adjusted) - i128::from(self.committed)
    }
}

#[derive(Debug, Default)]
struct Model {
    stock: BTreeMap<Sku, StockCount>,
}

impl Model {
    fn record(&mut self, event: &Event) {
        use InventoryEvent as E;
        let Event::Inventory { sku, event } = event else {
            return;
        };
        let count = self.stock.entry(sku.clone()).or_default();
        match event {
            E::StockReceived { quantity } => count.received += quantity.get(),
            E::StockAdjusted { delta } => count.adjusted += delta,
            E::StockHeld { order, quantity, .. } => {
                let before = count.holds.insert(order.clone(), quantity.get());
                assert_eq!(before, None, "{order} holds {sku} at most once");
            }
            E::StockCommitted { order, quantity }
            | E::StockReleased { order, quantity }
            | E::HoldExpired { order, quantity } => {
                if matches!(event, E::StockCommitted { .. }) {
                    count.committed += quantity.get();
                }
                let held = count.holds.remove(order);
                assert_eq!(held, Some(quantity.get()), "{order} closes the hold of {sku} it has");
            }
        }
    }
}

// The invariants.

fn check_stock(state: &TenantState, model: &Model) -> Result<(), TestCaseError> {
    let skus: BTreeSet<&Sku> = state.inventories().map(|(sku, _)| sku).collect();
    prop_assert_eq!(skus, model.stock.keys().collect::<BTreeSet<_>>());
    for (sku, count) in &model.stock {
        let stock = state.inventory(sku).expect("every counted SKU has an inventory");
        prop_assert_eq!(
            i128::from(stock.on_hand()),
            count.on_hand(),
            "{} on hand is received + adjusted - committed",
            sku
        );
        let held: u64 = count.holds.values().sum();
        prop_assert_eq!(stock.reserved(), held, "{} reserved is the sum of open holds", sku);
        prop_assert_eq!(stock.open_holds(), count.holds.len() as u64, "{} open holds", sku);
        prop_assert!(stock.reserved() <= stock.on_hand(), "{} is oversold", sku);
        prop_assert_eq!(stock.available(), stock.on_hand() - stock.reserved());
    }
    Ok(())
}

/// Placed and confirmed orders hold every line, no other order holds anything: each SKU's
/// reserved units and open holds are those of the open orders' lines.
fn check_orders(state: &TenantState) -> Result<(), TestCaseError> {
    let mut expected: BTreeMap<Sku, (u64, u64)> = BTreeMap::new();
    for (id, order) in state.orders() {
        let status = order.status().expect("an order in the state was placed");
        let (total, refunded) = (order.total().unwrap(), order.refunded().unwrap());
        prop_assert_eq!(total.currency, refunded.currency);
        prop_assert!(refunded.minor <= total.minor, "order {} refunded beyond its total", id);
        if matches!(status, OrderStatus::Placed | OrderStatus::Confirmed) {
            for line in order.lines() {
                let (reserved, holds) = expected.entry(line.sku.clone()).or_default();
                *reserved += line.quantity.get();
                *holds += 1;
            }
        }
    }
    let held: BTreeMap<Sku, (u64, u64)> = state
        .inventories()
        .filter(|(_, stock)| stock.open_holds() > 0)
        .map(|(sku, stock)| (sku.clone(), (stock.reserved(), stock.open_holds())))
        .collect();
    prop_assert_eq!(held, expected, "holds and open orders are out of step");
    Ok(())
}

/// Every payment is for an existing order in its currency, captures at most what it
/// authorized and refunds at most what it captured.
fn check_payments(state: &TenantState) -> Result<(), TestCaseError> {
    for (id, payment) in state.payments() {
        let authorized = payment.authorized().expect("a payment in the state was started");
        let (captured, refunded) = (payment.captured().unwrap(), payment.refunded().unwrap());
        prop_assert!(captured.minor <= authorized.minor, "{} captured beyond authorized", id);
        prop_assert!(
            captured.minor.checked_sub(refunded.minor).is_some(),
            "{} refunded beyond captured",
            id
        );
        let order = payment.order().and_then(|order| state.order(order));
        let order_currency = order.and_then(OrderState::total).map(|t| t.currency);
        prop_assert_eq!(order_currency, Some(authorized.currency), "{} order", id);
    }
    Ok(())
}

/// Money moves with the goods. The live payments (authorized or captured) of an order are
/// exactly the payment that confirmed it, while it is confirmed, shipped or delivered; that
/// payment authorized the total while the order is confirmed, captured it once shipped, and has
/// refunded what the order refunded; a cancelled order's payment, if it had one, was voided.
fn check_money(state: &TenantState) -> Result<(), TestCaseError> {
    use OrderStatus as O;
    use PaymentStatus as P;
    let mut live_by_order: BTreeMap<&OrderId, Vec<&PaymentId>> = BTreeMap::new();
    for (id, payment) in state.payments() {
        if matches!(payment.status(), Some(P::Authorized | P::Captured)) {
            let order = payment.order().expect("a started payment names its order");
            live_by_order.entry(order).or_default().push(id);
        }
    }
    for (id, order) in state.orders() {
        let status = order.status().expect("an order in the state was placed");
        let paid_by = order.payment();
        let expected_live: Vec<&PaymentId> = match status {
            O::Confirmed | O::Shipped | O::Delivered => paid_by.into_iter().collect(),
            O::Placed | O::Cancelled => Vec::new(),
        };
        let live = live_by_order.remove(id).unwrap_or_default();
        prop_assert_eq!(&live, &expected_live, "order {} is {}: its live payments", id, status);

        let Some(paid_by) = paid_by else {
            prop_assert!(
                matches!(status, O::Placed | O::Cancelled),
                "order {} is {} without a payment",
                id,
                status
            );
            continue;
        };
        let payment = state.payment(paid_by).expect("an order's payment exists");
        prop_assert_eq!(payment.order(), Some(id), "{} is for another order than {}", paid_by, id);
        let total = order.total().unwrap();
        let (authorized, captured) = (payment.authorized().unwrap(), payment.captured().unwrap());
        let refunded = payment.refunded().unwrap();
        match status {
            O::Placed => {
                return Err(TestCaseError::fail(format!(
                    "placed order {id} has payment {paid_by}"
                )));
            }
            O::Confirmed => {
                prop_assert_eq!(payment.status(), Some(P::Authorized), "{} of {}", paid_by, id);
                prop_assert_eq!(authorized, total, "{} authorized the total of {}", paid_by, id);
            }
            O::Shipped | O::Delivered => {
                prop_assert_eq!(payment.status(), Some(P::Captured), "{} of {}", paid_by, id);
                prop_assert_eq!(captured, total, "{} captured the total of {}", paid_by, id);
                prop_assert_eq!(Some(refunded), order.refunded(), "{} refunds as {}", paid_by, id);
            }
            O::Cancelled => {
                prop_assert_eq!(payment.status(), Some(P::Voided), "{} of {}", paid_by, id);
            }
        }
    }
    prop_assert!(live_by_order.is_empty(), "live payments of unknown orders: {:?}", live_by_order);
    Ok(())
}

/// A rejected place names exactly the unknown SKUs, or else exactly the short lines.
fn check_place_rejection(
    state: &TenantState,
    command: &Command,
    result: &Result<Vec<Event>, Rejection>,
) -> Result<(), TestCaseError> {
    let (
        Command::Order { command: OrderCommand::Place { lines, .. }, .. },
        Err(Rejection::Order { rejection, .. }),
    ) = (command, result)
    else {
        return Ok(());
    };
    let stock = |sku: &Sku| state.inventory(sku).filter(|s| s.is_known());
    match rejection {
        OrderRejection::UnknownSku { skus } => {
            let unknown: Vec<Sku> = lines
                .iter()
                .filter(|line| stock(&line.sku).is_none())
                .map(|line| line.sku.clone())
                .collect();
            prop_assert_eq!(skus, &unknown);
            prop_assert!(!skus.is_empty());
        }
        OrderRejection::InsufficientStock { shortages } => {
            let short: Vec<Shortage> = lines
                .iter()
                .filter_map(|line| {
                    let available = stock(&line.sku)?.available();
                    (line.quantity.get() > available).then(|| Shortage {
                        sku: line.sku.clone(),
                        requested: line.quantity.get(),
                        available,
                    })
                })
                .collect();
            prop_assert_eq!(shortages, &short);
            prop_assert!(!shortages.is_empty());
        }
        _ => {}
    }
    Ok(())
}

/// The per-aggregate states, in a comparable form (`TenantState` is not `PartialEq`).
#[derive(Debug, PartialEq)]
struct Snapshot {
    inventory: BTreeMap<Sku, InventoryState>,
    orders: BTreeMap<OrderId, OrderState>,
    payments: BTreeMap<PaymentId, PaymentState>,
}

fn snapshot(state: &TenantState) -> Snapshot {
    Snapshot {
        inventory: state.inventories().map(|(k, v)| (k.clone(), v.clone())).collect(),
        orders: state.orders().map(|(k, v)| (k.clone(), v.clone())).collect(),
        payments: state.payments().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Runs `workload` from an empty tenant, calling `step` after each decision with the state
/// before it, the command, the decision and the state after it.
fn run(
    workload: &[(u64, Command)],
    mut step: impl FnMut(
        &TenantState,
        &Command,
        &Result<Vec<Event>, Rejection>,
        &TenantState,
    ) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut state = TenantState::default();
    let mut now = Timestamp(1_000);
    for (tick, command) in workload {
        now = now.plus_millis(*tick);
        let result = Tenant::decide(&state, command, &Context::at(now));
        let before = state.clone();
        if let Ok(events) = &result {
            for event in events {
                Tenant::evolve(&mut state, event);
            }
        }
        step(&before, command, &result, &state)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn every_step_keeps_the_invariants(workload in any_workload()) {
        let mut model = Model::default();
        run(&workload, |before, command, result, after| {
            if let Ok(events) = result {
                prop_assert!(!events.is_empty(), "an accepted command records what happened");
                events.iter().for_each(|event| model.record(event));
            }
            check_place_rejection(before, command, result)?;
            check_stock(after, &model)?;
            check_orders(after)?;
            check_payments(after)?;
            check_money(after)
        })?;
    }

    #[test]
    fn deciding_is_pure_and_a_rejection_changes_nothing(workload in any_workload()) {
        let mut state = TenantState::default();
        let mut now = Timestamp(1_000);
        for (tick, command) in &workload {
            now = now.plus_millis(*tick);
            let ctx = Context::at(now);
            let before = snapshot(&state);
            let result = Tenant::decide(&state, command, &ctx);
            prop_assert_eq!(&snapshot(&state), &before, "deciding changed the state");
            prop_assert_eq!(
                &Tenant::decide(&state.clone(), command, &ctx),
                &result,
                "the same decision twice differs"
            );
            match result {
                // A rejection carries no events, so nothing is applied.
                Err(_) => prop_assert_eq!(snapshot(&state), before),
                Ok(events) => events.iter().for_each(|e| Tenant::evolve(&mut state, e)),
            }
        }
    }
}

// The workload must reach every event and the interesting rejections, or the properties
// above would pass without testing much.

fn event_kind(event: &Event) -> &'static str {
    use InventoryEvent as I;
    use OrderEvent as O;
    use PaymentEvent as P;
    match event {
        Event::Inventory { event, .. } => match event {
            I::StockReceived { .. } => "stock_received",
            I::StockAdjusted { .. } => "stock_adjusted",
            I::StockHeld { .. } => "stock_held",
            I::StockCommitted { .. } => "stock_committed",
            I::StockReleased { .. } => "stock_released",
            I::HoldExpired { .. } => "hold_expired",
        },
        Event::Order { event, .. } => match event {
            O::OrderPlaced { .. } => "order_placed",
            O::OrderConfirmed { .. } => "order_confirmed",
            O::OrderShipped => "order_shipped",
            O::OrderDelivered => "order_delivered",
            O::OrderCancelled { .. } => "order_cancelled",
            O::OrderRefunded { .. } => "order_refunded",
        },
        Event::Payment { event, .. } => match event {
            P::PaymentAuthorized { .. } => "payment_authorized",
            P::PaymentDeclined { .. } => "payment_declined",
            P::PaymentCaptured { .. } => "payment_captured",
            P::PaymentVoided => "payment_voided",
            P::PaymentRefunded { .. } => "payment_refunded",
        },
    }
}

#[test]
fn the_workload_reaches_every_event_and_the_interesting_rejections() {
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..CASES {
        let workload = any_workload()
            .new_tree(&mut runner)
            .expect("the workload strategy never gives up")
            .current();
        run(&workload, |_, _, result, _| {
            match result {
                Ok(events) => {
                    for event in events {
                        *seen.entry(event_kind(event)).or_default() += 1;
                    }
                }
                Err(rejection) => *seen.entry(rejection.code()).or_default() += 1,
            }
            Ok(())
        })
        .expect("the step never fails");
    }
    let expected = [
        "stock_received",
        "stock_adjusted",
        "stock_held",
        "stock_committed",
        "stock_released",
        "hold_expired",
        "order_placed",
        "order_confirmed",
        "order_shipped",
        "order_delivered",
        "order_cancelled",
        "order_refunded",
        "payment_authorized",
        "payment_declined",
        "payment_captured",
        "payment_voided",
        "payment_refunded",
        "unknown_sku",
        "duplicate_sku",
        "order_exists",
        "insufficient_stock",
        "adjustment_below_reserved",
        "hold_not_expired",
        "invalid_transition",
        "refund_exceeds_captured",
        "currency_mismatch",
        "unknown_order",
        "payment_exists",
        "amount_mismatch",
        "order_not_payable",
        "payment_follows_order",
        "payment_not_authorized",
    ];
    let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(missing.is_empty(), "the workload never reached {missing:?}; it reached {seen:#?}");
}
