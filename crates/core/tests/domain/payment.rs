//! One payment on its own: it starts authorized or declined, is captured once up to the
//! authorized amount or voided, and is refunded in parts up to what was captured; every other
//! move is an `invalid_transition`. (Through the tenant, callers only authorize or decline; the
//! capture, void and refund follow the order's ship, cancel and refund: see `tenant.rs`.)

use orderly_core::domain::limits::MAX_AMOUNT;
use orderly_core::domain::{
    DeclineReason, Money, OrderStatus, Payment, PaymentCommand as C, PaymentEvent as E,
    PaymentRejection as R, PaymentState, PaymentStatus as S,
};

use super::fixtures::{currency, eur, gateway, order_id, usd};
use super::harness::Scenario;

fn authorize(amount: Money) -> C {
    C::Authorize { reference: None, order: order_id("o1"), amount, gateway: gateway("g1") }
}

fn decline(amount: Money) -> C {
    C::Decline {
        order: order_id("o1"),
        amount,
        gateway: gateway("g1"),
        reason: DeclineReason::Refused,
    }
}

fn authorized(amount: Money) -> E {
    E::PaymentAuthorized { reference: None, order: order_id("o1"), amount, gateway: gateway("g1") }
}

fn declined(amount: Money, reason: DeclineReason) -> E {
    E::PaymentDeclined { order: order_id("o1"), amount, gateway: gateway("g1"), reason }
}

/// The history that leaves a payment of 1000 EUR in `status` (captured in full).
fn history(status: S) -> Vec<E> {
    match status {
        S::Authorized => vec![authorized(eur(1000))],
        S::Captured => vec![authorized(eur(1000)), E::PaymentCaptured { amount: 1000 }],
        S::Voided => vec![authorized(eur(1000)), E::PaymentVoided],
        S::Declined => vec![declined(eur(1000), DeclineReason::Refused)],
    }
}

// Authorize and decline.

#[test]
fn an_authorization_starts_the_payment() {
    let state =
        Scenario::<Payment>::given([]).when(authorize(eur(1000))).then([authorized(eur(1000))]);
    assert_eq!(state.status(), Some(S::Authorized));
    assert_eq!(state.order(), Some(&order_id("o1")));
    assert_eq!(state.authorized(), Some(eur(1000)));
    assert_eq!(state.captured(), Some(eur(0)));
    assert_eq!(state.refunded(), Some(eur(0)));
}

#[test]
fn a_decline_starts_the_payment_with_nothing_authorized() {
    for reason in [DeclineReason::Refused, DeclineReason::GatewayUnavailable] {
        let state = Scenario::<Payment>::given([])
            .when(C::Decline {
                order: order_id("o1"),
                amount: eur(1000),
                gateway: gateway("g1"),
                reason,
            })
            .then([declined(eur(1000), reason)]);
        assert_eq!(state.status(), Some(S::Declined));
        assert_eq!(state.authorized(), Some(eur(0)));
    }
}

#[test]
fn a_payment_never_started_reads_as_empty() {
    let state = PaymentState::default();
    assert_eq!(state.status(), None);
    assert_eq!(state.order(), None);
    assert_eq!((state.authorized(), state.captured(), state.refunded()), (None, None, None));
}

#[test]
fn a_new_payment_is_for_one_to_max_amount_minor_units() {
    for start in [authorize, decline] {
        Scenario::<Payment>::given([]).when(start(eur(0))).then_rejects(R::InvalidAmount);
        Scenario::<Payment>::given([])
            .when(start(eur(MAX_AMOUNT + 1)))
            .then_rejects(R::AmountTooLarge { amount: MAX_AMOUNT + 1 });
    }
    let state = Scenario::<Payment>::given([])
        .when(authorize(eur(MAX_AMOUNT)))
        .then([authorized(eur(MAX_AMOUNT))]);
    assert_eq!(state.authorized(), Some(eur(MAX_AMOUNT)));
}

#[test]
fn a_payment_starts_once() {
    for status in [S::Authorized, S::Captured, S::Voided, S::Declined] {
        for start in [authorize, decline] {
            Scenario::<Payment>::given(history(status))
                .when(start(eur(5)))
                .then_rejects(R::PaymentExists);
        }
    }
}

#[test]
fn a_command_on_a_payment_never_started_is_rejected_as_unknown() {
    let commands = [C::Capture { amount: eur(1) }, C::Void, C::Refund { amount: eur(1) }];
    for command in commands {
        Scenario::<Payment>::given([]).when(command).then_rejects(R::UnknownPayment);
    }
}

// Capture.

#[test]
fn a_capture_takes_up_to_the_authorized_amount() {
    for amount in [1, 999, 1000] {
        let state = Scenario::<Payment>::given(history(S::Authorized))
            .when(C::Capture { amount: eur(amount) })
            .then([E::PaymentCaptured { amount }]);
        assert_eq!(state.status(), Some(S::Captured));
        assert_eq!(state.captured(), Some(eur(amount)));
        assert_eq!(state.authorized(), Some(eur(1000)));
    }
}

#[test]
fn a_capture_beyond_the_authorized_amount_is_rejected() {
    let rejection = Scenario::<Payment>::given(history(S::Authorized))
        .when(C::Capture { amount: eur(1001) })
        .then_rejects_with_code("capture_exceeds_authorized");
    assert_eq!(rejection, R::CaptureExceedsAuthorized { requested: 1001, authorized: 1000 });
}

#[test]
fn a_payment_is_captured_once() {
    Scenario::<Payment>::given(history(S::Captured))
        .when(C::Capture { amount: eur(1) })
        .then_rejects(R::InvalidTransition { status: S::Captured, command: "capture" });
}

