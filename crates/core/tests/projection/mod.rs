//! Projections on a real engine and log: the inventory and order read models equal what the
//! engine decided (checked against the engine's own answers), per tenant; `wait_for` returns
//! once a command's position is in the read model and times out cleanly otherwise; a restarted
//! worker resumes from its checkpoint without applying anything twice; deleting the redb file
//! rebuilds identical models from position 0, whatever the batch size; a record that does not
//! decode stops the worker with the error and writes nothing of its batch.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderly_core::Position;
use orderly_core::codec;
use orderly_core::domain::{
    CancelReason, Command, Currency, CustomerId, Envelope, Event, GatewayId, IdempotencyKey,
    InventoryEvent, Money, OrderCommand, OrderId, OrderLine, OrderRejection, OrderStatus,
    PaymentCommand, PaymentId, Quantity, Rejection, Sku, TenantId, Timestamp,
};
use orderly_core::engine::{Config, Engine, ExecuteError, ManualClock, Outcome};
use orderly_core::projection::{
    self, InventoryLevel, InventoryProjection, OrderView, OrdersProjection, ProjectionError,
    ProjectionWorker, WaitError, WorkerConfig,
};
use orderly_store::{Expected, Log, LogConfig, NewRecord};
use redb::Database;

const START: Timestamp = Timestamp(1_764_115_200_000);
const WAIT: Duration = Duration::from_secs(10);

fn tenant(t: &str) -> TenantId {
    TenantId::new(t).unwrap()
}

fn sku(s: &str) -> Sku {
    Sku::new(s).unwrap()
}

fn order_id(o: &str) -> OrderId {
    OrderId::new(o).unwrap()
}

fn eur() -> Currency {
    Currency::new("EUR").unwrap()
}

