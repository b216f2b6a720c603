//! The orders-by-customer index, the payment state of the order view and the per-minute sales
//! KPIs on a real engine: each model equals what the commands did (the payment state also
//! equals the domain's own fold of the committed events), pages of a customer's orders walk
//! newest first with exact boundaries, a minute is the admission time of the event (driven by
//! a manual clock), two tenants never see each other's rows, and an order placed twice is an
//! error whether the first placing is in the same batch or stored.

use std::sync::Arc;

use orderly_core::domain::{
    CancelReason, Command, Currency, CustomerId, Decider, DeclineReason, Event, GatewayId, Money,
    OrderCommand, OrderLine, OrderStatus, PaymentCommand, PaymentId, PaymentStatus, Quantity,
    Tenant, TenantState,
};
use orderly_core::engine::{Config, Engine, ManualClock, Outcome};
use orderly_core::process::payment_id_for;
use orderly_core::projection::{
    self, Cancellations, CurrencySales, CustomerCursor, CustomersProjection, KpiProjection,
    OrdersProjection, ProjectionError, ProjectionWorker, SalesKpis, WorkerConfig,
};
use orderly_store::LogConfig;
use redb::Database;

use super::{START, WAIT, eur, order_id, receive, run, sku, tenant};

const MINUTE: u64 = 60_000;

