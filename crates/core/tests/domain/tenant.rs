//! The tenant's decisions that span aggregates: placing an order holds stock on every line or
//! on none, shipping commits the holds, cancelling releases them, expiring lets them run out,
//! and a payment needs an existing order in the same currency. Rejections name the aggregate.

use orderly_core::domain::limits::DEFAULT_HOLD_TTL_MS;
use orderly_core::domain::{
    CancelReason, Command, DeclineReason, Envelope, Event, IdempotencyKey, InventoryEvent,
    InventoryRejection, Money, OrderCommand, OrderEvent, OrderLine, OrderRejection, OrderStatus,
    PaymentCommand, PaymentEvent, PaymentRejection, PaymentStatus, Rejection, Shortage, Tenant,
    TenantId, TenantState, Timestamp,
};

use super::fixtures::{
    currency, customer, eur, gateway, line, order_id, payment_id, qty, sku, usd,
};
use super::harness::Scenario;

// Events and commands of the tenant, named as a reader would say them.

fn stock(sku_id: &str, event: InventoryEvent) -> Event {
    Event::Inventory {
        sku: sku(sku_id),
        event,
    }
}

fn received(sku_id: &str, units: u64) -> Event {
    stock(
        sku_id,
        InventoryEvent::StockReceived {
            quantity: qty(units),
        },
    )
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
    Event::Order {
        order: order_id(order),
        event,
    }
}

fn on_payment(payment: &str, event: PaymentEvent) -> Event {
    Event::Payment {
        payment: payment_id(payment),
        event,
    }
}

fn order(order: &str, command: OrderCommand) -> Command {
    Command::Order {
        order: order_id(order),
        command,
    }
}

fn payment(payment: &str, command: PaymentCommand) -> Command {
    Command::Payment {
        payment: payment_id(payment),
        command,
    }
}

fn place(lines: Vec<OrderLine>) -> OrderCommand {
    OrderCommand::Place {
        customer: customer("c1"),
        currency: currency("EUR"),
        lines,
    }
}

fn placed(lines: Vec<OrderLine>, total: u64, hold_expires_at: u64) -> OrderEvent {
    OrderEvent::OrderPlaced {
        customer: customer("c1"),
        currency: currency("EUR"),
        lines,
        total,
        hold_expires_at: Timestamp(hold_expires_at),
    }
}

