//! The embedded way in: open an engine in a temporary folder, stock two SKUs, place orders,
//! watch the payments process authorize them through two simulated gateways (the cheaper one
//! declines about one payment in four), ship one order, cancel another, and print every event
//! the log recorded. Events at the same position were decided by one command and share its
//! log record (an order and its holds, say).
//!
//! Run with `cargo run --release --example embedded`.

use std::sync::Arc;
use std::time::Duration;

use orderly::Position;
use orderly::domain::{
    CancelReason, Command, Currency, CustomerId, Envelope, Event, GatewayId, OrderCommand, OrderId,
    OrderLine, OrderStatus, Quantity, Sku, TenantId,
};
use orderly::engine::{Config, Engine};
use orderly::payments::{
    Fee, Route, Router, RouterConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use orderly::process::PaymentProcess;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), Config::default())?;
    println!("engine open on {}", dir.path().display());

    // Two gateways: a cheap one that declines one payment in four, and a dearer reliable one.
    let eur = Currency::new("EUR")?;
    let gateway = |id: &str, decline_basis_points, fixed_minor| Route {
        gateway: Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
            decline_basis_points,
            seed: 6,
            ..SimulatedGatewayConfig::new(GatewayId::new(id).expect("valid id"))
        })),
        fees: vec![Fee { currency: eur, fixed_minor, basis_points: 150 }],
        currencies: None,
    };
    let router = Arc::new(Router::new(
        vec![gateway("cheap-pay", 2_500, 10), gateway("solid-pay", 0, 25)],
        RouterConfig::default(),
    ));
    let payments = PaymentProcess::start(engine.clone(), router);

    let shop = TenantId::new("demo")?;
    let run = |command| engine.execute_blocking(Envelope::new(shop.clone(), command));
    for (sku, units) in [("mug", 20), ("tee", 5)] {
        run(Command::ReceiveStock { sku: Sku::new(sku)?, quantity: Quantity::new(units)? })?;
    }
    for n in 1..=4 {
        let lines = vec![
            OrderLine { sku: Sku::new("mug")?, quantity: Quantity::new(2)?, unit_price: 1_200 },
            OrderLine { sku: Sku::new("tee")?, quantity: Quantity::new(1)?, unit_price: 2_500 },
        ];
        let place = OrderCommand::Place {
            customer: CustomerId::new(&format!("c-{n}"))?,
            currency: eur,
            lines,
        };
        let outcome =
            run(Command::Order { order: OrderId::new(&format!("o-{n}"))?, command: place })?;
        println!(
            "placed o-{n}: {} events, durable up to position {}",
            outcome.events.len(),
            outcome.next_position()
        );
    }
    // A fifth order finds the tees sold out: all or nothing, naming the short SKU.
    let lines =
        vec![OrderLine { sku: Sku::new("tee")?, quantity: Quantity::new(2)?, unit_price: 2_500 }];
    let place = OrderCommand::Place { customer: CustomerId::new("c-5")?, currency: eur, lines };
    match run(Command::Order { order: OrderId::new("o-5")?, command: place }) {
        Err(e) => println!("o-5 refused: {} ({e})", e.code()),
        Ok(_) => println!("o-5 placed"),
    }

    // Wait for the payments process to settle every order.
    let settled = |order: &str| -> bool {
        let status = status_of(&engine, order);
        matches!(status, Some(OrderStatus::Confirmed | OrderStatus::Cancelled))
    };
    for _ in 0..200 {
        if (1..=4).all(|n| settled(&format!("o-{n}"))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let confirmed: Vec<String> = (1..=4)
        .map(|n| format!("o-{n}"))
        .filter(|o| status_of(&engine, o) == Some(OrderStatus::Confirmed))
        .collect();
    println!("confirmed by the payments process: {confirmed:?}");
    if let Some(first) = confirmed.first() {
        run(Command::Order { order: OrderId::new(first)?, command: OrderCommand::Ship })?;
        println!("shipped {first}: stock committed and payment captured in one decision");
    }
    if let Some(second) = confirmed.get(1) {
        let cancel = OrderCommand::Cancel { reason: CancelReason::Requested };
        run(Command::Order { order: OrderId::new(second)?, command: cancel })?;
        println!("cancelled {second}: stock released and authorization voided");
    }

    std::thread::sleep(Duration::from_millis(100));
    payments.stop();
    println!("\nthe log:");
    let mut events = engine.subscribe(Position(0));
    while let Some(event) = events.next_timeout(Duration::from_millis(50)) {
        let event = event?;
        println!("  {:>3}  {}", event.position, describe(&event.event));
    }
    engine.shutdown();
    Ok(())
}

/// The latest status of `order`, read from the log.
fn status_of(engine: &Engine, order: &str) -> Option<OrderStatus> {
    let mut status = None;
    let mut events = engine.subscribe(Position(0));
    while let Some(Ok(event)) = events.next_timeout(Duration::from_millis(1)) {
        if let Event::Order { order: id, event } = event.event
            && id.as_str() == order
        {
            use orderly::domain::OrderEvent as E;
            status = match event {
                E::OrderPlaced { .. } => Some(OrderStatus::Placed),
                E::OrderConfirmed { .. } => Some(OrderStatus::Confirmed),
                E::OrderShipped => Some(OrderStatus::Shipped),
                E::OrderDelivered => Some(OrderStatus::Delivered),
                E::OrderCancelled { .. } => Some(OrderStatus::Cancelled),
                E::OrderRefunded { .. } => status,
            };
        }
    }
    status
}

fn describe(event: &Event) -> String {
    use orderly::domain::{InventoryEvent as I, OrderEvent as O, PaymentEvent as P};
    match event {
        Event::Inventory { sku, event } => match event {
            I::StockReceived { quantity } => format!("{sku}: {quantity} received"),
            I::StockAdjusted { delta } => format!("{sku}: adjusted by {delta}"),
            I::StockHeld { order, quantity, .. } => format!("{sku}: {quantity} held for {order}"),
            I::StockCommitted { order, quantity } => {
                format!("{sku}: {quantity} shipped for {order}")
            }
            I::StockReleased { order, quantity } => {
                format!("{sku}: {quantity} released by {order}")
            }
            I::HoldExpired { order, quantity } => format!("{sku}: {quantity} expired for {order}"),
        },
        Event::Order { order, event } => match event {
            O::OrderPlaced { customer, lines, total, currency, .. } => {
                format!(
                    "{order}: placed by {customer}, {} lines, {total} {currency} (minor units)",
                    lines.len()
                )
            }
            O::OrderConfirmed { payment } => format!("{order}: confirmed by payment {payment}"),
            O::OrderShipped => format!("{order}: shipped"),
            O::OrderDelivered => format!("{order}: delivered"),
            O::OrderCancelled { reason } => format!("{order}: cancelled ({reason:?})"),
            O::OrderRefunded { amount } => format!("{order}: refunded {amount}"),
        },
        Event::Payment { payment, event } => match event {
            P::PaymentAuthorized { amount, gateway, reference, .. } => {
                let (minor, currency) = (amount.minor, amount.currency);
                let reference = reference.as_ref().map_or("none".to_owned(), ToString::to_string);
                format!("{payment}: {minor} {currency} authorized by {gateway} (ref {reference})")
            }
            P::PaymentDeclined { gateway, reason, .. } => {
                format!("{payment}: declined by {gateway} ({reason:?})")
            }
            P::PaymentCaptured { amount } => format!("{payment}: {amount} captured"),
            P::PaymentVoided => format!("{payment}: authorization voided"),
            P::PaymentRefunded { amount } => format!("{payment}: {amount} refunded"),
        },
    }
}
