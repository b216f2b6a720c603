//! A payment for an order: authorized (or declined) by a gateway, then captured once (on ship)
//! or voided, then refunded in parts.
//!
//! Invariants: captured ≤ authorized and refunded ≤ captured, so money is never taken twice or
//! given back beyond what was taken.

use std::fmt;

use super::decider::{Context, Decider};
use super::limits::MAX_AMOUNT;
use super::order::OrderStatus;
use super::types::{Currency, GatewayId, GatewayReference, Money, OrderId, Timestamp};

/// The payment decider.
#[derive(Debug)]
pub enum Payment {}

/// Where a payment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// The gateway reserved the amount on the customer's account.
    Authorized,
    /// The money was taken (refunds keep this status and lower the refundable amount).
    Captured,
    /// The authorization was given up before capture.
    Voided,
    /// The gateway refused; nothing was reserved.
    Declined,
}

impl PaymentStatus {
    /// Stable snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Declined => "declined",
        }
    }

    /// Stable small number, as the engine's snapshot stores it.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            PaymentStatus::Authorized => 0,
            PaymentStatus::Captured => 1,
            PaymentStatus::Voided => 2,
            PaymentStatus::Declined => 3,
        }
    }

    /// The status numbered `code` by [`PaymentStatus::code`].
    #[must_use]
    pub fn from_code(code: u8) -> Option<PaymentStatus> {
        [Self::Authorized, Self::Captured, Self::Voided, Self::Declined]
            .into_iter()
            .find(|status| status.code() == code)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a gateway refused a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeclineReason {
    /// The customer's bank refused (funds, limits, fraud checks).
    Refused,
    /// No gateway could be reached, or every one was failing.
    GatewayUnavailable,
}

impl DeclineReason {
    /// Stable snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::Refused => "refused",
            DeclineReason::GatewayUnavailable => "gateway_unavailable",
        }
    }
}

/// State of one payment: what its decisions need, and the gateway that holds its money (the
/// payments process routes later captures, voids and refunds there). Fields are private so
/// that only events change them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentState {
    started: Option<Started>,
}

/// Visible to the crate for the engine's snapshot, which restores it through
/// [`PaymentState::restored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Started {
    pub(crate) status: PaymentStatus,
    pub(crate) order: OrderId,
    pub(crate) gateway: GatewayId,
    /// The gateway's reference of the authorization, when it was recorded (not for a
    /// decline, nor in logs written before schema version 2).
    pub(crate) reference: Option<GatewayReference>,
    pub(crate) currency: Currency,
    pub(crate) authorized: u64,
    pub(crate) captured: u64,
    pub(crate) refunded: u64,
}

impl PaymentState {
    /// The status, or `None` for a payment never started.
    #[must_use]
    pub fn status(&self) -> Option<PaymentStatus> {
        self.started.as_ref().map(|p| p.status)
    }

    /// The order the payment is for.
    #[must_use]
    pub fn order(&self) -> Option<&OrderId> {
        self.started.as_ref().map(|p| &p.order)
    }

    /// The gateway that authorized it (or, for a declined payment, refused it).
    #[must_use]
    pub fn gateway(&self) -> Option<&GatewayId> {
        self.started.as_ref().map(|p| &p.gateway)
    }

    /// The gateway's reference of the authorization, if the log recorded it.
    #[must_use]
    pub fn reference(&self) -> Option<&GatewayReference> {
        self.started.as_ref().and_then(|p| p.reference.as_ref())
    }

    /// Amount authorized (zero when declined).
    #[must_use]
    pub fn authorized(&self) -> Option<Money> {
        self.started.as_ref().map(|p| Money::new(p.authorized, p.currency))
    }

    /// Amount captured.
    #[must_use]
    pub fn captured(&self) -> Option<Money> {
        self.started.as_ref().map(|p| Money::new(p.captured, p.currency))
    }

