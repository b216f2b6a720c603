//! The tenant's decisions that span aggregates, where money moves with the goods: placing an
//! order holds stock on every line or on none; a payment is authorized or declined only for a
//! placed order's exact total, and an authorization confirms the order in the same decision;
//! shipping commits the holds and captures the total, cancelling releases the holds and voids a
//! confirmed order's authorization, expiring lets the holds run out, and refunding the order
//! refunds its payment. Callers never capture, void or refund a payment directly. Rejections
//! name the aggregate.

use orderly_core::domain::limits::DEFAULT_HOLD_TTL_MS;
use orderly_core::domain::{
    CancelReason, Command, Context, Decider, DeclineReason, Envelope, Event, IdempotencyKey,
    InventoryEvent, InventoryRejection, Money, OrderCommand, OrderEvent, OrderRejection,
    OrderStatus, PaymentCommand, PaymentEvent, PaymentRejection, PaymentStatus, Rejection,
    Shortage, Tenant, TenantId, TenantState, Timestamp,
};

use super::fixtures::{
    currency, eur, gateway, line, order_id, payment_id, place, placed, qty, sku, usd,
};
use super::harness::Scenario;

// Events and commands of the tenant, named as a reader would say them.

fn stock(sku_id: &str, event: InventoryEvent) -> Event {
    Event::Inventory { sku: sku(sku_id), event }
}

fn received(sku_id: &str, units: u64) -> Event {
    stock(sku_id, InventoryEvent::StockReceived { quantity: qty(units) })
}

fn held(sku_id: &str, order: &str, units: u64, expires_at: u64) -> Event {
    stock(
        sku_id,
        InventoryEvent::StockHeld {
            order: order_id(order),
            quantity: qty(units),
            expires_at: Timestamp(expires_at),
        },
    )
}

fn on_order(order: &str, event: OrderEvent) -> Event {
    Event::Order { order: order_id(order), event }
}

fn on_payment(payment: &str, event: PaymentEvent) -> Event {
    Event::Payment { payment: payment_id(payment), event }
}

fn receive(sku_id: &str, units: u64) -> Command {
    Command::ReceiveStock { sku: sku(sku_id), quantity: qty(units) }
}

fn order(order: &str, command: OrderCommand) -> Command {
    Command::Order { order: order_id(order), command }
}

fn payment(payment: &str, command: PaymentCommand) -> Command {
    Command::Payment { payment: payment_id(payment), command }
}

fn authorize(order: &str, amount: Money) -> PaymentCommand {
    PaymentCommand::Authorize {
        reference: None,
        order: order_id(order),
        amount,
        gateway: gateway("g1"),
    }
}

fn decline(order: &str, amount: Money) -> PaymentCommand {
    PaymentCommand::Decline {
        order: order_id(order),
        amount,
        gateway: gateway("g1"),
        reason: DeclineReason::GatewayUnavailable,
    }
}

fn authorized(payment: &str, order: &str, amount: Money) -> Event {
    on_payment(
        payment,
        PaymentEvent::PaymentAuthorized {
            reference: None,
            order: order_id(order),
            amount,
            gateway: gateway("g1"),
        },
    )
}

fn declined(payment: &str, order: &str, amount: Money) -> Event {
    on_payment(
        payment,
        PaymentEvent::PaymentDeclined {
            order: order_id(order),
            amount,
            gateway: gateway("g1"),
            reason: DeclineReason::GatewayUnavailable,
        },
    )
}

fn confirmed(order: &str, payment: &str) -> Event {
    on_order(order, OrderEvent::OrderConfirmed { payment: payment_id(payment) })
}

fn cancelled(order: &str, reason: CancelReason) -> Event {
    on_order(order, OrderEvent::OrderCancelled { reason })
}

fn committed(sku_id: &str, order: &str, units: u64) -> Event {
    stock(sku_id, InventoryEvent::StockCommitted { order: order_id(order), quantity: qty(units) })
}

fn released(sku_id: &str, order: &str, units: u64) -> Event {
    stock(sku_id, InventoryEvent::StockReleased { order: order_id(order), quantity: qty(units) })
}

fn hold_expired(sku_id: &str, order: &str, units: u64) -> Event {
    stock(sku_id, InventoryEvent::HoldExpired { order: order_id(order), quantity: qty(units) })
}

