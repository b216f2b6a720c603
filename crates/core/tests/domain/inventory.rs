//! The inventory of one SKU: receipts and counts change on hand, holds reserve units for an
//! order until they are committed (shipped), released (cancelled) or expired, and `reserved`
//! never exceeds `on_hand`. The SKU keeps the sum and count of its holds; which order holds
//! what is the order's (see `tenant.rs`).

use orderly_core::domain::limits::{MAX_ON_HAND, MAX_QUANTITY};
use orderly_core::domain::{
    Inventory, InventoryCommand as C, InventoryEvent as E, InventoryRejection as R, Timestamp,
};

use super::fixtures::{order_id, qty};
use super::harness::Scenario;

fn received(units: u64) -> E {
    E::StockReceived { quantity: qty(units) }
}

fn held(order: &str, units: u64, expires_at: u64) -> E {
    E::StockHeld { order: order_id(order), quantity: qty(units), expires_at: Timestamp(expires_at) }
}

fn hold(order: &str, units: u64, expires_at: u64) -> C {
    C::Hold { order: order_id(order), quantity: qty(units), expires_at: Timestamp(expires_at) }
}

/// On hand at exactly `MAX_ON_HAND`, reached by receipts of `MAX_QUANTITY`.
fn full_stock() -> impl Iterator<Item = E> {
    let receipts = MAX_ON_HAND / u64::from(MAX_QUANTITY);
    assert_eq!(receipts * u64::from(MAX_QUANTITY), MAX_ON_HAND);
    (0..receipts).map(|_| received(u64::from(MAX_QUANTITY)))
}

// Receive.

#[test]
fn receiving_adds_to_on_hand_and_makes_the_sku_known() {
    let state = Scenario::<Inventory>::given([])
        .when(C::Receive { quantity: qty(10) })
        .then([received(10)]);
    assert!(state.is_known());
    assert_eq!(state.on_hand(), 10);
    assert_eq!(state.available(), 10);

    let state = Scenario::<Inventory>::given([received(10)])
        .when(C::Receive { quantity: qty(5) })
        .then([received(5)]);
    assert_eq!(state.on_hand(), 15);
}

#[test]
fn receiving_up_to_the_on_hand_limit_is_accepted_and_beyond_it_rejected() {
    let state = Scenario::<Inventory>::given(full_stock().skip(1))
        .when(C::Receive { quantity: qty(u64::from(MAX_QUANTITY)) })
        .then([received(u64::from(MAX_QUANTITY))]);
    assert_eq!(state.on_hand(), MAX_ON_HAND);

    Scenario::<Inventory>::given(full_stock())
        .when(C::Receive { quantity: qty(1) })
        .then_rejects(R::StockLimitExceeded);
}

// Adjust.

#[test]
fn a_count_corrects_on_hand_up_or_down() {
    let state = Scenario::<Inventory>::given([received(10)])
        .when(C::Adjust { delta: 3 })
        .then([E::StockAdjusted { delta: 3 }]);
    assert_eq!(state.on_hand(), 13);

    let state = Scenario::<Inventory>::given([received(10)])
        .when(C::Adjust { delta: -10 })
        .then([E::StockAdjusted { delta: -10 }]);
    assert_eq!(state.on_hand(), 0);
    assert!(state.is_known(), "a SKU counted down to zero stays known");
}

#[test]
fn a_count_may_take_on_hand_down_to_what_is_reserved() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 4, 100)])
        .when(C::Adjust { delta: -6 })
        .then([E::StockAdjusted { delta: -6 }]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (4, 4, 0));
}

#[test]
fn a_count_below_what_is_reserved_is_rejected() {
    Scenario::<Inventory>::given([received(10), held("o1", 4, 100)])
        .when(C::Adjust { delta: -7 })
        .then_rejects(R::AdjustmentBelowReserved { delta: -7, on_hand: 10, reserved: 4 });
}

#[test]
fn a_count_below_zero_is_rejected_as_below_reserved() {
    // With nothing reserved, "below reserved" means "below zero".
    Scenario::<Inventory>::given([received(3)])
        .when(C::Adjust { delta: -4 })
        .then_rejects(R::AdjustmentBelowReserved { delta: -4, on_hand: 3, reserved: 0 });
}

#[test]
fn a_count_of_zero_or_beyond_max_quantity_either_way_is_invalid() {
    let max = i64::from(MAX_QUANTITY);
    for delta in [0, max + 1, -(max + 1), i64::MAX, i64::MIN] {
        Scenario::<Inventory>::given([received(10)])
            .when(C::Adjust { delta })
            .then_rejects(R::InvalidAdjustment { delta });
    }
    for delta in [max, -max] {
        Scenario::<Inventory>::given([received(u64::from(MAX_QUANTITY))])
            .when(C::Adjust { delta })
            .then([E::StockAdjusted { delta }]);
    }
}

#[test]
fn a_count_of_an_unknown_sku_is_rejected_after_checking_the_delta() {
    Scenario::<Inventory>::given([]).when(C::Adjust { delta: 5 }).then_rejects(R::UnknownSku);
    // The delta is checked first: a malformed command is malformed whatever the state.
    Scenario::<Inventory>::given([])
        .when(C::Adjust { delta: 0 })
        .then_rejects(R::InvalidAdjustment { delta: 0 });
}

#[test]
fn a_count_above_the_on_hand_limit_is_rejected() {
    Scenario::<Inventory>::given(full_stock())
        .when(C::Adjust { delta: 1 })
        .then_rejects(R::StockLimitExceeded);
}

