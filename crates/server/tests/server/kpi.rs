//! The live KPI stream `GET /v1/kpi/stream` and the day's figures behind it equal the figures
//! computed independently from the log: orders today, this minute and last minute, the peak
//! minute, revenue and average basket per currency, cancellations, payments authorized and
//! declined per gateway, open reservations and orders per minute — over a real socket with
//! payments declined by a simulated gateway, and directly with a manual clock across minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use orderly_core::domain::{
    Currency, DeclineReason, Event, GatewayId, InventoryEvent, OrderEvent, PaymentEvent, Timestamp,
};
use orderly_core::engine::{CommittedEvent, ManualClock};
use orderly_core::node::ReadModel;
use orderly_core::payments::{
    Fee, Route, Router, RouterConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use orderly_core::projection::kpi::MINUTE_MS;
use serde_json::{Value, json};

use super::support::{self, EventStream, Server};

const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// The figures of `tenant`'s `events` for the day of `now_ms`, in the JSON shape of
/// `DayFigures` without `at_ms` and `position`: computed from the events alone.
fn figures_from_log(tenant: &str, events: &[CommittedEvent], now_ms: u64) -> Value {
    let day_start = now_ms - now_ms % DAY_MS;
    let today = |e: &&CommittedEvent| (day_start..day_start + DAY_MS).contains(&e.recorded_at.0);
    let minute_of = |e: &CommittedEvent| (e.recorded_at.0 - day_start) / MINUTE_MS;
    let mut per_minute: BTreeMap<u64, u64> = BTreeMap::new();
    let mut revenue: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut gateways: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut cancellations = 0;
    let mut unavailable = 0;
    for event in events.iter().filter(today) {
        match &event.event {
            Event::Order { event: OrderEvent::OrderPlaced { currency, total, .. }, .. } => {
                *per_minute.entry(minute_of(event)).or_default() += 1;
                let sales = revenue.entry(currency.as_str().to_owned()).or_default();
                sales.0 += 1;
                sales.1 += total;
            }
            Event::Order { event: OrderEvent::OrderCancelled { .. }, .. } => cancellations += 1,
            Event::Payment { event: PaymentEvent::PaymentAuthorized { gateway, .. }, .. } => {
                gateways.entry(gateway.as_str().to_owned()).or_default().0 += 1;
            }
            Event::Payment {
                event: PaymentEvent::PaymentDeclined { gateway, reason, .. }, ..
            } => match reason {
                DeclineReason::Refused => {
                    gateways.entry(gateway.as_str().to_owned()).or_default().1 += 1;
                }
                DeclineReason::GatewayUnavailable => unavailable += 1,
            },
            _ => {}
        }
    }
    // Held units not yet committed, released or expired, whenever they were held.
    let mut held: i128 = 0;
    for event in events {
        if let Event::Inventory { event, .. } = &event.event {
            match event {
                InventoryEvent::StockHeld { quantity, .. } => held += i128::from(quantity.get()),
                InventoryEvent::StockCommitted { quantity, .. }
                | InventoryEvent::StockReleased { quantity, .. }
                | InventoryEvent::HoldExpired { quantity, .. } => {
                    held -= i128::from(quantity.get());
                }
                InventoryEvent::StockReceived { .. } | InventoryEvent::StockAdjusted { .. } => {}
            }
        }
    }
    let minute = (now_ms - day_start) / MINUTE_MS;
    let in_minute = |m: u64| per_minute.get(&m).copied().unwrap_or(0);
    // The last full minute, also when it is the day before's last.
    let last_minute = (now_ms / MINUTE_MS).checked_sub(1);
    let orders_last_minute = events
        .iter()
        .filter(|e| matches!(e.event, Event::Order { event: OrderEvent::OrderPlaced { .. }, .. }))
        .filter(|e| Some(e.recorded_at.0 / MINUTE_MS) == last_minute)
        .count();
    // The busiest minute, the earliest of equals.
    let peak = per_minute.iter().fold(None, |peak: Option<(u64, u64)>, (m, n)| match peak {
        Some((_, most)) if most >= *n => peak,
        _ => Some((*m, *n)),
    });
    json!({
        "tenant": tenant,
        "day_start_ms": day_start,
        "utc_offset_minutes": 0,
        "orders_today": per_minute.values().sum::<u64>(),
        "orders_this_minute": in_minute(minute),
        "orders_last_minute": orders_last_minute,
        "peak_per_minute": peak.map_or(0, |(_, n)| n),
        "peak_minute_ms": peak.map(|(m, _)| day_start + m * MINUTE_MS),
        "revenue": revenue.iter().map(|(currency, (orders, revenue))| json!({
            "currency": currency, "orders": orders, "revenue": revenue,
            "average_basket": revenue / orders,
            // ISO 4217's digits of the currencies the test uses.
            "minor_digits": match currency.as_str() { "JPY" => 0, "EUR" | "USD" => 2, other => panic!("{other}?") },
        })).collect::<Vec<_>>(),
        "cancellations": cancellations,
        "payments": gateways.iter().map(|(gateway, (authorized, declined))| json!({
            "gateway": gateway, "authorized": authorized, "declined": declined,
            "success_rate": success_rate(*authorized, *declined),
        })).collect::<Vec<_>>(),
        "payments_unavailable": unavailable,
        "open_reservations": u64::try_from(held).expect("never more released than held"),
        "per_minute": per_minute.iter().map(|(m, n)| json!([m, n])).collect::<Vec<_>>(),
    })
}

#[expect(clippy::cast_precision_loss, reason = "small counts, exact in an f64")]
fn success_rate(authorized: u64, declined: u64) -> f64 {
    authorized as f64 / (authorized + declined) as f64
}

/// `figures` (a `DayFigures` as JSON) without the fields that say when it was read.
fn without_reading_time(figures: &Value) -> Value {
    let mut figures = figures.clone();
    let object = figures.as_object_mut().expect("an object");
    assert!(object.remove("at_ms").is_some_and(|at| at.is_u64()), "{figures:?}");
    assert!(object.remove("position").is_some_and(|at| at.is_u64()));
    figures
}

/// Waits (bounded) until the KPI and inventory read models have applied the whole log.
async fn wait_for_read_models(server: &Server) -> u64 {
    let node = server.app.node().expect("open");
    let head = node.engine().head();
    tokio::task::spawn_blocking(move || {
        for model in [ReadModel::Kpi, ReadModel::Inventory] {
            node.projection(model).wait_for(head, Duration::from_secs(10)).expect("caught up");
        }
    })
    .await
    .expect("the wait ends");
    head.0
}

/// One simulated gateway that declines about half the authorizations (which ones is fixed
/// by the seed and the order ids).
fn half_declining() -> Arc<Router> {
    let id = GatewayId::new("sim-coin").expect("a valid id");
    let gateway = SimulatedGateway::new(SimulatedGatewayConfig {
        decline_basis_points: 5_000,
        seed: 7,
        ..SimulatedGatewayConfig::new(id)
    });
    let fees = ["EUR", "USD"]
        .map(|code| Fee {
            currency: Currency::new(code).expect("a currency"),
            fixed_minor: 0,
            basis_points: 100,
        })
        .to_vec();
    let route = Route { gateway: Arc::new(gateway), fees, currencies: None };
    Arc::new(Router::new(vec![route], RouterConfig::default()))
}

/// The order (placed, confirmed or cancelled) of every `OrderPlaced`, `OrderConfirmed` and
/// `OrderCancelled`, by order id.
fn order_states(events: &[CommittedEvent]) -> HashMap<String, &'static str> {
    let mut states = HashMap::new();
    for event in events {
        if let Event::Order { order, event } = &event.event {
            let state = match event {
                OrderEvent::OrderPlaced { .. } => "placed",
                OrderEvent::OrderConfirmed { .. } => "confirmed",
                OrderEvent::OrderCancelled { .. } => "cancelled",
                OrderEvent::OrderShipped => "shipped",
                _ => continue,
            };
            states.insert(order.as_str().to_owned(), state);
        }
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kpi_stream_shows_the_figures_of_the_log() {
    let server = Server::configured(|config| config.node.payments = Some(half_declining()));
    let globex = server.add_tenant("globex");
    let address = support::serve(&server.app).await;
    for sku in ["mug", "tea", "pen"] {
        server.receive(sku, 1_000).await;
    }
    let baskets: [&[(&str, u64)]; 6] = [
        &[("mug", 1)],
        &[("mug", 2), ("tea", 3)],
        &[("pen", 5)],
        &[("tea", 1), ("pen", 1), ("mug", 1)],
        &[("mug", 4)],
        &[("tea", 7), ("pen", 2)],
    ];
    for (n, lines) in baskets.iter().enumerate() {
        server.place(&format!("eur-{n}"), "c-1", lines).await;
    }
    for (n, price) in [(0, 1999), (1, 250), (2, 12_345)] {
        let body = json!({ "order_id": format!("usd-{n}"), "customer_id": "c-2",
            "currency": "USD", "lines": [{ "sku": "mug", "quantity": n + 1, "unit_price": price }] });
        server.post("/v1/orders", &body).await.ok(StatusCode::CREATED);
    }
    // Yen have no minor unit: the figures say so.
    let body = json!({ "order_id": "jpy-0", "customer_id": "c-3", "currency": "JPY",
        "lines": [{ "sku": "pen", "quantity": 1, "unit_price": 1500 }] });
    server.post("/v1/orders", &body).await.ok(StatusCode::CREATED);
    // Another tenant's order counts for it only.
    server
        .call(support::post("/v1/inventory/mug/receive", Some(&globex), &json!({ "quantity": 5 })))
        .await
        .ok(StatusCode::OK);
    server
        .call(support::post(
            "/v1/orders",
            Some(&globex),
            &support::order(None, "c-9", &[("mug", 5)]),
        ))
        .await
        .ok(StatusCode::CREATED);

    // Every payment settles: authorized (confirmed) or declined (cancelled).
    let deadline = Instant::now() + Duration::from_secs(10);
    let states = loop {
        let events = support::log_events(&server.app, support::TENANT);
        let states = order_states(&events);
        if states.values().all(|s| *s != "placed") {
            break states;
        }
        assert!(Instant::now() < deadline, "payments never settled: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut confirmed: Vec<&String> =
        states.iter().filter(|(_, s)| **s == "confirmed").map(|(id, _)| id).collect();
    confirmed.sort();
    assert!(confirmed.len() >= 2, "too few authorized to cancel and ship one: {states:?}");
    assert!(states.values().any(|s| *s == "cancelled"), "no payment was declined: {states:?}");
    server
        .post(&format!("/v1/orders/{}/cancel", confirmed[0]), &json!(null))
        .await
        .ok(StatusCode::OK);
    server
        .post(&format!("/v1/orders/{}/ship", confirmed[1]), &json!(null))
        .await
        .ok(StatusCode::OK);
    // The void of the cancelled order's payment moves money at the gateway, not in the log.
    let head = wait_for_read_models(&server).await;

    let request = reqwest::Client::new()
        .get(format!("http://{address}/v1/kpi/stream"))
        .bearer_auth(&server.token);
    let mut stream = EventStream::open(request).await;
    let figures = stream.expect(Duration::from_secs(5)).await.data;
    let at = figures["at_ms"].as_u64().expect("at_ms");
    assert!(figures["position"].as_u64().is_some_and(|p| p >= head), "{figures}");
    let events = support::log_events(&server.app, support::TENANT);
    let expected = figures_from_log(support::TENANT, &events, at);
    assert_eq!(without_reading_time(&figures), expected);
    // The test is not vacuous: it saw what it set out to see.
    assert_eq!(expected["orders_today"], 10);
    assert_eq!(expected["revenue"].as_array().map(Vec::len), Some(3));
    let declined = expected["payments"][0]["declined"].as_u64().expect("declined");
    assert!(declined > 0, "{expected}");
    assert!(expected["open_reservations"].as_u64().is_some_and(|n| n > 0));
}

#[tokio::test]
async fn day_figures_count_each_event_in_its_minute() {
    // 2026-11-27 10:00:30 UTC.
    let start = 1_795_687_230_000;
    let clock = Arc::new(ManualClock::at(Timestamp(start)));
    let engine_clock = clock.clone();
    let server = Server::configured(move |config| config.node.engine.clock = engine_clock);
    server.receive("mug", 100).await;
    server.receive("tea", 100).await;
    // 10:00: two orders; 10:01: three, one cancelled; 10:03: one cancel only; 10:04: one.
    server.place("a-1", "c-1", &[("mug", 1)]).await;
    server.place("a-2", "c-1", &[("mug", 2), ("tea", 1)]).await;
    clock.advance(MINUTE_MS);
    for id in ["b-1", "b-2", "b-3"] {
        server.place(id, "c-2", &[("tea", 3)]).await;
    }
    server.post("/v1/orders/b-2/cancel", &json!(null)).await.ok(StatusCode::OK);
    clock.advance(2 * MINUTE_MS);
    server.post("/v1/orders/a-1/cancel", &json!(null)).await.ok(StatusCode::OK);
    clock.advance(MINUTE_MS);
    server.place("d-1", "c-3", &[("mug", 10)]).await;
    wait_for_read_models(&server).await;

    let node = server.app.node().expect("open");
    let tenant = support::tenant(support::TENANT);
    let events = support::log_events(&server.app, support::TENANT);
    // Read at 10:04:45, and again at 10:05:10 (the last minute is then 10:04).
    for now in [start + 4 * MINUTE_MS + 15_000, start + 5 * MINUTE_MS - 20_000] {
        let figures = orderly_server::api::day_figures(&node, &tenant, now, 0).expect("figures");
        assert_eq!(figures.position, node.engine().head().0);
        let figures = serde_json::to_value(&figures).expect("JSON");
        assert_eq!(
            without_reading_time(&figures),
            figures_from_log(support::TENANT, &events, now),
            "at {now}"
        );
    }
    let figures = orderly_server::api::day_figures(&node, &tenant, start + 4 * MINUTE_MS, 0)
        .expect("figures");
    assert_eq!(
        (figures.orders_today, figures.orders_this_minute, figures.orders_last_minute),
        (6, 1, 0)
    );
    assert_eq!((figures.peak_per_minute, figures.cancellations), (3, 2));
    assert_eq!(figures.per_minute, [[600, 2], [601, 3], [604, 1]]);
    assert_eq!(figures.open_reservations, 1 + 2 + 1 + 3 * 3 + 10 - 1 - 3);
    let eur = &figures.revenue[0];
    assert_eq!((eur.orders, eur.revenue, eur.average_basket), (6, 23_000, 3_833));

    // The next day starts from nothing.
    let tomorrow = start + DAY_MS;
    let figures = orderly_server::api::day_figures(&node, &tenant, tomorrow, 0).expect("figures");
    assert_eq!((figures.orders_today, figures.per_minute.len()), (0, 0));
    assert_eq!(figures.open_reservations, 19, "reservations are now, not per day");

    // A day local to UTC−10:02 starts at 10:02 UTC: only the order of 10:04 is that day's.
    let utc_midnight = start - 30_000 - 600 * MINUTE_MS;
    let at = start + 4 * MINUTE_MS;
    let west = orderly_server::api::day_figures(&node, &tenant, at, -602).expect("figures");
    assert_eq!((west.orders_today, west.utc_offset_minutes), (1, -602));
    assert_eq!(west.per_minute, [[2, 1]], "the day's third minute");
    assert_eq!(west.day_start_ms, utc_midnight + 602 * MINUTE_MS, "10:02 UTC");
    assert_eq!(west.peak_minute_ms, Some(utc_midnight + 604 * MINUTE_MS));
    // East of UTC the same instant is late in a day that began at 13:58 UTC the day before.
    let east = orderly_server::api::day_figures(&node, &tenant, at, 602).expect("figures");
    assert_eq!((east.orders_today, east.day_start_ms), (6, utc_midnight - 602 * MINUTE_MS));
    assert_eq!(east.per_minute, [[1202, 2], [1203, 3], [1206, 1]]);
}

/// A token revoked while its event and KPI streams are open ends both streams within a few
/// seconds: the streams check their token, not only the requests that open them. Another
/// tenant's stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_open_streams() {
    let server = Server::start();
    let globex = server.add_tenant("globex");
    let address = support::serve(&server.app).await;
    server.receive("mug", 1).await;
    let client = reqwest::Client::new();
    let open = |path: &str, token: &str| {
        EventStream::open(client.get(format!("http://{address}{path}")).bearer_auth(token))
    };
    let mut events = open("/v1/events?from=0", &server.token).await;
    let mut kpis = open("/v1/kpi/stream", &server.token).await;
    let mut theirs = open("/v1/kpi/stream", &globex).await;
    events.expect(Duration::from_secs(5)).await;
    kpis.expect(Duration::from_secs(5)).await;

    orderly_server::tenants::revoke(server.dir(), &support::tenant(support::TENANT))
        .expect("revoked");
    // Figures come each second until the next check; then the end.
    let mut ended = false;
    for _ in 0..5 {
        if kpis.next(Duration::from_secs(5)).await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the KPI stream of a revoked token ended");
    assert!(events.next(Duration::from_secs(5)).await.is_none(), "so did its event stream");
    theirs.expect(Duration::from_secs(5)).await;
}

/// In the first minute of a day, the last full minute is the day before's last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_minute_of_the_first_minute_of_a_day_is_the_day_before_s_last() {
    let midnight = 1_795_737_600_000; // 2026-11-28 00:00 UTC
    let clock = Arc::new(ManualClock::at(Timestamp(midnight - 30_000)));
    let engine_clock = clock.clone();
    let server = Server::configured(move |config| config.node.engine.clock = engine_clock);
    server.receive("mug", 100).await;
    server.place("a-1", "c-1", &[("mug", 1)]).await;
    wait_for_read_models(&server).await;
    let node = server.app.node().expect("open");
    let tenant = support::tenant(support::TENANT);
    let figures = orderly_server::api::day_figures(&node, &tenant, midnight + 10_000, 0).unwrap();
    assert_eq!((figures.orders_today, figures.orders_last_minute), (0, 1));
}
