//! One order on its own: placing validates the lines and fixes the total and the hold expiry,
//! then the order moves placed → confirmed → shipped → delivered (or cancelled before shipping,
//! or expired while unpaid, by `expire` or by a cancel for `hold_expired`, once the hold ran out),
//! refunds never exceed the total, every other move is an `invalid_transition`, and applying an
//! event the order's status cannot take is a bug that panics.

use std::panic;

use orderly_core::domain::limits::{
    DEFAULT_HOLD_TTL_MS, MAX_AMOUNT, MAX_LINES_PER_ORDER, MAX_QUANTITY, MAX_UNIT_PRICE,
};
use orderly_core::domain::{
    CancelReason, Decider, Order, OrderCommand as C, OrderEvent as E, OrderLine,
    OrderRejection as R, OrderState, OrderStatus as S, Shortage, Timestamp,
};

use super::fixtures::{currency, eur, line, payment_id, place, placed, qty, sku, usd};
use super::harness::Scenario;

/// An order of 2 × a at 500 and 1 × b at 250 (total 1250 EUR), held until 900.
fn a_placed_order() -> E {
    placed(vec![line("a", 2, 500), line("b", 1, 250)], 1250, 900)
}

fn confirmed() -> E {
    E::OrderConfirmed { payment: payment_id("p1") }
}

/// The history that leaves an order in `status`.
fn history(status: S) -> Vec<E> {
    let cancelled = E::OrderCancelled { reason: CancelReason::Requested };
    match status {
        S::Placed => vec![a_placed_order()],
        S::Confirmed => vec![a_placed_order(), confirmed()],
        S::Shipped => vec![a_placed_order(), confirmed(), E::OrderShipped],
        S::Delivered => vec![a_placed_order(), confirmed(), E::OrderShipped, E::OrderDelivered],
        S::Cancelled => vec![a_placed_order(), cancelled],
    }
}

/// `count` lines of distinct SKUs, one unit each at `unit_price`.
fn lines(count: usize, units: u64, unit_price: u64) -> Vec<OrderLine> {
    (0..count).map(|i| line(&format!("sku-{i}"), units, unit_price)).collect()
}

// Place.

#[test]
fn placing_records_the_lines_the_total_and_when_the_hold_runs_out() {
    let state = Scenario::<Order>::given([])
        .at(100)
        .when(place(vec![line("a", 2, 500), line("b", 1, 250)]))
        .then([placed(
            vec![line("a", 2, 500), line("b", 1, 250)],
            1250,
            100 + DEFAULT_HOLD_TTL_MS,
        )]);
    assert_eq!(state.status(), Some(S::Placed));
    assert_eq!(state.lines(), [line("a", 2, 500), line("b", 1, 250)]);
    assert_eq!(state.total(), Some(eur(1250)));
    assert_eq!(state.refunded(), Some(eur(0)));
    assert_eq!(state.hold_expires_at(), Some(Timestamp(100 + DEFAULT_HOLD_TTL_MS)));
    assert_eq!(state.payment(), None);
}

#[test]
fn the_hold_runs_out_after_the_context_s_time_to_live() {
    Scenario::<Order>::given([])
        .at(100)
        .with_hold_ttl(5)
        .when(place(vec![line("a", 1, 1)]))
        .then([placed(vec![line("a", 1, 1)], 1, 105)]);
    Scenario::<Order>::given([])
        .at(u64::MAX - 1)
        .when(place(vec![line("a", 1, 1)]))
        .then([placed(vec![line("a", 1, 1)], 1, u64::MAX)]);
}

#[test]
fn an_order_that_was_never_placed_reads_as_empty() {
    let state = OrderState::default();
    assert_eq!(state.status(), None);
    assert!(state.lines().is_empty());
    assert_eq!((state.total(), state.refunded(), state.hold_expires_at()), (None, None, None));
    assert_eq!(state.payment(), None);
}

#[test]
fn an_order_needs_at_least_one_line() {
    Scenario::<Order>::given([]).when(place(vec![])).then_rejects(R::EmptyOrder);
}

