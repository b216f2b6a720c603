//! All aggregates of one tenant as one decider: the commands callers send, and the atomic
//! decisions that span aggregates.
//!
//! Placing an order holds stock on every line, shipping commits those holds, cancelling
//! releases them and expiring lets them run out, each in one decision whose events are
//! committed together: all lines move or none do, so stock is never oversold and never leaks.
//! Callers cannot reach an inventory hold directly, which keeps orders and holds in step.

use super::decider::{Context, Decider};
use super::growing::GrowingMap;
use super::inventory::{
    Inventory, InventoryCommand, InventoryEvent, InventoryRejection, InventoryState,
};
use super::order::{
    CancelReason, Order, OrderCommand, OrderEvent, OrderLine, OrderRejection, OrderState,
    OrderStatus, Shortage,
};
use super::payment::{
    Payment, PaymentCommand, PaymentEvent, PaymentRejection, PaymentState, PaymentStatus,
};
use super::types::{OrderId, PaymentId, Quantity, Sku, Timestamp};

/// The decider over all aggregates of one tenant.
#[derive(Debug)]
pub enum Tenant {}

/// A command on one tenant's aggregates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Goods of `sku` arrived.
    ReceiveStock {
        /// The SKU.
        sku: Sku,
        /// Units received.
        quantity: Quantity,
    },
    /// A stock count corrected `sku` by `delta` units.
    AdjustStock {
        /// The SKU.
        sku: Sku,
        /// Signed change of on hand.
        delta: i64,
    },
    /// A command on one order, with its effect on the stock of every line.
    Order {
        /// The order.
        order: OrderId,
        /// What to do.
        command: OrderCommand,
    },
    /// A command on one payment.
    Payment {
        /// The payment.
        payment: PaymentId,
        /// What to do.
        command: PaymentCommand,
    },
}

/// An event of one of the tenant's aggregates, named by the aggregate's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An event of the inventory of `sku`.
    Inventory {
        /// The SKU.
        sku: Sku,
        /// What happened.
        event: InventoryEvent,
    },
    /// An event of `order`.
    Order {
        /// The order.
        order: OrderId,
        /// What happened.
        event: OrderEvent,
    },
    /// An event of `payment`.
    Payment {
        /// The payment.
        payment: PaymentId,
        /// What happened.
        event: PaymentEvent,
    },
}

impl Event {
    /// The id of the aggregate the event is about (a SKU, an order or a payment id).
    #[must_use]
    pub fn aggregate_id(&self) -> &str {
        match self {
            Event::Inventory { sku, .. } => sku.as_str(),
            Event::Order { order, .. } => order.as_str(),
            Event::Payment { payment, .. } => payment.as_str(),
        }
    }
}

/// Why a command was refused: the family's rejection and the aggregate it was about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// An inventory command was refused.
    #[error("SKU {sku}: {rejection}")]
    Inventory {
        /// The SKU.
        sku: Sku,
        /// Why.
        rejection: InventoryRejection,
    },
    /// An order command was refused.
    #[error("order {order}: {rejection}")]
    Order {
        /// The order.
        order: OrderId,
        /// Why.
        rejection: OrderRejection,
    },
    /// A payment command was refused.
    #[error("payment {payment}: {rejection}")]
    Payment {
        /// The payment.
        payment: PaymentId,
        /// Why.
        rejection: PaymentRejection,
    },
}

impl Rejection {
    /// Stable snake_case code, part of the API: the family's own (see
    /// [`InventoryRejection::code`], [`OrderRejection::code`], [`PaymentRejection::code`]).
    /// Families share a code where the reason is the same (`unknown_order`,
    /// `insufficient_stock`, `invalid_transition`, …); which aggregate refused is the variant.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Inventory { rejection, .. } => rejection.code(),
            Rejection::Order { rejection, .. } => rejection.code(),
            Rejection::Payment { rejection, .. } => rejection.code(),
        }
    }
}

/// Every aggregate of one tenant, in memory. Aggregates never seen are absent, which reads the
/// same as their default state.
#[derive(Clone, Debug, Default)]
pub struct TenantState {
    inventory: GrowingMap<Sku, InventoryState>,
    orders: GrowingMap<OrderId, OrderState>,
    payments: GrowingMap<PaymentId, PaymentState>,
}