// Histories of order o1, each what the tenant records for its commands (checked by
// `the_histories_used_here_are_what_the_commands_record`).

/// Stock of a (10 units) and b (5 units), and order o1 holding 3 of a and 2 of b until 900,
/// for a total of 3 × 100 + 2 × 50 = 400 EUR.
fn o1_placed() -> Vec<Event> {
    vec![
        received("a", 10),
        received("b", 5),
        on_order("o1", placed(vec![line("a", 3, 100), line("b", 2, 50)], 400, 900)),
        held("a", "o1", 3, 900),
        held("b", "o1", 2, 900),
    ]
}

/// `o1_placed`, then payment p1 authorized its 400 EUR, which confirmed it.
fn o1_confirmed() -> Vec<Event> {
    [o1_placed(), vec![authorized("p1", "o1", eur(400)), confirmed("o1", "p1")]].concat()
}

/// `o1_confirmed`, then shipped: its holds committed and p1 captured in full.
fn o1_shipped() -> Vec<Event> {
    let shipped = vec![
        on_order("o1", OrderEvent::OrderShipped),
        committed("a", "o1", 3),
        committed("b", "o1", 2),
        on_payment("p1", PaymentEvent::PaymentCaptured { amount: 400 }),
    ];
    [o1_confirmed(), shipped].concat()
}

/// `o1_shipped`, then delivered.
fn o1_delivered() -> Vec<Event> {
    [o1_shipped(), vec![on_order("o1", OrderEvent::OrderDelivered)]].concat()
}

/// `o1_placed`, then cancelled with its holds released.
fn o1_cancelled() -> Vec<Event> {
    let cancelled = vec![
        cancelled("o1", CancelReason::Requested),
        released("a", "o1", 3),
        released("b", "o1", 2),
    ];
    [o1_placed(), cancelled].concat()
}

/// `o1_confirmed`, then cancelled with its holds released and p1 voided.
fn o1_cancelled_when_confirmed() -> Vec<Event> {
    let cancelled = vec![
        cancelled("o1", CancelReason::Requested),
        released("a", "o1", 3),
        released("b", "o1", 2),
        on_payment("p1", PaymentEvent::PaymentVoided),
    ];
    [o1_confirmed(), cancelled].concat()
}

/// The events the tenant records for `command` after `history`, decided at time 0 with a hold
/// time-to-live of 900 ms.
fn recorded(history: &[Event], command: &Command) -> Vec<Event> {
    let mut state = TenantState::default();
    history.iter().for_each(|event| Tenant::evolve(&mut state, event));
    let ctx = Context { now: Timestamp(0), hold_ttl_ms: 900 };
    Tenant::decide(&state, command, &ctx).unwrap_or_else(|r| panic!("{command:?}: {r}"))
}

/// (on hand, reserved) of `sku_id`.
fn stock_of(state: &TenantState, sku_id: &str) -> (u64, u64) {
    let stock = state.inventory(&sku(sku_id)).expect("a stocked SKU");
    (stock.on_hand(), stock.reserved())
}

fn status_of(state: &TenantState, order: &str) -> Option<OrderStatus> {
    state.order(&order_id(order)).and_then(|o| o.status())
}

// Stock.

#[test]
fn stock_commands_reach_the_sku_s_inventory() {
    let state = Scenario::<Tenant>::given([])
        .when(Command::ReceiveStock { sku: sku("a"), quantity: qty(10) })
        .then([received("a", 10)]);
    assert_eq!(stock_of(&state, "a"), (10, 0));

    let state = Scenario::<Tenant>::given([received("a", 10)])
        .when(Command::AdjustStock { sku: sku("a"), delta: -4 })
        .then([stock("a", InventoryEvent::StockAdjusted { delta: -4 })]);
    assert_eq!(stock_of(&state, "a"), (6, 0));
}

#[test]
fn a_stock_rejection_names_the_sku() {
    let rejection = Scenario::<Tenant>::given([received("a", 10)])
        .when(Command::AdjustStock { sku: sku("b"), delta: 1 })
        .then_rejects_with_code("unknown_sku");
    assert_eq!(
        rejection,
        Rejection::Inventory { sku: sku("b"), rejection: InventoryRejection::UnknownSku }
    );
    assert_eq!(rejection.to_string(), "SKU b: unknown SKU: it has never been received");
}

