//! `reconcile`: stock and money recomputed from the events alone, as an auditor who does not
//! trust the deciders would, checked against the rules they must keep and against the state
//! the domain's own `evolve` builds.

use std::ops::ControlFlow;
use std::path::Path;

use orderly_store::ScanReport;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::Progress;
use super::digest::Digest;
use super::error::AuditError;
use super::pass::{self, Batch};
use super::state::{DomainState, of_tenant};
use super::verify::TornTailWarning;
use crate::domain::{
    Currency, Event, InventoryEvent, OrderEvent, OrderId, PaymentEvent, PaymentId, Sku, TenantId,
};

/// What [`reconcile`] found: the totals, and every discrepancy (none: the books balance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// The digest of the log the books were computed over.
    pub digest: Digest,
    /// Every rule found broken, in the order found (end-of-log comparisons last). A record's
    /// events are booked before they are applied to the domain together, so its
    /// `domain_rejects_event` comes after the other discrepancies of the same record.
    pub discrepancies: Vec<Discrepancy>,
    /// Stock per tenant and SKU, by tenant and SKU.
    pub stock: Vec<StockLedger>,
    /// Money per currency, by currency.
    pub money: Vec<MoneyTotals>,
    /// Bytes after the last complete batch, left out (see [`TornTailWarning`]).
    pub torn_tail: Option<TornTailWarning>,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// Stable snake_case code: `hold_not_open`, `capture_exceeds_authorized`, …
    pub code: &'static str,
    /// The tenant.
    pub tenant: String,
    /// What it is about: a SKU, an order or a payment id.
    pub subject: String,
    /// The position of the event that broke the rule, for rules checked as events come.
    pub position: Option<u64>,
    /// What was found, for people.
    pub detail: String,
}

/// Stock of one SKU, summed from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StockLedger {
    /// The tenant.
    pub tenant: String,
    /// The SKU.
    pub sku: String,
    /// Units received.
    pub received: u64,
    /// Net units added (positive) or removed by stock counts.
    pub adjusted: i64,
    /// Units shipped (holds committed).
    pub shipped: u64,
    /// Units whose holds were released by a cancellation.
    pub released: u64,
    /// Units whose holds expired.
    pub expired: u64,
    /// received + adjusted − shipped.
    pub on_hand: i64,
    /// Sum of the open holds.
    pub reserved: u64,
    /// Number of open holds.
    pub open_holds: u64,
}

/// Money of one currency, summed from the payment events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MoneyTotals {
    /// ISO currency code.
    pub currency: String,
    /// Amount authorized.
    pub authorized: u64,
    /// Amount asked for and declined.
    pub declined: u64,
    /// Amount captured.
    pub captured: u64,
    /// Amount of authorizations voided (authorized minus captured when voided).
    pub voided: u64,
    /// Amount refunded.
    pub refunded: u64,
}