#[test]
fn an_order_has_at_most_max_lines_per_order_lines() {
    Scenario::<Order>::given([]).when(place(lines(MAX_LINES_PER_ORDER, 1, 1))).then([placed(
        lines(MAX_LINES_PER_ORDER, 1, 1),
        50,
        DEFAULT_HOLD_TTL_MS,
    )]);
    Scenario::<Order>::given([])
        .when(place(lines(MAX_LINES_PER_ORDER + 1, 1, 1)))
        .then_rejects(R::TooManyLines { count: MAX_LINES_PER_ORDER + 1 });
}

#[test]
fn an_order_names_each_sku_once() {
    Scenario::<Order>::given([])
        .when(place(vec![line("a", 1, 1), line("b", 1, 1), line("a", 2, 1)]))
        .then_rejects(R::DuplicateSku { sku: sku("a") });
}

#[test]
fn a_unit_price_is_one_to_max_unit_price() {
    Scenario::<Order>::given([])
        .when(place(vec![line("a", 1, 1), line("b", 1, MAX_UNIT_PRICE)]))
        .then([placed(
            vec![line("a", 1, 1), line("b", 1, MAX_UNIT_PRICE)],
            MAX_UNIT_PRICE + 1,
            DEFAULT_HOLD_TTL_MS,
        )]);
    for unit_price in [0, MAX_UNIT_PRICE + 1] {
        Scenario::<Order>::given([])
            .when(place(vec![line("a", 1, 1), line("b", 1, unit_price)]))
            .then_rejects(R::InvalidUnitPrice { sku: sku("b"), unit_price });
    }
}

#[test]
fn an_order_total_is_at_most_max_amount() {
    // 10 000 units at the highest unit price come to exactly the limit.
    let units = MAX_AMOUNT / MAX_UNIT_PRICE;
    assert_eq!(units * MAX_UNIT_PRICE, MAX_AMOUNT, "the scenario assumes this");
    Scenario::<Order>::given([])
        .when(place(vec![line("a", units, MAX_UNIT_PRICE)]))
        .then([placed(vec![line("a", units, MAX_UNIT_PRICE)], MAX_AMOUNT, DEFAULT_HOLD_TTL_MS)]);
    Scenario::<Order>::given([])
        .when(place(vec![line("a", units, MAX_UNIT_PRICE), line("b", 1, 1)]))
        .then_rejects(R::AmountTooLarge { total: MAX_AMOUNT + 1 });
    // One line of the largest quantity at the highest price is already beyond it.
    Scenario::<Order>::given([])
        .when(place(vec![line("a", u64::from(MAX_QUANTITY), MAX_UNIT_PRICE)]))
        .then_rejects(R::AmountTooLarge { total: u64::from(MAX_QUANTITY) * MAX_UNIT_PRICE });
}

#[test]
fn the_largest_possible_order_does_not_overflow_its_total() {
    let largest = lines(MAX_LINES_PER_ORDER, u64::from(MAX_QUANTITY), MAX_UNIT_PRICE);
    Scenario::<Order>::given([])
        .when(place(largest))
        .then_rejects(R::AmountTooLarge { total: 5_000_000_000_000_000_000 });
}

#[test]
fn an_order_is_placed_once() {
    for status in [S::Placed, S::Confirmed, S::Shipped, S::Delivered, S::Cancelled] {
        Scenario::<Order>::given(history(status))
            .when(place(vec![line("c", 1, 1)]))
            .then_rejects(R::OrderExists);
    }
}

#[test]
fn a_command_on_an_order_never_placed_is_rejected_as_unknown() {
    let commands = [
        C::Confirm { payment: payment_id("p1") },
        C::Ship,
        C::Deliver,
        C::Cancel { reason: CancelReason::Requested },
        C::Refund { amount: eur(1) },
        C::Expire,
    ];
    for command in commands {
        Scenario::<Order>::given([]).when(command).then_rejects(R::UnknownOrder);
    }
}

// The happy path.

#[test]
fn confirming_records_the_payment() {
    let state = Scenario::<Order>::given(history(S::Placed))
        .when(C::Confirm { payment: payment_id("p1") })
        .then([confirmed()]);
    assert_eq!(state.status(), Some(S::Confirmed));
    assert_eq!(state.payment(), Some(&payment_id("p1")));
}