#[test]
fn a_count_cannot_take_away_units_held_for_an_order() {
    Scenario::<Tenant>::given(o1_placed())
        .when(Command::AdjustStock { sku: sku("a"), delta: -8 })
        .then_rejects(Rejection::Inventory {
            sku: sku("a"),
            rejection: InventoryRejection::AdjustmentBelowReserved {
                delta: -8,
                on_hand: 10,
                reserved: 3,
            },
        });
}

// Place.

#[test]
fn placing_an_order_holds_stock_on_every_line() {
    let lines = vec![line("a", 3, 100), line("b", 5, 50)];
    let expires_at = 1_000 + DEFAULT_HOLD_TTL_MS;
    let state = Scenario::<Tenant>::given([received("a", 10), received("b", 5)])
        .at(1_000)
        .when(order("o1", place(lines.clone())))
        .then([
            on_order("o1", placed(lines, 550, expires_at)),
            held("a", "o1", 3, expires_at),
            held("b", "o1", 5, expires_at),
        ]);
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Placed));
    assert_eq!(stock_of(&state, "a"), (10, 3));
    assert_eq!(stock_of(&state, "b"), (5, 5));
    assert_eq!(state.inventory(&sku("b")).unwrap().available(), 0);
}

#[test]
fn placing_an_order_with_unknown_skus_names_all_of_them_and_holds_nothing() {
    let rejection = Scenario::<Tenant>::given([received("a", 10)])
        .when(order("o1", place(vec![line("x", 1, 1), line("a", 1, 1), line("y", 1, 1)])))
        .then_rejects_with_code("unknown_sku");
    assert_eq!(
        rejection,
        Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::UnknownSku { skus: vec![sku("x"), sku("y")] },
        }
    );
}

#[test]
fn unknown_skus_are_reported_before_shortages() {
    Scenario::<Tenant>::given([received("a", 1)])
        .when(order("o1", place(vec![line("a", 5, 1), line("x", 1, 1)])))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::UnknownSku { skus: vec![sku("x")] },
        });
}

#[test]
fn placing_an_order_beyond_the_stock_names_every_short_sku_and_holds_nothing() {
    // b could be held, but the order holds all of its lines or none.
    let given = [received("a", 2), received("b", 10), received("c", 1)];
    let rejection = Scenario::<Tenant>::given(given)
        .when(order("o1", place(vec![line("a", 3, 1), line("b", 4, 1), line("c", 2, 1)])))
        .then_rejects_with_code("insufficient_stock");
    assert_eq!(
        rejection,
        Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::InsufficientStock {
                shortages: vec![
                    Shortage { sku: sku("a"), requested: 3, available: 2 },
                    Shortage { sku: sku("c"), requested: 2, available: 1 },
                ],
            },
        }
    );
}

#[test]
fn stock_held_for_another_order_is_not_available() {
    // o1 holds 3 of the 10 units of a.
    Scenario::<Tenant>::given(o1_placed())
        .when(order("o2", place(vec![line("a", 8, 1)])))
        .then_rejects(Rejection::Order {
            order: order_id("o2"),
            rejection: OrderRejection::InsufficientStock {
                shortages: vec![Shortage { sku: sku("a"), requested: 8, available: 7 }],
            },
        });
}

#[test]
fn an_invalid_order_is_rejected_before_stock_is_looked_at() {
    Scenario::<Tenant>::given([]).when(order("o1", place(vec![]))).then_rejects(Rejection::Order {
        order: order_id("o1"),
        rejection: OrderRejection::EmptyOrder,
    });
    Scenario::<Tenant>::given([])
        .when(order("o1", place(vec![line("x", 1, 0)])))
        .then_rejects_with_code("invalid_unit_price");
    // A SKU keeps only the sum and count of its holds, so these two are what keep an order
    // from holding a SKU twice: one line per SKU, one placement per order.
    Scenario::<Tenant>::given([received("a", 10)])
        .when(order("o1", place(vec![line("a", 1, 1), line("a", 2, 1)])))
        .then_rejects_with_code("duplicate_sku");
    Scenario::<Tenant>::given(o1_placed())
        .when(order("o1", place(vec![line("a", 1, 1)])))
        .then_rejects_with_code("order_exists");
}

// The histories.

