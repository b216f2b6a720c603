//! An order of one tenant: its lines and its life from placed to delivered or cancelled.
//!
//! ```text
//! placed ──confirm──▶ confirmed ──ship──▶ shipped ──deliver──▶ delivered
//!   │  └──expire (unpaid, hold ran out)       └── refund (partial or full), also when delivered
//!   └──cancel──┴──cancel──▶ cancelled
//! ```
//! The order decider checks the order alone; `tenant` combines it with the inventory
//! of every line so that placing, shipping, cancelling and expiring move stock atomically.

use std::fmt;

use super::decider::{Context, Decider};
use super::limits::{MAX_AMOUNT, MAX_LINES_PER_ORDER, MAX_UNIT_PRICE};
use super::types::{Currency, CustomerId, Money, PaymentId, Quantity, Sku, Timestamp};

/// The order decider.
#[derive(Debug)]
pub enum Order {}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    /// What is bought.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// Price of one unit in minor units of the order's currency, 1 to [`MAX_UNIT_PRICE`].
    pub unit_price: u64,
}

impl OrderLine {
    /// Quantity times unit price; cannot overflow within the limits.
    #[must_use]
    pub fn amount(&self) -> u64 {
        self.quantity.get() * self.unit_price
    }
}

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Stock is held; waiting for payment.
    Placed,
    /// Payment authorized; ready to ship.
    Confirmed,
    /// Left the warehouse; payment captured.
    Shipped,
    /// Arrived at the customer.
    Delivered,
    /// Cancelled before shipping; stock released.
    Cancelled,
}

impl OrderStatus {
    /// Stable snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `name` by [`OrderStatus::as_str`].
    #[must_use]
    pub fn parse(name: &str) -> Option<OrderStatus> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// Stable small number, as read models and the engine's snapshot store it.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            OrderStatus::Placed => 0,
            OrderStatus::Confirmed => 1,
            OrderStatus::Shipped => 2,
            OrderStatus::Delivered => 3,
            OrderStatus::Cancelled => 4,
        }
    }

    /// The status numbered `code` by [`OrderStatus::code`].
    #[must_use]
    pub fn from_code(code: u8) -> Option<OrderStatus> {
        Self::ALL.into_iter().find(|status| status.code() == code)
    }

    const ALL: [OrderStatus; 5] =
        [Self::Placed, Self::Confirmed, Self::Shipped, Self::Delivered, Self::Cancelled];
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The customer or the merchant asked for it.
    Requested,
    /// No gateway authorized the payment.
    PaymentDeclined,
    /// The order was not paid before its stock hold ran out.
    HoldExpired,
}

impl CancelReason {
    /// Stable snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::HoldExpired => "hold_expired",
        }
    }
}

/// State of one order: what its decisions need (its events hold the rest, such as the
/// customer). Fields are private so that only events change them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderState {
    placed: Option<Placed>,
}

/// Kept small: the engine holds one per order of the day, and a smaller entry is fewer cache
/// lines per lookup and less memory to fault in as the map grows. Its fields are visible to
/// the crate for the engine's snapshot, which restores them through [`OrderState::restored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) status: OrderStatus,
    pub(crate) currency: Currency,
    pub(crate) lines: Box<[OrderLine]>,
    pub(crate) total: u64,
    pub(crate) refunded: u64,
    pub(crate) hold_expires_at: Timestamp,
    pub(crate) payment: Option<PaymentId>,
}

impl OrderState {
    /// The status, or `None` for an order never placed.
    #[must_use]
    pub fn status(&self) -> Option<OrderStatus> {
        self.placed.as_ref().map(|p| p.status)
    }

    /// The lines while they hold stock (placed or confirmed). Empty for an order never placed,
    /// and once it is shipped or cancelled: no decision needs them then, and the engine keeps
    /// an order of the whole day in memory while only the last hours' hold stock.
    #[must_use]
    pub fn lines(&self) -> &[OrderLine] {
        self.placed.as_ref().map_or(&[], |p| &p.lines)
    }

    /// Sum of the lines, in the order's currency.
    #[must_use]
    pub fn total(&self) -> Option<Money> {
        self.placed.as_ref().map(|p| Money::new(p.total, p.currency))
    }

    /// Amount refunded so far.
    #[must_use]
    pub fn refunded(&self) -> Option<Money> {
        self.placed.as_ref().map(|p| Money::new(p.refunded, p.currency))
    }