fn open_engine(dir: &Path, clock: &ManualClock) -> Engine {
    let config = Config {
        hold_ttl_ms: 60_000,
        log: LogConfig { segment_size: 1 << 20, ..LogConfig::default() },
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    Engine::open(dir, config).unwrap()
}

fn run(engine: &Engine, t: &str, command: Command) -> Outcome {
    engine.execute_blocking(Envelope::new(tenant(t), command)).unwrap()
}

fn receive(engine: &Engine, t: &str, s: &str, units: u64) -> Outcome {
    run(engine, t, Command::ReceiveStock { sku: sku(s), quantity: Quantity::new(units).unwrap() })
}

fn place_command(order: &str, lines: &[(&str, u64)]) -> Command {
    let lines = lines
        .iter()
        .map(|(s, units)| OrderLine {
            sku: sku(s),
            quantity: Quantity::new(*units).unwrap(),
            unit_price: 1_000,
        })
        .collect();
    let command =
        OrderCommand::Place { customer: CustomerId::new("c-1").unwrap(), currency: eur(), lines };
    Command::Order { order: order_id(order), command }
}

fn place(engine: &Engine, t: &str, order: &str, lines: &[(&str, u64)]) -> Outcome {
    run(engine, t, place_command(order, lines))
}

/// Authorizes `minor` for `order` (which confirms it) with payment `pay-{order}`.
fn pay(engine: &Engine, t: &str, order: &str, minor: u64) -> Outcome {
    let command = PaymentCommand::Authorize {
        reference: None,
        order: order_id(order),
        amount: Money::new(minor, eur()),
        gateway: GatewayId::new("gw-1").unwrap(),
    };
    run(
        engine,
        t,
        Command::Payment { payment: PaymentId::new(&format!("pay-{order}")).unwrap(), command },
    )
}

fn order_command(engine: &Engine, t: &str, order: &str, command: OrderCommand) -> Outcome {
    run(engine, t, Command::Order { order: order_id(order), command })
}

/// What the engine says is available of `sku`: a probe order asking for more than any test
/// stocks is rejected naming it (and records nothing).
fn engine_available(engine: &Engine, t: &str, s: &str) -> u64 {
    let probe = Envelope::new(tenant(t), place_command("probe", &[(s, 999_999)]));
    match engine.execute_blocking(probe) {
        Err(ExecuteError::Rejected(Rejection::Order {
            rejection: OrderRejection::InsufficientStock { shortages },
            ..
        })) => shortages[0].available,
        other => panic!("the probe must be refused for stock, got {other:?}"),
    }
}

/// Positions of the events of `order` in `outcomes`.
fn order_positions(outcomes: &[&Outcome], order: &str) -> Vec<Position> {
    outcomes
        .iter()
        .flat_map(|o| &o.events)
        .filter(|e| matches!(&e.event, Event::Order { order: id, .. } if id.as_str() == order))
        .map(|e| e.position)
        .collect()
}

struct Workers {
    inventory: ProjectionWorker,
    orders: ProjectionWorker,
}

impl Workers {
    fn start(db: &Arc<Database>, engine: &Engine, config: &WorkerConfig) -> Workers {
        let log = || engine.log();
        Workers {
            inventory: ProjectionWorker::start(
                db.clone(),
                log(),
                InventoryProjection,
                config.clone(),
            )
            .unwrap(),
            orders: ProjectionWorker::start(db.clone(), log(), OrdersProjection, config.clone())
                .unwrap(),
        }
    }

    fn wait_for(&self, position: Position) {
        self.inventory.wait_for(position, WAIT).unwrap();
        self.orders.wait_for(position, WAIT).unwrap();
    }

    fn stop(self) {
        self.inventory.stop().unwrap();
        self.orders.stop().unwrap();
    }
}

fn level(db: &Database, t: &str, s: &str) -> InventoryLevel {
    projection::inventory(db, &tenant(t), &sku(s)).unwrap().expect("the SKU is in the model")
}

fn view(db: &Database, t: &str, o: &str) -> OrderView {
    projection::order(db, &tenant(t), &order_id(o)).unwrap().expect("the order is in the model")
}

type Dump = Vec<(Vec<(Sku, InventoryLevel)>, Vec<(OrderId, OrderView)>)>;

/// Every row of both read models, tenant by tenant.
fn dump(db: &Database, tenants: &[&str]) -> Dump {
    tenants
        .iter()
        .map(|t| {
            (
                projection::inventory_levels(db, &tenant(t)).unwrap(),
                projection::orders_of(db, &tenant(t)).unwrap(),
            )
        })
        .collect()
}

/// A history over two tenants with every kind of stock movement and order status; returns the
/// position after it.
fn history(engine: &Engine) -> Position {
    receive(engine, "acme", "sku-1", 10);
    receive(engine, "acme", "sku-2", 5);
    receive(engine, "globex", "sku-1", 7);
    place(engine, "acme", "o-1", &[("sku-1", 3), ("sku-2", 1)]);
    pay(engine, "acme", "o-1", 4_000);
    order_command(engine, "acme", "o-1", OrderCommand::Ship);
    place(engine, "acme", "o-2", &[("sku-1", 2)]);
    order_command(engine, "acme", "o-2", OrderCommand::Cancel { reason: CancelReason::Requested });
    let keyed = Envelope::new(tenant("acme"), place_command("o-3", &[("sku-1", 1)]))
        .with_key(IdempotencyKey::new("k-3").unwrap());
    engine.execute_blocking(keyed).unwrap();
    run(engine, "acme", Command::AdjustStock { sku: sku("sku-2"), delta: -1 });
    let last = place(engine, "globex", "o-1", &[("sku-1", 2)]);
    last.next_position()
}

#[test]
fn read_models_equal_what_the_engine_decided() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let db = Arc::new(projection::open_db(&dir.path().join("models.redb")).unwrap());
    // Started on an empty log: the workers follow the commands as they come.
    let workers = Workers::start(&db, &engine, &WorkerConfig::default());

    let received = receive(&engine, "acme", "sku-1", 10);
    workers.wait_for(received.next_position());
    assert_eq!(level(&db, "acme", "sku-1"), InventoryLevel { on_hand: 10, reserved: 0 });

    receive(&engine, "acme", "sku-2", 5);
    receive(&engine, "globex", "sku-1", 7);
    let placed = place(&engine, "acme", "o-1", &[("sku-1", 3), ("sku-2", 1)]);
    workers.wait_for(placed.next_position());
    let o1 = view(&db, "acme", "o-1");
    assert_eq!(
        (o1.status, o1.total, o1.currency, o1.payment),
        (OrderStatus::Placed, 3_000 + 1_000, eur(), None)
    );
    assert_eq!(level(&db, "acme", "sku-1"), InventoryLevel { on_hand: 10, reserved: 3 });

    let paid = pay(&engine, "acme", "o-1", 4_000);
    let shipped = order_command(&engine, "acme", "o-1", OrderCommand::Ship);
    let placed2 = place(&engine, "acme", "o-2", &[("sku-1", 2)]);
    let cancelled = order_command(
        &engine,
        "acme",
        "o-2",
        OrderCommand::Cancel { reason: CancelReason::Requested },
    );
    // A keyed command's key is in its decision record, with its events.
    let keyed = Envelope::new(tenant("acme"), place_command("o-3", &[("sku-1", 1)]))
        .with_key(IdempotencyKey::new("k-3").unwrap());
    let placed3 = engine.execute_blocking(keyed).unwrap();
    let adjusted = run(&engine, "acme", Command::AdjustStock { sku: sku("sku-2"), delta: -1 });
    assert_eq!(
        placed3.events[0].position.0,
        cancelled.events.last().unwrap().position.0 + 1,
        "the keyed command's key needs no record of its own"
    );
    workers.wait_for(adjusted.next_position());
    assert_eq!(workers.inventory.reached(), engine.head(), "past the engine's own records too");
    assert_eq!(workers.inventory.lag(), 0);
    assert_eq!(workers.orders.lag(), 0);

    // Inventory: exactly the engine's figures.
    let sku1 = level(&db, "acme", "sku-1");
    assert_eq!(sku1, InventoryLevel { on_hand: 10 - 3, reserved: 1 }, "o-1 shipped, o-2 released");
    assert_eq!(sku1.available(), engine_available(&engine, "acme", "sku-1"));
    let sku2 = level(&db, "acme", "sku-2");
    assert_eq!(sku2, InventoryLevel { on_hand: 5 - 1 - 1, reserved: 0 }, "shipped, adjusted");
    assert_eq!(sku2.available(), engine_available(&engine, "acme", "sku-2"));
    assert_eq!(level(&db, "globex", "sku-1"), InventoryLevel { on_hand: 7, reserved: 0 });
    assert_eq!(projection::inventory(&db, &tenant("acme"), &sku("never")).unwrap(), None);

    // Orders: status, money, payment and the positions of each order's events.
    let all = [&placed, &paid, &shipped, &placed2, &cancelled, &placed3];
    let o1 = view(&db, "acme", "o-1");
    assert_eq!(o1.status, OrderStatus::Shipped);
    assert_eq!(o1.customer.as_str(), "c-1");
    assert_eq!((o1.total, o1.refunded), (4_000, 0));
    assert_eq!(o1.payment.as_ref().map(PaymentId::as_str), Some("pay-o-1"));
    assert_eq!(o1.lines.len(), 2);
    assert_eq!(o1.placed_at, START);
    assert_eq!(o1.positions, order_positions(&all, "o-1"));
    assert_eq!(o1.positions.len(), 3, "placed, confirmed, shipped");
    let o2 = view(&db, "acme", "o-2");
    assert_eq!(
        (o2.status, o2.cancel_reason),
        (OrderStatus::Cancelled, Some(CancelReason::Requested))
    );
    assert_eq!(o2.positions, order_positions(&all, "o-2"));
    let o3 = view(&db, "acme", "o-3");
    assert_eq!((o3.status, o3.total), (OrderStatus::Placed, 1_000));
    assert_eq!(o3.positions, order_positions(&all, "o-3"));
    // Tenants never see each other.
    assert_eq!(projection::order(&db, &tenant("globex"), &order_id("o-1")).unwrap(), None);
    assert_eq!(projection::orders_of(&db, &tenant("acme")).unwrap().len(), 3);
    assert!(projection::orders_of(&db, &tenant("globex")).unwrap().is_empty());
    assert_eq!(projection::inventory_levels(&db, &tenant("globex")).unwrap().len(), 1);
    workers.stop();
}