#[test]
fn the_histories_used_here_are_what_the_commands_record() {
    let after = |history: Vec<Event>, command: Command| {
        let events = recorded(&history, &command);
        [history, events].concat()
    };
    let stocked = after(after(vec![], receive("a", 10)), receive("b", 5));
    let place_o1 = order("o1", place(vec![line("a", 3, 100), line("b", 2, 50)]));
    let cancel = order("o1", OrderCommand::Cancel { reason: CancelReason::Requested });
    assert_eq!(after(stocked, place_o1), o1_placed());
    assert_eq!(after(o1_placed(), payment("p1", authorize("o1", eur(400)))), o1_confirmed());
    assert_eq!(after(o1_confirmed(), order("o1", OrderCommand::Ship)), o1_shipped());
    assert_eq!(after(o1_shipped(), order("o1", OrderCommand::Deliver)), o1_delivered());
    assert_eq!(after(o1_placed(), cancel.clone()), o1_cancelled());
    assert_eq!(after(o1_confirmed(), cancel), o1_cancelled_when_confirmed());
}

// Pay: a payment is authorized or declined for a placed order's total.

#[test]
fn authorizing_a_payment_confirms_the_order_in_the_same_decision() {
    let state = Scenario::<Tenant>::given(o1_placed())
        .when(payment("p1", authorize("o1", eur(400))))
        .then([authorized("p1", "o1", eur(400)), confirmed("o1", "p1")]);
    let p1 = state.payment(&payment_id("p1")).unwrap();
    assert_eq!(p1.status(), Some(PaymentStatus::Authorized));
    assert_eq!(p1.order(), Some(&order_id("o1")));
    assert_eq!(p1.authorized(), Some(eur(400)));
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Confirmed));
    assert_eq!(state.order(&order_id("o1")).unwrap().payment(), Some(&payment_id("p1")));
    assert_eq!(stock_of(&state, "a"), (10, 3), "the holds stay until shipping");
}

#[test]
fn a_decline_leaves_the_order_placed_so_that_another_payment_can_pay_it() {
    let state = Scenario::<Tenant>::given(o1_placed())
        .when(payment("p1", decline("o1", eur(400))))
        .then([declined("p1", "o1", eur(400))]);
    assert_eq!(state.payment(&payment_id("p1")).unwrap().status(), Some(PaymentStatus::Declined));
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Placed));
    assert_eq!(state.order(&order_id("o1")).unwrap().payment(), None);

    // Another gateway, under another payment id, authorizes it later.
    let mut given = o1_placed();
    given.push(declined("p1", "o1", eur(400)));
    let state = Scenario::<Tenant>::given(given)
        .when(payment("p2", authorize("o1", eur(400))))
        .then([authorized("p2", "o1", eur(400)), confirmed("o1", "p2")]);
    assert_eq!(state.order(&order_id("o1")).unwrap().payment(), Some(&payment_id("p2")));
}

#[test]
fn a_payment_for_an_unknown_order_is_rejected() {
    for command in [authorize("o9", eur(400)), decline("o9", eur(400))] {
        let rejection = Scenario::<Tenant>::given(o1_placed())
            .when(payment("p1", command))
            .then_rejects_with_code("unknown_order");
        assert_eq!(
            rejection,
            Rejection::Payment {
                payment: payment_id("p1"),
                rejection: PaymentRejection::UnknownOrder { order: order_id("o9") },
            }
        );
    }
}

#[test]
fn a_payment_is_in_the_order_s_currency() {
    for command in [authorize("o1", usd(400)), decline("o1", usd(400))] {
        Scenario::<Tenant>::given(o1_placed()).when(payment("p1", command)).then_rejects(
            Rejection::Payment {
                payment: payment_id("p1"),
                rejection: PaymentRejection::CurrencyMismatch {
                    expected: currency("EUR"),
                    got: currency("USD"),
                },
            },
        );
    }
}

#[test]
fn a_payment_is_for_the_order_s_total_exactly() {
    for got in [399, 401] {
        for command in [authorize("o1", eur(got)), decline("o1", eur(got))] {
            let rejection = Scenario::<Tenant>::given(o1_placed())
                .when(payment("p1", command))
                .then_rejects_with_code("amount_mismatch");
            assert_eq!(
                rejection,
                Rejection::Payment {
                    payment: payment_id("p1"),
                    rejection: PaymentRejection::AmountMismatch { expected: 400, got },
                }
            );
        }
    }
}