#[test]
fn a_confirmed_order_ships_and_a_shipped_one_is_delivered() {
    let state =
        Scenario::<Order>::given(history(S::Confirmed)).when(C::Ship).then([E::OrderShipped]);
    assert_eq!(state.status(), Some(S::Shipped));
    assert!(state.lines().is_empty(), "shipped lines hold no stock and are let go");
    assert_eq!(state.total(), Some(eur(1250)), "the total stays for refunds");

    let state =
        Scenario::<Order>::given(history(S::Shipped)).when(C::Deliver).then([E::OrderDelivered]);
    assert_eq!(state.status(), Some(S::Delivered));
    assert_eq!(state.payment(), Some(&payment_id("p1")));
}

#[test]
fn an_order_is_cancelled_before_it_ships() {
    let cases = [
        (S::Placed, CancelReason::Requested),
        (S::Placed, CancelReason::PaymentDeclined),
        (S::Confirmed, CancelReason::Requested),
    ];
    for (status, reason) in cases {
        let state = Scenario::<Order>::given(history(status))
            .when(C::Cancel { reason })
            .then([E::OrderCancelled { reason }]);
        assert_eq!(state.status(), Some(S::Cancelled));
        assert!(state.lines().is_empty(), "cancelled lines hold no stock and are let go");
    }
}

#[test]
fn a_confirmed_order_was_paid_so_it_cannot_be_cancelled_for_a_declined_payment() {
    Scenario::<Order>::given(history(S::Confirmed))
        .when(C::Cancel { reason: CancelReason::PaymentDeclined })
        .then_rejects(R::InvalidTransition { status: S::Confirmed, command: "cancel" });
}

// Expire: `expire`, or a cancel for `hold_expired`, which means exactly the same.

/// The two commands that expire an unpaid order.
fn expiring_commands() -> [C; 2] {
    [C::Expire, C::Cancel { reason: CancelReason::HoldExpired }]
}

#[test]
fn an_unpaid_order_expires_from_its_hold_expiry_on() {
    for command in expiring_commands() {
        for now in [900, 901] {
            let state = Scenario::<Order>::given(history(S::Placed))
                .at(now)
                .when(command.clone())
                .then([E::OrderCancelled { reason: CancelReason::HoldExpired }]);
            assert_eq!(state.status(), Some(S::Cancelled));
        }
    }
}

#[test]
fn an_order_cannot_expire_before_its_hold_runs_out() {
    for command in expiring_commands() {
        Scenario::<Order>::given(history(S::Placed))
            .at(899)
            .when(command)
            .then_rejects(R::HoldNotExpired { expires_at: Timestamp(900), now: Timestamp(899) });
    }
}

#[test]
fn only_a_placed_order_expires() {
    // A confirmed order was paid in time: its hold no longer runs out.
    for status in [S::Confirmed, S::Shipped, S::Delivered, S::Cancelled] {
        for command in expiring_commands() {
            Scenario::<Order>::given(history(status))
                .at(1_000_000)
                .when(command.clone())
                .then_rejects(R::InvalidTransition { status, command: command.name() });
        }
    }
}

// Refund.

#[test]
fn a_shipped_or_delivered_order_is_refunded_in_parts_up_to_its_total() {
    for status in [S::Shipped, S::Delivered] {
        let state = Scenario::<Order>::given(history(status))
            .when(C::Refund { amount: eur(1000) })
            .then([E::OrderRefunded { amount: 1000 }]);
        assert_eq!(state.refunded(), Some(eur(1000)));
        assert_eq!(state.status(), Some(status), "a refund keeps the status");

        let mut given = history(status);
        given.push(E::OrderRefunded { amount: 1000 });
        let state = Scenario::<Order>::given(given)
            .when(C::Refund { amount: eur(250) })
            .then([E::OrderRefunded { amount: 250 }]);
        assert_eq!(state.refunded(), state.total());
    }
}