impl TenantState {
    /// The inventory of `sku`, if it was ever touched.
    #[must_use]
    pub fn inventory(&self, sku: &Sku) -> Option<&InventoryState> {
        self.inventory.get(sku)
    }

    /// Every SKU's inventory.
    pub fn inventories(&self) -> impl Iterator<Item = (&Sku, &InventoryState)> {
        self.inventory.iter()
    }

    /// Starts loading the orders and payments `command` will look up first: a hint for a
    /// decider that sees its next commands coming (what it reaches through its order, and the
    /// stock of its lines, come in a second hint: [`Self::prefetch_through`]).
    pub(crate) fn prefetch_for(&self, command: &Command) {
        match command {
            Command::Order { order, command } => {
                self.orders.prefetch(order);
                if let OrderCommand::Confirm { payment } = command {
                    self.payments.prefetch(payment);
                }
            }
            Command::Payment { payment, command } => {
                self.payments.prefetch(payment);
                if let PaymentCommand::Authorize { order, .. }
                | PaymentCommand::Decline { order, .. } = command
                {
                    self.orders.prefetch(order);
                }
            }
            Command::ReceiveStock { .. } | Command::AdjustStock { .. } => {}
        }
    }

    /// Starts loading what `command` reaches through its order: the stock of a new order's
    /// lines, or a placed order's payment and stock (shipping captures and commits, cancelling
    /// voids and releases). A second hint, given once [`Self::prefetch_for`] had time to load
    /// the order; it looks the order up.
    pub(crate) fn prefetch_through(&self, command: &Command) {
        let Command::Order { order, command } = command else { return };
        let lines = match command {
            OrderCommand::Place { lines, .. } => lines.as_slice(),
            _ => {
                let Some(order) = self.orders.get(order) else { return };
                if let Some(payment) = order.payment() {
                    self.payments.prefetch(payment);
                }
                order.lines()
            }
        };
        for line in lines {
            self.inventory.prefetch(&line.sku);
        }
    }

    /// Starts loading the order or payment `event` is about: a hint for a replay that sees
    /// its next events coming (SKUs are few and stay in cache).
    pub(crate) fn prefetch_for_event(&self, event: &Event) {
        match event {
            Event::Order { order, .. } => self.orders.prefetch(order),
            Event::Payment { payment, .. } => self.payments.prefetch(payment),
            Event::Inventory { .. } => {}
        }
    }

    /// Starts loading the order `order`: a hint for a lookup a few steps ahead.
    pub(crate) fn prefetch_order(&self, order: &OrderId) {
        self.orders.prefetch(order);
    }

    /// The order `order`, if it was placed.
    #[must_use]
    pub fn order(&self, order: &OrderId) -> Option<&OrderState> {
        self.orders.get(order)
    }

    /// Every order.
    pub fn orders(&self) -> impl Iterator<Item = (&OrderId, &OrderState)> {
        self.orders.iter()
    }

    /// The payment `payment`, if it was started.
    #[must_use]
    pub fn payment(&self, payment: &PaymentId) -> Option<&PaymentState> {
        self.payments.get(payment)
    }

    /// Every payment.
    pub fn payments(&self) -> impl Iterator<Item = (&PaymentId, &PaymentState)> {
        self.payments.iter()
    }

    /// The aggregates the iterators above give, as the engine's snapshot kept them.
    pub(crate) fn restored(
        inventory: GrowingMap<Sku, InventoryState>,
        orders: GrowingMap<OrderId, OrderState>,
        payments: GrowingMap<PaymentId, PaymentState>,
    ) -> Self {
        TenantState { inventory, orders, payments }
    }
}

impl Decider for Tenant {
    type State = TenantState;
    type Command = Command;
    type Event = Event;
    type Rejection = Rejection;