#[test]
fn a_confirmed_order_is_not_authorized_a_second_time() {
    // A retry under a new payment id would otherwise reserve the money twice.
    let rejection = Scenario::<Tenant>::given(o1_confirmed())
        .when(payment("p2", authorize("o1", eur(400))))
        .then_rejects_with_code("order_not_payable");
    assert_eq!(
        rejection,
        Rejection::Payment {
            payment: payment_id("p2"),
            rejection: PaymentRejection::OrderNotPayable { status: OrderStatus::Confirmed },
        }
    );
    assert_eq!(
        rejection.to_string(),
        "payment p2: the order is confirmed, not waiting for payment"
    );
}

#[test]
fn only_a_placed_order_is_paid_or_declined() {
    let given = [
        (o1_confirmed(), OrderStatus::Confirmed),
        (o1_shipped(), OrderStatus::Shipped),
        (o1_delivered(), OrderStatus::Delivered),
        (o1_cancelled(), OrderStatus::Cancelled),
        (o1_cancelled_when_confirmed(), OrderStatus::Cancelled),
    ];
    for (history, status) in given {
        for command in [authorize("o1", eur(400)), decline("o1", eur(400))] {
            Scenario::<Tenant>::given(history.clone()).when(payment("p2", command)).then_rejects(
                Rejection::Payment {
                    payment: payment_id("p2"),
                    rejection: PaymentRejection::OrderNotPayable { status },
                },
            );
        }
    }
}

#[test]
fn a_payment_s_checks_come_in_a_fixed_order() {
    // o1 is confirmed by p1 for 400 EUR. Each command below fixes the first failing check of
    // the one before it, so each names the next check: the payment id, the order, the currency,
    // the amount, the order's status.
    let steps = [
        (payment("p1", authorize("o9", usd(1))), "payment_exists"),
        (payment("p2", authorize("o9", usd(1))), "unknown_order"),
        (payment("p2", authorize("o1", usd(1))), "currency_mismatch"),
        (payment("p2", authorize("o1", eur(1))), "amount_mismatch"),
        (payment("p2", authorize("o1", eur(400))), "order_not_payable"),
    ];
    for (command, code) in steps {
        Scenario::<Tenant>::given(o1_confirmed()).when(command).then_rejects_with_code(code);
    }
}

#[test]
fn a_payment_id_is_used_once_even_for_another_order() {
    let mut given = o1_confirmed();
    given.extend([
        received("c", 1),
        on_order("o2", placed(vec![line("c", 1, 400)], 400, 900)),
        held("c", "o2", 1, 900),
    ]);
    let rejection = Scenario::<Tenant>::given(given)
        .when(payment("p1", authorize("o2", eur(400))))
        .then_rejects_with_code("payment_exists");
    assert_eq!(rejection.to_string(), "payment p1: a payment with this id already exists");
}

#[test]
fn captures_voids_and_refunds_follow_the_order() {
    // Whatever state the payment is in, even unknown: money moves only with the goods.
    let commands = [
        PaymentCommand::Capture { amount: eur(400) },
        PaymentCommand::Void,
        PaymentCommand::Refund { amount: eur(1) },
    ];
    for (given, id) in [(o1_confirmed(), "p1"), (o1_shipped(), "p1"), (o1_placed(), "p9")] {
        for command in &commands {
            Scenario::<Tenant>::given(given.clone())
                .when(payment(id, command.clone()))
                .then_rejects(Rejection::Payment {
                    payment: payment_id(id),
                    rejection: PaymentRejection::FollowsOrder { command: command.name() },
                });
        }
    }
    let rejection = Scenario::<Tenant>::given(o1_confirmed())
        .when(payment("p1", PaymentCommand::Capture { amount: eur(400) }))
        .then_rejects_with_code("payment_follows_order");
    assert_eq!(
        rejection.to_string(),
        "payment p1: capture follows the order: ship, cancel or refund the order instead"
    );
}

// Confirm: an authorization confirms its order in the same decision, so a confirm command
// meets an order that is confirmed already, or a payment that is not an authorization of it.