fn authorize(order: &str, amount: Money) -> PaymentCommand {
    PaymentCommand::Authorize {
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

/// Stock of a (10 units) and b (5 units), and order o1 holding 3 of a and 2 of b until 900,
/// for a total of 3 × 100 + 2 × 50 = 400 EUR.
fn o1_placed() -> Vec<Event> {
    vec![
        received("a", 10),
        received("b", 5),
        on_order(
            "o1",
            placed(vec![line("a", 3, 100), line("b", 2, 50)], 400, 900),
        ),
        held("a", "o1", 3, 900),
        held("b", "o1", 2, 900),
    ]
}

/// `o1_placed`, then confirmed by payment p1 authorizing its 400 EUR.
fn o1_confirmed() -> Vec<Event> {
    let mut events = o1_placed();
    events.extend([
        on_payment(
            "p1",
            PaymentEvent::PaymentAuthorized {
                order: order_id("o1"),
                amount: eur(400),
                gateway: gateway("g1"),
            },
        ),
        on_order(
            "o1",
            OrderEvent::OrderConfirmed {
                payment: payment_id("p1"),
            },
        ),
    ]);
    events
}

/// `o1_confirmed`, then shipped with its payment captured in full.
fn o1_shipped() -> Vec<Event> {
    let mut events = o1_confirmed();
    events.extend([
        on_payment("p1", PaymentEvent::PaymentCaptured { amount: 400 }),
        on_order("o1", OrderEvent::OrderShipped),
        stock(
            "a",
            InventoryEvent::StockCommitted {
                order: order_id("o1"),
                quantity: qty(3),
            },
        ),
        stock(
            "b",
            InventoryEvent::StockCommitted {
                order: order_id("o1"),
                quantity: qty(2),
            },
        ),
    ]);
    events
}

/// `o1_placed`, then cancelled with its holds released.
fn o1_cancelled() -> Vec<Event> {
    let mut events = o1_placed();
    events.extend([
        on_order(
            "o1",
            OrderEvent::OrderCancelled {
                reason: CancelReason::Requested,
            },
        ),
        stock(
            "a",
            InventoryEvent::StockReleased {
                order: order_id("o1"),
                quantity: qty(3),
            },
        ),
        stock(
            "b",
            InventoryEvent::StockReleased {
                order: order_id("o1"),
                quantity: qty(2),
            },
        ),
    ]);
    events
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
        .when(Command::ReceiveStock {
            sku: sku("a"),
            quantity: qty(10),
        })
        .then([received("a", 10)]);
    assert_eq!(stock_of(&state, "a"), (10, 0));

    let state = Scenario::<Tenant>::given([received("a", 10)])
        .when(Command::AdjustStock {
            sku: sku("a"),
            delta: -4,
        })
        .then([stock("a", InventoryEvent::StockAdjusted { delta: -4 })]);
    assert_eq!(stock_of(&state, "a"), (6, 0));
}

#[test]
fn a_stock_rejection_names_the_sku() {
    let rejection = Scenario::<Tenant>::given([received("a", 10)])
        .when(Command::AdjustStock {
            sku: sku("b"),
            delta: 1,
        })
        .then_rejects_with_code("unknown_sku");
    assert_eq!(
        rejection,
        Rejection::Inventory {
            sku: sku("b"),
            rejection: InventoryRejection::UnknownSku,
        }
    );
    assert_eq!(
        rejection.to_string(),
        "SKU b: unknown SKU: it has never been received"
    );
}

#[test]
fn a_count_cannot_take_away_units_held_for_an_order() {
    Scenario::<Tenant>::given(o1_placed())
        .when(Command::AdjustStock {
            sku: sku("a"),
            delta: -8,
        })
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
        .when(order(
            "o1",
            place(vec![line("x", 1, 1), line("a", 1, 1), line("y", 1, 1)]),
        ))
        .then_rejects_with_code("unknown_sku");
    assert_eq!(
        rejection,
        Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::UnknownSku {
                skus: vec![sku("x"), sku("y")],
            },
        }
    );
}

#[test]
fn unknown_skus_are_reported_before_shortages() {
    Scenario::<Tenant>::given([received("a", 1)])
        .when(order("o1", place(vec![line("a", 5, 1), line("x", 1, 1)])))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::UnknownSku {
                skus: vec![sku("x")],
            },
        });
}

#[test]
fn placing_an_order_beyond_the_stock_names_every_short_sku_and_holds_nothing() {
    // b could be held, but the order holds all of its lines or none.
    let given = [received("a", 2), received("b", 10), received("c", 1)];
    let rejection = Scenario::<Tenant>::given(given)
        .when(order(
            "o1",
            place(vec![line("a", 3, 1), line("b", 4, 1), line("c", 2, 1)]),
        ))
        .then_rejects_with_code("insufficient_stock");
    assert_eq!(
        rejection,
        Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::InsufficientStock {
                shortages: vec![
                    Shortage {
                        sku: sku("a"),
                        requested: 3,
                        available: 2,
                    },
                    Shortage {
                        sku: sku("c"),
                        requested: 2,
                        available: 1,
                    },
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
                shortages: vec![Shortage {
                    sku: sku("a"),
                    requested: 8,
                    available: 7,
                }],
            },
        });
}

#[test]
fn an_invalid_order_is_rejected_before_stock_is_looked_at() {
    Scenario::<Tenant>::given([])
        .when(order("o1", place(vec![])))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::EmptyOrder,
        });
    Scenario::<Tenant>::given([])
        .when(order("o1", place(vec![line("x", 1, 0)])))
        .then_rejects_with_code("invalid_unit_price");
    Scenario::<Tenant>::given(o1_placed())
        .when(order("o1", place(vec![line("a", 1, 1)])))
        .then_rejects_with_code("order_exists");
}

