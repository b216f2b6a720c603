//! Sales KPIs per tenant and minute: what the live dashboard shows.
//!
//! An event counts in the minute of its admission time: `recorded_at / 60_000` (minutes since
//! the Unix epoch, UTC). Minutes without a counted event have no row.
//!
//! - **orders** and **revenue** per currency, from `OrderPlaced`: revenue is the sum of the
//!   totals of the orders *placed* in the minute (booked sales, known at once), not of captured
//!   amounts, which arrive only when orders ship; cancellations and refunds do not lower it.
//! - **basket**: lines and units of the placed orders, so the average basket is
//!   revenue / orders per currency ([`CurrencySales::average_basket`]) and lines / orders
//!   ([`SalesKpis::average_lines`]).
//! - **cancellations** by reason, from `OrderCancelled`.
//! - **payment declines** by gateway, from `PaymentDeclined` refused by the customer's bank,
//!   and **authorizations** by gateway, from `PaymentAuthorized`: together the success rate
//!   per gateway. A decline because no gateway answered counts apart (**unavailable**): the
//!   gateway such a decline names is a placeholder, and counting it there would blame a
//!   healthy gateway for another's outage.
//!
//! Table `sales_kpis`: key `(tenant, minute)` (redb tuple of a string and a `u64`), value a
//! [`SalesKpis`] in a small hand-written little-endian encoding (format 4; format 3, whose
//! gateway counts are u16, format 2, without the unavailable count either, whose declines
//! counted under the gateway they name, and format 1, without the authorizations either, are
//! still read):
//!
//! ```text
//! u8 format (4) | u64 lines | u64 units
//! u64 cancelled: requested | u64 payment declined | u64 hold expired
//! u16 currency count, per currency (ascending): [u8; 3] code | u64 orders | u64 revenue
//! u32 gateway count, per gateway (ascending): u8 length + UTF-8 id | u64 declines
//! u32 gateway count, per gateway (ascending): u8 length + UTF-8 id | u64 authorizations
//! u64 unavailable
//! ```
//! Every sum saturates, never wraps: these are dashboard figures, and an error here would stop
//! the read models of every tenant. For the same reason a minute's gateways are counted in a
//! u32 (an embedding program may name any number of gateways; a u16 count stopped the host at
//! 65,536).

use std::collections::hash_map::Entry;

use redb::{Database, TableDefinition};
use rustc_hash::FxHashMap;

use super::pending::read_table;
use super::row::{RowReader, put_str};
use super::{Projection, ProjectionError, Rows, Stage};
use crate::domain::{
    CancelReason, Currency, DeclineReason, Event, GatewayId, OrderEvent, OrderLine, PaymentEvent,
    TenantId,
};
use crate::engine::CommittedEvent;

/// The KPI table: (tenant, minute since the epoch) → encoded [`SalesKpis`].
pub const SALES_KPIS: TableDefinition<'static, (&str, u64), &[u8]> =
    TableDefinition::new("sales_kpis");

const FORMAT: u8 = 4;

/// Milliseconds per minute: an event's minute is `recorded_at / MINUTE_MS`.
pub const MINUTE_MS: u64 = 60_000;

/// Orders placed in one currency in one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrencySales {
    /// The currency.
    pub currency: Currency,
    /// Orders placed in it.
    pub orders: u64,
    /// Sum of their totals, in minor units.
    pub revenue: u64,
}

impl CurrencySales {
    /// Average order total in minor units, rounded down (0 without orders).
    #[must_use]
    pub fn average_basket(&self) -> u64 {
        self.revenue.checked_div(self.orders).unwrap_or(0)
    }
}

/// Orders cancelled in one minute, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cancellations {
    /// Asked for by the customer or the merchant.
    pub requested: u64,
    /// No gateway authorized the payment.
    pub payment_declined: u64,
    /// Not paid before the stock hold ran out.
    pub hold_expired: u64,
}

impl Cancellations {
    /// Every cancellation.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.requested + self.payment_declined + self.hold_expired
    }
}

