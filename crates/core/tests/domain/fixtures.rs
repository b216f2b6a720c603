//! Short constructors for the values scenarios are written in; they panic on invalid input
//! because a fixture is a literal the test author chose.

use orderly_core::domain::{
    Currency, CustomerId, GatewayId, Money, OrderCommand, OrderEvent, OrderId, OrderLine,
    PaymentId, Quantity, Sku, Timestamp,
};

pub fn sku(id: &str) -> Sku {
    Sku::new(id).expect("a valid SKU fixture")
}

pub fn order_id(id: &str) -> OrderId {
    OrderId::new(id).expect("a valid order id fixture")
}

pub fn payment_id(id: &str) -> PaymentId {
    PaymentId::new(id).expect("a valid payment id fixture")
}

pub fn customer(id: &str) -> CustomerId {
    CustomerId::new(id).expect("a valid customer id fixture")
}

pub fn gateway(id: &str) -> GatewayId {
    GatewayId::new(id).expect("a valid gateway id fixture")
}

pub fn qty(units: u64) -> Quantity {
    Quantity::new(units).expect("a valid quantity fixture")
}

pub fn currency(code: &str) -> Currency {
    Currency::new(code).expect("a valid currency fixture")
}

pub fn eur(minor: u64) -> Money {
    Money::new(minor, currency("EUR"))
}

pub fn usd(minor: u64) -> Money {
    Money::new(minor, currency("USD"))
}

/// A line of `units` of `sku_id` at `unit_price` minor units each.
pub fn line(sku_id: &str, units: u64, unit_price: u64) -> OrderLine {
    OrderLine { sku: sku(sku_id), quantity: qty(units), unit_price }
}

/// Customer c1 places `lines` in EUR.
pub fn place(lines: Vec<OrderLine>) -> OrderCommand {
    OrderCommand::Place { customer: customer("c1"), currency: currency("EUR"), lines }
}

/// What [`place`] records: the order of c1 in EUR, totalling `total`, held until
/// `hold_expires_at`.
pub fn placed(lines: Vec<OrderLine>, total: u64, hold_expires_at: u64) -> OrderEvent {
    OrderEvent::OrderPlaced {
        customer: customer("c1"),
        currency: currency("EUR"),
        lines,
        total,
        hold_expires_at: Timestamp(hold_expires_at),
    }
}