#[test]
fn a_refund_beyond_what_is_left_is_rejected() {
    Scenario::<Order>::given(history(S::Shipped))
        .when(C::Refund { amount: eur(1251) })
        .then_rejects(R::RefundExceedsCaptured { requested: 1251, refundable: 1250 });

    let mut given = history(S::Delivered);
    given.push(E::OrderRefunded { amount: 1000 });
    Scenario::<Order>::given(given)
        .when(C::Refund { amount: eur(251) })
        .then_rejects(R::RefundExceedsCaptured { requested: 251, refundable: 250 });
}

#[test]
fn a_refund_of_nothing_is_rejected() {
    Scenario::<Order>::given(history(S::Shipped))
        .when(C::Refund { amount: eur(0) })
        .then_rejects(R::InvalidAmount);
}

#[test]
fn a_refund_is_in_the_order_s_currency() {
    Scenario::<Order>::given(history(S::Shipped))
        .when(C::Refund { amount: usd(10) })
        .then_rejects(R::CurrencyMismatch { expected: currency("EUR"), got: currency("USD") });
}

// Everything else.

#[test]
fn every_other_move_is_an_invalid_transition() {
    let cancel = C::Cancel { reason: CancelReason::Requested };
    let expire_by_cancel = C::Cancel { reason: CancelReason::HoldExpired };
    let confirm = C::Confirm { payment: payment_id("p2") };
    let refund = C::Refund { amount: eur(1) };
    let invalid: [(S, &[C]); 5] = [
        (S::Placed, &[C::Ship, C::Deliver, refund.clone()]),
        (S::Confirmed, &[confirm.clone(), C::Deliver, refund.clone(), C::Expire, expire_by_cancel]),
        (S::Shipped, &[confirm.clone(), C::Ship, cancel.clone(), C::Expire]),
        (S::Delivered, &[confirm.clone(), C::Ship, C::Deliver, cancel.clone(), C::Expire]),
        (S::Cancelled, &[confirm, C::Ship, C::Deliver, cancel, refund, C::Expire]),
    ];
    for (status, commands) in invalid {
        for command in commands {
            let rejection = Scenario::<Order>::given(history(status))
                .at(1_000_000)
                .when(command.clone())
                .then_rejects_with_code("invalid_transition");
            assert_eq!(rejection, R::InvalidTransition { status, command: command.name() });
        }
    }
}

#[test]
fn a_cancelled_order_cannot_be_shipped() {
    let rejection = Scenario::<Order>::given(history(S::Cancelled))
        .when(C::Ship)
        .then_rejects_with_code("invalid_transition");
    assert_eq!(rejection.to_string(), "cannot ship an order that is cancelled");
}

#[test]
fn command_and_status_names_are_stable() {
    let names = [
        (place(vec![]).name(), "place"),
        (C::Confirm { payment: payment_id("p") }.name(), "confirm"),
        (C::Ship.name(), "ship"),
        (C::Deliver.name(), "deliver"),
        (C::Cancel { reason: CancelReason::Requested }.name(), "cancel"),
        (C::Refund { amount: eur(1) }.name(), "refund"),
        (C::Expire.name(), "expire"),
        (S::Placed.as_str(), "placed"),
        (S::Confirmed.as_str(), "confirmed"),
        (S::Shipped.as_str(), "shipped"),
        (S::Delivered.as_str(), "delivered"),
        (S::Cancelled.as_str(), "cancelled"),
    ];
    for (name, expected) in names {
        assert_eq!(name, expected);
    }
    assert_eq!(S::Shipped.to_string(), "shipped");
}

#[test]
fn a_line_amount_is_quantity_times_unit_price() {
    assert_eq!(line("a", 3, 700).amount(), 2100);
    let largest = OrderLine {
        sku: sku("a"),
        quantity: qty(u64::from(MAX_QUANTITY)),
        unit_price: MAX_UNIT_PRICE,
    };
    assert_eq!(largest.amount(), 100_000_000_000_000_000);
}