#[test]
fn an_order_confirmed_by_its_authorization_is_not_confirmed_again() {
    Scenario::<Tenant>::given(o1_confirmed())
        .when(order("o1", OrderCommand::Confirm { payment: payment_id("p1") }))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::InvalidTransition {
                status: OrderStatus::Confirmed,
                command: "confirm",
            },
        });
}

#[test]
fn confirming_needs_an_authorization_of_the_order_s_total() {
    let not_authorized = |payment: &str| Rejection::Order {
        order: order_id("o1"),
        rejection: OrderRejection::PaymentNotAuthorized { payment: payment_id(payment) },
    };
    let confirm =
        |payment: &str| order("o1", OrderCommand::Confirm { payment: payment_id(payment) });

    // No such payment.
    Scenario::<Tenant>::given(o1_placed()).when(confirm("p9")).then_rejects(not_authorized("p9"));

    // A declined payment.
    let mut given = o1_placed();
    given.push(declined("p1", "o1", eur(400)));
    Scenario::<Tenant>::given(given).when(confirm("p1")).then_rejects(not_authorized("p1"));

    // An authorization of another order (which it confirmed).
    let mut given = o1_placed();
    given.extend([
        received("c", 1),
        on_order("o2", placed(vec![line("c", 1, 400)], 400, 900)),
        held("c", "o2", 1, 900),
        authorized("p2", "o2", eur(400)),
        confirmed("o2", "p2"),
    ]);
    let rejection = Scenario::<Tenant>::given(given)
        .when(confirm("p2"))
        .then_rejects_with_code("payment_not_authorized");
    assert_eq!(rejection, not_authorized("p2"));
    assert_eq!(
        rejection.to_string(),
        "order o1: payment p2 is not an authorization of this order's total"
    );
}

#[test]
fn an_authorization_that_did_not_confirm_its_order_confirms_it_on_request() {
    // The tenant never records such a history (an authorization confirms its order), but the
    // confirm command still checks the payment it names: for the total, it confirms ...
    let mut given = o1_placed();
    given.push(authorized("p1", "o1", eur(400)));
    Scenario::<Tenant>::given(given)
        .when(order("o1", OrderCommand::Confirm { payment: payment_id("p1") }))
        .then([confirmed("o1", "p1")]);

    // ... for another amount, it does not.
    let mut given = o1_placed();
    given.push(authorized("p1", "o1", eur(399)));
    Scenario::<Tenant>::given(given)
        .when(order("o1", OrderCommand::Confirm { payment: payment_id("p1") }))
        .then_rejects_with_code("payment_not_authorized");
}

// Ship and deliver.

#[test]
fn shipping_commits_every_hold_and_captures_the_total() {
    let state =
        Scenario::<Tenant>::given(o1_confirmed()).when(order("o1", OrderCommand::Ship)).then([
            on_order("o1", OrderEvent::OrderShipped),
            committed("a", "o1", 3),
            committed("b", "o1", 2),
            on_payment("p1", PaymentEvent::PaymentCaptured { amount: 400 }),
        ]);
    assert_eq!(stock_of(&state, "a"), (7, 0));
    assert_eq!(stock_of(&state, "b"), (3, 0));
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Shipped));
    let p1 = state.payment(&payment_id("p1")).unwrap();
    assert_eq!(p1.status(), Some(PaymentStatus::Captured));
    assert_eq!(p1.captured(), Some(eur(400)));
}

#[test]
fn an_unconfirmed_order_does_not_ship() {
    Scenario::<Tenant>::given(o1_placed()).when(order("o1", OrderCommand::Ship)).then_rejects(
        Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::InvalidTransition {
                status: OrderStatus::Placed,
                command: "ship",
            },
        },
    );
}

#[test]
fn delivering_touches_only_the_order() {
    let state = Scenario::<Tenant>::given(o1_shipped())
        .when(order("o1", OrderCommand::Deliver))
        .then([on_order("o1", OrderEvent::OrderDelivered)]);
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Delivered));
}

// Cancel and expire.

#[test]
fn cancelling_a_placed_order_releases_every_hold() {
    for reason in [CancelReason::Requested, CancelReason::PaymentDeclined] {
        let state = Scenario::<Tenant>::given(o1_placed())
            .when(order("o1", OrderCommand::Cancel { reason }))
            .then([cancelled("o1", reason), released("a", "o1", 3), released("b", "o1", 2)]);
        assert_eq!(stock_of(&state, "a"), (10, 0));
        assert_eq!(stock_of(&state, "b"), (5, 0));
    }
}

