//! Applying a batch of events to the order views: every row the batch touches (an order's
//! view, a payment's order, a tenant's status count) is read at most once, kept in memory while
//! the batch's events change it, and written once at the end.
//!
//! The result is the same as applying the events one at a time: the cached row is exactly what
//! the table would hold after the events before it, and every check runs per event.

use std::borrow::Cow;
use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use super::{OrderView, OrdersTables, invalid};
use crate::domain::{
    DeclineReason, Event, OrderEvent, OrderId, OrderStatus, PaymentEvent, PaymentId, PaymentStatus,
};
use crate::engine::CommittedEvent;
use crate::projection::{ProjectionError, inconsistent};

/// Applies `events` to `tables`.
pub(super) fn apply(
    tables: &mut OrdersTables<'_>,
    events: &[CommittedEvent],
) -> Result<(), ProjectionError> {
    let mut batch = Batch::default();
    for committed in events {
        match &committed.event {
            Event::Order { order, event } => batch.order(tables, committed, order, event)?,
            Event::Payment { payment, event } => {
                batch.payment(tables, committed, payment, event)?;
            }
            Event::Inventory { .. } => {}
        }
    }
    batch.write(tables)
}

/// The rows one batch touched, keyed by strings borrowed from its events where possible.
#[derive(Default)]
struct Batch<'a> {
    /// (tenant, order) → its view; `None` while the order is not placed.
    views: FxHashMap<(&'a str, Cow<'a, str>), Option<OrderView>>,
    /// (tenant, payment) → the order it pays for, and whether this batch started it.
    payments: FxHashMap<(&'a str, &'a str), (Cow<'a, str>, bool)>,
    /// Orders this batch placed without looking them up first (a lookup per new order costs
    /// as much as its insert), with their `OrderPlaced`: one already stored is "placed twice",
    /// caught by [`crate::projection::Rows::insert_new`].
    unchecked: FxHashMap<(&'a str, &'a str), &'a CommittedEvent>,
    /// (tenant, status) → orders in that status.
    counts: FxHashMap<(&'a str, &'static str), u64>,
}

impl<'a> Batch<'a> {
    fn order(
        &mut self,
        tables: &OrdersTables<'_>,
        committed: &'a CommittedEvent,
        order: &'a OrderId,
        event: &'a OrderEvent,
    ) -> Result<(), ProjectionError> {
        use OrderEvent as E;
        use OrderStatus as S;
        let tenant = committed.tenant.as_str();
        let bad = |what: &str| inconsistent(committed, format!("order {order}: {what}"));
        let key = (tenant, Cow::Borrowed(order.as_str()));
        if matches!(event, E::OrderPlaced { .. }) && !self.views.contains_key(&key) {
            self.views.insert(key.clone(), None);
            self.unchecked.insert((tenant, order.as_str()), committed);
        }
        let slot = self.view(tables, tenant, key.1)?;
        let before = slot.as_ref().map(|view| view.status);
        match slot {
            None => {
                let E::OrderPlaced { customer, currency, lines, total, hold_expires_at } = event
                else {
                    return Err(bad("an event before the order was placed"));
                };
                *slot = Some(OrderView {
                    status: S::Placed,
                    cancel_reason: None,
                    customer: customer.clone(),
                    currency: *currency,
                    lines: lines.clone(),
                    total: *total,
                    refunded: 0,
                    payment: None,
                    payment_status: None,
                    authorized: 0,
                    captured: 0,
                    gateway: None,
                    decline_reason: None,
                    hold_expires_at: Some(*hold_expires_at),
                    placed_at: committed.recorded_at,
                    positions: vec![committed.position],
                });
            }
            Some(view) => {
                match event {
                    E::OrderPlaced { .. } => return Err(bad("placed twice")),
                    E::OrderConfirmed { payment } => {
                        view.status = S::Confirmed;
                        view.payment = Some(payment.clone());
                    }
                    E::OrderShipped => view.status = S::Shipped,
                    E::OrderDelivered => view.status = S::Delivered,
                    E::OrderCancelled { reason } => {
                        view.status = S::Cancelled;
                        view.cancel_reason = Some(*reason);
                    }
                    E::OrderRefunded { amount } => {
                        view.refunded = view
                            .refunded
                            .checked_add(*amount)
                            .filter(|r| *r <= view.total)
                            .ok_or_else(|| bad("refunds exceed the total"))?;
                    }
                }
                view.positions.push(committed.position);
            }
        }
        let after = slot.as_ref().map(|view| view.status);
        if before != after {
            if let Some(before) = before {
                let count = self.count(tables, tenant, before)?;
                *count = count.checked_sub(1).ok_or_else(|| bad("status count below zero"))?;
            }
            if let Some(after) = after {
                *self.count(tables, tenant, after)? += 1;
            }
        }
        Ok(())
    }

