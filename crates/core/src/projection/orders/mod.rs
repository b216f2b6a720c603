//! The order view per (tenant, order): status, customer, lines, totals, payment, and the
//! positions of the order's events.
//!
//! Table `orders`: key `(tenant, order)` (redb tuple of two strings), value an [`OrderView`]
//! in a small hand-written encoding (format 4), numbers as varints (unsigned LEB128):
//!
//! ```text
//! u8 format (4) | u8 status | u8 cancel reason | [u8; 3] currency
//! var total | var refunded | var placed_at (ms)
//! u8 payment status | var authorized | var captured
//! str customer | str payment (length 0: none)        str = u8 length + UTF-8 bytes (ids ≤ 64)
//! var line count, per line: str sku | var quantity | var unit price
//! var position count, then the first position and each next one as its step from the last
//! var hold_expires_at (ms; 0: unknown) | u8 decline reason | str gateway (length 0: none)
//! ```
//! Format 3, still read, ends before the last line: such a view has no hold expiry (and keeps
//! none: only the placing names it), and no decline reason or gateway until a payment event
//! of its order comes. The gateway of a decline because no gateway answered is left out (the
//! one such a decline names is a placeholder). Format 3 takes half the bytes
//! of format 2 or less, and redb's cost per row grows with its size (measured: 2.0 µs per
//! insert at 60 bytes, 3.3 at 180): the orders table is most of what a catch-up commits.
//! Format 2, still read, is format 3 with fixed-width little-endian numbers: u64 for each
//! number above, a u16 line count, a u32 position count and each position in full.
//! status: 0 placed, 1 confirmed, 2 shipped, 3 delivered, 4 cancelled; cancel reason: 0 none,
//! 1 requested, 2 payment declined, 3 hold expired; payment status: 0 none, 1 authorized,
//! 2 captured, 3 voided, 4 declined; decline reason: 0 none, 1 refused, 2 gateway unavailable.
//! Format 1 (before payment state) is not read: read models
//! are derived, rebuild them. The view follows the events of the order's own stream (placed,
//! confirmed, shipped, delivered, cancelled, refunded); their positions are listed in order.
//!
//! Payment state: capture, void and refund events name only the payment, so the projection
//! also keeps table `order_payments`: key `(tenant, payment)` → the order (a string), filled
//! from `PaymentAuthorized` and `PaymentDeclined`, which name the order. Through it the
//! payment's events set the view's payment status and amounts (their positions are not listed:
//! `positions` is the order's own stream). Stock events are not folded in.

mod apply;

use redb::{Database, TableDefinition};

use super::pending::read_table;
use super::row::{RowReader, put_str, put_varint};
use super::{Projection, ProjectionError, Rows, Stage};
use crate::Position;
use crate::domain::{
    CancelReason, Currency, CustomerId, DeclineReason, GatewayId, OrderId, OrderLine, OrderStatus,
    PaymentId, PaymentStatus, Quantity, Sku, TenantId, Timestamp,
};
use crate::engine::CommittedEvent;

/// The orders table: (tenant, order) → encoded [`OrderView`].
pub const ORDERS: TableDefinition<'static, (&str, &str), &[u8]> = TableDefinition::new("orders");

/// The payments table: (tenant, payment) → the order it pays for.
pub const ORDER_PAYMENTS: TableDefinition<'static, (&str, &str), &str> =
    TableDefinition::new("order_payments");

/// The status counts table: (tenant, status) → orders of the tenant in that status.
pub const ORDER_STATUS_COUNTS: TableDefinition<'static, (&str, &str), u64> =
    TableDefinition::new("order_status_counts");

/// The row format written.
const FORMAT: u8 = 4;
/// The format before, without the hold expiry, decline reason and gateway: still read.
const FORMAT_NO_PAYMENT_DETAIL: u8 = 3;
/// The format before that, with fixed-width numbers: still read.
const FORMAT_FIXED: u8 = 2;

/// One order as the read model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    /// Where the order is in its life.
    pub status: OrderStatus,
    /// Why it was cancelled, when it was.
    pub cancel_reason: Option<CancelReason>,
    /// Who buys.
    pub customer: CustomerId,
    /// Currency of every amount.
    pub currency: Currency,
    /// What is bought.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines, in minor units.
    pub total: u64,
    /// Money given back so far, in minor units.
    pub refunded: u64,
    /// The order's payment: the one that authorized it, else the last declined attempt;
    /// `None` before any.
    pub payment: Option<PaymentId>,
    /// Where [`OrderView::payment`] is (`None` without a payment). A refund keeps it
    /// `Captured`; [`OrderView::refunded`] says how much was given back.
    pub payment_status: Option<PaymentStatus>,
    /// Amount the payment authorized, in minor units (0 unless authorized).
    pub authorized: u64,
    /// Amount the payment captured, in minor units (0 until captured).
    pub captured: u64,
    /// The gateway that authorized or declined [`OrderView::payment`].
    pub gateway: Option<GatewayId>,
    /// Why [`OrderView::payment`] was declined, when it was.
    pub decline_reason: Option<DeclineReason>,
    /// When the stock hold runs out if the order is not paid (`None` for an order whose row
    /// was first written before format 4).
    pub hold_expires_at: Option<Timestamp>,
    /// When the order was placed (admission time).
    pub placed_at: Timestamp,
    /// Positions of the order's events, in order.
    pub positions: Vec<Position>,
}