#[test]
fn cancelling_after_a_decline_touches_no_payment() {
    // A placed order has no payment of its own: the declined one stays as it was.
    let mut given = o1_placed();
    given.push(declined("p1", "o1", eur(400)));
    let state = Scenario::<Tenant>::given(given)
        .when(order("o1", OrderCommand::Cancel { reason: CancelReason::PaymentDeclined }))
        .then([
            cancelled("o1", CancelReason::PaymentDeclined),
            released("a", "o1", 3),
            released("b", "o1", 2),
        ]);
    assert_eq!(state.payment(&payment_id("p1")).unwrap().status(), Some(PaymentStatus::Declined));
}

#[test]
fn cancelling_a_confirmed_order_releases_every_hold_and_voids_the_payment() {
    let reason = CancelReason::Requested;
    let state = Scenario::<Tenant>::given(o1_confirmed())
        .when(order("o1", OrderCommand::Cancel { reason }))
        .then([
            cancelled("o1", reason),
            released("a", "o1", 3),
            released("b", "o1", 2),
            on_payment("p1", PaymentEvent::PaymentVoided),
        ]);
    assert_eq!(stock_of(&state, "a"), (10, 0));
    let p1 = state.payment(&payment_id("p1")).unwrap();
    assert_eq!(p1.status(), Some(PaymentStatus::Voided));
    assert_eq!(p1.captured(), Some(eur(0)));
}

/// The two commands that expire an unpaid order whose hold ran out; they mean the same.
fn expiring_commands() -> [OrderCommand; 2] {
    [OrderCommand::Expire, OrderCommand::Cancel { reason: CancelReason::HoldExpired }]
}

#[test]
fn an_unpaid_order_expires_once_its_hold_ran_out_and_its_holds_expire() {
    for command in expiring_commands() {
        let state =
            Scenario::<Tenant>::given(o1_placed()).at(900).when(order("o1", command)).then([
                cancelled("o1", CancelReason::HoldExpired),
                hold_expired("a", "o1", 3),
                hold_expired("b", "o1", 2),
            ]);
        assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Cancelled));
        assert_eq!(stock_of(&state, "a"), (10, 0));
    }
}

#[test]
fn an_order_does_not_expire_before_its_hold_runs_out() {
    for command in expiring_commands() {
        Scenario::<Tenant>::given(o1_placed()).at(899).when(order("o1", command)).then_rejects(
            Rejection::Order {
                order: order_id("o1"),
                rejection: OrderRejection::HoldNotExpired {
                    expires_at: Timestamp(900),
                    now: Timestamp(899),
                },
            },
        );
    }
}

#[test]
fn the_hold_time_to_live_comes_from_the_context() {
    let given = [received("a", 1)];
    Scenario::<Tenant>::given(given)
        .at(10)
        .with_hold_ttl(0)
        .when(order("o1", place(vec![line("a", 1, 1)])))
        .then([on_order("o1", placed(vec![line("a", 1, 1)], 1, 10)), held("a", "o1", 1, 10)]);
}

#[test]
fn only_a_placed_order_expires() {
    // A confirmed order was paid in time, so neither command voids its payment.
    let given = [
        (o1_confirmed(), OrderStatus::Confirmed),
        (o1_shipped(), OrderStatus::Shipped),
        (o1_cancelled(), OrderStatus::Cancelled),
    ];
    for (history, status) in given {
        for command in expiring_commands() {
            let name = command.name();
            Scenario::<Tenant>::given(history.clone())
                .at(1_000_000)
                .when(order("o1", command))
                .then_rejects(Rejection::Order {
                    order: order_id("o1"),
                    rejection: OrderRejection::InvalidTransition { status, command: name },
                });
        }
    }
}

#[test]
fn a_cancelled_order_cannot_ship_and_a_shipped_one_cannot_be_cancelled() {
    let rejection = Scenario::<Tenant>::given(o1_cancelled())
        .when(order("o1", OrderCommand::Ship))
        .then_rejects_with_code("invalid_transition");
    assert_eq!(rejection.to_string(), "order o1: cannot ship an order that is cancelled");
    Scenario::<Tenant>::given(o1_shipped())
        .when(order("o1", OrderCommand::Cancel { reason: CancelReason::Requested }))
        .then_rejects_with_code("invalid_transition");
}