    /// When the stock hold of an unpaid order runs out.
    #[must_use]
    pub fn hold_expires_at(&self) -> Option<Timestamp> {
        self.placed.as_ref().map(|p| p.hold_expires_at)
    }

    /// The payment that confirmed the order.
    #[must_use]
    pub fn payment(&self) -> Option<&PaymentId> {
        self.placed.as_ref().and_then(|p| p.payment.as_ref())
    }

    /// A placed order's state, as the engine's snapshot kept it (`total` and `refunded` in
    /// minor units of `currency`).
    pub(crate) fn restored(placed: Placed) -> Self {
        OrderState { placed: Some(placed) }
    }
}

/// Commands on one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    /// Place a new order; stock for every line is held in the same decision (see
    /// `tenant`).
    Place {
        /// Who buys.
        customer: CustomerId,
        /// Currency of every price.
        currency: Currency,
        /// What is bought: 1 to [`MAX_LINES_PER_ORDER`] lines, each SKU once.
        lines: Vec<OrderLine>,
    },
    /// The payment was authorized. (Authorizing through `tenant` confirms the order
    /// in the same decision.)
    Confirm {
        /// The authorized payment.
        payment: PaymentId,
    },
    /// The goods left the warehouse.
    Ship,
    /// The goods arrived.
    Deliver,
    /// Cancel an order that has not shipped. The reason `HoldExpired` is accepted only once
    /// the hold has run out, exactly as [`OrderCommand::Expire`].
    Cancel {
        /// Why.
        reason: CancelReason,
    },
    /// Give money back after shipping, partly or fully.
    Refund {
        /// How much, in the order's currency.
        amount: Money,
    },
    /// Cancel an unpaid order whose stock hold ran out.
    Expire,
}

impl OrderCommand {
    /// Stable snake_case name, used in rejections.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            OrderCommand::Place { .. } => "place",
            OrderCommand::Confirm { .. } => "confirm",
            OrderCommand::Ship => "ship",
            OrderCommand::Deliver => "deliver",
            OrderCommand::Cancel { .. } => "cancel",
            OrderCommand::Refund { .. } => "refund",
            OrderCommand::Expire => "expire",
        }
    }
}

/// Facts about one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// The order was placed and its stock held until `hold_expires_at`.
    OrderPlaced {
        /// Who buys.
        customer: CustomerId,
        /// Currency of every price.
        currency: Currency,
        /// What is bought.
        lines: Vec<OrderLine>,
        /// Sum of the lines.
        total: u64,
        /// When the hold runs out if the order is not paid.
        hold_expires_at: Timestamp,
    },
    /// Payment was authorized.
    OrderConfirmed {
        /// The authorized payment.
        payment: PaymentId,
    },
    /// The goods left the warehouse.
    OrderShipped,
    /// The goods arrived.
    OrderDelivered,
    /// The order was cancelled and its stock released.
    OrderCancelled {
        /// Why.
        reason: CancelReason,
    },
    /// Money was given back.
    OrderRefunded {
        /// How much, in minor units of the order's currency.
        amount: u64,
    },
}

/// A line that could not be held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortage {
    /// The short SKU.
    pub sku: Sku,
    /// Units the line asked for.
    pub requested: u64,
    /// Units available when the order was decided.
    pub available: u64,
}

