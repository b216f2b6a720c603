//! Every endpoint answers what its description promises: stock received, adjusted and read back
//! (read-your-writes with `min_position`), an order placed (201 with its fields), confirmed by
//! the payments process, shipped, delivered, refunded or cancelled, read back, and listed per
//! customer a page at a time, newest first; `/healthz` and `/readyz`, also before the node is
//! open.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use orderly_core::domain::GatewayId;
use orderly_core::payments::{SimulatedGateway, SimulatedGatewayConfig};
use orderly_server::app::App;
use serde_json::json;

use super::support::{self, Server, TENANT, position};

#[tokio::test]
async fn stock_is_received_adjusted_and_read_back() {
    let server = Server::start();
    let received = server.receive("mug", 10).await;
    let adjusted =
        server.post("/v1/inventory/mug/adjust", &json!({ "delta": -3 })).await.ok(StatusCode::OK);
    assert_eq!(adjusted["sku"], "mug");
    assert!(position(&adjusted) > received, "{adjusted}");

    let level = server
        .get(&format!("/v1/inventory/mug?min_position={}", position(&adjusted)))
        .await
        .ok(StatusCode::OK);
    assert_eq!(level["sku"], "mug");
    assert_eq!(level["on_hand"], 7);
    assert_eq!(level["reserved"], 0);
    assert_eq!(level["available"], 7);
    assert!(position(&level) >= position(&adjusted), "{level}");
}

#[tokio::test]
async fn placing_an_order_answers_201_with_its_fields_and_holds_its_stock() {
    let server = Server::start();
    server.receive("mug", 10).await;
    server.receive("tea", 10).await;
    let body = json!({
        "order_id": "o-1",
        "customer_id": "c-1",
        "currency": "EUR",
        "lines": [
            { "sku": "mug", "quantity": 2, "unit_price": 1200 },
            { "sku": "tea", "quantity": 3, "unit_price": 450 },
        ],
    });
    let placed = server.post("/v1/orders", &body).await.ok(StatusCode::CREATED);
    assert_eq!(placed["order_id"], "o-1");
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["customer_id"], "c-1");
    assert_eq!(placed["currency"], "EUR");
    assert_eq!(placed["total"], 2 * 1200 + 3 * 450);
    assert!(placed["hold_expires_at_ms"].as_u64().is_some_and(|ms| ms > 0), "{placed}");
    let at = position(&placed);

    let order = server.get(&format!("/v1/orders/o-1?min_position={at}")).await.ok(StatusCode::OK);
    assert_eq!(order["order_id"], "o-1");
    assert_eq!(order["status"], "placed");
    assert_eq!(order["customer_id"], "c-1");
    assert_eq!(order["total"], 2 * 1200 + 3 * 450);
    assert_eq!(order["refunded"], 0);
    assert_eq!(order["lines"], body["lines"]);
    assert!(position(&order) >= at);
    // Unpaid: when the hold runs out, as the placing answered.
    assert_eq!(order["hold_expires_at_ms"], placed["hold_expires_at_ms"], "{order}");

    let mug = server.get(&format!("/v1/inventory/mug?min_position={at}")).await.ok(StatusCode::OK);
    assert_eq!(
        (&mug["on_hand"], &mug["reserved"], &mug["available"]),
        (&json!(10), &json!(2), &json!(8))
    );
}