/// The sales figures of one tenant in one minute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalesKpis {
    /// Orders placed and their revenue, per currency, ordered by currency code.
    pub sales: Vec<CurrencySales>,
    /// Lines of the orders placed.
    pub lines: u64,
    /// Units of the orders placed (sum of the lines' quantities).
    pub units: u64,
    /// Orders cancelled.
    pub cancellations: Cancellations,
    /// Payments the customer's bank refused, per gateway, ordered by gateway id.
    pub declines: Vec<(GatewayId, u64)>,
    /// Payments authorized, per gateway, ordered by gateway id.
    pub authorizations: Vec<(GatewayId, u64)>,
    /// Payments declined because no gateway answered (see the module's documentation).
    pub unavailable: u64,
}

impl SalesKpis {
    /// Orders placed, in every currency.
    #[must_use]
    pub fn orders(&self) -> u64 {
        self.sales.iter().map(|s| s.orders).sum()
    }

    /// The sales in `currency`, if an order was placed in it.
    #[must_use]
    pub fn in_currency(&self, currency: Currency) -> Option<&CurrencySales> {
        self.sales.iter().find(|s| s.currency == currency)
    }

    /// Average lines per placed order, `None` without orders.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a dashboard figure: exact far beyond real counts
    pub fn average_lines(&self) -> Option<f64> {
        let orders = self.orders();
        (orders > 0).then(|| self.lines as f64 / orders as f64)
    }

    /// Payments declined, over every gateway, and because none answered.
    #[must_use]
    pub fn declines_total(&self) -> u64 {
        self.declines.iter().map(|(_, n)| n).sum::<u64>() + self.unavailable
    }

    /// The row bytes (format above).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.sales.len() * 19 + self.declines.len() * 40);
        out.push(FORMAT);
        let c = &self.cancellations;
        for n in [self.lines, self.units, c.requested, c.payment_declined, c.hold_expired] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let count = u16::try_from(self.sales.len()).expect("fewer currencies than u16::MAX");
        out.extend_from_slice(&count.to_le_bytes());
        for s in &self.sales {
            out.extend_from_slice(s.currency.as_str().as_bytes());
            out.extend_from_slice(&s.orders.to_le_bytes());
            out.extend_from_slice(&s.revenue.to_le_bytes());
        }
        for per_gateway in [&self.declines, &self.authorizations] {
            let count = u32::try_from(per_gateway.len()).expect("fewer gateways than u32::MAX");
            out.extend_from_slice(&count.to_le_bytes());
            for (gateway, n) in per_gateway {
                put_str(&mut out, gateway.as_str());
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.unavailable.to_le_bytes());
        out
    }

    /// Reads a row written by [`SalesKpis::encode`].
    pub fn decode(bytes: &[u8]) -> Result<SalesKpis, ProjectionError> {
        let mut r = RowReader::new(bytes, "KPI");
        let format = r.u8()?;
        if !(1..=FORMAT).contains(&format) {
            return Err(corrupt(format!("unknown KPI row format {format}")));
        }
        let (lines, units) = (r.u64()?, r.u64()?);
        let cancellations = Cancellations {
            requested: r.u64()?,
            payment_declined: r.u64()?,
            hold_expired: r.u64()?,
        };
        let count = r.u16()?;
        let mut sales = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            let currency = Currency::new(r.text(3)?).map_err(invalid)?;
            sales.push(CurrencySales { currency, orders: r.u64()?, revenue: r.u64()? });
        }
        let declines = per_gateway(&mut r, format)?;
        let authorizations = if format == 1 { Vec::new() } else { per_gateway(&mut r, format)? };
        let unavailable = if format < 3 { 0 } else { r.u64()? };
        if !r.is_done() {
            return Err(corrupt("trailing bytes after a KPI row"));
        }
        Ok(SalesKpis { sales, lines, units, cancellations, declines, authorizations, unavailable })
    }
}