#[test]
fn wait_for_returns_once_visible_and_times_out_cleanly_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let db = Arc::new(projection::open_db(&dir.path().join("models.redb")).unwrap());
    let worker = ProjectionWorker::start(
        db.clone(),
        engine.log(),
        InventoryProjection,
        WorkerConfig::default(),
    )
    .unwrap();
    worker.wait_for(Position(0), Duration::ZERO).expect("position 0 is reached from the start");

    let received = receive(&engine, "acme", "sku-1", 4);
    worker.wait_for(received.next_position(), WAIT).unwrap();
    assert_eq!(level(&db, "acme", "sku-1").on_hand, 4, "visible once wait_for returns");

    let never = Position(engine.head().0 + 100);
    let started = Instant::now();
    let err = worker.wait_for(never, Duration::from_millis(200)).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err, WaitError::TimedOut { wanted: never.0, reached: received.next_position().0 });
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(worker.ended().is_none(), "a timeout does not stop the worker");

    // A waiter is answered by the commit that reaches its position, not by its timeout.
    let waiter = {
        let target = Position(received.next_position().0 + 1);
        let started = Instant::now();
        std::thread::scope(|s| {
            let handle = s.spawn(|| worker.wait_for(target, WAIT));
            std::thread::sleep(Duration::from_millis(50));
            receive(&engine, "acme", "sku-1", 1);
            handle.join().unwrap()
        })
        .map(|()| started.elapsed())
    };
    assert!(waiter.unwrap() < WAIT);
    assert_eq!(level(&db, "acme", "sku-1").on_hand, 5);

    worker.stop().unwrap();
}