    /// Amount refunded.
    #[must_use]
    pub fn refunded(&self) -> Option<Money> {
        self.started.as_ref().map(|p| Money::new(p.refunded, p.currency))
    }

    /// A started payment's state, as the engine's snapshot kept it (amounts in minor units of
    /// `currency`).
    pub(crate) fn restored(started: Started) -> Self {
        PaymentState { started: Some(started) }
    }
}

/// Commands on one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCommand {
    /// Record that a gateway authorized `amount` for `order`.
    Authorize {
        /// The order paid for.
        order: OrderId,
        /// Amount reserved on the customer's account.
        amount: Money,
        /// The gateway that authorized.
        gateway: GatewayId,
        /// The gateway's reference of the authorization, which its capture, void or refund
        /// quotes. Not part of the command's fingerprint: it is the gateway's answer to the
        /// same authorization, so a retry that learned it again is the same command.
        reference: Option<GatewayReference>,
    },
    /// Record that a gateway refused `amount` for `order`.
    Decline {
        /// The order paid for.
        order: OrderId,
        /// Amount that was asked for.
        amount: Money,
        /// The gateway that refused, or the last one tried.
        gateway: GatewayId,
        /// Why.
        reason: DeclineReason,
    },
    /// Take (part of) the authorized amount, once.
    Capture {
        /// Amount taken; at most the authorized amount.
        amount: Money,
    },
    /// Give up an authorization that was not captured.
    Void,
    /// Give back (part of) the captured amount.
    Refund {
        /// Amount given back; at most captured minus refunded.
        amount: Money,
    },
}

impl PaymentCommand {
    /// Stable snake_case name, used in rejections.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            PaymentCommand::Authorize { .. } => "authorize",
            PaymentCommand::Decline { .. } => "decline",
            PaymentCommand::Capture { .. } => "capture",
            PaymentCommand::Void => "void",
            PaymentCommand::Refund { .. } => "refund",
        }
    }
}

/// Facts about one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentEvent {
    /// A gateway authorized the amount.
    PaymentAuthorized {
        /// The order paid for.
        order: OrderId,
        /// Amount reserved.
        amount: Money,
        /// The gateway.
        gateway: GatewayId,
        /// The gateway's reference of the authorization; `None` when the gateway gave none
        /// that fits [`GatewayReference`], and in logs written before schema version 2.
        reference: Option<GatewayReference>,
    },
    /// A gateway refused the payment.
    PaymentDeclined {
        /// The order paid for.
        order: OrderId,
        /// Amount asked for.
        amount: Money,
        /// The gateway.
        gateway: GatewayId,
        /// Why.
        reason: DeclineReason,
    },
    /// Money was taken.
    PaymentCaptured {
        /// Amount in minor units of the payment's currency.
        amount: u64,
    },
    /// The authorization was given up.
    PaymentVoided,
    /// Money was given back.
    PaymentRefunded {
        /// Amount in minor units of the payment's currency.
        amount: u64,
    },
}