/// An engine whose holds outlive every test, so that no order expires behind a test's back.
fn open_engine(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    let config = Config {
        hold_ttl_ms: 24 * 60 * MINUTE,
        log: LogConfig { segment_size: 1 << 20, ..LogConfig::default() },
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    Engine::open(dir, config).unwrap()
}

fn usd() -> Currency {
    Currency::new("USD").unwrap()
}

fn gateway(g: &str) -> GatewayId {
    GatewayId::new(g).unwrap()
}

fn payment_id(p: &str) -> PaymentId {
    PaymentId::new(p).unwrap()
}

/// Places `order` for `customer` with lines of (SKU, units, unit price).
fn place(
    engine: &Engine,
    t: &str,
    order: &str,
    customer: &str,
    currency: Currency,
    lines: &[(&str, u64, u64)],
) -> Outcome {
    let lines = lines
        .iter()
        .map(|(s, units, price)| OrderLine {
            sku: sku(s),
            quantity: Quantity::new(*units).unwrap(),
            unit_price: *price,
        })
        .collect();
    let customer = CustomerId::new(customer).unwrap();
    let command = OrderCommand::Place { customer, currency, lines };
    run(engine, t, Command::Order { order: order_id(order), command })
}

fn order(engine: &Engine, t: &str, order: &str, command: OrderCommand) -> Outcome {
    run(engine, t, Command::Order { order: order_id(order), command })
}

fn authorize(engine: &Engine, t: &str, payment: &PaymentId, order: &str, amount: Money) -> Outcome {
    let command = PaymentCommand::Authorize {
        reference: None,
        order: order_id(order),
        amount,
        gateway: gateway("gw-1"),
    };
    run(engine, t, Command::Payment { payment: payment.clone(), command })
}

fn decline(
    engine: &Engine,
    t: &str,
    payment: &str,
    order: &str,
    amount: Money,
    gw: &str,
) -> Outcome {
    decline_for(engine, t, (payment, order), amount, gw, DeclineReason::Refused)
}

fn decline_for(
    engine: &Engine,
    t: &str,
    (payment, order): (&str, &str),
    amount: Money,
    gw: &str,
    reason: DeclineReason,
) -> Outcome {
    let command =
        PaymentCommand::Decline { order: order_id(order), amount, gateway: gateway(gw), reason };
    run(engine, t, Command::Payment { payment: payment_id(payment), command })
}

fn cancel(engine: &Engine, t: &str, o: &str, reason: CancelReason) -> Outcome {
    order(engine, t, o, OrderCommand::Cancel { reason })
}

/// Starts `projection` on `db`, waits until it holds everything below `until`, stops it.
fn catch_up<P: orderly_core::projection::Projection>(
    db: &Arc<Database>,
    engine: &Engine,
    projection: P,
    config: &WorkerConfig,
    until: orderly_core::Position,
) {
    let worker =
        ProjectionWorker::start(db.clone(), engine.log(), projection, config.clone()).unwrap();
    worker.wait_for(until, WAIT).unwrap();
    worker.stop().unwrap();
}

fn new_db(dir: &std::path::Path, name: &str) -> Arc<Database> {
    Arc::new(projection::open_db(&dir.join(name)).unwrap())
}

/// A whole walk through the orders of `customer`, `limit` per page: the pages.
fn walk(db: &Database, t: &str, customer: &str, limit: usize) -> Vec<Vec<String>> {
    let customer = CustomerId::new(customer).unwrap();
    let mut pages = Vec::new();
    let mut after: Option<CustomerCursor> = None;
    loop {
        let (page, next) =
            projection::orders_of_customer(db, &tenant(t), &customer, after.as_ref(), limit)
                .unwrap();
        pages.push(page.iter().map(|o| o.as_str().to_owned()).collect());
        match next {
            Some(cursor) => {
                assert_eq!(cursor.order.as_str(), page.last().unwrap().as_str());
                after = Some(cursor);
            }
            None => return pages,
        }
        assert!(pages.len() < 100, "a walk ends");
    }
}

#[test]
fn orders_of_a_customer_page_newest_first_with_exact_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let db = new_db(dir.path(), "models.redb");
    let empty = projection::orders_of_customer(
        &db,
        &tenant("acme"),
        &CustomerId::new("c-1").unwrap(),
        None,
        10,
    )
    .unwrap();
    assert_eq!(empty, (Vec::new(), None), "no table yet: no orders");

    receive(&engine, "acme", "sku-1", 1_000);
    receive(&engine, "globex", "sku-1", 1_000);
    let line = [("sku-1", 1, 100)];
    place(&engine, "acme", "o-a", "c-1", eur(), &line);
    clock.advance(1_000);
    place(&engine, "acme", "o-b", "c-1", eur(), &line);
    place(&engine, "acme", "o-x", "c-2", eur(), &line);
    clock.advance(1_000);
    // Same millisecond: ordered by descending order id, whatever the placing order.
    place(&engine, "acme", "o-c", "c-1", eur(), &line);
    place(&engine, "acme", "o-d", "c-1", eur(), &line);
    // "c-10" sorts right after "c-1": it must not leak into c-1's range, nor c-1 into it.
    place(&engine, "acme", "o-y", "c-10", eur(), &line);
    place(&engine, "globex", "g-1", "c-1", eur(), &line);
    clock.advance(3 * MINUTE);
    let last = place(&engine, "acme", "o-e", "c-1", eur(), &line);

    let worker = ProjectionWorker::start(
        db.clone(),
        engine.log(),
        CustomersProjection,
        WorkerConfig::default(),
    )
    .unwrap();
    worker.wait_for(last.next_position(), WAIT).unwrap();

    let newest_first = ["o-e", "o-d", "o-c", "o-b", "o-a"];
    let pages = |limit| walk(&db, "acme", "c-1", limit);
    let expect = |sizes: &[usize]| {
        let mut rest = &newest_first[..];
        sizes
            .iter()
            .map(|n| {
                let (page, tail) = rest.split_at(*n);
                rest = tail;
                page.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pages(1), expect(&[1, 1, 1, 1, 1]));
    assert_eq!(pages(2), expect(&[2, 2, 1]));
    assert_eq!(pages(4), expect(&[4, 1]));
    assert_eq!(pages(5), expect(&[5]), "exactly one full page: no cursor to an empty page");
    assert_eq!(pages(100), expect(&[5]));
    assert_eq!(pages(0), pages(1), "a limit of 0 is taken as 1");

    // The cursor names the last order returned and survives its text form.
    let c1 = CustomerId::new("c-1").unwrap();
    let (page, next) = projection::orders_of_customer(&db, &tenant("acme"), &c1, None, 2).unwrap();
    let next = next.unwrap();
    assert_eq!(page.last(), Some(&next.order));
    assert_eq!(next.placed_at.0, START.0 + 2_000);
    assert_eq!(next.to_string(), format!("{}.o-d", START.0 + 2_000));
    assert_eq!(CustomerCursor::parse(&next.to_string()), Some(next.clone()));
    for garbage in ["", "o-d", ".o-d", "12.", "x1.o-d", "-1.o-d", "99999999999999999999.o-d"] {
        assert_eq!(CustomerCursor::parse(garbage), None, "{garbage:?}");
    }
    // A cursor past the oldest order: an empty last page.
    let oldest = CustomerCursor { placed_at: START, order: order_id("o-a") };
    let after_oldest =
        projection::orders_of_customer(&db, &tenant("acme"), &c1, Some(&oldest), 10).unwrap();
    assert_eq!(after_oldest, (Vec::new(), None));

    // Other customers and tenants see only their own orders.
    assert_eq!(walk(&db, "acme", "c-2", 10), vec![vec!["o-x".to_owned()]]);
    assert_eq!(walk(&db, "acme", "c-10", 10), vec![vec!["o-y".to_owned()]]);
    assert_eq!(walk(&db, "globex", "c-1", 10), vec![vec!["g-1".to_owned()]]);
    assert_eq!(walk(&db, "globex", "c-2", 10), vec![Vec::<String>::new()]);
    assert_eq!(walk(&db, "initech", "c-1", 10), vec![Vec::<String>::new()]);

    // An order placed during a walk comes on a fresh first page, not in the middle.
    let (_, second) = projection::orders_of_customer(&db, &tenant("acme"), &c1, None, 2).unwrap();
    clock.advance(1_000);
    let newer = place(&engine, "acme", "o-f", "c-1", eur(), &line);
    worker.wait_for(newer.next_position(), WAIT).unwrap();
    let (page, _) =
        projection::orders_of_customer(&db, &tenant("acme"), &c1, second.as_ref(), 2).unwrap();
    assert_eq!(page, vec![order_id("o-c"), order_id("o-b")]);
    let (page, _) = projection::orders_of_customer(&db, &tenant("acme"), &c1, None, 1).unwrap();
    assert_eq!(page, vec![order_id("o-f")]);
    worker.stop().unwrap();
}

/// What the domain itself says of the payment of `o` after `outcomes`: (payment, status,
/// authorized, captured, refunded).
type PaymentFigures = (Option<PaymentId>, Option<PaymentStatus>, u64, u64, u64);

fn domain_payment(outcomes: &[Outcome], t: &str, o: &str) -> PaymentFigures {
    let mut state = TenantState::default();
    for event in outcomes.iter().flat_map(|o| &o.events).filter(|e| e.tenant == tenant(t)) {
        Tenant::evolve(&mut state, &event.event);
    }
    // The order's payment: the one that confirmed it, else the last one started for it.
    let order = state.order(&order_id(o)).unwrap();
    let started = outcomes.iter().flat_map(|o| &o.events).filter_map(|e| match &e.event {
        Event::Payment { payment, .. } if e.tenant == tenant(t) => Some(payment),
        _ => None,
    });
    let last = started.rev().find(|p| state.payment(p).unwrap().order() == Some(&order_id(o)));
    let Some(id) = order.payment().or(last) else { return (None, None, 0, 0, 0) };
    let p = state.payment(id).unwrap();
    (
        Some(id.clone()),
        p.status(),
        p.authorized().unwrap().minor,
        p.captured().unwrap().minor,
        p.refunded().unwrap().minor,
    )
}

fn view_payment(db: &Database, t: &str, o: &str) -> PaymentFigures {
    let v = projection::order(db, &tenant(t), &order_id(o)).unwrap().unwrap();
    (v.payment, v.payment_status, v.authorized, v.captured, v.refunded)
}

#[test]
fn the_order_view_follows_its_payment_through_the_payments_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let db = new_db(dir.path(), "models.redb");
    let worker = ProjectionWorker::start(
        db.clone(),
        engine.log(),
        OrdersProjection,
        WorkerConfig::default(),
    )
    .unwrap();
    let mut done = Vec::new();
    let mut go = |outcome: Outcome| {
        done.push(outcome);
        worker.wait_for(done.last().unwrap().next_position(), WAIT).unwrap();
    };
    let total = |minor| Money::new(minor, eur());
    let line = [("sku-1", 2, 1_500)];
    for t in ["acme", "globex"] {
        go(receive(&engine, t, "sku-1", 100));
    }

    // Authorized (by the payments process's id), captured on shipping, partly refunded.
    go(place(&engine, "acme", "o-1", "c-1", eur(), &line));
    assert_eq!(view_payment(&db, "acme", "o-1"), (None, None, 0, 0, 0));
    let p1 = payment_id_for(&order_id("o-1"));
    go(authorize(&engine, "acme", &p1, "o-1", total(3_000)));
    let authorized = (Some(p1.clone()), Some(PaymentStatus::Authorized), 3_000, 0, 0);
    assert_eq!(view_payment(&db, "acme", "o-1"), authorized);
    go(order(&engine, "acme", "o-1", OrderCommand::Ship));
    let captured = (Some(p1.clone()), Some(PaymentStatus::Captured), 3_000, 3_000, 0);
    assert_eq!(view_payment(&db, "acme", "o-1"), captured);
    go(order(&engine, "acme", "o-1", OrderCommand::Refund { amount: total(1_000) }));
    let refunded = (Some(p1.clone()), Some(PaymentStatus::Captured), 3_000, 3_000, 1_000);
    assert_eq!(view_payment(&db, "acme", "o-1"), refunded);

    // Authorized, then the order is cancelled: voided.
    go(place(&engine, "acme", "o-2", "c-1", eur(), &line));
    go(authorize(&engine, "acme", &payment_id("p-2"), "o-2", total(3_000)));
    go(cancel(&engine, "acme", "o-2", CancelReason::Requested));
    let voided = (Some(payment_id("p-2")), Some(PaymentStatus::Voided), 3_000, 0, 0);
    assert_eq!(view_payment(&db, "acme", "o-2"), voided);

    // Declined, then authorized by a second attempt: the authorization is the order's payment.
    go(place(&engine, "acme", "o-3", "c-1", eur(), &line));
    go(decline(&engine, "acme", "p-3a", "o-3", total(3_000), "gw-2"));
    let declined = (Some(payment_id("p-3a")), Some(PaymentStatus::Declined), 0, 0, 0);
    assert_eq!(view_payment(&db, "acme", "o-3"), declined);
    let details = |o: &str| {
        let view = projection::order(&db, &tenant("acme"), &order_id(o)).unwrap().unwrap();
        (view.gateway.map(|g| g.to_string()), view.decline_reason, view.hold_expires_at)
    };
    let hold = Some(orderly_core::domain::Timestamp(START.0 + 24 * 60 * MINUTE));
    assert_eq!(details("o-3"), (Some("gw-2".into()), Some(DeclineReason::Refused), hold));
    go(authorize(&engine, "acme", &payment_id("p-3b"), "o-3", total(3_000)));
    let second = (Some(payment_id("p-3b")), Some(PaymentStatus::Authorized), 3_000, 0, 0);
    assert_eq!(view_payment(&db, "acme", "o-3"), second);
    assert_eq!(details("o-3"), (Some("gw-1".into()), None, hold), "the authorization's");

    // Declined, then cancelled for it (what the payments process does).
    go(place(&engine, "acme", "o-4", "c-1", eur(), &line));
    go(decline(&engine, "acme", "p-4", "o-4", total(3_000), "gw-1"));
    go(cancel(&engine, "acme", "o-4", CancelReason::PaymentDeclined));

    // Another tenant uses the very same order and payment ids: its own rows only.
    go(place(&engine, "globex", "o-1", "c-1", eur(), &[("sku-1", 1, 700)]));
    go(authorize(&engine, "globex", &p1, "o-1", total(700)));

    let o4 = projection::order(&db, &tenant("acme"), &order_id("o-4")).unwrap().unwrap();
    assert_eq!(
        (o4.status, o4.cancel_reason, o4.payment_status),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::PaymentDeclined),
            Some(PaymentStatus::Declined)
        )
    );
    assert_eq!(view_payment(&db, "acme", "o-1"), refunded, "globex did not touch acme's o-1");
    let globex = (Some(p1.clone()), Some(PaymentStatus::Authorized), 700, 0, 0);
    assert_eq!(view_payment(&db, "globex", "o-1"), globex);
    // Every order's payment state is the domain's own.
    for (t, o) in [("acme", "o-1"), ("acme", "o-2"), ("acme", "o-3"), ("acme", "o-4")] {
        assert_eq!(view_payment(&db, t, o), domain_payment(&done, t, o), "{t}/{o}");
    }
    assert_eq!(view_payment(&db, "globex", "o-1"), domain_payment(&done, "globex", "o-1"));
    // The order's positions stay those of its own stream.
    let o1 = projection::order(&db, &tenant("acme"), &order_id("o-1")).unwrap().unwrap();
    assert_eq!(o1.positions.len(), 4, "placed, confirmed, shipped, refunded");
    worker.stop().unwrap();
}

