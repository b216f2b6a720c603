//! The inventory of one SKU: receipts and counts change on hand, holds reserve units for an
//! order until they are committed (shipped), released (cancelled) or expired, and `reserved`
//! never exceeds `on_hand`.

use orderly_core::domain::limits::{MAX_ON_HAND, MAX_QUANTITY};
use orderly_core::domain::{
    Hold, Inventory, InventoryCommand as C, InventoryEvent as E, InventoryRejection as R, Timestamp,
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
fn a_hold_reserves_units_for_an_order_until_it_expires() {
    let state = Scenario::<Inventory>::given([received(10)])
        .when(hold("o1", 7, 900))
        .then([held("o1", 7, 900)]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (10, 7, 3));
    let expected = Hold { quantity: qty(7), expires_at: Timestamp(900) };
    assert_eq!(state.hold(&order_id("o1")), Some(expected));
    assert_eq!(state.hold(&order_id("o2")), None);
    assert_eq!(state.holds().collect::<Vec<_>>(), [(&order_id("o1"), &expected)]);
}

#[test]
fn a_hold_may_take_everything_available() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(hold("o2", 3, 900))
        .then([held("o2", 3, 900)]);
    assert_eq!((state.reserved(), state.available()), (10, 0));
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

#[test]
fn an_order_holds_a_sku_at_most_once() {
    Scenario::<Inventory>::given([received(10), held("o1", 2, 900)])
        .when(hold("o1", 1, 900))
        .then_rejects(R::HoldExists { order: order_id("o1") });
}

// Commit, release, expire.

#[test]
fn committing_a_hold_takes_its_units_out_of_stock() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(C::Commit { order: order_id("o1") })
        .then([E::StockCommitted { order: order_id("o1"), quantity: qty(7) }]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (3, 0, 3));
    assert_eq!(state.hold(&order_id("o1")), None);
}

#[test]
fn releasing_a_hold_makes_its_units_available_again() {
    let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .when(C::Release { order: order_id("o1") })
        .then([E::StockReleased { order: order_id("o1"), quantity: qty(7) }]);
    assert_eq!((state.on_hand(), state.reserved(), state.available()), (10, 0, 10));
    assert_eq!(state.holds().count(), 0);
}

#[test]
fn a_hold_expires_from_its_expiry_time_on() {
    for now in [900, 901, u64::MAX] {
        let state = Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
            .at(now)
            .when(C::Expire { order: order_id("o1") })
            .then([E::HoldExpired { order: order_id("o1"), quantity: qty(7) }]);
        assert_eq!((state.on_hand(), state.reserved()), (10, 0));
    }
}

#[test]
fn a_hold_cannot_expire_before_its_expiry_time() {
    Scenario::<Inventory>::given([received(10), held("o1", 7, 900)])
        .at(899)
        .when(C::Expire { order: order_id("o1") })
        .then_rejects(R::HoldNotExpired {
            order: order_id("o1"),
            expires_at: Timestamp(900),
            now: Timestamp(899),
        });
}

#[test]
fn only_an_open_hold_can_be_committed_released_or_expired() {
    let closed = [
        E::StockCommitted { order: order_id("o1"), quantity: qty(2) },
        E::StockReleased { order: order_id("o1"), quantity: qty(2) },
        E::HoldExpired { order: order_id("o1"), quantity: qty(2) },
    ];
    let commands = [
        C::Commit { order: order_id("o1") },
        C::Release { order: order_id("o1") },
        C::Expire { order: order_id("o1") },
    ];
    for command in &commands {
        // Never held, held by another order only, and held but already closed.
        let histories = [
            vec![received(10)],
            vec![received(10), held("o2", 2, 0)],
            vec![received(10), held("o1", 2, 0), closed[0].clone()],
            vec![received(10), held("o1", 2, 0), closed[1].clone()],
            vec![received(10), held("o1", 2, 0), closed[2].clone()],
        ];
        for history in histories {
            Scenario::<Inventory>::given(history)
                .at(1_000)
                .when(command.clone())
                .then_rejects(R::UnknownHold { order: order_id("o1") });
        }
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
        (R::HoldExists { order: o1.clone() }, "hold_exists"),
        (R::UnknownHold { order: o1.clone() }, "unknown_hold"),
        (
            R::HoldNotExpired { order: o1, expires_at: Timestamp(2), now: Timestamp(1) },
            "hold_not_expired",
        ),
    ];
    for (rejection, code) in codes {
        assert_eq!(rejection.code(), code, "{rejection:?}");
    }
}

#[test]
fn inventory_rejections_explain_themselves() {
    let rejection = R::InsufficientStock { requested: 4, available: 3 };
    assert_eq!(rejection.to_string(), "insufficient stock: requested 4, available 3");
    let rejection = R::HoldNotExpired {
        order: order_id("o1"),
        expires_at: Timestamp(900),
        now: Timestamp(899),
    };
    assert_eq!(rejection.to_string(), "hold of order o1 expires at 900ms, not yet (now 899ms)");
}