    fn decide(
        state: &TenantState,
        command: &Command,
        ctx: &Context,
    ) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::ReceiveStock { sku, quantity } => decide_inventory(
                state,
                sku,
                &InventoryCommand::Receive { quantity: *quantity },
                ctx,
            ),
            Command::AdjustStock { sku, delta } => {
                decide_inventory(state, sku, &InventoryCommand::Adjust { delta: *delta }, ctx)
            }
            Command::Order { order, command } => decide_order(state, order, command, ctx)
                .map_err(|rejection| Rejection::Order { order: order.clone(), rejection }),
            Command::Payment { payment, command } => decide_payment(state, payment, command, ctx)
                .map_err(|rejection| Rejection::Payment { payment: payment.clone(), rejection }),
        }
    }

    fn evolve(state: &mut TenantState, event: &Event) {
        match event {
            Event::Inventory { sku, event } => {
                with_slot(&mut state.inventory, sku, |stock| Inventory::evolve(stock, event));
            }
            Event::Order { order, event } => {
                with_slot(&mut state.orders, order, |order| Order::evolve(order, event));
            }
            Event::Payment { payment, event } => {
                with_slot(&mut state.payments, payment, |payment| Payment::evolve(payment, event));
            }
        }
    }
}

impl Tenant {
    /// [`Decider::evolve`] for an event read back from a log, which first checks the links
    /// between aggregates that the engine's decisions keep and each aggregate's own `evolve`
    /// cannot see: an order's total is what its lines cost; a payment is for an order of the
    /// tenant, placed, in its currency and for its total; a confirmation names a payment
    /// authorized for that order. A log the engine wrote
    /// always keeps them; one rewritten outside it may not, and a state that breaks them would
    /// panic a later decision (or stop the read models). Panics, as `evolve` does, naming the
    /// broken link. For replays (the engine's open, the audit): the engine's decisions keep the
    /// links by construction, and apply with `evolve` alone.
    pub fn evolve_replayed(state: &mut TenantState, event: &Event) {
        match event {
            Event::Payment {
                payment,
                event:
                    PaymentEvent::PaymentAuthorized { order, amount, .. }
                    | PaymentEvent::PaymentDeclined { order, amount, .. },
            } => {
                let placed = state.orders.get(order);
                assert!(
                    placed.is_some_and(|o| o.total() == Some(*amount)),
                    "payment {payment} is for order {order}, which was not placed for {amount}"
                );
            }
            Event::Order { order, event: OrderEvent::OrderPlaced { lines, total, .. } } => {
                // What its payment is authorized and captured for.
                let sum = lines.iter().try_fold(0u64, |sum, line| {
                    sum.checked_add(line.quantity.get().checked_mul(line.unit_price)?)
                });
                assert!(
                    sum == Some(*total),
                    "order {order} totals {total}, not what its lines cost"
                );
            }
            Event::Order { order, event: OrderEvent::OrderConfirmed { payment } } => {
                let authorizes = state.payments.get(payment).is_some_and(|p| {
                    p.status() == Some(PaymentStatus::Authorized) && p.order() == Some(order)
                });
                assert!(
                    authorizes,
                    "order {order} is confirmed by payment {payment}, which did not authorize it"
                );
            }
            _ => {}
        }
        <Tenant as Decider>::evolve(state, event);
    }
}

/// Calls `f` with the value of `key` in `map`, inserted as the default if absent. One probe
/// either way: the key is cloned up front, which for ids of up to 23 bytes (kept inline) is a
/// copy, cheaper than probing twice to insert an aggregate's first event; a longer id's clone
/// counts one more reference to its text.
fn with_slot<K, V, R>(map: &mut GrowingMap<K, V>, key: &K, f: impl FnOnce(&mut V) -> R) -> R
where
    K: Clone + Eq + std::hash::Hash,
    V: Default,
{
    f(map.get_or_insert_with(key.clone(), V::default).0)
}

fn decide_inventory(
    state: &TenantState,
    sku: &Sku,
    command: &InventoryCommand,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    let absent = InventoryState::default();
    let stock = state.inventory.get(sku).unwrap_or(&absent);
    let event = Inventory::decide_event(stock, command, ctx)
        .map_err(|rejection| Rejection::Inventory { sku: sku.clone(), rejection })?;
    Ok(vec![Event::Inventory { sku: sku.clone(), event }])
}