/// Reconciles the log in `dir`, read-only and without the lock, verifying every record on
/// the way. Checked as events come: admission times never go back (`time_goes_back`: the
/// engine's never do, and `replay --at` takes the log up to the first record admitted after
/// the time), holds open once and close with their quantity (and expire no earlier than
/// their time: `hold_expired_early`), stock on
/// hand never negative and never below what is reserved, payments captured at most what was
/// authorized and refunded at most what was captured, per payment and per order. Checked at
/// the end: the domain's on hand equals received + adjusted − shipped, its reserved equals
/// the open holds, its payments carry the summed amounts, and each order's refunds equal its
/// payments' refunds.
pub fn reconcile(
    dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Reconciliation, AuditError> {
    Ok(book_log(dir, progress, |_| {})?.1)
}

/// Books every complete batch of the log in `dir` in one pass, handing each to `also` as well
/// (`check` summarises the same pass), and closes the books at the head: the scan's report,
/// the reconciliation, and the domain's state without the tenants it rejected.
pub(crate) fn book_log(
    dir: &Path,
    progress: &mut dyn FnMut(Progress),
    mut also: impl FnMut(&Batch<'_>),
) -> Result<(ScanReport, Reconciliation, DomainState), AuditError> {
    let mut books = Books::default();
    let scan = pass::run(
        dir,
        progress,
        |_| {},
        |batch| {
            books.add(batch);
            also(batch);
            ControlFlow::Continue(())
        },
    )?;
    let digest = Digest { head: scan.records, hash: scan.last_hash };
    let (mut reconciliation, domain) = books.close(digest);
    reconciliation.torn_tail = TornTailWarning::of(&scan);
    Ok((scan, reconciliation, domain))
}

#[derive(Debug)]
struct PaymentBook {
    order: OrderId,
    currency: Currency,
    authorized: u64,
    captured: u64,
    refunded: u64,
}

#[derive(Debug, Default)]
struct OrderBook {
    currency: Option<Currency>,
    /// The holds its events opened and did not close yet, by SKU. Kept with the order, not
    /// with each SKU: a decision's holds are all of one order, so its events find them in
    /// one place.
    holds: Vec<Hold>,
    /// Refunds the order's own events record.
    refunded: u64,
    /// Captures and refunds of its payments.
    captured_by_payments: u64,
    refunded_by_payments: u64,
}

/// The books [`reconcile`] keeps as it reads the log, the domain's state among them.
#[derive(Debug, Default)]
struct Books {
    /// Each tenant's books: a record finds its tenant's once, by the tenant's id, and its
    /// events go by SKU, order or payment id from there.
    tenants: FxHashMap<TenantId, TenantBooks>,
    findings: Findings,
    domain: DomainState,
    /// Tenants whose domain state broke on an event; not compared at the end.
    broken: FxHashSet<TenantId>,
    /// The latest admission time so far: the engine's never go back.
    latest: u64,
}

/// One tenant's stock, payments and orders, summed from its events.
#[derive(Debug, Default)]
struct TenantBooks {
    skus: FxHashMap<Sku, StockLedger>,
    payments: FxHashMap<PaymentId, PaymentBook>,
    orders: FxHashMap<OrderId, OrderBook>,
}

/// What the books find across tenants: money per currency, and the rules found broken.
#[derive(Debug, Default)]
struct Findings {
    money: FxHashMap<Currency, MoneyTotals>,
    discrepancies: Vec<Discrepancy>,
}

impl Findings {
    fn flag(
        &mut self,
        code: &'static str,
        tenant: &TenantId,
        subject: &str,
        position: Option<u64>,
        detail: String,
    ) {
        let (tenant, subject) = (tenant.to_string(), subject.to_owned());
        self.discrepancies.push(Discrepancy { code, tenant, subject, position, detail });
    }

    fn money_of(&mut self, currency: Currency) -> &mut MoneyTotals {
        self.money.entry(currency).or_insert_with(|| MoneyTotals {
            currency: currency.to_string(),
            ..MoneyTotals::default()
        })
    }
}

impl Books {
    /// Books every event of a complete batch, then applies each record's events to the
    /// domain's state (all of a record at once: one tenant lookup per record).
    fn add(&mut self, batch: &Batch<'_>) {
        for entry in batch.entries {
            let (tenant, events) = (entry.record.tenant(), entry.record.events());
            // Named by the record's first event: the aggregate its command was about.
            let subject = events.first().map_or("", Event::aggregate_id);
            if entry.timestamp < self.latest {
                let detail = format!(
                    "admitted at {} ms, after a record admitted at {} ms",
                    entry.timestamp, self.latest
                );
                let at = Some(entry.position);
                self.findings.flag("time_goes_back", tenant, subject, at, detail);
            }
            self.latest = self.latest.max(entry.timestamp);
            let books = of_tenant(&mut self.tenants, tenant);
            for event in events {
                books.book(tenant, event, (entry.position, entry.timestamp), &mut self.findings);
            }
            if !self.broken.contains(tenant)
                && let Err(message) = self.domain.apply_all(tenant, events)
            {
                self.broken.insert(tenant.clone());
                let at = Some(entry.position);
                self.findings.flag("domain_rejects_event", tenant, subject, at, message);
            }
        }
    }

    /// The end-of-log comparisons with the domain's state, and the report; then the domain's
    /// state without the tenants whose state broke on an event (a discrepancy names each).
    fn close(self, digest: Digest) -> (Reconciliation, DomainState) {
        let mut late: Vec<Discrepancy> = Vec::new();
        let mut flag = |code, tenant: &TenantId, subject: &str, detail| {
            let (tenant, subject) = (tenant.to_string(), subject.to_owned());
            late.push(Discrepancy { code, tenant, subject, position: None, detail });
        };
        for (tenant, books) in &self.tenants {
            for (id, book) in &books.orders {
                if book.refunded != book.refunded_by_payments {
                    let detail = format!(
                        "the order records {} refunded, its payments {}",
                        book.refunded, book.refunded_by_payments
                    );
                    flag("refunds_differ", tenant, id.as_str(), detail);
                }
            }
            if self.broken.contains(tenant) {
                continue;
            }
            let domain = self.domain.tenant(tenant);
            for (sku, l) in &books.skus {
                let stock = domain.and_then(|t| t.inventory(sku));
                let (on_hand, reserved) = stock.map_or((0, 0), |s| (s.on_hand(), s.reserved()));
                if i64::try_from(on_hand).ok() != Some(l.on_hand) {
                    let detail = format!(
                        "received {} + adjusted {} - shipped {} = {}, the domain has {on_hand}",
                        l.received, l.adjusted, l.shipped, l.on_hand
                    );
                    flag("on_hand_mismatch", tenant, sku.as_str(), detail);
                }
                if reserved != l.reserved {
                    let detail =
                        format!("open holds {}, the domain reserves {reserved}", l.reserved);
                    flag("reserved_mismatch", tenant, sku.as_str(), detail);
                }
            }
            for (id, book) in &books.payments {
                let payment = domain.and_then(|t| t.payment(id));
                let amounts = |m: Option<crate::domain::Money>| m.map_or(0, |m| m.minor);
                let found = payment.map(|p| {
                    (amounts(p.authorized()), amounts(p.captured()), amounts(p.refunded()))
                });
                let summed = (book.authorized, book.captured, book.refunded);
                if found != Some(summed) {
                    let detail = format!(
                        "events sum to (authorized, captured, refunded) {summed:?}, the domain has {found:?}"
                    );
                    flag("payment_mismatch", tenant, id.as_str(), detail);
                }
            }
        }
        late.sort_by(|a, b| (a.code, &a.tenant, &a.subject).cmp(&(b.code, &b.tenant, &b.subject)));
        let Findings { money, mut discrepancies } = self.findings;
        discrepancies.extend(late);
        let mut stock: Vec<StockLedger> = self
            .tenants
            .into_iter()
            .flat_map(|(tenant, books)| {
                books.skus.into_iter().map(move |(sku, ledger)| StockLedger {
                    tenant: tenant.to_string(),
                    sku: sku.to_string(),
                    ..ledger
                })
            })
            .collect();
        stock.sort_by(|a, b| (&a.tenant, &a.sku).cmp(&(&b.tenant, &b.sku)));
        let mut money: Vec<MoneyTotals> = money.into_values().collect();
        money.sort_by(|a, b| a.currency.cmp(&b.currency));
        let mut domain = self.domain;
        domain.remove_tenants(|tenant| self.broken.contains(tenant));
        (Reconciliation { digest, discrepancies, stock, money, torn_tail: None }, domain)
    }
}

impl TenantBooks {
    /// Books `event` of the record at `position`, admitted at `at_ms`.
    fn book(
        &mut self,
        tenant: &TenantId,
        event: &Event,
        (position, at_ms): (u64, u64),
        found: &mut Findings,
    ) {
        match event {
            Event::Inventory { sku, event } => {
                self.stock(tenant, sku, event, (position, at_ms), found);
            }
            Event::Payment { payment, event } => {
                self.payment(tenant, payment, event, position, found);
            }
            Event::Order { order, event } => self.order(order, event),
        }
    }

    fn stock(
        &mut self,
        tenant: &TenantId,
        sku: &Sku,
        event: &InventoryEvent,
        (position, at_ms): (u64, u64),
        found: &mut Findings,
    ) {
        let l = self.skus.entry(sku.clone()).or_default();
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        match event {
            InventoryEvent::StockReceived { quantity } => {
                l.received = l.received.saturating_add(quantity.get());
            }
            InventoryEvent::StockAdjusted { delta } => {
                l.adjusted = l.adjusted.saturating_add(*delta)
            }
            InventoryEvent::StockHeld { order, quantity, expires_at } => {
                let holds = &mut self.orders.entry(order.clone()).or_default().holds;
                match holds.iter_mut().find(|hold| hold.sku == *sku) {
                    Some(replaced) => {
                        problems
                            .push(("hold_opened_twice", format!("order {order} already held it")));
                        l.reserved -= replaced.units;
                        *replaced = Hold {
                            sku: sku.clone(),
                            units: quantity.get(),
                            expires_at: expires_at.0,
                        };
                    }
                    None => {
                        holds.push(Hold {
                            sku: sku.clone(),
                            units: quantity.get(),
                            expires_at: expires_at.0,
                        });
                        l.open_holds += 1;
                    }
                }
                l.reserved += quantity.get();
            }
            InventoryEvent::StockCommitted { order, quantity }
            | InventoryEvent::StockReleased { order, quantity }
            | InventoryEvent::HoldExpired { order, quantity } => {
                let units = quantity.get();
                match self.orders.get_mut(order).and_then(|o| close_hold(&mut o.holds, sku)) {
                    None => problems.push(("hold_not_open", format!("order {order} held none"))),
                    Some(Hold { units: held, expires_at, .. }) => {
                        l.reserved -= held;
                        l.open_holds -= 1;
                        if matches!(event, InventoryEvent::HoldExpired { .. }) && at_ms < expires_at
                        {
                            problems.push((
                                "hold_expired_early",
                                format!("order {order}'s hold ran to {expires_at} ms, expired at {at_ms} ms"),
                            ));
                        }
                        if held != units {
                            problems.push((
                                "hold_quantity_mismatch",
                                format!("order {order} held {held}, closed {units}"),
                            ));
                        }
                    }
                }
                let total = match event {
                    InventoryEvent::StockCommitted { .. } => &mut l.shipped,
                    InventoryEvent::StockReleased { .. } => &mut l.released,
                    _ => &mut l.expired,
                };
                *total = total.saturating_add(units);
            }
        }
        l.on_hand = i64::try_from(l.received)
            .unwrap_or(i64::MAX)
            .saturating_add(l.adjusted)
            .saturating_sub(i64::try_from(l.shipped).unwrap_or(i64::MAX));
        // `reserved` and `open_holds` are kept equal to the sum and count of the open holds
        // as they open and close (summing them at every event was quadratic in a flash sale's
        // thousands of open holds). Each is at most `MAX_QUANTITY` (a million), so the sum
        // could overflow only past 10^13 open holds.
        if l.on_hand < 0 {
            problems.push(("negative_stock", format!("on hand {}", l.on_hand)));
        } else if i64::try_from(l.reserved).unwrap_or(i64::MAX) > l.on_hand {
            problems.push((
                "reserved_exceeds_on_hand",
                format!("reserved {} > on hand {}", l.reserved, l.on_hand),
            ));
        }
        for (code, detail) in problems {
            found.flag(code, tenant, sku.as_str(), Some(position), detail);
        }
    }

    fn payment(
        &mut self,
        tenant: &TenantId,
        id: &PaymentId,
        event: &PaymentEvent,
        position: u64,
        found: &mut Findings,
    ) {
        let at = Some(position);
        let amount = match event {
            PaymentEvent::PaymentAuthorized { order, amount, .. }
            | PaymentEvent::PaymentDeclined { order, amount, .. } => {
                let totals = found.money_of(amount.currency);
                let authorized = matches!(event, PaymentEvent::PaymentAuthorized { .. });
                let sum = if authorized { &mut totals.authorized } else { &mut totals.declined };
                *sum = sum.saturating_add(amount.minor);
                if self.payments.contains_key(id) {
                    found.flag(
                        "payment_started_twice",
                        tenant,
                        id.as_str(),
                        at,
                        format!("{event:?}"),
                    );
                    return;
                }
                let order_currency = self.orders.get(order).and_then(|o| o.currency);
                if let Some(currency) = order_currency.filter(|c| *c != amount.currency) {
                    let detail =
                        format!("order {order} is in {currency}, payment in {}", amount.currency);
                    found.flag("currency_mismatch", tenant, id.as_str(), at, detail);
                }
                let book = PaymentBook {
                    order: order.clone(),
                    currency: amount.currency,
                    authorized: if authorized { amount.minor } else { 0 },
                    captured: 0,
                    refunded: 0,
                };
                self.payments.insert(id.clone(), book);
                return;
            }
            PaymentEvent::PaymentCaptured { amount } | PaymentEvent::PaymentRefunded { amount } => {
                *amount
            }
            PaymentEvent::PaymentVoided => 0,
        };
        let Some(book) = self.payments.get_mut(id) else {
            found.flag("payment_not_authorized", tenant, id.as_str(), at, format!("{event:?}"));
            return;
        };
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let (currency, order) = (book.currency, book.order.clone());
        let orders = self.orders.entry(order.clone()).or_default();
        let totals = found.money_of(currency);
        match event {
            PaymentEvent::PaymentCaptured { .. } => {
                book.captured = book.captured.saturating_add(amount);
                orders.captured_by_payments = orders.captured_by_payments.saturating_add(amount);
                totals.captured = totals.captured.saturating_add(amount);
                if book.captured > book.authorized {
                    problems.push((
                        "capture_exceeds_authorized",
                        format!("captured {} of {} authorized", book.captured, book.authorized),
                    ));
                }
                // A ship captures the order's whole total, which its authorization is: the
                // rest of a smaller capture would be neither taken nor given back.
                if book.captured < book.authorized {
                    problems.push((
                        "capture_short_of_authorized",
                        format!(
                            "captured {} of {} authorized: the rest is neither captured nor voided",
                            book.captured, book.authorized
                        ),
                    ));
                }
            }
            PaymentEvent::PaymentRefunded { .. } => {
                book.refunded = book.refunded.saturating_add(amount);
                orders.refunded_by_payments = orders.refunded_by_payments.saturating_add(amount);
                totals.refunded = totals.refunded.saturating_add(amount);
                if book.refunded > book.captured {
                    problems.push((
                        "refund_exceeds_captured",
                        format!("refunded {} of {} captured", book.refunded, book.captured),
                    ));
                }
                if orders.refunded_by_payments > orders.captured_by_payments {
                    problems.push((
                        "order_refunds_exceed_captures",
                        format!(
                            "order {order}: refunded {} of {} captured",
                            orders.refunded_by_payments, orders.captured_by_payments
                        ),
                    ));
                }
            }
            _ => {
                totals.voided =
                    totals.voided.saturating_add(book.authorized.saturating_sub(book.captured));
            }
        }
        for (code, detail) in problems {
            found.flag(code, tenant, id.as_str(), at, detail);
        }
    }

    fn order(&mut self, id: &OrderId, event: &OrderEvent) {
        let book = self.orders.entry(id.clone()).or_default();
        match event {
            OrderEvent::OrderPlaced { currency, .. } => book.currency = Some(*currency),
            OrderEvent::OrderRefunded { amount } => {
                book.refunded = book.refunded.saturating_add(*amount);
            }
            _ => {}
        }
    }
}

/// An open hold of an order on one SKU.
#[derive(Debug)]
struct Hold {
    sku: Sku,
    units: u64,
    /// When it runs out (ms since the epoch): it may expire then, not before.
    expires_at: u64,
}

/// Closes the hold on `sku` among `holds`, if one is open, and returns it. The list is let go
/// once empty: a day's orders stay in the books, their holds need not.
fn close_hold(holds: &mut Vec<Hold>, sku: &Sku) -> Option<Hold> {
    let at = holds.iter().position(|hold| hold.sku == *sku)?;
    let hold = holds.swap_remove(at);
    if holds.is_empty() {
        *holds = Vec::new();
    }
    Some(hold)
}