// Confirm, ship, deliver.

#[test]
fn confirming_and_delivering_touch_only_the_order() {
    let state = Scenario::<Tenant>::given(o1_placed())
        .when(order(
            "o1",
            OrderCommand::Confirm {
                payment: payment_id("p1"),
            },
        ))
        .then([on_order(
            "o1",
            OrderEvent::OrderConfirmed {
                payment: payment_id("p1"),
            },
        )]);
    assert_eq!(
        stock_of(&state, "a"),
        (10, 3),
        "the holds stay until shipping"
    );

    Scenario::<Tenant>::given(o1_shipped())
        .when(order("o1", OrderCommand::Deliver))
        .then([on_order("o1", OrderEvent::OrderDelivered)]);
}

#[test]
fn shipping_commits_every_hold() {
    let state = Scenario::<Tenant>::given(o1_confirmed())
        .when(order("o1", OrderCommand::Ship))
        .then([
            on_order("o1", OrderEvent::OrderShipped),
            stock(
                "a",
                InventoryEvent::StockCommitted {
                    order: order_id("o1"),
                    quantity: qty(3),
                },
            ),
            stock(
                "b",
                InventoryEvent::StockCommitted {
                    order: order_id("o1"),
                    quantity: qty(2),
                },
            ),
        ]);
    assert_eq!(stock_of(&state, "a"), (7, 0));
    assert_eq!(stock_of(&state, "b"), (3, 0));
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Shipped));
}

#[test]
fn an_unconfirmed_order_does_not_ship() {
    Scenario::<Tenant>::given(o1_placed())
        .when(order("o1", OrderCommand::Ship))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::InvalidTransition {
                status: OrderStatus::Placed,
                command: "ship",
            },
        });
}

// Cancel and expire.

#[test]
fn cancelling_releases_every_hold() {
    for given in [o1_placed(), o1_confirmed()] {
        let state = Scenario::<Tenant>::given(given)
            .when(order(
                "o1",
                OrderCommand::Cancel {
                    reason: CancelReason::PaymentDeclined,
                },
            ))
            .then([
                on_order(
                    "o1",
                    OrderEvent::OrderCancelled {
                        reason: CancelReason::PaymentDeclined,
                    },
                ),
                stock(
                    "a",
                    InventoryEvent::StockReleased {
                        order: order_id("o1"),
                        quantity: qty(3),
                    },
                ),
                stock(
                    "b",
                    InventoryEvent::StockReleased {
                        order: order_id("o1"),
                        quantity: qty(2),
                    },
                ),
            ]);
        assert_eq!(stock_of(&state, "a"), (10, 0));
        assert_eq!(stock_of(&state, "b"), (5, 0));
    }
}

#[test]
fn an_unpaid_order_expires_once_its_hold_ran_out_and_releases_its_stock() {
    let state = Scenario::<Tenant>::given(o1_placed())
        .at(900)
        .when(order("o1", OrderCommand::Expire))
        .then([
            on_order(
                "o1",
                OrderEvent::OrderCancelled {
                    reason: CancelReason::HoldExpired,
                },
            ),
            stock(
                "a",
                InventoryEvent::HoldExpired {
                    order: order_id("o1"),
                    quantity: qty(3),
                },
            ),
            stock(
                "b",
                InventoryEvent::HoldExpired {
                    order: order_id("o1"),
                    quantity: qty(2),
                },
            ),
        ]);
    assert_eq!(status_of(&state, "o1"), Some(OrderStatus::Cancelled));
    assert_eq!(stock_of(&state, "a"), (10, 0));
}

#[test]
fn an_order_does_not_expire_before_its_hold_runs_out() {
    Scenario::<Tenant>::given(o1_placed())
        .at(899)
        .when(order("o1", OrderCommand::Expire))
        .then_rejects(Rejection::Order {
            order: order_id("o1"),
            rejection: OrderRejection::HoldNotExpired {
                expires_at: Timestamp(900),
                now: Timestamp(899),
            },
        });
}

