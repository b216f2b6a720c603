//! Tenant isolation: a tenant sees only its own orders and stock. Another tenant's order is
//! `404` to read and to change, another tenant's SKU is `404`, the same SKU name and customer
//! id are separate per tenant, and nothing a tenant does changes another's data.

use axum::http::StatusCode;
use serde_json::json;

use super::support::{self, Server};

#[tokio::test]
async fn another_tenants_orders_and_stock_are_invisible_and_untouchable() {
    let server = Server::start();
    let globex = server.add_tenant("globex");
    let as_globex_get = |uri: &str| server.call(support::get(uri, Some(&globex)));
    let as_globex_post =
        |uri: &str, body: serde_json::Value| server.call(support::post(uri, Some(&globex), &body));

    server.receive("mug", 10).await;
    let placed = server.place("o-1", "c-1", &[("mug", 3)]).await;
    let at = support::position(&placed);

    // Reading.
    as_globex_get(&format!("/v1/orders/o-1?min_position={at}"))
        .await
        .error(StatusCode::NOT_FOUND, "unknown_order");
    as_globex_get(&format!("/v1/inventory/mug?min_position={at}"))
        .await
        .error(StatusCode::NOT_FOUND, "unknown_sku");
    let list = as_globex_get(&format!("/v1/orders?customer_id=c-1&min_position={at}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(list["orders"], json!([]));

    // Changing.
    for action in ["ship", "deliver", "cancel"] {
        let reply = as_globex_post(&format!("/v1/orders/o-1/{action}"), json!(null)).await;
        reply.error(StatusCode::NOT_FOUND, "unknown_order");
    }
    let refund =
        as_globex_post("/v1/orders/o-1/refund", json!({ "amount": 1, "currency": "EUR" })).await;
    refund.error(StatusCode::NOT_FOUND, "unknown_order");
    let adjust = as_globex_post("/v1/inventory/mug/adjust", json!({ "delta": -10 })).await;
    assert_eq!(
        adjust.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "globex has no mug: {}",
        adjust.text
    );

    // The same names are the other tenant's own.
    let theirs = as_globex_post("/v1/inventory/mug/receive", json!({ "quantity": 1 }))
        .await
        .ok(StatusCode::OK);
    let placed =
        as_globex_post("/v1/orders", support::order(Some("o-1"), "c-1", &[("mug", 1)])).await;
    let placed = placed.ok(StatusCode::CREATED);
    let last = support::position(&placed).max(support::position(&theirs));
    let their_mug =
        as_globex_get(&format!("/v1/inventory/mug?min_position={last}")).await.ok(StatusCode::OK);
    assert_eq!((&their_mug["on_hand"], &their_mug["reserved"]), (&json!(1), &json!(1)));
    let their_order =
        as_globex_get(&format!("/v1/orders/o-1?min_position={last}")).await.ok(StatusCode::OK);
    assert_eq!(their_order["total"], 1000);

    // And acme's are as they were.
    let mug =
        server.get(&format!("/v1/inventory/mug?min_position={last}")).await.ok(StatusCode::OK);
    assert_eq!((&mug["on_hand"], &mug["reserved"]), (&json!(10), &json!(3)));
    let order = server.get(&format!("/v1/orders/o-1?min_position={last}")).await.ok(StatusCode::OK);
    assert_eq!((&order["status"], &order["total"]), (&json!("placed"), &json!(3000)));
    let list = server
        .get(&format!("/v1/orders?customer_id=c-1&min_position={last}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(list["orders"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn idempotency_keys_are_per_tenant() {
    let server = Server::start();
    let globex = server.add_tenant("globex");
    server.receive("mug", 10).await;
    let body = support::order(None, "c-1", &[("mug", 1)]);
    let ours = server.post_keyed("/v1/orders", "k-1", &body).await.ok(StatusCode::CREATED);

    let receive =
        support::post("/v1/inventory/mug/receive", Some(&globex), &json!({ "quantity": 5 }));
    assert_eq!(server.call(receive).await.status, StatusCode::OK);
    let mut request = support::post("/v1/orders", Some(&globex), &body);
    request.headers_mut().insert("idempotency-key", "k-1".parse().expect("a header value"));
    let theirs = server.call(request).await;
    assert!(!theirs.replayed(), "globex's key k-1 is not acme's");
    let theirs = theirs.ok(StatusCode::CREATED);
    assert_ne!(theirs["order_id"], ours["order_id"], "order ids derived per tenant");
}