/// Reads a list of (gateway, count) pairs of a row in `format`.
fn per_gateway(
    r: &mut RowReader<'_>,
    format: u8,
) -> Result<Vec<(GatewayId, u64)>, ProjectionError> {
    let count = if format < 4 { u32::from(r.u16()?) } else { r.u32()? };
    let mut list = Vec::with_capacity(usize::try_from(count).unwrap_or(usize::MAX).min(64));
    for _ in 0..count {
        list.push((GatewayId::new(r.str()?).map_err(invalid)?, r.u64()?));
    }
    Ok(list)
}

fn corrupt(what: impl Into<String>) -> ProjectionError {
    ProjectionError::Corrupt(what.into())
}

fn invalid(e: crate::domain::InvalidValue) -> ProjectionError {
    corrupt(format!("KPI row holds an invalid value: {e}"))
}

/// What one event adds to its minute.
enum Count<'a> {
    Placed { currency: Currency, lines: &'a [OrderLine], total: u64 },
    Cancelled(CancelReason),
    Declined(&'a GatewayId),
    Unavailable,
    Authorized(&'a GatewayId),
}

/// Maintains the [`SALES_KPIS`] table. Checkpoint name `sales_kpis`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KpiProjection;

impl Projection for KpiProjection {
    type Tables<'s> = Rows<'s, (&'static str, u64), &'static [u8]>;

    fn name(&self) -> &str {
        "sales_kpis"
    }

    fn tables(&self) -> Vec<String> {
        vec![redb::TableHandle::name(&SALES_KPIS).to_owned()]
    }

    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError> {
        stage.table(SALES_KPIS)
    }

    fn apply(
        &self,
        table: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        // Each (tenant, minute) touched by the batch is read once and written once.
        let mut minutes: FxHashMap<(&str, u64), SalesKpis> = FxHashMap::default();
        for committed in events {
            let Some(count) = Count::of(&committed.event) else { continue };
            let key = (committed.tenant.as_str(), committed.recorded_at.0 / MINUTE_MS);
            let kpis = match minutes.entry(key) {
                Entry::Occupied(cached) => cached.into_mut(),
                Entry::Vacant(missing) => missing.insert(
                    table
                        .get(key)?
                        .map(|row| SalesKpis::decode(row.value()))
                        .transpose()?
                        .unwrap_or_default(),
                ),
            };
            kpis.count(count);
        }
        for (key, kpis) in minutes {
            table.insert(key, kpis.encode().as_slice());
        }
        Ok(())
    }
}

impl<'a> Count<'a> {
    /// What `event` adds to its minute, if anything.
    fn of(event: &'a Event) -> Option<Count<'a>> {
        Some(match event {
            Event::Order {
                event: OrderEvent::OrderPlaced { currency, lines, total, .. }, ..
            } => Count::Placed { currency: *currency, lines, total: *total },
            Event::Order { event: OrderEvent::OrderCancelled { reason }, .. } => {
                Count::Cancelled(*reason)
            }
            Event::Payment {
                event: PaymentEvent::PaymentDeclined { gateway, reason, .. }, ..
            } => match reason {
                DeclineReason::Refused => Count::Declined(gateway),
                DeclineReason::GatewayUnavailable => Count::Unavailable,
            },
            Event::Payment { event: PaymentEvent::PaymentAuthorized { gateway, .. }, .. } => {
                Count::Authorized(gateway)
            }
            _ => return None,
        })
    }
}

impl SalesKpis {
    /// Adds what `count` counts to this minute. Saturating, as [`SalesKpis::add`] is: these
    /// are dashboard figures, and one tenant's sums out of range (18,447 orders of the largest
    /// total in one minute and currency pass `u64::MAX`) must not stop the read models every
    /// tenant reads.
    fn count(&mut self, count: Count<'_>) {
        let add = |n: &mut u64, by: u64| *n = n.saturating_add(by);
        match count {
            Count::Placed { currency, lines, total } => {
                let found =
                    self.sales.binary_search_by_key(&currency.as_str(), |s| s.currency.as_str());
                let at = found.unwrap_or_else(|at| {
                    self.sales.insert(at, CurrencySales { currency, orders: 0, revenue: 0 });
                    at
                });
                add(&mut self.sales[at].orders, 1);
                add(&mut self.sales[at].revenue, total);
                add(&mut self.lines, u64::try_from(lines.len()).unwrap_or(u64::MAX));
                for line in lines {
                    add(&mut self.units, line.quantity.get());
                }
            }
            Count::Cancelled(reason) => {
                let c = &mut self.cancellations;
                let n = match reason {
                    CancelReason::Requested => &mut c.requested,
                    CancelReason::PaymentDeclined => &mut c.payment_declined,
                    CancelReason::HoldExpired => &mut c.hold_expired,
                };
                add(n, 1);
            }
            Count::Declined(gateway) => add(count_of(&mut self.declines, gateway), 1),
            Count::Unavailable => add(&mut self.unavailable, 1),
            Count::Authorized(gateway) => add(count_of(&mut self.authorizations, gateway), 1),
        }
    }
}

/// The KPIs of `tenant` for every minute from `from_minute` to `to_minute`, **both included**
/// (minutes since the epoch, see [`MINUTE_MS`]), ascending, as far as the projection has come.
/// Minutes without activity are left out. An empty range (`from_minute > to_minute`) gives
/// nothing.
pub fn kpis(
    db: &Database,
    tenant: &TenantId,
    from_minute: u64,
    to_minute: u64,
) -> Result<Vec<(u64, SalesKpis)>, ProjectionError> {
    let table = read_table(db, SALES_KPIS)?;
    if from_minute > to_minute {
        return Ok(Vec::new());
    }
    let tenant = tenant.as_str();
    let mut minutes = Vec::new();
    for row in table.range((tenant, from_minute)..=(tenant, to_minute))? {
        let (key, value) = row?;
        minutes.push((key.value().1, SalesKpis::decode(value.value())?));
    }
    Ok(minutes)
}

/// The count of `gateway` in a list ordered by gateway id, inserted at 0 if missing.
fn count_of<'a>(list: &'a mut Vec<(GatewayId, u64)>, gateway: &GatewayId) -> &'a mut u64 {
    let at = match list.binary_search_by(|(g, _)| g.as_str().cmp(gateway.as_str())) {
        Ok(at) => at,
        Err(at) => {
            list.insert(at, (gateway.clone(), 0));
            at
        }
    };
    &mut list[at].1
}

impl SalesKpis {
    /// Adds `other`'s figures to these (saturating: a dashboard sum, never a panic).
    pub fn add(&mut self, other: &SalesKpis) {
        for sale in &other.sales {
            match self.sales.binary_search_by_key(&sale.currency.as_str(), |s| s.currency.as_str())
            {
                Ok(at) => {
                    let mine = &mut self.sales[at];
                    mine.orders = mine.orders.saturating_add(sale.orders);
                    mine.revenue = mine.revenue.saturating_add(sale.revenue);
                }
                Err(at) => self.sales.insert(at, *sale),
            }
        }
        self.lines = self.lines.saturating_add(other.lines);
        self.units = self.units.saturating_add(other.units);
        let (mine, theirs) = (&mut self.cancellations, &other.cancellations);
        mine.requested = mine.requested.saturating_add(theirs.requested);
        mine.payment_declined = mine.payment_declined.saturating_add(theirs.payment_declined);
        mine.hold_expired = mine.hold_expired.saturating_add(theirs.hold_expired);
        for (gateway, n) in &other.declines {
            let count = count_of(&mut self.declines, gateway);
            *count = count.saturating_add(*n);
        }
        for (gateway, n) in &other.authorizations {
            let count = count_of(&mut self.authorizations, gateway);
            *count = count.saturating_add(*n);
        }
        self.unavailable = self.unavailable.saturating_add(other.unavailable);
    }
}

/// Minutes per day.
pub const DAY_MINUTES: u64 = 24 * 60;

/// The widest offset of a local time from UTC, in minutes (UTC−12:00 to UTC+14:00 exist).
pub const MAX_UTC_OFFSET_MINUTES: i32 = 14 * 60;

/// One tenant's sales of one day: what the live dashboard shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayKpis {
    /// The day's first minute (minutes since the epoch).
    pub first_minute: u64,
    /// Orders placed per minute, `(minute, orders)` ascending, minutes with activity only.
    pub per_minute: Vec<(u64, u64)>,
    /// The day's figures, summed over its minutes.
    pub totals: SalesKpis,
    /// The busiest minute and its orders (the earliest of equals), `None` without orders.
    pub peak: Option<(u64, u64)>,
}

impl DayKpis {
    /// Orders placed in `minute` (0 if none).
    #[must_use]
    pub fn orders_in(&self, minute: u64) -> u64 {
        self.per_minute.iter().find(|(m, _)| *m == minute).map_or(0, |(_, n)| *n)
    }
}

/// The KPIs of the day holding `minute` (minutes since the epoch), for `tenant`, as far as the
/// projection has come. The day is local to `utc_offset` minutes east of UTC (0 for the UTC
/// day; −300 for New York in winter, so that Black Friday's count does not start again at
/// 7 p.m. there), clamped to ±[`MAX_UTC_OFFSET_MINUTES`].
pub fn day(
    db: &Database,
    tenant: &TenantId,
    minute: u64,
    utc_offset: i32,
) -> Result<DayKpis, ProjectionError> {
    let offset = i64::from(utc_offset.clamp(-MAX_UTC_OFFSET_MINUTES, MAX_UTC_OFFSET_MINUTES));
    let minute = i64::try_from(minute).map_err(|_| corrupt("a minute beyond the calendar"))?;
    let local = minute + offset;
    let day_minutes = i64::try_from(DAY_MINUTES).expect("small");
    // Before the epoch's first local day only for the first minutes of 1970.
    let first_minute = u64::try_from(local - local.rem_euclid(day_minutes) - offset).unwrap_or(0);
    let mut day = DayKpis { first_minute, ..DayKpis::default() };
    for (minute, kpis) in kpis(db, tenant, first_minute, first_minute + DAY_MINUTES - 1)? {
        let orders = kpis.orders();
        day.per_minute.push((minute, orders));
        if orders > 0 && day.peak.is_none_or(|(_, peak)| orders > peak) {
            day.peak = Some((minute, orders));
        }
        day.totals.add(&kpis);
    }
    Ok(day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Quantity, Sku};

    #[test]
    fn a_minute_s_sums_saturate_instead_of_stopping_the_read_models() {
        let eur = Currency::new("EUR").expect("a currency");
        let line = OrderLine {
            sku: Sku::new("whale").expect("a SKU"),
            quantity: Quantity::new(10_000).expect("a quantity"),
            unit_price: 100_000_000_000,
        };
        let lines = std::slice::from_ref(&line);
        let mut minute = SalesKpis::default();
        minute.count(Count::Placed { currency: eur, lines, total: u64::MAX - 5 });
        minute.count(Count::Placed { currency: eur, lines, total: line.amount() });
        assert_eq!((minute.sales[0].orders, minute.sales[0].revenue), (2, u64::MAX));
        assert_eq!((minute.lines, minute.units), (2, 20_000));
    }

    #[test]
    fn a_minute_of_more_gateways_than_a_u16_counts_is_written_and_read_back() {
        let mut minute = SalesKpis::default();
        let gateways: Vec<GatewayId> =
            (0..70_000).map(|g| GatewayId::new(&format!("g-{g:05}")).expect("an id")).collect();
        for gateway in &gateways {
            minute.count(Count::Declined(gateway));
        }
        minute.count(Count::Authorized(&gateways[0]));
        assert_eq!(minute.declines.len(), 70_000);
        assert_eq!(SalesKpis::decode(&minute.encode()).expect("a row"), minute);
    }
}