#[test]
fn a_restarted_worker_resumes_from_its_checkpoint_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let path = dir.path().join("models.redb");
    let end = history(&engine);
    let before = {
        let db = Arc::new(projection::open_db(&path).unwrap());
        let workers = Workers::start(&db, &engine, &WorkerConfig::default());
        workers.wait_for(end);
        workers.stop();
        assert_eq!(projection::checkpoint(&db, "inventory").unwrap(), end);
        assert_eq!(projection::checkpoint(&db, "orders").unwrap(), end);
        dump(&db, &["acme", "globex"])
    };
    assert_eq!(before[0].0[0].1, InventoryLevel { on_hand: 7, reserved: 1 });

    // Restart on the same file with no new event: nothing is applied again.
    let db = Arc::new(projection::open_db(&path).unwrap());
    let workers = Workers::start(&db, &engine, &WorkerConfig::default());
    assert_eq!(workers.inventory.reached(), end, "starts at its checkpoint");
    workers.wait_for(end);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(dump(&db, &["acme", "globex"]), before, "on hand and orders unchanged");

    // New events after the restart are applied once.
    let received = receive(&engine, "acme", "sku-1", 5);
    let delivered = order_command(&engine, "acme", "o-1", OrderCommand::Deliver);
    workers.wait_for(delivered.next_position());
    assert_eq!(level(&db, "acme", "sku-1"), InventoryLevel { on_hand: 12, reserved: 1 });
    let o1 = view(&db, "acme", "o-1");
    assert_eq!(o1.status, OrderStatus::Delivered);
    assert_eq!(o1.positions.last(), Some(&delivered.events[0].position));
    assert_eq!(o1.positions.len(), 4);
    assert!(received.events[0].position.0 >= end.0);
    workers.stop();
}

#[test]
fn deleting_the_redb_file_rebuilds_identical_models_from_position_zero() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let path = dir.path().join("models.redb");
    let end = history(&engine);
    let tenants = ["acme", "globex"];
    let first = {
        let db = Arc::new(projection::open_db(&path).unwrap());
        let workers = Workers::start(&db, &engine, &WorkerConfig::default());
        workers.wait_for(end);
        workers.stop();
        dump(&db, &tenants)
    };
    assert_eq!(first[0].1.len(), 3, "acme's orders are there");

    // Batches of every size give the same models: the batch is not part of the result.
    for max_batch in [1, 3, 10_000] {
        std::fs::remove_file(&path).unwrap();
        let db = Arc::new(projection::open_db(&path).unwrap());
        assert_eq!(projection::checkpoint(&db, "inventory").unwrap(), Position(0));
        let config = WorkerConfig { max_batch, ..WorkerConfig::default() };
        let workers = Workers::start(&db, &engine, &config);
        workers.wait_for(end);
        workers.stop();
        assert_eq!(dump(&db, &tenants), first, "rebuilt with batches of {max_batch}");
    }
}

#[test]
fn a_record_that_does_not_decode_stops_the_worker_and_writes_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(&dir.path().join("log"), LogConfig::default()).unwrap();
    let good = codec::encode_event(
        &tenant("acme"),
        &Event::Inventory {
            sku: sku("sku-1"),
            event: InventoryEvent::StockReceived { quantity: Quantity::new(5).unwrap() },
        },
    );
    let record = |stream: Vec<u8>, event_type, payload| NewRecord {
        stream,
        expected: Expected::Any,
        event_type,
        schema_version: 1,
        timestamp: START.0,
        payload,
    };
    log.append(vec![
        record(good.stream.clone(), good.event_type, good.payload.clone()),
        record(good.stream, good.event_type, b"not rkyv".to_vec()),
    ])
    .unwrap();

    // One batch holds both records: it fails as a whole, nothing is written.
    let path = dir.path().join("models.redb");
    let db = Arc::new(projection::open_db(&path).unwrap());
    let worker = ProjectionWorker::start(
        db.clone(),
        log.reader(),
        InventoryProjection,
        WorkerConfig::default(),
    )
    .unwrap();
    let err = worker.wait_for(Position(2), WAIT).unwrap_err();
    let WaitError::Stopped { reached: 0, cause, .. } = err else { panic!("{err:?}") };
    assert!(cause.contains("position 1"), "{cause}");
    assert!(worker.ended().is_some());
    assert!(matches!(worker.stop(), Err(ProjectionError::Decode { position: 1, .. })));
    assert_eq!(projection::inventory(&db, &tenant("acme"), &sku("sku-1")).unwrap(), None);
    assert_eq!(projection::checkpoint(&db, "inventory").unwrap(), Position(0));

    // Batches of one: the good record is committed with its checkpoint, then the worker stops.
    let config = WorkerConfig { max_batch: 1, ..WorkerConfig::default() };
    let worker =
        ProjectionWorker::start(db.clone(), log.reader(), InventoryProjection, config).unwrap();
    let err = worker.wait_for(Position(2), WAIT).unwrap_err();
    assert!(matches!(err, WaitError::Stopped { reached: 1, .. }), "{err:?}");
    assert_eq!(level(&db, "acme", "sku-1").on_hand, 5);
    assert_eq!(projection::checkpoint(&db, "inventory").unwrap(), Position(1));
    assert!(worker.stop().is_err());
}