/// Why an order command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderRejection {
    /// No order with this id was placed.
    #[error("unknown order")]
    UnknownOrder,
    /// An order with this id was already placed.
    #[error("an order with this id already exists")]
    OrderExists,
    /// An order needs at least one line.
    #[error("an order needs at least one line")]
    EmptyOrder,
    /// More lines than [`MAX_LINES_PER_ORDER`].
    #[error("an order may have at most {MAX_LINES_PER_ORDER} lines, got {count}")]
    TooManyLines {
        /// Lines given.
        count: usize,
    },
    /// The same SKU on two lines.
    #[error("SKU {sku} appears on more than one line")]
    DuplicateSku {
        /// The repeated SKU.
        sku: Sku,
    },
    /// A unit price of zero or above [`MAX_UNIT_PRICE`].
    #[error("unit price of {sku} must be 1 to {MAX_UNIT_PRICE} minor units, got {unit_price}")]
    InvalidUnitPrice {
        /// The line's SKU.
        sku: Sku,
        /// The rejected price.
        unit_price: u64,
    },
    /// The order's total is above [`MAX_AMOUNT`].
    #[error("order total {total} exceeds the limit of {MAX_AMOUNT} minor units")]
    AmountTooLarge {
        /// The rejected total.
        total: u64,
    },
    /// Lines name SKUs that were never stocked.
    #[error("unknown SKU(s): {}", skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(", "))]
    UnknownSku {
        /// Every unknown SKU of the order.
        skus: Vec<Sku>,
    },
    /// Some lines ask for more than is available; nothing was held.
    #[error("insufficient stock for {}", shortages.iter().map(|s| s.sku.as_str()).collect::<Vec<_>>().join(", "))]
    InsufficientStock {
        /// Every short line of the order.
        shortages: Vec<Shortage>,
    },
    /// The command does not apply to an order in this status.
    #[error("cannot {command} an order that is {status}")]
    InvalidTransition {
        /// Current status.
        status: OrderStatus,
        /// The refused command.
        command: &'static str,
    },
    /// The order's hold has not run out yet.
    #[error("the hold expires at {expires_at}, not yet (now {now})")]
    HoldNotExpired {
        /// When it may expire.
        expires_at: Timestamp,
        /// Admission time of the command.
        now: Timestamp,
    },
    /// Confirming with a payment that is not an authorization of this order's total.
    #[error("payment {payment} is not an authorization of this order's total")]
    PaymentNotAuthorized {
        /// The payment named by the command.
        payment: PaymentId,
    },
    /// A refund of zero.
    #[error("a refund must be at least one minor unit")]
    InvalidAmount,
    /// A refund in another currency than the order's.
    #[error("amount is in {got}, the order in {expected}")]
    CurrencyMismatch {
        /// The order's currency.
        expected: Currency,
        /// The command's currency.
        got: Currency,
    },
    /// A refund above what was captured (the total, taken on shipping) and not yet refunded.
    #[error("refund of {requested} exceeds the {refundable} still refundable")]
    RefundExceedsCaptured {
        /// Amount asked for.
        requested: u64,
        /// Captured minus already refunded.
        refundable: u64,
    },
}

impl OrderRejection {
    /// Stable snake_case code, part of the API: the variant's name in snake_case
    /// (`RefundExceedsCaptured` is `refund_exceeds_captured`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        use OrderRejection as R;
        match self {
            R::UnknownOrder => "unknown_order",
            R::OrderExists => "order_exists",
            R::EmptyOrder => "empty_order",
            R::TooManyLines { .. } => "too_many_lines",
            R::DuplicateSku { .. } => "duplicate_sku",
            R::InvalidUnitPrice { .. } => "invalid_unit_price",
            R::AmountTooLarge { .. } => "amount_too_large",
            R::UnknownSku { .. } => "unknown_sku",
            R::InsufficientStock { .. } => "insufficient_stock",
            R::InvalidTransition { .. } => "invalid_transition",
            R::HoldNotExpired { .. } => "hold_not_expired",
            R::PaymentNotAuthorized { .. } => "payment_not_authorized",
            R::InvalidAmount => "invalid_amount",
            R::CurrencyMismatch { .. } => "currency_mismatch",
            R::RefundExceedsCaptured { .. } => "refund_exceeds_captured",
        }
    }
}

impl Order {
    /// Decides `command` against `state`: every order command records exactly one event.
    ///
    /// [`Decider::decide`] is this event in a `Vec`; `tenant` calls this instead, to gather a
    /// decision's events in one `Vec` without one per aggregate.
    pub fn decide_event(
        state: &OrderState,
        command: &OrderCommand,
        ctx: &Context,
    ) -> Result<OrderEvent, OrderRejection> {
        use OrderCommand as C;
        use OrderEvent as E;
        use OrderRejection as R;
        use OrderStatus as S;
        let Some(order) = &state.placed else {
            return match command {
                C::Place { customer, currency, lines } => {
                    let total = validate_lines(lines)?;
                    Ok(E::OrderPlaced {
                        customer: customer.clone(),
                        currency: *currency,
                        lines: lines.clone(),
                        total,
                        hold_expires_at: ctx.now.plus_millis(ctx.hold_ttl_ms),
                    })
                }
                _ => Err(R::UnknownOrder),
            };
        };
        let invalid = || R::InvalidTransition { status: order.status, command: command.name() };
        let event = match (command, order.status) {
            (C::Place { .. }, _) => return Err(R::OrderExists),
            (C::Confirm { payment }, S::Placed) => E::OrderConfirmed { payment: payment.clone() },
            (C::Ship, S::Confirmed) => E::OrderShipped,
            (C::Deliver, S::Shipped) => E::OrderDelivered,
            // Only the hold's running out cancels for that reason, and only an unpaid order.
            (C::Expire | C::Cancel { reason: CancelReason::HoldExpired }, S::Placed) => {
                if ctx.now < order.hold_expires_at {
                    return Err(R::HoldNotExpired {
                        expires_at: order.hold_expires_at,
                        now: ctx.now,
                    });
                }
                E::OrderCancelled { reason: CancelReason::HoldExpired }
            }
            // A confirmed order was paid: neither its hold nor its payment can fail any more.
            (
                C::Cancel { reason: CancelReason::HoldExpired | CancelReason::PaymentDeclined },
                _,
            ) if order.status != S::Placed => {
                return Err(invalid());
            }
            (C::Cancel { reason }, S::Placed | S::Confirmed) => {
                E::OrderCancelled { reason: *reason }
            }
            (C::Refund { amount }, S::Shipped | S::Delivered) => {
                if amount.currency != order.currency {
                    return Err(R::CurrencyMismatch {
                        expected: order.currency,
                        got: amount.currency,
                    });
                }
                if amount.minor == 0 {
                    return Err(R::InvalidAmount);
                }
                let refundable = order.total - order.refunded;
                if amount.minor > refundable {
                    return Err(R::RefundExceedsCaptured { requested: amount.minor, refundable });
                }
                E::OrderRefunded { amount: amount.minor }
            }
            _ => return Err(invalid()),
        };
        Ok(event)
    }
}