fn sales(currency: Currency, orders: u64, revenue: u64) -> CurrencySales {
    CurrencySales { currency, orders, revenue }
}

#[test]
fn sales_kpis_count_each_minute_of_each_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    let m0 = START.0 / MINUTE;
    let eur_total = |minor| Money::new(minor, eur());
    for t in ["acme", "globex"] {
        for s in ["sku-1", "sku-2"] {
            receive(&engine, t, s, 1_000);
        }
    }

    // Minute m0: three orders at acme (two in EUR, one in USD), one declined payment.
    clock.advance(5_000);
    place(&engine, "acme", "o-1", "c-1", eur(), &[("sku-1", 3, 1_000), ("sku-2", 1, 500)]);
    place(&engine, "acme", "o-2", "c-2", eur(), &[("sku-1", 2, 1_000)]);
    place(&engine, "acme", "o-3", "c-1", usd(), &[("sku-2", 4, 250)]);
    decline(&engine, "acme", "p-2a", "o-2", eur_total(2_000), "gw-1");
    place(&engine, "globex", "g-1", "c-1", eur(), &[("sku-1", 1, 9_999)]);
    // The last millisecond of m0 is still m0.
    clock.set(orderly_core::domain::Timestamp((m0 + 1) * MINUTE - 1));
    cancel(&engine, "acme", "o-2", CancelReason::PaymentDeclined);

    // Minute m0 + 1: declines at two gateways, two cancellations, one more order.
    clock.advance(1);
    decline(&engine, "acme", "p-3a", "o-3", Money::new(1_000, usd()), "gw-2");
    decline(&engine, "acme", "p-3b", "o-3", Money::new(1_000, usd()), "gw-1");
    decline(&engine, "acme", "p-3c", "o-3", Money::new(1_000, usd()), "gw-2");
    // No gateway answered: not counted against the gateway the decline names.
    let unavailable = DeclineReason::GatewayUnavailable;
    decline_for(&engine, "acme", ("p-3d", "o-3"), Money::new(1_000, usd()), "gw-1", unavailable);
    cancel(&engine, "acme", "o-3", CancelReason::Requested);
    place(&engine, "acme", "o-4", "c-3", eur(), &[("sku-1", 1, 4_000)]);

    // Minute m0 + 4 (m0 + 2 and + 3 are quiet): paying and shipping count nothing.
    clock.advance(3 * MINUTE + 30_000);
    authorize(&engine, "acme", &payment_id("p-1"), "o-1", eur_total(3_500));
    order(&engine, "acme", "o-1", OrderCommand::Ship);
    place(&engine, "acme", "o-5", "c-1", eur(), &[("sku-2", 1, 10)]);
    let last = cancel(&engine, "acme", "o-4", CancelReason::Requested);

    let expected_acme = vec![
        (
            m0,
            SalesKpis {
                sales: vec![sales(eur(), 2, 3_500 + 2_000), sales(usd(), 1, 1_000)],
                lines: 2 + 1 + 1,
                units: 4 + 2 + 4,
                cancellations: Cancellations { payment_declined: 1, ..Cancellations::default() },
                declines: vec![(gateway("gw-1"), 1)],
                authorizations: Vec::new(),
                unavailable: 0,
            },
        ),
        (
            m0 + 1,
            SalesKpis {
                sales: vec![sales(eur(), 1, 4_000)],
                lines: 1,
                units: 1,
                cancellations: Cancellations { requested: 1, ..Cancellations::default() },
                declines: vec![(gateway("gw-1"), 1), (gateway("gw-2"), 2)],
                authorizations: Vec::new(),
                unavailable: 1,
            },
        ),
        (
            m0 + 4,
            SalesKpis {
                sales: vec![sales(eur(), 1, 10)],
                lines: 1,
                units: 1,
                cancellations: Cancellations { requested: 1, ..Cancellations::default() },
                declines: Vec::new(),
                authorizations: vec![(gateway("gw-1"), 1)],
                unavailable: 0,
            },
        ),
    ];
    let expected_globex = vec![(
        m0,
        SalesKpis {
            sales: vec![sales(eur(), 1, 9_999)],
            lines: 1,
            units: 1,
            ..SalesKpis::default()
        },
    )];

    // Followed live, and rebuilt from position 0 in batches of one: the same figures.
    for (file, max_batch) in [("live.redb", 10_000), ("ones.redb", 1)] {
        let db = new_db(dir.path(), file);
        let config = WorkerConfig { max_batch, ..WorkerConfig::default() };
        catch_up(&db, &engine, KpiProjection, &config, last.next_position());
        let kpis = |t: &str, from, to| projection::kpis(&db, &tenant(t), from, to).unwrap();
        assert_eq!(kpis("acme", 0, u64::MAX), expected_acme, "{file}");
        assert_eq!(kpis("acme", m0, m0 + 4), expected_acme, "both ends included");
        assert_eq!(kpis("acme", m0 + 1, m0 + 1), expected_acme[1..2]);
        assert_eq!(kpis("acme", m0 + 1, m0 + 3), expected_acme[1..2]);
        assert!(kpis("acme", m0 + 2, m0 + 3).is_empty(), "quiet minutes have no row");
        assert!(kpis("acme", m0 + 4, m0).is_empty(), "an empty range");
        assert_eq!(kpis("globex", 0, u64::MAX), expected_globex);
        assert!(kpis("initech", 0, u64::MAX).is_empty());
    }

    // The day the dashboard shows: per-minute orders, the peak and the sums.
    let db = new_db(dir.path(), "day.redb");
    catch_up(&db, &engine, KpiProjection, &WorkerConfig::default(), last.next_position());
    let day = projection::day(&db, &tenant("acme"), m0 + 4, 0).unwrap();
    let day_start = m0 - m0 % projection::kpi::DAY_MINUTES;
    assert_eq!(day.first_minute, day_start);
    assert!(m0 + 4 < day_start + projection::kpi::DAY_MINUTES, "the clock starts early in a day");
    assert_eq!(day.per_minute, vec![(m0, 3), (m0 + 1, 1), (m0 + 4, 1)]);
    assert_eq!(day.peak, Some((m0, 3)));
    assert_eq!(day.orders_in(m0 + 1), 1);
    assert_eq!(day.orders_in(m0 + 2), 0);
    assert_eq!(day.totals.orders(), 5);
    assert_eq!(
        day.totals.sales,
        vec![sales(eur(), 4, 3_500 + 2_000 + 4_000 + 10), sales(usd(), 1, 1_000)]
    );
    assert_eq!(day.totals.declines, vec![(gateway("gw-1"), 2), (gateway("gw-2"), 2)]);
    assert_eq!(day.totals.authorizations, vec![(gateway("gw-1"), 1)]);
    assert_eq!(day.totals.unavailable, 1);
    assert_eq!(day.totals.cancellations.total(), 3);
    assert!(projection::day(&db, &tenant("initech"), m0, 0).unwrap().peak.is_none());

    // The derived figures.
    let first = &expected_acme[0].1;
    assert_eq!(first.orders(), 3);
    assert_eq!(first.in_currency(eur()).unwrap().average_basket(), 2_750);
    assert_eq!(first.in_currency(usd()).unwrap().average_basket(), 1_000);
    assert_eq!(first.average_lines(), Some(4.0 / 3.0));
    assert_eq!(first.cancellations.total(), 1);
    assert_eq!(expected_acme[1].1.declines_total(), 4);
    assert_eq!(SalesKpis::default().average_lines(), None);
    assert_eq!(sales(eur(), 0, 0).average_basket(), 0);
}