#[test]
fn the_hold_time_to_live_comes_from_the_context() {
    let given = [received("a", 1)];
    Scenario::<Tenant>::given(given)
        .at(10)
        .with_hold_ttl(0)
        .when(order("o1", place(vec![line("a", 1, 1)])))
        .then([
            on_order("o1", placed(vec![line("a", 1, 1)], 1, 10)),
            held("a", "o1", 1, 10),
        ]);
}

#[test]
fn only_a_placed_order_expires() {
    for (given, status) in [
        (o1_confirmed(), OrderStatus::Confirmed),
        (o1_shipped(), OrderStatus::Shipped),
        (o1_cancelled(), OrderStatus::Cancelled),
    ] {
        Scenario::<Tenant>::given(given)
            .at(1_000_000)
            .when(order("o1", OrderCommand::Expire))
            .then_rejects(Rejection::Order {
                order: order_id("o1"),
                rejection: OrderRejection::InvalidTransition {
                    status,
                    command: "expire",
                },
            });
    }
}

#[test]
fn a_cancelled_order_cannot_ship_and_a_shipped_one_cannot_be_cancelled() {
    let rejection = Scenario::<Tenant>::given(o1_cancelled())
        .when(order("o1", OrderCommand::Ship))
        .then_rejects_with_code("invalid_transition");
    assert_eq!(
        rejection.to_string(),
        "order o1: cannot ship an order that is cancelled"
    );
    Scenario::<Tenant>::given(o1_shipped())
        .when(order(
            "o1",
            OrderCommand::Cancel {
                reason: CancelReason::Requested,
            },
        ))
        .then_rejects_with_code("invalid_transition");
}

#[test]
fn a_command_on_an_unknown_order_names_the_order() {
    Scenario::<Tenant>::given(o1_placed())
        .when(order("o9", OrderCommand::Ship))
        .then_rejects(Rejection::Order {
            order: order_id("o9"),
            rejection: OrderRejection::UnknownOrder,
        });
}

#[test]
fn refunding_an_order_touches_only_the_order() {
    let state = Scenario::<Tenant>::given(o1_shipped())
        .when(order("o1", OrderCommand::Refund { amount: eur(150) }))
        .then([on_order("o1", OrderEvent::OrderRefunded { amount: 150 })]);
    assert_eq!(
        state.order(&order_id("o1")).unwrap().refunded(),
        Some(eur(150))
    );
    assert_eq!(stock_of(&state, "a"), (7, 0));
}

// Payments.

#[test]
fn a_payment_is_authorized_or_declined_for_an_existing_order() {
    let state = Scenario::<Tenant>::given(o1_placed())
        .when(payment("p1", authorize("o1", eur(400))))
        .then([on_payment(
            "p1",
            PaymentEvent::PaymentAuthorized {
                order: order_id("o1"),
                amount: eur(400),
                gateway: gateway("g1"),
            },
        )]);
    let p1 = state.payment(&payment_id("p1")).unwrap();
    assert_eq!(p1.status(), Some(PaymentStatus::Authorized));
    assert_eq!(p1.order(), Some(&order_id("o1")));

    Scenario::<Tenant>::given(o1_placed())
        .when(payment("p1", decline("o1", eur(400))))
        .then([on_payment(
            "p1",
            PaymentEvent::PaymentDeclined {
                order: order_id("o1"),
                amount: eur(400),
                gateway: gateway("g1"),
                reason: DeclineReason::GatewayUnavailable,
            },
        )]);
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
                rejection: PaymentRejection::UnknownOrder {
                    order: order_id("o9"),
                },
            }
        );
    }
}

#[test]
fn a_payment_is_in_the_order_s_currency() {
    for command in [authorize("o1", usd(400)), decline("o1", usd(400))] {
        Scenario::<Tenant>::given(o1_placed())
            .when(payment("p1", command))
            .then_rejects(Rejection::Payment {
                payment: payment_id("p1"),
                rejection: PaymentRejection::CurrencyMismatch {
                    expected: currency("EUR"),
                    got: currency("USD"),
                },
            });
    }
}