impl Decider for Order {
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Rejection = OrderRejection;

    fn decide(
        state: &OrderState,
        command: &OrderCommand,
        ctx: &Context,
    ) -> Result<Vec<OrderEvent>, OrderRejection> {
        Order::decide_event(state, command, ctx).map(|event| vec![event])
    }

    fn evolve(state: &mut OrderState, event: &OrderEvent) {
        use OrderEvent as E;
        use OrderStatus as S;
        if let E::OrderPlaced { currency, lines, total, hold_expires_at, .. } = event {
            assert!(state.placed.is_none(), "an order is placed once");
            state.placed = Some(Placed {
                status: S::Placed,
                currency: *currency,
                lines: lines.as_slice().into(),
                total: *total,
                refunded: 0,
                hold_expires_at: *hold_expires_at,
                payment: None,
            });
            return;
        }
        let order = state.placed.as_mut().expect("events after OrderPlaced need a placed order");
        let from = order.status;
        let (allowed_from, to): (&[OrderStatus], OrderStatus) = match event {
            E::OrderPlaced { .. } => unreachable!("handled above"),
            E::OrderConfirmed { payment } => {
                order.payment = Some(payment.clone());
                (&[S::Placed], S::Confirmed)
            }
            E::OrderShipped => {
                order.lines = Box::default();
                (&[S::Confirmed], S::Shipped)
            }
            E::OrderDelivered => (&[S::Shipped], S::Delivered),
            E::OrderCancelled { .. } => {
                order.lines = Box::default();
                (&[S::Placed, S::Confirmed], S::Cancelled)
            }
            E::OrderRefunded { amount } => {
                order.refunded += amount;
                assert!(order.refunded <= order.total, "refunds never exceed the total");
                (&[S::Shipped, S::Delivered], from)
            }
        };
        assert!(allowed_from.contains(&from), "an order that is {from} cannot take {event:?}");
        order.status = to;
    }
}

/// Checks the lines of a new order and returns their total.
fn validate_lines(lines: &[OrderLine]) -> Result<u64, OrderRejection> {
    if lines.is_empty() {
        return Err(OrderRejection::EmptyOrder);
    }
    if lines.len() > MAX_LINES_PER_ORDER {
        return Err(OrderRejection::TooManyLines { count: lines.len() });
    }
    for (i, line) in lines.iter().enumerate() {
        // Orders have a handful of lines: comparing with the earlier ones beats a set.
        if lines[..i].iter().any(|earlier| earlier.sku == line.sku) {
            return Err(OrderRejection::DuplicateSku { sku: line.sku.clone() });
        }
        if line.unit_price == 0 || line.unit_price > MAX_UNIT_PRICE {
            return Err(OrderRejection::InvalidUnitPrice {
                sku: line.sku.clone(),
                unit_price: line.unit_price,
            });
        }
    }
    // Within the limits the sum cannot overflow (checked at compile time in `limits`).
    let total = lines.iter().map(OrderLine::amount).sum();
    if total > MAX_AMOUNT {
        return Err(OrderRejection::AmountTooLarge { total });
    }
    Ok(total)
}