#[tokio::test]
async fn an_order_without_an_id_gets_one() {
    let server = Server::start();
    server.receive("mug", 10).await;
    let placed = server.post("/v1/orders", &support::order(None, "c-1", &[("mug", 1)])).await;
    let placed = placed.ok(StatusCode::CREATED);
    let id = placed["order_id"].as_str().expect("an order id");
    let read = server.get(&format!("/v1/orders/{id}?min_position={}", position(&placed))).await;
    assert_eq!(read.ok(StatusCode::OK)["order_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_ships_is_delivered_and_refunded() {
    let server = Server::with_payments();
    server.receive("mug", 10).await;
    server.place("o-1", "c-1", &[("mug", 2)]).await;
    let confirmed = server.wait_for_status("o-1", "confirmed").await;
    assert_eq!(confirmed["payment"]["status"], "authorized", "{confirmed}");
    assert_eq!(confirmed["payment"]["authorized"], 2000);
    assert!(confirmed["payment"]["gateway"].as_str().is_some_and(|g| !g.is_empty()));
    assert_eq!(confirmed["payment"]["decline_reason"], json!(null));
    assert!(confirmed.get("hold_expires_at_ms").is_none(), "paid: no hold runs out");

    let shipped = server.post("/v1/orders/o-1/ship", &json!(null)).await.ok(StatusCode::OK);
    assert_eq!(shipped["order_id"], "o-1");
    assert_eq!(shipped["status"], "shipped");
    let mug = server
        .get(&format!("/v1/inventory/mug?min_position={}", position(&shipped)))
        .await
        .ok(StatusCode::OK);
    assert_eq!((&mug["on_hand"], &mug["reserved"]), (&json!(8), &json!(0)), "{mug}");

    let delivered = server.post("/v1/orders/o-1/deliver", &json!(null)).await.ok(StatusCode::OK);
    assert_eq!(delivered["status"], "delivered");

    let refund = json!({ "amount": 500, "currency": "EUR" });
    let refunded = server.post("/v1/orders/o-1/refund", &refund).await.ok(StatusCode::OK);
    assert_eq!(refunded["order_id"], "o-1");
    // A refund changes no status: the field is absent, as the OpenAPI says, not null.
    assert!(refunded.get("status").is_none(), "{refunded}");

    let order = server
        .get(&format!("/v1/orders/o-1?min_position={}", position(&refunded)))
        .await
        .ok(StatusCode::OK);
    assert_eq!(order["status"], "delivered");
    assert_eq!(order["refunded"], 500);
    assert_eq!(order["payment"]["captured"], 2000, "{order}");
}

/// The simulated gateways keep their books in the data folder: after a restart, a paid
/// order's capture and refund, and another's void, reach the authorizations made before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_at_the_gateways_after_a_restart() {
    let mut server = Server::with_payments();
    server.receive("mug", 10).await;
    for order in ["o-1", "o-2"] {
        server.place(order, "c-1", &[("mug", 2)]).await;
        server.wait_for_status(order, "confirmed").await;
    }
    server.restart();
    server.post("/v1/orders/o-1/ship", &json!(null)).await.ok(StatusCode::OK);
    let refund = json!({ "amount": 500, "currency": "EUR" });
    server.post("/v1/orders/o-1/refund", &refund).await.ok(StatusCode::OK);
    server.post("/v1/orders/o-2/cancel", &json!(null)).await.ok(StatusCode::OK);

    // Each movement is written to its gateway's books before it is made.
    let books: Vec<_> = ["sim-card", "sim-wallet"]
        .iter()
        .map(|id| server.dir().join("gateways").join(format!("{id}.books")))
        .collect();
    let movements = || {
        let text: String = books.iter().filter_map(|b| std::fs::read_to_string(b).ok()).collect();
        text.matches(r#""call":"move""#).count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while movements() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.app.shutdown().expect("the app closes");
    let mut totals = (0, 0, 0, 0);
    for (id, path) in ["sim-card", "sim-wallet"].iter().zip(&books) {
        let config = SimulatedGatewayConfig::new(GatewayId::new(id).expect("an id"));
        let gateway = SimulatedGateway::keeping_books_in(config, path).expect("the books read");
        totals.0 += gateway.approvals();
        totals.1 += gateway.captured_total();
        totals.2 += gateway.refunded_total();
        totals.3 += gateway.voids();
    }
    assert_eq!(totals, (2, 2_000, 500, 1), "(approvals, captured, refunded, voids)");
}

#[tokio::test]
async fn cancelling_releases_the_stock() {
    let server = Server::start();
    server.receive("mug", 5).await;
    server.place("o-1", "c-1", &[("mug", 5)]).await;
    let cancelled = server.post("/v1/orders/o-1/cancel", &json!(null)).await.ok(StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    let at = position(&cancelled);
    let order = server.get(&format!("/v1/orders/o-1?min_position={at}")).await.ok(StatusCode::OK);
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancel_reason"], "requested");
    let mug = server.get(&format!("/v1/inventory/mug?min_position={at}")).await.ok(StatusCode::OK);
    assert_eq!(mug["available"], 5);
}

#[tokio::test]
async fn a_customers_orders_come_a_page_at_a_time_newest_first() {
    let server = Server::start();
    server.receive("mug", 100).await;
    let mut placed = Vec::new();
    for n in 0..5 {
        placed.push(format!("o-{n}"));
        server.place(&format!("o-{n}"), "c-1", &[("mug", 1)]).await;
    }
    let last = position(&server.place("o-other", "c-2", &[("mug", 1)]).await);

    let mut seen = Vec::new();
    let mut uri = format!("/v1/orders?customer_id=c-1&limit=2&min_position={last}");
    let mut pages = 0;
    loop {
        let page = server.get(&uri).await.ok(StatusCode::OK);
        pages += 1;
        let orders = page["orders"].as_array().expect("orders");
        assert!(orders.len() <= 2, "{page}");
        for order in orders {
            assert_eq!(order["customer_id"], "c-1");
            seen.push(order["order_id"].as_str().expect("an id").to_owned());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/orders?customer_id=c-1&limit=2&after={next}"),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    placed.reverse();
    assert_eq!(seen, placed, "newest first, each once");
    assert_eq!(pages, 3);

    let none = server.get("/v1/orders?customer_id=c-nobody").await.ok(StatusCode::OK);
    assert_eq!(none["orders"], json!([]));
    // Absent on the last page, as the OpenAPI says, not null.
    assert!(none.get("next").is_none(), "{none}");
}

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_token() {
    let server = Server::start();
    let head = server.receive("mug", 1).await;
    let health = support::call(&server.app, support::get("/healthz", None)).await;
    let health = health.ok(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    // Ready, so the head is known to healthz too.
    assert!(health["head"].as_u64().is_some_and(|h| h >= head), "{health}");
    let ready = support::call(&server.app, support::get("/readyz", None)).await;
    let ready = ready.ok(StatusCode::OK);
    assert_eq!(ready["status"], "ready");
    assert!(ready["head"].as_u64().is_some_and(|h| h >= head), "{ready}");
    // How far the read models are behind the log is said: nothing, once they applied it all.
    let node = server.app.node().expect("open");
    let end = node.engine().head();
    tokio::task::spawn_blocking(move || {
        for projection in node.projections() {
            projection.wait_for(end, std::time::Duration::from_secs(10)).expect("caught up");
        }
    })
    .await
    .expect("the wait ends");
    let ready = support::call(&server.app, support::get("/readyz", None)).await.ok(StatusCode::OK);
    assert_eq!(ready["read_models_behind"], 0, "{ready}");
}

#[tokio::test]
async fn before_the_node_is_open_only_healthz_answers_and_the_api_is_not_ready() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let token = orderly_server::tenants::add(dir.path(), &support::tenant(TENANT)).expect("added");
    let app = App::new(support::config(dir.path())).expect("the app");

    let health = support::call(&app, support::get("/healthz", None)).await;
    let health = health.ok(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert!(health.get("head").is_none(), "no head before the log is recovered: {health}");
    let ready = support::call(&app, support::get("/readyz", None)).await;
    ready.error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    ready.assert_retry_after();
    let body = support::order(Some("o-1"), "c-1", &[("mug", 1)]);
    let place = support::call(&app, support::post("/v1/orders", Some(&token), &body)).await;
    place.error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    place.assert_retry_after();
    let read = support::call(&app, support::get("/v1/orders/o-1", Some(&token))).await;
    read.error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    for stream in ["/v1/events", "/v1/kpi/stream"] {
        let opened = support::call(&app, support::get(stream, Some(&token))).await;
        opened.error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    }
    let metrics = support::call(&app, support::get("/metrics", None)).await;
    assert_eq!(metrics.status, StatusCode::OK);

    app.open_node().expect("the node opens");
    let ready = support::call(&app, support::get("/readyz", None)).await;
    assert_eq!(ready.ok(StatusCode::OK)["status"], "ready");
    app.shutdown().expect("closes cleanly");
    let after = support::call(&app, support::get("/readyz", None)).await;
    after.error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
}

/// A start whose read models' file was lost rebuilds them from the log while commands are
/// taken: `/readyz` says `not_ready` until they reach what the log held at the start, so that
/// a load balancer sends no reads that would answer `404` for orders that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_read_models_rebuilt_from_the_log() {
    use orderly_core::domain::{Command, Envelope, Quantity, Sku, TenantId};
    let mut server = Server::start();
    let engine = server.app.node().expect("open").engine().clone();
    let (done, answers) = std::sync::mpsc::channel();
    const RECORDS: usize = 4_000;
    for n in 0..RECORDS {
        let sku = Sku::new(&format!("sku-{n}")).expect("an id");
        let command = Command::ReceiveStock { sku, quantity: Quantity::new(1).expect("one") };
        let done = done.clone();
        let envelope = Envelope::new(TenantId::new(TENANT).expect("an id"), command);
        engine.send_ack(envelope, move |answer| done.send(answer.is_ok()).expect("waited for"));
    }
    assert!(answers.iter().take(RECORDS).all(|ok| ok), "every receive is durable");
    drop(engine);
    server.app.shutdown().expect("closes");
    std::fs::remove_file(server.dir().join(orderly_core::node::READ_MODELS_FILE)).expect("lost");

    server.restart();
    let at_open = server.app.head_at_open();
    assert!(at_open.0 >= RECORDS as u64);
    let node = server.app.node().expect("open");
    let mut waited = 0;
    loop {
        let ready = support::call(&server.app, support::get("/readyz", None)).await;
        if ready.status == StatusCode::OK {
            for projection in node.projections() {
                assert!(projection.reached() >= at_open, "ready before the read models caught up");
            }
            break;
        }
        ready.error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
        ready.assert_retry_after();
        assert!(ready.text.contains("catching up"), "{}", ready.text);
        waited += 1;
        assert!(waited < 10_000, "the read models never caught up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