/// Why a payment command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentRejection {
    /// No payment with this id was started.
    #[error("unknown payment")]
    UnknownPayment,
    /// A payment with this id was already authorized or declined.
    #[error("a payment with this id already exists")]
    PaymentExists,
    /// The payment's order does not exist.
    #[error("unknown order {order}")]
    UnknownOrder {
        /// The order named by the command.
        order: OrderId,
    },
    /// An amount of zero.
    #[error("an amount must be at least one minor unit")]
    InvalidAmount,
    /// An amount above [`MAX_AMOUNT`].
    #[error("amount {amount} exceeds the limit of {MAX_AMOUNT} minor units")]
    AmountTooLarge {
        /// The rejected amount.
        amount: u64,
    },
    /// An amount in another currency than the payment's.
    #[error("amount is in {got}, the payment in {expected}")]
    CurrencyMismatch {
        /// The payment's currency.
        expected: Currency,
        /// The command's currency.
        got: Currency,
    },
    /// A capture above the authorized amount.
    #[error("capture of {requested} exceeds the {authorized} authorized")]
    CaptureExceedsAuthorized {
        /// Amount asked for.
        requested: u64,
        /// Amount authorized.
        authorized: u64,
    },
    /// A refund above captured minus already refunded.
    #[error("refund of {requested} exceeds the {refundable} still refundable")]
    RefundExceedsCaptured {
        /// Amount asked for.
        requested: u64,
        /// Captured minus refunded.
        refundable: u64,
    },
    /// An authorization or decline for another amount than the order's total.
    #[error("the order's total is {expected}, the payment is for {got}")]
    AmountMismatch {
        /// The order's total.
        expected: u64,
        /// The command's amount.
        got: u64,
    },
    /// The order is not waiting for payment (it is confirmed, shipped or cancelled).
    #[error("the order is {status}, not waiting for payment")]
    OrderNotPayable {
        /// The order's status.
        status: OrderStatus,
    },
    /// The order's stock hold ran out before the authorization was recorded; the order is
    /// about to expire, so it cannot be paid any more.
    #[error("the order's hold expired at {expires_at}")]
    HoldExpired {
        /// When the hold ran out.
        expires_at: Timestamp,
    },
    /// Capture, void and refund follow the order (ship, cancel, refund it), so that money and
    /// goods always move together.
    #[error("{command} follows the order: ship, cancel or refund the order instead")]
    FollowsOrder {
        /// The refused command.
        command: &'static str,
    },
    /// The command does not apply to a payment in this status.
    #[error("cannot {command} a payment that is {status}")]
    InvalidTransition {
        /// Current status.
        status: PaymentStatus,
        /// The refused command.
        command: &'static str,
    },
}

impl PaymentRejection {
    /// Stable snake_case code, part of the API: the variant's name in snake_case
    /// (`CaptureExceedsAuthorized` is `capture_exceeds_authorized`), except `FollowsOrder`,
    /// which is `payment_follows_order`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        use PaymentRejection as R;
        match self {
            R::UnknownPayment => "unknown_payment",
            R::PaymentExists => "payment_exists",
            R::UnknownOrder { .. } => "unknown_order",
            R::InvalidAmount => "invalid_amount",
            R::AmountTooLarge { .. } => "amount_too_large",
            R::CurrencyMismatch { .. } => "currency_mismatch",
            R::CaptureExceedsAuthorized { .. } => "capture_exceeds_authorized",
            R::RefundExceedsCaptured { .. } => "refund_exceeds_captured",
            R::AmountMismatch { .. } => "amount_mismatch",
            R::OrderNotPayable { .. } => "order_not_payable",
            R::HoldExpired { .. } => "hold_expired",
            R::FollowsOrder { .. } => "payment_follows_order",
            R::InvalidTransition { .. } => "invalid_transition",
        }
    }
}