/// An order command's events, in one `Vec`: the order's event, then one stock event per line
/// (if the command moves stock), then the payment's event (if it moves money).
fn decide_order(
    state: &TenantState,
    id: &OrderId,
    command: &OrderCommand,
    ctx: &Context,
) -> Result<Vec<Event>, OrderRejection> {
    let absent = OrderState::default();
    let order = state.orders.get(id).unwrap_or(&absent);
    if let OrderCommand::Confirm { payment } = command {
        check_authorizes(state, id, order, payment)?;
    }
    let order_event = Order::decide_event(order, command, ctx)?;
    let stock = stock_effect(order, command, &order_event);
    let payment = payment_effect(order, command);
    let lines = stock.map_or(0, |(lines, _)| lines.len());
    let mut events = Vec::with_capacity(1 + lines + usize::from(payment.is_some()));
    events.push(Event::Order { order: id.clone(), event: order_event });
    if let Some((lines, effect)) = stock {
        decide_order_stock(state, id, lines, effect, ctx, &mut events)?;
    }
    if let Some((payment, command)) = payment {
        let state = state.payments.get(payment).expect("an order's payment exists");
        let event = Payment::decide_event(state, &command, ctx)
            .unwrap_or_else(|r| panic!("order {id} and payment {payment} are out of step: {r}"));
        events.push(Event::Payment { payment: payment.clone(), event });
    }
    Ok(events)
}

/// The lines an order command moves stock of, and how: a new order's lines (those of the
/// command, which its `OrderPlaced` records), or the placed order's.
fn stock_effect<'a>(
    order: &'a OrderState,
    command: &'a OrderCommand,
    order_event: &OrderEvent,
) -> Option<(&'a [OrderLine], StockEffect)> {
    Some(match (order_event, command) {
        (OrderEvent::OrderPlaced { hold_expires_at, .. }, OrderCommand::Place { lines, .. }) => {
            (lines.as_slice(), StockEffect::Hold(*hold_expires_at))
        }
        (_, OrderCommand::Ship) => (order.lines(), StockEffect::Commit),
        (_, OrderCommand::Expire | OrderCommand::Cancel { reason: CancelReason::HoldExpired }) => {
            (order.lines(), StockEffect::Expire)
        }
        (_, OrderCommand::Cancel { .. }) => (order.lines(), StockEffect::Release),
        _ => return None,
    })
}

/// Appends the stock events of an order command to `events`: every line of the order moves,
/// or the command is rejected naming every line that cannot.
fn decide_order_stock(
    state: &TenantState,
    id: &OrderId,
    lines: &[OrderLine],
    effect: StockEffect,
    ctx: &Context,
    events: &mut Vec<Event>,
) -> Result<(), OrderRejection> {
    let mut unknown = Vec::new();
    let mut shortages = Vec::new();
    for line in lines {
        let stock = match state.inventory.get(&line.sku) {
            Some(stock) if stock.is_known() => stock,
            _ => {
                unknown.push(line.sku.clone());
                continue;
            }
        };
        match Inventory::decide_event(stock, &effect.command(id, line.quantity), ctx) {
            Ok(event) => events.push(Event::Inventory { sku: line.sku.clone(), event }),
            Err(InventoryRejection::InsufficientStock { requested, available }) => {
                shortages.push(Shortage { sku: line.sku.clone(), requested, available });
            }
            Err(other) => {
                panic!("order {id} and the holds of {} are out of step: {other}", line.sku)
            }
        }
    }
    if !unknown.is_empty() {
        return Err(OrderRejection::UnknownSku { skus: unknown });
    }
    if !shortages.is_empty() {
        return Err(OrderRejection::InsufficientStock { shortages });
    }
    Ok(())
}