impl OrderView {
    /// The row bytes (format above).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.lines.len() * 40 + self.positions.len() * 8);
        self.encode_into(&mut out);
        out
    }

    /// Appends the row bytes to `out` (to reuse one buffer for many rows).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        out.push(self.status.code());
        out.push(match self.cancel_reason {
            None => 0,
            Some(CancelReason::Requested) => 1,
            Some(CancelReason::PaymentDeclined) => 2,
            Some(CancelReason::HoldExpired) => 3,
        });
        out.extend_from_slice(self.currency.as_str().as_bytes());
        for n in [self.total, self.refunded, self.placed_at.0] {
            put_varint(out, n);
        }
        out.push(match self.payment_status {
            None => 0,
            Some(PaymentStatus::Authorized) => 1,
            Some(PaymentStatus::Captured) => 2,
            Some(PaymentStatus::Voided) => 3,
            Some(PaymentStatus::Declined) => 4,
        });
        for n in [self.authorized, self.captured] {
            put_varint(out, n);
        }
        put_str(out, self.customer.as_str());
        put_str(out, self.payment.as_ref().map_or("", PaymentId::as_str));
        put_varint(out, self.lines.len() as u64);
        for line in &self.lines {
            put_str(out, line.sku.as_str());
            put_varint(out, line.quantity.get());
            put_varint(out, line.unit_price);
        }
        put_varint(out, self.positions.len() as u64);
        let mut last = 0;
        for p in &self.positions {
            // A step is a byte or two where a position is three or four.
            let step = p.0.checked_sub(last).expect("an order's events come in log order");
            put_varint(out, step);
            last = p.0;
        }
        put_varint(out, self.hold_expires_at.map_or(0, |t| t.0));
        out.push(match self.decline_reason {
            None => 0,
            Some(DeclineReason::Refused) => 1,
            Some(DeclineReason::GatewayUnavailable) => 2,
        });
        put_str(out, self.gateway.as_ref().map_or("", GatewayId::as_str));
    }

    /// Reads a row written by [`OrderView::encode`].
    pub fn decode(bytes: &[u8]) -> Result<OrderView, ProjectionError> {
        let mut r = RowReader::new(bytes, "order");
        let format = r.u8()?;
        if ![FORMAT, FORMAT_NO_PAYMENT_DETAIL, FORMAT_FIXED].contains(&format) {
            return Err(corrupt(format!("unknown order row format {format}")));
        }
        let fixed = format == FORMAT_FIXED;
        let number = |r: &mut RowReader<'_>| if fixed { r.u64() } else { r.varint() };
        let code = r.u8()?;
        let status = OrderStatus::from_code(code)
            .ok_or_else(|| corrupt(format!("unknown order status {code}")))?;
        let cancel_reason = match r.u8()? {
            0 => None,
            1 => Some(CancelReason::Requested),
            2 => Some(CancelReason::PaymentDeclined),
            3 => Some(CancelReason::HoldExpired),
            other => return Err(corrupt(format!("unknown cancel reason {other}"))),
        };
        let currency = Currency::new(&String::from_utf8_lossy(r.take(3)?)).map_err(invalid)?;
        let (total, refunded, placed_at) = (number(&mut r)?, number(&mut r)?, number(&mut r)?);
        let placed_at = Timestamp(placed_at);
        let payment_status = match r.u8()? {
            0 => None,
            1 => Some(PaymentStatus::Authorized),
            2 => Some(PaymentStatus::Captured),
            3 => Some(PaymentStatus::Voided),
            4 => Some(PaymentStatus::Declined),
            other => return Err(corrupt(format!("unknown payment status {other}"))),
        };
        let (authorized, captured) = (number(&mut r)?, number(&mut r)?);
        let customer = CustomerId::new(r.str()?).map_err(invalid)?;
        let payment = match r.str()? {
            "" => None,
            id => Some(PaymentId::new(id).map_err(invalid)?),
        };
        let count = if fixed { u64::from(r.u16()?) } else { r.varint()? };
        let mut lines = Vec::with_capacity(usize::try_from(count.min(64)).unwrap_or(64));
        for _ in 0..count {
            let sku = Sku::new(r.str()?).map_err(invalid)?;
            let quantity = Quantity::new(number(&mut r)?).map_err(invalid)?;
            lines.push(OrderLine { sku, quantity, unit_price: number(&mut r)? });
        }
        let count = if fixed { u64::from(u32::from_le_bytes(r.array()?)) } else { r.varint()? };
        let mut positions = Vec::with_capacity(usize::try_from(count.min(1024)).unwrap_or(1024));
        let mut last = 0u64;
        for _ in 0..count {
            let position = if fixed {
                r.u64()?
            } else {
                let step = r.varint()?;
                last.checked_add(step).ok_or_else(|| corrupt("an order position overflows"))?
            };
            positions.push(Position(position));
            last = position;
        }
        let (mut hold_expires_at, mut decline_reason, mut gateway) = (None, None, None);
        if format == FORMAT {
            hold_expires_at = Some(r.varint()?).filter(|&ms| ms > 0).map(Timestamp);
            decline_reason = match r.u8()? {
                0 => None,
                1 => Some(DeclineReason::Refused),
                2 => Some(DeclineReason::GatewayUnavailable),
                other => return Err(corrupt(format!("unknown decline reason {other}"))),
            };
            gateway = match r.str()? {
                "" => None,
                id => Some(GatewayId::new(id).map_err(invalid)?),
            };
        }
        if !r.is_done() {
            return Err(corrupt("trailing bytes after an order row"));
        }
        Ok(OrderView {
            status,
            cancel_reason,
            customer,
            currency,
            lines,
            total,
            refunded,
            payment,
            payment_status,
            authorized,
            captured,
            gateway,
            decline_reason,
            hold_expires_at,
            placed_at,
            positions,
        })
    }
}