#[test]
fn a_command_on_an_unknown_order_names_the_order() {
    Scenario::<Tenant>::given(o1_placed()).when(order("o9", OrderCommand::Ship)).then_rejects(
        Rejection::Order { order: order_id("o9"), rejection: OrderRejection::UnknownOrder },
    );
}

// Refund.

#[test]
fn refunding_an_order_refunds_its_payment() {
    for given in [o1_shipped(), o1_delivered()] {
        let state = Scenario::<Tenant>::given(given.clone())
            .when(order("o1", OrderCommand::Refund { amount: eur(150) }))
            .then([
                on_order("o1", OrderEvent::OrderRefunded { amount: 150 }),
                on_payment("p1", PaymentEvent::PaymentRefunded { amount: 150 }),
            ]);
        assert_eq!(state.order(&order_id("o1")).unwrap().refunded(), Some(eur(150)));
        assert_eq!(state.payment(&payment_id("p1")).unwrap().refunded(), Some(eur(150)));
        assert_eq!(stock_of(&state, "a"), (7, 0), "a refund gives money back, not stock");

        // The rest, later: the order and the payment are then refunded in full.
        let mut given = given;
        given.extend([
            on_order("o1", OrderEvent::OrderRefunded { amount: 150 }),
            on_payment("p1", PaymentEvent::PaymentRefunded { amount: 150 }),
        ]);
        let state = Scenario::<Tenant>::given(given)
            .when(order("o1", OrderCommand::Refund { amount: eur(250) }))
            .then([
                on_order("o1", OrderEvent::OrderRefunded { amount: 250 }),
                on_payment("p1", PaymentEvent::PaymentRefunded { amount: 250 }),
            ]);
        let p1 = state.payment(&payment_id("p1")).unwrap();
        assert_eq!(p1.refunded(), p1.captured());
        assert_eq!(state.order(&order_id("o1")).unwrap().refunded(), Some(eur(400)));
    }
}

#[test]
fn a_refund_beyond_what_is_left_is_refused_by_the_order() {
    let mut given = o1_shipped();
    given.extend([
        on_order("o1", OrderEvent::OrderRefunded { amount: 300 }),
        on_payment("p1", PaymentEvent::PaymentRefunded { amount: 300 }),
    ]);
    Scenario::<Tenant>::given(given)
        .when(order("o1", OrderCommand::Refund { amount: eur(101) }))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::RefundExceedsCaptured { requested: 101, refundable: 100 },
        });
}

// The envelope.

#[test]
fn an_envelope_decides_at_its_admission_time_with_the_default_policy() {
    let command = Command::ReceiveStock { sku: sku("a"), quantity: qty(1) };
    let tenant = TenantId::new("t1").unwrap();
    let envelope = Envelope::new(tenant.clone(), command.clone());
    assert_eq!(envelope.tenant, tenant);
    assert_eq!(envelope.idempotency_key, None);
    assert_eq!(envelope.admitted_at, Timestamp(0));
    assert_eq!(envelope.command, command);

    let key = IdempotencyKey::new("k-1").unwrap();
    let envelope = Envelope { admitted_at: Timestamp(42), ..envelope.with_key(key.clone()) };
    assert_eq!(envelope.idempotency_key, Some(key));
    let ctx = envelope.context();
    assert_eq!((ctx.now, ctx.hold_ttl_ms), (Timestamp(42), DEFAULT_HOLD_TTL_MS));
}

#[test]
fn an_authorization_after_the_hold_ran_out_is_refused_so_the_order_can_expire() {
    // o1's hold runs out at 900 (see o1_placed).
    Scenario::<Tenant>::given(o1_placed())
        .at(900)
        .when(payment("p1", authorize("o1", eur(400))))
        .then_rejects(Rejection::Payment {
            payment: payment_id("p1"),
            rejection: PaymentRejection::HoldExpired { expires_at: Timestamp(900) },
        });
    Scenario::<Tenant>::given(o1_placed())
        .at(899)
        .when(payment("p1", authorize("o1", eur(400))))
        .then([authorized("p1", "o1", eur(400)), confirmed("o1", "p1")]);
}