#[test]
fn a_capture_or_refund_of_nothing_is_rejected() {
    Scenario::<Payment>::given(history(S::Authorized))
        .when(C::Capture { amount: eur(0) })
        .then_rejects(R::InvalidAmount);
    Scenario::<Payment>::given(history(S::Captured))
        .when(C::Refund { amount: eur(0) })
        .then_rejects(R::InvalidAmount);
}

#[test]
fn a_capture_or_refund_is_in_the_payment_s_currency() {
    let mismatch = R::CurrencyMismatch { expected: currency("EUR"), got: currency("USD") };
    Scenario::<Payment>::given(history(S::Authorized))
        .when(C::Capture { amount: usd(1) })
        .then_rejects(mismatch.clone());
    Scenario::<Payment>::given(history(S::Captured))
        .when(C::Refund { amount: usd(1) })
        .then_rejects(mismatch);
}

// Void.

#[test]
fn an_authorization_is_voided_before_capture() {
    let state =
        Scenario::<Payment>::given(history(S::Authorized)).when(C::Void).then([E::PaymentVoided]);
    assert_eq!(state.status(), Some(S::Voided));
    assert_eq!(state.captured(), Some(eur(0)));
}

#[test]
fn only_an_authorization_is_voided() {
    for status in [S::Captured, S::Voided, S::Declined] {
        Scenario::<Payment>::given(history(status))
            .when(C::Void)
            .then_rejects(R::InvalidTransition { status, command: "void" });
    }
}

// Refund.

#[test]
fn a_captured_payment_is_refunded_in_parts_up_to_what_was_captured() {
    let state = Scenario::<Payment>::given(history(S::Captured))
        .when(C::Refund { amount: eur(600) })
        .then([E::PaymentRefunded { amount: 600 }]);
    assert_eq!(state.refunded(), Some(eur(600)));
    assert_eq!(state.status(), Some(S::Captured), "a refund keeps the status");

    let mut given = history(S::Captured);
    given.push(E::PaymentRefunded { amount: 600 });
    let state = Scenario::<Payment>::given(given)
        .when(C::Refund { amount: eur(400) })
        .then([E::PaymentRefunded { amount: 400 }]);
    assert_eq!(state.refunded(), state.captured());
}

#[test]
fn a_refund_beyond_what_was_captured_is_rejected() {
    // Captured 700 of 1000 authorized, refunded 600: 100 is left, not 400.
    let given = [
        authorized(eur(1000)),
        E::PaymentCaptured { amount: 700 },
        E::PaymentRefunded { amount: 600 },
    ];
    let rejection = Scenario::<Payment>::given(given)
        .when(C::Refund { amount: eur(101) })
        .then_rejects_with_code("refund_exceeds_captured");
    assert_eq!(rejection, R::RefundExceedsCaptured { requested: 101, refundable: 100 });
}

#[test]
fn only_a_captured_payment_is_refunded() {
    for status in [S::Authorized, S::Voided, S::Declined] {
        Scenario::<Payment>::given(history(status))
            .when(C::Refund { amount: eur(1) })
            .then_rejects(R::InvalidTransition { status, command: "refund" });
    }
}

#[test]
fn nothing_but_a_new_start_applies_to_a_declined_or_voided_payment() {
    for status in [S::Declined, S::Voided] {
        for command in [C::Capture { amount: eur(1) }, C::Void, C::Refund { amount: eur(1) }] {
            let rejection = Scenario::<Payment>::given(history(status))
                .when(command.clone())
                .then_rejects_with_code("invalid_transition");
            assert_eq!(rejection, R::InvalidTransition { status, command: command.name() });
        }
    }
}

#[test]
fn command_and_status_names_are_stable() {
    let names = [
        (authorize(eur(1)).name(), "authorize"),
        (decline(eur(1)).name(), "decline"),
        (C::Capture { amount: eur(1) }.name(), "capture"),
        (C::Void.name(), "void"),
        (C::Refund { amount: eur(1) }.name(), "refund"),
        (S::Authorized.as_str(), "authorized"),
        (S::Captured.as_str(), "captured"),
        (S::Voided.as_str(), "voided"),
        (S::Declined.as_str(), "declined"),
    ];
    for (name, expected) in names {
        assert_eq!(name, expected);
    }
    assert_eq!(
        R::InvalidTransition { status: S::Voided, command: "capture" }.to_string(),
        "cannot capture a payment that is voided"
    );
}

#[test]
fn payment_rejection_codes_are_stable() {
    let codes = [
        (R::UnknownPayment, "unknown_payment"),
        (R::PaymentExists, "payment_exists"),
        (R::UnknownOrder { order: order_id("o1") }, "unknown_order"),
        (R::InvalidAmount, "invalid_amount"),
        (R::AmountTooLarge { amount: 0 }, "amount_too_large"),
        (
            R::CurrencyMismatch { expected: currency("EUR"), got: currency("USD") },
            "currency_mismatch",
        ),
        (R::CaptureExceedsAuthorized { requested: 2, authorized: 1 }, "capture_exceeds_authorized"),
        (R::RefundExceedsCaptured { requested: 2, refundable: 1 }, "refund_exceeds_captured"),
        (R::AmountMismatch { expected: 2, got: 1 }, "amount_mismatch"),
        (R::OrderNotPayable { status: OrderStatus::Confirmed }, "order_not_payable"),
        (R::FollowsOrder { command: "capture" }, "payment_follows_order"),
        (R::HoldExpired { expires_at: orderly_core::domain::Timestamp(900) }, "hold_expired"),
        (R::InvalidTransition { status: S::Voided, command: "void" }, "invalid_transition"),
    ];
    for (rejection, code) in codes {
        assert_eq!(rejection.code(), code, "{rejection:?}");
    }
}