/// `kpis` as KPI row format 3 wrote it: gateway counts in a u16.
fn format_3(kpis: &SalesKpis) -> Vec<u8> {
    let mut out = vec![3];
    let c = &kpis.cancellations;
    for n in [kpis.lines, kpis.units, c.requested, c.payment_declined, c.hold_expired] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&u16::try_from(kpis.sales.len()).unwrap().to_le_bytes());
    for sale in &kpis.sales {
        out.extend_from_slice(sale.currency.as_str().as_bytes());
        out.extend_from_slice(&sale.orders.to_le_bytes());
        out.extend_from_slice(&sale.revenue.to_le_bytes());
    }
    for list in [&kpis.declines, &kpis.authorizations] {
        out.extend_from_slice(&u16::try_from(list.len()).unwrap().to_le_bytes());
        for (gateway, n) in list {
            out.push(u8::try_from(gateway.as_str().len()).unwrap());
            out.extend_from_slice(gateway.as_str().as_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    out.extend_from_slice(&kpis.unavailable.to_le_bytes());
    out
}

#[test]
fn a_kpi_row_round_trips_and_garbage_is_an_error_not_a_panic() {
    let kpis = SalesKpis {
        sales: vec![sales(eur(), 2, 5_500), sales(usd(), 1, 1_000)],
        lines: 4,
        units: 10,
        cancellations: Cancellations { requested: 1, payment_declined: 2, hold_expired: 3 },
        declines: vec![(gateway("gw-1"), 1), (gateway("gw-2"), 7)],
        authorizations: vec![(gateway("gw-1"), 3)],
        unavailable: 5,
    };
    let bytes = kpis.encode();
    assert_eq!(SalesKpis::decode(&bytes).unwrap(), kpis);
    // Format 3 counted gateways in a u16; format 2, before the unavailable count, is format 3
    // without its last eight bytes.
    let format_3 = format_3(&kpis);
    assert_eq!(SalesKpis::decode(&format_3).unwrap(), kpis);
    let mut format_2 = format_3[..format_3.len() - 8].to_vec();
    format_2[0] = 2;
    assert_eq!(SalesKpis::decode(&format_2).unwrap(), SalesKpis { unavailable: 0, ..kpis.clone() });
    assert_eq!(SalesKpis::decode(&SalesKpis::default().encode()).unwrap(), SalesKpis::default());
    for cut in 0..bytes.len() {
        assert!(SalesKpis::decode(&bytes[..cut]).is_err(), "a row cut at {cut} bytes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(SalesKpis::decode(&longer).is_err());
    let mut bad_format = bytes.clone();
    bad_format[0] = 9;
    assert!(matches!(SalesKpis::decode(&bad_format), Err(ProjectionError::Corrupt(_))));
    let mut bad_currency = bytes;
    bad_currency[1 + 5 * 8 + 2] = b'!';
    assert!(matches!(SalesKpis::decode(&bad_currency), Err(ProjectionError::Corrupt(_))));
}

#[test]
fn an_order_row_with_a_bad_payment_state_or_the_old_format_is_an_error() {
    use orderly_core::domain::Timestamp;
    let view = projection::OrderView {
        status: OrderStatus::Shipped,
        cancel_reason: None,
        customer: CustomerId::new("c-1").unwrap(),
        currency: eur(),
        lines: vec![OrderLine {
            sku: sku("a"),
            quantity: Quantity::new(1).unwrap(),
            unit_price: 9,
        }],
        total: 9,
        refunded: 4,
        payment: Some(payment_id("p-1")),
        payment_status: Some(PaymentStatus::Captured),
        authorized: 9,
        captured: 9,
        gateway: None,
        decline_reason: None,
        hold_expires_at: None,
        placed_at: Timestamp(START.0),
        positions: vec![orderly_core::Position(1)],
    };
    let bytes = view.encode();
    assert_eq!(projection::OrderView::decode(&bytes).unwrap(), view);
    // format | status | cancel reason | currency (3) | total, refunded (varints of 1 byte),
    // placed at (a varint of 6 bytes) | payment status
    let status_at = 1 + 1 + 1 + 3 + 1 + 1 + 6;
    assert_eq!(bytes[status_at], 2, "captured");
    let mut bad = bytes.clone();
    bad[status_at] = 5;
    assert!(matches!(projection::OrderView::decode(&bad), Err(ProjectionError::Corrupt(_))));
    let mut old = bytes;
    old[0] = 1;
    assert!(matches!(projection::OrderView::decode(&old), Err(ProjectionError::Corrupt(_))));
}

/// An `OrderPlaced` at `position` for order `o` of tenant `t`.
fn placed(position: u64, t: &str, o: &str) -> orderly_core::engine::CommittedEvent {
    let event = orderly_core::domain::OrderEvent::OrderPlaced {
        customer: CustomerId::new("c-1").unwrap(),
        currency: eur(),
        lines: vec![OrderLine {
            sku: sku("s-1"),
            quantity: Quantity::new(1).unwrap(),
            unit_price: 100,
        }],
        total: 100,
        hold_expires_at: START,
    };
    orderly_core::engine::CommittedEvent {
        position: orderly_core::Position(position),
        tenant: tenant(t),
        event: Event::Order { order: order_id(o), event },
        recorded_at: START,
    }
}

/// Applies `events` to the orders projection in one transaction; commits only if it applied.
fn apply_orders(
    db: &Database,
    events: &[orderly_core::engine::CommittedEvent],
) -> Result<(), ProjectionError> {
    use orderly_core::projection::{Generation, apply_into};
    let txn = db.begin_write().unwrap();
    apply_into(&txn, &OrdersProjection, Generation::FIRST, events)?;
    txn.commit().unwrap();
    Ok(())
}

#[test]
fn an_order_placed_twice_is_inconsistent_in_one_batch_or_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_db(dir.path(), "models.redb");
    apply_orders(&db, &[placed(0, "t1", "o-1")]).unwrap();
    // The same order id of another tenant is another order.
    apply_orders(&db, &[placed(1, "t2", "o-1")]).unwrap();
    for batch in [
        vec![placed(2, "t1", "o-2"), placed(3, "t1", "o-1")],
        vec![placed(2, "t1", "o-2"), placed(3, "t1", "o-2")],
    ] {
        match apply_orders(&db, &batch) {
            Err(ProjectionError::Inconsistent { position: 3, problem }) => {
                assert!(problem.contains("placed twice"), "{problem}");
            }
            other => panic!("expected placed twice at 3, got {other:?}"),
        }
    }
    assert!(
        projection::order(&db, &tenant("t1"), &order_id("o-2")).unwrap().is_none(),
        "nothing of a failed batch"
    );
}