// Hold.

#[test]
fn a_hold_reserves_units_for_an_order() {
    let state = Scenario::<Inventory>::given([received(10)])
        .when(hold("o1", 7, 900))
        .then([held("o1", 7, 900)]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (10, 7, 3));
    assert_eq!(state.open_holds(), 1);
}

#[test]
fn a_hold_may_take_everything_available() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(hold("o2", 3, 900))
        .then([held("o2", 3, 900)]);
    assert_eq!((state.reserved(), state.available(), state.open_holds()), (10, 0, 2));
}

#[test]
fn a_hold_beyond_what_is_available_is_rejected_with_both_numbers() {
    Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(hold("o2", 4, 900))
        .then_rejects(R::InsufficientStock { requested: 4, available: 3 });
}

#[test]
fn a_hold_on_an_unknown_sku_is_rejected() {
    Scenario::<Inventory>::given([]).when(hold("o1", 1, 900)).then_rejects(R::UnknownSku);
}

// Commit, release, expire.

#[test]
fn committing_a_hold_takes_its_units_out_of_stock() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(C::Commit { order: order_id("o1"), quantity: qty(7) })
        .then([E::StockCommitted { order: order_id("o1"), quantity: qty(7) }]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (3, 0, 3));
    assert_eq!(state.open_holds(), 0);
}

#[test]
fn releasing_a_hold_makes_its_units_available_again() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(C::Release { order: order_id("o1"), quantity: qty(7) })
        .then([E::StockReleased { order: order_id("o1"), quantity: qty(7) }]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (10, 0, 10));
    assert_eq!(state.open_holds(), 0);
}

#[test]
fn an_expired_hold_makes_its_units_available_again() {
    let state =
        Scenario::<Inventory>::given([received(10), held("o1", 7, 900), held("o2", 2, 900)])
            .when(C::Expire { order: order_id("o1"), quantity: qty(7) })
            .then([E::HoldExpired { order: order_id("o1"), quantity: qty(7) }]);
    assert_eq!((state.on_hand(), state.reserved(), state.open_holds()), (10, 2, 1));
}

#[test]
fn a_hold_larger_than_what_is_held_cannot_be_closed() {
    let o1 = || order_id("o1");
    let commands = [
        C::Commit { order: o1(), quantity: qty(3) },
        C::Release { order: o1(), quantity: qty(3) },
        C::Expire { order: o1(), quantity: qty(3) },
    ];
    for command in &commands {
        // Nothing held ever, 2 units held, and a hold of 3 already closed by each event.
        let histories = [
            (vec![received(10)], 0),
            (vec![received(10), held("o2", 2, 0)], 2),
            (vec![received(10), held("o1", 3, 0), commands_event(&commands[0])], 0),
            (vec![received(10), held("o1", 3, 0), commands_event(&commands[1])], 0),
            (vec![received(10), held("o1", 3, 0), commands_event(&commands[2])], 0),
        ];
        for (history, reserved) in histories {
            Scenario::<Inventory>::given(history)
                .when(command.clone())
                .then_rejects(R::HoldExceedsReserved { order: o1(), quantity: 3, reserved });
        }
    }
}

#[test]
fn the_sku_cannot_tell_which_order_holds_what() {
    // The trade-off of keeping only the sum and count of holds: a close within what is held
    // is accepted whoever presents it. `tenant` lets only an order that holds the SKU close
    // it (tests/domain/tenant.rs), and reconcile books each order's holds from the log.
    let state = Scenario::<Inventory>::given([received(10), held("o1", 3, 900)])
        .when(C::Release { order: order_id("o2"), quantity: qty(3) })
        .then([E::StockReleased { order: order_id("o2"), quantity: qty(3) }]);
    assert_eq!((state.reserved(), state.open_holds()), (0, 0));
}

/// The event that `command`, accepted, records.
fn commands_event(command: &C) -> E {
    match command.clone() {
        C::Commit { order, quantity } => E::StockCommitted { order, quantity },
        C::Release { order, quantity } => E::StockReleased { order, quantity },
        C::Expire { order, quantity } => E::HoldExpired { order, quantity },
        other => panic!("{other:?} closes no hold"),
    }
}

#[test]
fn inventory_rejection_codes_are_stable() {
    let o1 = order_id("o1");
    let codes = [
        (R::UnknownSku, "unknown_sku"),
        (R::InsufficientStock { requested: 2, available: 1 }, "insufficient_stock"),
        (R::InvalidAdjustment { delta: 0 }, "invalid_adjustment"),
        (
            R::AdjustmentBelowReserved { delta: -1, on_hand: 0, reserved: 0 },
            "adjustment_below_reserved",
        ),
        (R::StockLimitExceeded, "stock_limit_exceeded"),
        (R::HoldExceedsReserved { order: o1, quantity: 2, reserved: 1 }, "hold_exceeds_reserved"),
    ];
    for (rejection, code) in codes {
        assert_eq!(rejection.code(), code, "{rejection:?}");
    }
}

#[test]
fn inventory_rejections_explain_themselves() {
    let rejection = R::InsufficientStock { requested: 4, available: 3 };
    assert_eq!(rejection.to_string(), "insufficient stock: requested 4, available 3");
    let rejection = R::HoldExceedsReserved { order: order_id("o1"), quantity: 3, reserved: 2 };
    assert_eq!(rejection.to_string(), "order o1 cannot close a hold of 3: only 2 units are held");
}
