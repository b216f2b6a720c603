//! `trace`: every event of one order, of its payments and of its stock holds, in log order.

use std::ops::ControlFlow;
use std::path::Path;

use rustc_hash::FxHashSet;
use serde::Serialize;

use super::error::AuditError;
use super::verify::TornTailWarning;
use super::{Progress, pass};
use crate::codec::EventType;
use crate::domain::{Event, InventoryEvent, OrderId, PaymentEvent, PaymentId, TenantId};

/// The story of one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// The order.
    pub order: String,
    /// Every event of the order (in every tenant that has one by that id, unless a tenant was
    /// given), of the payments for it, and of the stock held for it, in log order.
    pub entries: Vec<TraceEntry>,
    /// Bytes after the last complete batch, left out (see [`TornTailWarning`]).
    pub torn_tail: Option<TornTailWarning>,
}

/// One event of a [`Trace`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceEntry {
    /// Its position in the log.
    pub position: u64,
    /// Its admission time, ms since the Unix epoch.
    pub timestamp: u64,
    /// The tenant.
    pub tenant: String,
    /// Its stream: `{tenant}/o/{order}`, `{tenant}/p/{payment}` or `{tenant}/i/{sku}`.
    pub stream: String,
    /// Its place among the events of its record (one record holds everything one command
    /// decided): with the position, it names the event, as in the HTTP API's event stream.
    pub index: usize,
    /// The event type's stable name (`order_placed`, `stock_held`, …).
    pub event_type: &'static str,
    /// The event itself (the command line shows it as the HTTP API does).
    #[serde(skip)]
    pub event: Event,
}

/// Traces `order` (of `tenant`, or of every tenant that has an order by that id) through the
/// log in `dir`, read-only and without the lock, verifying every record on the way. Payments
/// are tied to the order by the order id their authorization or decline names; stock events
/// by the order their hold is for.
pub fn trace(
    dir: &Path,
    tenant: Option<&TenantId>,
    order: &OrderId,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trace, AuditError> {
    let mut payments: FxHashSet<(TenantId, PaymentId)> = FxHashSet::default();
    let mut entries = Vec::new();
    let scan = pass::run(
        dir,
        progress,
        |_| {},
        |batch| {
            for entry in batch.entries {
                let of = entry.record.tenant();
                if tenant.is_some_and(|t| t != of) {
                    continue;
                }
                for (index, event) in entry.record.events().iter().enumerate() {
                    let (concerns, stream) = match event {
                        Event::Order { order: id, .. } => (id == order, format!("{of}/o/{id}")),
                        Event::Inventory { sku, event } => {
                            (hold_order(event) == order.as_str(), format!("{of}/i/{sku}"))
                        }
                        Event::Payment { payment, event } => {
                            let key = (of.clone(), payment.clone());
                            let concerns = match event {
                                PaymentEvent::PaymentAuthorized { order: id, .. }
                                | PaymentEvent::PaymentDeclined { order: id, .. } => {
                                    let for_order = id == order;
                                    if for_order {
                                        payments.insert(key);
                                    }
                                    for_order
                                }
                                _ => payments.contains(&key),
                            };
                            (concerns, format!("{of}/p/{payment}"))
                        }
                    };
                    if !concerns {
                        continue;
                    }
                    entries.push(TraceEntry {
                        position: entry.position,
                        timestamp: entry.timestamp,
                        tenant: of.to_string(),
                        stream,
                        index,
                        event_type: EventType::of(event).name(),
                        event: event.clone(),
                    });
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    Ok(Trace { order: order.to_string(), entries, torn_tail: TornTailWarning::of(&scan) })
}

/// The order a stock event's hold is for; a receipt or an adjustment is for none, which no
/// order id equals (ids are never empty).
fn hold_order(event: &InventoryEvent) -> &str {
    match event {
        InventoryEvent::StockHeld { order, .. }
        | InventoryEvent::StockCommitted { order, .. }
        | InventoryEvent::StockReleased { order, .. }
        | InventoryEvent::HoldExpired { order, .. } => order.as_str(),
        InventoryEvent::StockReceived { .. } | InventoryEvent::StockAdjusted { .. } => "",
    }
}