    /// Applies an event of `payment` to the view of the order it pays for.
    fn payment(
        &mut self,
        tables: &OrdersTables<'_>,
        committed: &'a CommittedEvent,
        payment: &'a PaymentId,
        event: &'a PaymentEvent,
    ) -> Result<(), ProjectionError> {
        use PaymentEvent as E;
        use PaymentStatus as S;
        let tenant = committed.tenant.as_str();
        let bad = |what: String| inconsistent(committed, format!("payment {payment}: {what}"));
        let order = match event {
            E::PaymentAuthorized { order, .. } | E::PaymentDeclined { order, .. } => {
                if self.payment_order(tables, tenant, payment)?.is_some() {
                    return Err(bad("started twice".into()));
                }
                let order = Cow::Borrowed(order.as_str());
                self.payments.insert((tenant, payment.as_str()), (order.clone(), true));
                order
            }
            E::PaymentCaptured { .. } | E::PaymentVoided | E::PaymentRefunded { .. } => {
                let Some(order) = self.payment_order(tables, tenant, payment)? else {
                    return Err(bad("an event before it was started".into()));
                };
                order
            }
        };
        let Some(view) = self.view(tables, tenant, order.clone())? else {
            return Err(bad(format!("pays for order {order}, which was not placed")));
        };
        let current = view.payment.as_ref() == Some(payment);
        match (event, view.payment_status) {
            (E::PaymentAuthorized { amount, gateway, .. }, None | Some(S::Declined)) => {
                view.payment = Some(payment.clone());
                view.payment_status = Some(S::Authorized);
                view.authorized = amount.minor;
                view.gateway = Some(gateway.clone());
                view.decline_reason = None;
            }
            (E::PaymentDeclined { gateway, reason, .. }, None | Some(S::Declined)) => {
                view.payment = Some(payment.clone());
                view.payment_status = Some(S::Declined);
                // No gateway answered such a decline: the one it names is a placeholder.
                view.gateway = (*reason == DeclineReason::Refused).then(|| gateway.clone());
                view.decline_reason = Some(*reason);
            }
            (E::PaymentAuthorized { .. } | E::PaymentDeclined { .. }, Some(status)) => {
                return Err(bad(format!("started for order {order}, whose payment is {status}")));
            }
            (E::PaymentCaptured { amount }, Some(S::Authorized))
                if current && *amount <= view.authorized =>
            {
                view.payment_status = Some(S::Captured);
                view.captured = *amount;
            }
            (E::PaymentVoided, Some(S::Authorized)) if current => {
                view.payment_status = Some(S::Voided);
            }
            // The order's refund event, just before, counted the amount.
            (E::PaymentRefunded { .. }, Some(S::Captured)) if current => {}
            (_, status) => {
                let status = status.map_or("none", S::as_str);
                return Err(bad(format!("does not fit order {order} (payment status {status})")));
            }
        }
        Ok(())
    }

    /// The view of (`tenant`, `order`) as the events so far left it.
    fn view(
        &mut self,
        tables: &OrdersTables<'_>,
        tenant: &'a str,
        order: Cow<'a, str>,
    ) -> Result<&mut Option<OrderView>, ProjectionError> {
        Ok(match self.views.entry((tenant, order)) {
            Entry::Occupied(cached) => cached.into_mut(),
            Entry::Vacant(missing) => {
                let key = (tenant, missing.key().1.as_ref());
                let stored = tables.orders.get(key)?.map(|row| OrderView::decode(row.value()));
                missing.insert(stored.transpose()?)
            }
        })
    }

    /// The order `payment` of `tenant` pays for, `None` if it was never started.
    fn payment_order(
        &mut self,
        tables: &OrdersTables<'_>,
        tenant: &'a str,
        payment: &'a PaymentId,
    ) -> Result<Option<Cow<'a, str>>, ProjectionError> {
        let key = (tenant, payment.as_str());
        if let Some((order, _)) = self.payments.get(&key) {
            return Ok(Some(order.clone()));
        }
        let Some(row) = tables.payments.get(key)? else { return Ok(None) };
        let order = OrderId::new(row.value()).map_err(invalid)?;
        let order: Cow<'a, str> = Cow::Owned(order.as_str().to_owned());
        self.payments.insert(key, (order.clone(), false));
        Ok(Some(order))
    }

    /// The count of orders of `tenant` in `status` as the events so far left it.
    fn count(
        &mut self,
        tables: &OrdersTables<'_>,
        tenant: &'a str,
        status: OrderStatus,
    ) -> Result<&mut u64, ProjectionError> {
        Ok(match self.counts.entry((tenant, status.as_str())) {
            Entry::Occupied(cached) => cached.into_mut(),
            Entry::Vacant(missing) => {
                let stored = tables.status_counts.get(*missing.key())?.map_or(0, |c| c.value());
                missing.insert(stored)
            }
        })
    }

    /// Writes every row the batch changed, each once.
    fn write(self, tables: &mut OrdersTables<'_>) -> Result<(), ProjectionError> {
        let mut row = Vec::new();
        for ((tenant, order), view) in self.views {
            let Some(view) = view else { continue };
            row.clear();
            view.encode_into(&mut row);
            let key = (tenant, order.as_ref());
            match self.unchecked.get(&key) {
                Some(placed) => {
                    if !tables.orders.insert_new(key, row.as_slice(), placed.position.0) {
                        return Err(inconsistent(placed, format!("order {order}: placed twice")));
                    }
                }
                None => tables.orders.insert(key, row.as_slice()),
            }
        }
        for (key, (order, started)) in self.payments {
            if started {
                tables.payments.insert(key, order.as_ref());
            }
        }
        for (key, count) in self.counts {
            tables.status_counts.insert(key, count);
        }
        Ok(())
    }
}