impl Payment {
    /// Decides `command` against `state`: every payment command records exactly one event.
    ///
    /// [`Decider::decide`] is this event in a `Vec`; `tenant` calls this instead, to gather a
    /// decision's events in one `Vec` without one per aggregate.
    pub fn decide_event(
        state: &PaymentState,
        command: &PaymentCommand,
        _ctx: &Context,
    ) -> Result<PaymentEvent, PaymentRejection> {
        use PaymentCommand as C;
        use PaymentEvent as E;
        use PaymentRejection as R;
        use PaymentStatus as S;
        let Some(payment) = &state.started else {
            return match command {
                C::Authorize { order, amount, gateway, reference } => {
                    check_new_amount(amount)?;
                    Ok(E::PaymentAuthorized {
                        order: order.clone(),
                        amount: *amount,
                        gateway: gateway.clone(),
                        reference: reference.clone(),
                    })
                }
                C::Decline { order, amount, gateway, reason } => {
                    check_new_amount(amount)?;
                    Ok(E::PaymentDeclined {
                        order: order.clone(),
                        amount: *amount,
                        gateway: gateway.clone(),
                        reason: *reason,
                    })
                }
                _ => Err(R::UnknownPayment),
            };
        };
        let check_amount = |amount: &Money| {
            if amount.currency != payment.currency {
                Err(R::CurrencyMismatch { expected: payment.currency, got: amount.currency })
            } else if amount.minor == 0 {
                Err(R::InvalidAmount)
            } else {
                Ok(amount.minor)
            }
        };
        let event = match (command, payment.status) {
            (C::Authorize { .. } | C::Decline { .. }, _) => return Err(R::PaymentExists),
            (C::Capture { amount }, S::Authorized) => {
                let requested = check_amount(amount)?;
                if requested > payment.authorized {
                    return Err(R::CaptureExceedsAuthorized {
                        requested,
                        authorized: payment.authorized,
                    });
                }
                E::PaymentCaptured { amount: requested }
            }
            (C::Void, S::Authorized) => E::PaymentVoided,
            (C::Refund { amount }, S::Captured) => {
                let requested = check_amount(amount)?;
                let refundable = payment.captured - payment.refunded;
                if requested > refundable {
                    return Err(R::RefundExceedsCaptured { requested, refundable });
                }
                E::PaymentRefunded { amount: requested }
            }
            (_, status) => {
                return Err(R::InvalidTransition { status, command: command.name() });
            }
        };
        Ok(event)
    }
}

impl Decider for Payment {
    type State = PaymentState;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Rejection = PaymentRejection;

    fn decide(
        state: &PaymentState,
        command: &PaymentCommand,
        ctx: &Context,
    ) -> Result<Vec<PaymentEvent>, PaymentRejection> {
        Payment::decide_event(state, command, ctx).map(|event| vec![event])
    }

    fn evolve(state: &mut PaymentState, event: &PaymentEvent) {
        use PaymentEvent as E;
        use PaymentStatus as S;
        let start = |status, order: &OrderId, amount: &Money, gateway: &GatewayId| Started {
            status,
            order: order.clone(),
            gateway: gateway.clone(),
            reference: None,
            currency: amount.currency,
            authorized: if status == S::Authorized { amount.minor } else { 0 },
            captured: 0,
            refunded: 0,
        };
        match event {
            E::PaymentAuthorized { order, amount, gateway, reference } => {
                assert!(state.started.is_none(), "a payment starts once");
                let started = Started {
                    reference: reference.clone(),
                    ..start(S::Authorized, order, amount, gateway)
                };
                state.started = Some(started);
            }
            E::PaymentDeclined { order, amount, gateway, .. } => {
                assert!(state.started.is_none(), "a payment starts once");
                state.started = Some(start(S::Declined, order, amount, gateway));
            }
            E::PaymentCaptured { amount } => {
                let p = state.started.as_mut().expect("a captured payment was authorized");
                assert_eq!(p.status, S::Authorized, "only an authorization is captured");
                p.captured = *amount;
                p.status = S::Captured;
                assert!(p.captured <= p.authorized, "captured never exceeds authorized");
            }
            E::PaymentVoided => {
                let p = state.started.as_mut().expect("a voided payment was authorized");
                assert_eq!(p.status, S::Authorized, "only an authorization is voided");
                p.status = S::Voided;
            }
            E::PaymentRefunded { amount } => {
                let p = state.started.as_mut().expect("a refunded payment was captured");
                assert_eq!(p.status, S::Captured, "only a captured payment is refunded");
                p.refunded += amount;
                assert!(p.refunded <= p.captured, "refunded never exceeds captured");
            }
        }
    }
}

fn check_new_amount(amount: &Money) -> Result<(), PaymentRejection> {
    if amount.minor == 0 {
        Err(PaymentRejection::InvalidAmount)
    } else if amount.minor > MAX_AMOUNT {
        Err(PaymentRejection::AmountTooLarge { amount: amount.minor })
    } else {
        Ok(())
    }
}
