//! Domain events as the API shows them: `{"position","index","type","recorded_at_ms",
//! <aggregate id>,"data":{…}}`, with the stable snake_case type names of the log
//! (`order_placed`, …). `position` is the log record holding the event (one record holds
//! everything one command decided) and `index` its place in that record: together they name
//! the event.

use orderly_core::codec::EventType;
use orderly_core::domain::{
    Event, GatewayReference, InventoryEvent, OrderEvent, OrderLine, PaymentEvent,
};
use orderly_core::engine::CommittedEvent;
use serde_json::{Value, json};

/// The JSON of one committed event, the `index`th of its record.
pub fn event_json(committed: &CommittedEvent, index: usize) -> Value {
    let (id_field, id, data) = match &committed.event {
        Event::Inventory { sku, event } => ("sku", sku.as_str(), inventory(event)),
        Event::Order { order, event } => ("order_id", order.as_str(), order_data(event)),
        Event::Payment { payment, event } => ("payment_id", payment.as_str(), payment_data(event)),
    };
    let mut value = json!({
        "position": committed.position.0,
        "index": index,
        "type": EventType::of(&committed.event).name(),
        "recorded_at_ms": committed.recorded_at.0,
        "data": data,
    });
    value[id_field] = Value::from(id);
    value
}

fn inventory(event: &InventoryEvent) -> Value {
    use InventoryEvent as I;
    match event {
        I::StockReceived { quantity } => json!({ "quantity": quantity.get() }),
        I::StockAdjusted { delta } => json!({ "delta": delta }),
        I::StockHeld { order, quantity, expires_at } => json!({
            "order_id": order.as_str(), "quantity": quantity.get(), "expires_at_ms": expires_at.0
        }),
        I::StockCommitted { order, quantity }
        | I::StockReleased { order, quantity }
        | I::HoldExpired { order, quantity } => {
            json!({ "order_id": order.as_str(), "quantity": quantity.get() })
        }
    }
}

fn order_data(event: &OrderEvent) -> Value {
    use OrderEvent as O;
    match event {
        O::OrderPlaced { customer, currency, lines, total, hold_expires_at } => json!({
            "customer_id": customer.as_str(),
            "currency": currency.as_str(),
            "lines": lines.iter().map(line).collect::<Vec<_>>(),
            "total": total,
            "hold_expires_at_ms": hold_expires_at.0,
        }),
        O::OrderConfirmed { payment } => json!({ "payment_id": payment.as_str() }),
        O::OrderShipped | O::OrderDelivered => json!({}),
        O::OrderCancelled { reason } => json!({ "reason": reason.as_str() }),
        O::OrderRefunded { amount } => json!({ "amount": amount }),
    }
}

fn line(line: &OrderLine) -> Value {
    json!({ "sku": line.sku.as_str(), "quantity": line.quantity.get(), "unit_price": line.unit_price })
}

fn payment_data(event: &PaymentEvent) -> Value {
    use PaymentEvent as P;
    match event {
        P::PaymentAuthorized { order, amount, gateway, reference } => json!({
            "order_id": order.as_str(), "amount": amount.minor,
            "currency": amount.currency.as_str(), "gateway": gateway.as_str(),
            "reference": reference.as_ref().map(GatewayReference::as_str),
        }),
        P::PaymentDeclined { order, amount, gateway, reason } => json!({
            "order_id": order.as_str(), "amount": amount.minor,
            "currency": amount.currency.as_str(), "gateway": gateway.as_str(),
            "reason": reason.as_str(),
        }),
        P::PaymentCaptured { amount } | P::PaymentRefunded { amount } => {
            json!({ "amount": amount })
        }
        P::PaymentVoided => json!({}),
    }
}