fn corrupt(what: impl Into<String>) -> ProjectionError {
    ProjectionError::Corrupt(what.into())
}

fn invalid(e: crate::domain::InvalidValue) -> ProjectionError {
    corrupt(format!("order row holds an invalid value: {e}"))
}

/// The tables of [`OrdersProjection`], open on one batch's [`Stage`].
#[derive(Debug)]
pub struct OrdersTables<'s> {
    orders: Rows<'s, (&'static str, &'static str), &'static [u8]>,
    payments: Rows<'s, (&'static str, &'static str), &'static str>,
    status_counts: Rows<'s, (&'static str, &'static str), u64>,
}

/// Maintains the [`ORDERS`], [`ORDER_PAYMENTS`] and [`ORDER_STATUS_COUNTS`] tables. Checkpoint name `orders`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrdersProjection;

impl Projection for OrdersProjection {
    type Tables<'s> = OrdersTables<'s>;

    fn name(&self) -> &str {
        "orders"
    }

    fn tables(&self) -> Vec<String> {
        vec![
            redb::TableHandle::name(&ORDERS).to_owned(),
            redb::TableHandle::name(&ORDER_PAYMENTS).to_owned(),
            redb::TableHandle::name(&ORDER_STATUS_COUNTS).to_owned(),
        ]
    }

    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError> {
        Ok(OrdersTables {
            orders: stage.table(ORDERS)?,
            payments: stage.table(ORDER_PAYMENTS)?,
            status_counts: stage.table(ORDER_STATUS_COUNTS)?,
        })
    }

    fn apply(
        &self,
        tables: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        apply::apply(tables, events)
    }
}

/// The view of `order` of `tenant` as far as the orders projection has come; `None` if it has
/// not seen the order placed.
pub fn order(
    db: &Database,
    tenant: &TenantId,
    order: &OrderId,
) -> Result<Option<OrderView>, ProjectionError> {
    let table = read_table(db, ORDERS)?;
    let row = table.get((tenant.as_str(), order.as_str()))?;
    row.map(|row| OrderView::decode(row.value())).transpose()
}

/// Every order of `tenant` with its view, ordered by order id.
pub fn orders_of(
    db: &Database,
    tenant: &TenantId,
) -> Result<Vec<(OrderId, OrderView)>, ProjectionError> {
    let table = read_table(db, ORDERS)?;
    let mut orders = Vec::new();
    for row in table.range((tenant.as_str(), "")..)? {
        let (key, value) = row?;
        let (row_tenant, order) = key.value();
        if row_tenant != tenant.as_str() {
            break;
        }
        let order = OrderId::new(order).map_err(invalid)?;
        orders.push((order, OrderView::decode(value.value())?));
    }
    Ok(orders)
}

/// How many orders each tenant has in each status, as far as the orders projection has come,
/// ordered by tenant then status name; statuses no order of the tenant ever reached are left
/// out (a status all its orders have left counts 0).
pub fn order_status_counts(
    db: &Database,
) -> Result<Vec<(TenantId, OrderStatus, u64)>, ProjectionError> {
    let table = read_table(db, ORDER_STATUS_COUNTS)?;
    let mut counts = Vec::new();
    for row in table.iter()? {
        let (key, count) = row?;
        let (tenant, status) = key.value();
        let count = count.value();
        let tenant = TenantId::new(tenant).map_err(invalid)?;
        let status = OrderStatus::parse(status)
            .ok_or_else(|| ProjectionError::Corrupt(format!("order status {status:?}")))?;
        counts.push((tenant, status, count));
    }
    Ok(counts)
}