#[test]
fn a_capture_never_exceeds_the_authorization() {
    let rejection = Scenario::<Tenant>::given(o1_confirmed())
        .when(payment("p1", PaymentCommand::Capture { amount: eur(401) }))
        .then_rejects_with_code("capture_exceeds_authorized");
    assert_eq!(
        rejection,
        Rejection::Payment {
            payment: payment_id("p1"),
            rejection: PaymentRejection::CaptureExceedsAuthorized {
                requested: 401,
                authorized: 400,
            },
        }
    );
    Scenario::<Tenant>::given(o1_confirmed())
        .when(payment("p1", PaymentCommand::Capture { amount: eur(400) }))
        .then([on_payment(
            "p1",
            PaymentEvent::PaymentCaptured { amount: 400 },
        )]);
}

#[test]
fn a_refund_never_exceeds_the_capture() {
    Scenario::<Tenant>::given(o1_shipped())
        .when(payment("p1", PaymentCommand::Refund { amount: eur(401) }))
        .then_rejects(Rejection::Payment {
            payment: payment_id("p1"),
            rejection: PaymentRejection::RefundExceedsCaptured {
                requested: 401,
                refundable: 400,
            },
        });
    let state = Scenario::<Tenant>::given(o1_shipped())
        .when(payment("p1", PaymentCommand::Refund { amount: eur(400) }))
        .then([on_payment(
            "p1",
            PaymentEvent::PaymentRefunded { amount: 400 },
        )]);
    let p1 = state.payment(&payment_id("p1")).unwrap();
    assert_eq!(p1.refunded(), p1.captured());
}

#[test]
fn an_authorization_is_voided_only_before_capture() {
    Scenario::<Tenant>::given(o1_confirmed())
        .when(payment("p1", PaymentCommand::Void))
        .then([on_payment("p1", PaymentEvent::PaymentVoided)]);
    Scenario::<Tenant>::given(o1_shipped())
        .when(payment("p1", PaymentCommand::Void))
        .then_rejects(Rejection::Payment {
            payment: payment_id("p1"),
            rejection: PaymentRejection::InvalidTransition {
                status: PaymentStatus::Captured,
                command: "void",
            },
        });
}

#[test]
fn a_payment_id_is_used_once_even_for_another_order() {
    let mut given = o1_confirmed();
    given.extend([
        received("c", 1),
        on_order("o2", placed(vec![line("c", 1, 400)], 400, 900)),
        held("c", "o2", 1, 900),
    ]);
    Scenario::<Tenant>::given(given)
        .when(payment("p1", authorize("o2", eur(400))))
        .then_rejects(Rejection::Payment {
            payment: payment_id("p1"),
            rejection: PaymentRejection::PaymentExists,
        });
}

#[test]
fn a_command_on_an_unknown_payment_names_the_payment() {
    let rejection = Scenario::<Tenant>::given(o1_confirmed())
        .when(payment("p9", PaymentCommand::Capture { amount: eur(1) }))
        .then_rejects_with_code("unknown_payment");
    assert_eq!(rejection.to_string(), "payment p9: unknown payment");
}

// The envelope.

#[test]
fn an_envelope_decides_at_its_admission_time_with_the_default_policy() {
    let command = Command::ReceiveStock {
        sku: sku("a"),
        quantity: qty(1),
    };
    let tenant = TenantId::new("t1").unwrap();
    let envelope = Envelope::new(tenant.clone(), command.clone());
    assert_eq!(envelope.tenant, tenant);
    assert_eq!(envelope.idempotency_key, None);
    assert_eq!(envelope.admitted_at, Timestamp(0));
    assert_eq!(envelope.command, command);

    let key = IdempotencyKey::new("k-1").unwrap();
    let envelope = Envelope {
        admitted_at: Timestamp(42),
        ..envelope.with_key(key.clone())
    };
    assert_eq!(envelope.idempotency_key, Some(key));
    let ctx = envelope.context();
    assert_eq!(
        (ctx.now, ctx.hold_ttl_ms),
        (Timestamp(42), DEFAULT_HOLD_TTL_MS)
    );
}