#[test]
fn order_rejection_codes_are_stable() {
    let codes = [
        (R::UnknownOrder, "unknown_order"),
        (R::OrderExists, "order_exists"),
        (R::EmptyOrder, "empty_order"),
        (R::TooManyLines { count: 51 }, "too_many_lines"),
        (R::DuplicateSku { sku: sku("a") }, "duplicate_sku"),
        (R::InvalidUnitPrice { sku: sku("a"), unit_price: 0 }, "invalid_unit_price"),
        (R::AmountTooLarge { total: 0 }, "amount_too_large"),
        (R::UnknownSku { skus: vec![] }, "unknown_sku"),
        (R::InsufficientStock { shortages: vec![] }, "insufficient_stock"),
        (R::InvalidTransition { status: S::Placed, command: "ship" }, "invalid_transition"),
        (R::HoldNotExpired { expires_at: Timestamp(1), now: Timestamp(0) }, "hold_not_expired"),
        (R::PaymentNotAuthorized { payment: payment_id("p1") }, "payment_not_authorized"),
        (R::InvalidAmount, "invalid_amount"),
        (
            R::CurrencyMismatch { expected: currency("EUR"), got: currency("USD") },
            "currency_mismatch",
        ),
        (R::RefundExceedsCaptured { requested: 2, refundable: 1 }, "refund_exceeds_captured"),
    ];
    for (rejection, code) in codes {
        assert_eq!(rejection.code(), code, "{rejection:?}");
    }
}

#[test]
fn a_shortage_rejection_names_every_short_sku() {
    let rejection = R::InsufficientStock {
        shortages: vec![
            Shortage { sku: sku("a"), requested: 3, available: 2 },
            Shortage { sku: sku("c"), requested: 2, available: 0 },
        ],
    };
    assert_eq!(rejection.to_string(), "insufficient stock for a, c");
}

// Evolve.

#[test]
#[should_panic(expected = "an order that is cancelled cannot take OrderShipped")]
fn evolving_an_impossible_event_is_a_bug_that_panics() {
    // Only a log that skipped or reordered events could ship a cancelled order.
    Scenario::<Order>::given(history(S::Cancelled).into_iter().chain([E::OrderShipped]));
}

#[test]
fn every_event_a_status_cannot_take_panics() {
    let placed = a_placed_order();
    let cancelled = E::OrderCancelled { reason: CancelReason::Requested };
    let refunded = E::OrderRefunded { amount: 1 };
    // What each status cannot take; what it can take is in the histories above.
    let impossible: [(S, &[E]); 5] = [
        (S::Placed, &[placed.clone(), E::OrderShipped, E::OrderDelivered, refunded.clone()]),
        (S::Confirmed, &[placed.clone(), confirmed(), E::OrderDelivered, refunded.clone()]),
        (S::Shipped, &[placed.clone(), confirmed(), E::OrderShipped, cancelled.clone()]),
        (
            S::Delivered,
            &[placed.clone(), confirmed(), E::OrderShipped, E::OrderDelivered, cancelled.clone()],
        ),
        (
            S::Cancelled,
            &[placed, confirmed(), E::OrderShipped, E::OrderDelivered, cancelled, refunded],
        ),
    ];
    for (status, events) in impossible {
        for event in events {
            let mut state = OrderState::default();
            history(status).iter().for_each(|e| Order::evolve(&mut state, e));
            let applied = panic::catch_unwind(move || Order::evolve(&mut state, event));
            assert!(applied.is_err(), "an order that is {status} took {event:?}");
        }
    }
}

#[test]
fn an_order_never_placed_takes_nothing_but_its_placing() {
    let events = [
        confirmed(),
        E::OrderShipped,
        E::OrderDelivered,
        E::OrderCancelled { reason: CancelReason::Requested },
        E::OrderRefunded { amount: 1 },
    ];
    for event in events {
        let applied = panic::catch_unwind(|| Order::evolve(&mut OrderState::default(), &event));
        assert!(applied.is_err(), "an order never placed took {event:?}");
    }
}

#[test]
#[should_panic(expected = "refunds never exceed the total")]
fn evolving_a_refund_beyond_the_total_is_a_bug_that_panics() {
    let mut given = history(S::Delivered);
    given.extend([E::OrderRefunded { amount: 1000 }, E::OrderRefunded { amount: 251 }]);
    Scenario::<Order>::given(given);
}