#[test]
fn an_order_row_round_trips_and_garbage_is_an_error_not_a_panic() {
    let view = OrderView {
        status: OrderStatus::Cancelled,
        cancel_reason: Some(CancelReason::HoldExpired),
        customer: CustomerId::new("c-9").unwrap(),
        currency: eur(),
        lines: vec![OrderLine {
            sku: sku("a"),
            quantity: Quantity::new(2).unwrap(),
            unit_price: 7,
        }],
        total: 14,
        refunded: 0,
        payment: Some(PaymentId::new("p-9").unwrap()),
        payment_status: Some(orderly_core::domain::PaymentStatus::Voided),
        authorized: 14,
        captured: 0,
        gateway: Some(orderly_core::domain::GatewayId::new("gw-a").unwrap()),
        decline_reason: None,
        hold_expires_at: Some(orderly_core::domain::Timestamp(START.0 + 900_000)),
        placed_at: START,
        positions: vec![Position(3), Position(9)],
    };
    let bytes = view.encode();
    assert_eq!(OrderView::decode(&bytes).unwrap(), view);
    for cut in 0..bytes.len() {
        assert!(OrderView::decode(&bytes[..cut]).is_err(), "a row cut at {cut} bytes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(OrderView::decode(&longer).is_err());
    let mut bad_status = bytes.clone();
    bad_status[1] = 99;
    assert!(matches!(OrderView::decode(&bad_status), Err(ProjectionError::Corrupt(_))));

    // Rows of formats 3 and 2, written before the payment's details were kept, are still
    // read, without them.
    let before = OrderView { gateway: None, decline_reason: None, hold_expires_at: None, ..view };
    let format_3 = "0304034555520e0080f0d6ebab33030e0003632d3903702d390101610207020306";
    let format_2 = "0204034555520e00000000000000000000000000000000b875bd9a010000030e000000000000000000\
                    00000000000003632d3903702d390100016102000000000000000700000000000000020000000300\
                    0000000000000900000000000000";
    let hex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    };
    let (format_3, format_2) = (hex(format_3), hex(format_2));
    assert_eq!(OrderView::decode(&format_3).unwrap(), before);
    assert_eq!(OrderView::decode(&format_2).unwrap(), before);
    assert_eq!(
        format_3.len(),
        33,
        "format 3 holds the same in about a third of the bytes of format 2 (95)"
    );
    let mut bad_reason = bytes.clone();
    let reason_at = bytes.len() - 1 - "gw-a".len() - 1;
    assert_eq!(bad_reason[reason_at], 0, "no decline reason");
    bad_reason[reason_at] = 7;
    assert!(matches!(OrderView::decode(&bad_reason), Err(ProjectionError::Corrupt(_))));
    let bytes = format_3;

    // Numbers are varints: one wider than 64 bits, or a position past u64::MAX, is corrupt.
    let total_at = 1 + 1 + 1 + 3;
    assert_eq!(bytes[total_at], 14, "the total, one byte");
    let mut too_wide = bytes[..total_at].to_vec();
    too_wide.extend_from_slice(&[0xff; 9]);
    too_wide.push(0x7f);
    too_wide.extend_from_slice(&bytes[total_at + 1..]);
    assert!(matches!(OrderView::decode(&too_wide), Err(ProjectionError::Corrupt(_))));
    assert_eq!(bytes[bytes.len() - 3..], [2, 3, 6], "two positions: 3, then a step of 6");
    let mut past_max = bytes[..bytes.len() - 1].to_vec();
    past_max.extend_from_slice(&[0xff; 9]);
    past_max.push(0x01);
    assert!(matches!(OrderView::decode(&past_max), Err(ProjectionError::Corrupt(_))));
}

mod host;
mod models;
mod rebuild;