/// What an order command does to the order's payment, so that money moves with the goods:
/// shipping captures the total, cancelling a confirmed order voids its authorization, and a
/// refund of the order refunds the payment.
fn payment_effect<'a>(
    order: &'a OrderState,
    command: &OrderCommand,
) -> Option<(&'a PaymentId, PaymentCommand)> {
    let payment = order.payment()?;
    let command = match command {
        OrderCommand::Ship => PaymentCommand::Capture { amount: order.total()? },
        OrderCommand::Cancel { .. } => PaymentCommand::Void,
        OrderCommand::Refund { amount } => PaymentCommand::Refund { amount: *amount },
        _ => return None,
    };
    Some((payment, command))
}

/// Checks that `payment` is an authorization of the order's total, so that it may confirm it.
fn check_authorizes(
    state: &TenantState,
    id: &OrderId,
    order: &OrderState,
    payment: &PaymentId,
) -> Result<(), OrderRejection> {
    let authorizes = state.payments.get(payment).is_some_and(|p| {
        p.status() == Some(PaymentStatus::Authorized)
            && p.order() == Some(id)
            && p.authorized() == order.total()
    });
    // Only an order waiting for payment needs the check; others are refused by the order.
    if authorizes || order.status() != Some(OrderStatus::Placed) {
        Ok(())
    } else {
        Err(OrderRejection::PaymentNotAuthorized { payment: payment.clone() })
    }
}

/// What an order command does to the stock of each of its lines.
#[derive(Clone, Copy)]
enum StockEffect {
    /// A new order holds each line until the given time.
    Hold(Timestamp),
    /// Shipping takes the held units out of stock.
    Commit,
    /// Cancelling gives the held units back.
    Release,
    /// The hold ran out of time.
    Expire,
}

impl StockEffect {
    fn command(self, order: &OrderId, quantity: Quantity) -> InventoryCommand {
        let order = order.clone();
        match self {
            StockEffect::Hold(expires_at) => InventoryCommand::Hold { order, quantity, expires_at },
            StockEffect::Commit => InventoryCommand::Commit { order, quantity },
            StockEffect::Release => InventoryCommand::Release { order, quantity },
            StockEffect::Expire => InventoryCommand::Expire { order, quantity },
        }
    }
}

fn decide_payment(
    state: &TenantState,
    id: &PaymentId,
    command: &PaymentCommand,
    ctx: &Context,
) -> Result<Vec<Event>, PaymentRejection> {
    let absent = PaymentState::default();
    let payment = state.payments.get(id).unwrap_or(&absent);
    let (PaymentCommand::Authorize { order: order_id, amount, .. }
    | PaymentCommand::Decline { order: order_id, amount, .. }) = command
    else {
        return Err(PaymentRejection::FollowsOrder { command: command.name() });
    };
    if payment.status().is_some() {
        return Err(PaymentRejection::PaymentExists);
    }
    let (Some(order), Some(total), Some(status)) =
        state.orders.get(order_id).map_or((None, None, None), |o| (Some(o), o.total(), o.status()))
    else {
        return Err(PaymentRejection::UnknownOrder { order: order_id.clone() });
    };
    if amount.currency != total.currency {
        return Err(PaymentRejection::CurrencyMismatch {
            expected: total.currency,
            got: amount.currency,
        });
    }
    if amount.minor != total.minor {
        return Err(PaymentRejection::AmountMismatch { expected: total.minor, got: amount.minor });
    }
    if status != OrderStatus::Placed {
        return Err(PaymentRejection::OrderNotPayable { status });
    }
    let expires_at = order.hold_expires_at().expect("a placed order has a hold");
    if matches!(command, PaymentCommand::Authorize { .. }) && ctx.now >= expires_at {
        return Err(PaymentRejection::HoldExpired { expires_at });
    }
    let payment_event = Payment::decide_event(payment, command, ctx)?;
    let mut events = Vec::with_capacity(2);
    events.push(Event::Payment { payment: id.clone(), event: payment_event });
    // An authorization confirms the order in the same decision, so no second payment can be
    // authorized for it.
    if matches!(command, PaymentCommand::Authorize { .. }) {
        let confirm = OrderCommand::Confirm { payment: id.clone() };
        let event =
            Order::decide_event(order, &confirm, ctx).expect("a placed order can be confirmed");
        events.push(Event::Order { order: order_id.clone(), event });
    }
    Ok(events)
}
