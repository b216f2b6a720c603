//! Idempotent replay: the same `Idempotency-Key` with the same body answers the first response
//! again (same order id, even one the server made fresh for the first attempt, same position,
//! `idempotent-replayed: true`) and records nothing new; with another body it is `422
//! idempotency_key_reused`. Keys outlive a restart, and a retry of a place that a release
//! before fresh order ids recorded is still recognized.

use axum::http::StatusCode;
use orderly_core::domain::{
    Command, Currency, CustomerId, Envelope, IdempotencyKey, OrderCommand, OrderId, OrderLine,
    Quantity, Sku,
};
use serde_json::json;

use super::support::{self, Server, position};

#[tokio::test]
async fn the_same_key_and_body_replay_the_first_response() {
    let server = Server::start();
    server.receive("mug", 10).await;
    // No order id in the body: the server makes a fresh one for each attempt, and the retry is
    // answered with the first attempt's.
    let body = support::order(None, "c-1", &[("mug", 2)]);
    let first = server.post_keyed("/v1/orders", "k-1", &body).await;
    assert!(!first.replayed());
    let first_body = first.ok(StatusCode::CREATED);

    let location = |reply: &support::Reply| reply.headers.get("location").cloned();
    let url = format!("/v1/orders/{}", first_body["order_id"].as_str().expect("an id"));
    assert_eq!(location(&first).expect("a Location"), url.as_str());

    let again = server.post_keyed("/v1/orders", "k-1", &body).await;
    assert!(again.replayed(), "no idempotent-replayed header: {:?}", again.headers);
    assert_eq!(location(&again).expect("a Location"), url.as_str(), "the first order's");
    assert_eq!(again.ok(StatusCode::CREATED), first_body);

    // Only one order holds stock.
    let mug =
        server.get(&format!("/v1/inventory/mug?min_position={}", position(&first_body))).await;
    assert_eq!(mug.ok(StatusCode::OK)["reserved"], 2);
    let uri = format!("/v1/orders?customer_id=c-1&min_position={}", position(&first_body));
    let orders = server.get(&uri).await.ok(StatusCode::OK);
    assert_eq!(orders["orders"].as_array().map(Vec::len), Some(1), "{orders}");

    // Another key is another order, and a fresh id made later sorts after.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let other = server.post_keyed("/v1/orders", "k-2", &body).await.ok(StatusCode::CREATED);
    let ids = [&first_body, &other].map(|placed| placed["order_id"].as_str().expect("an id"));
    assert!(ids[0] < ids[1], "{ids:?}");
    for id in ids {
        assert!(id.len() == 23 && id.starts_with("o-"), "{id}");
        assert!(id[2..].bytes().all(|b| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&b)), "{id}");
    }
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_idempotency_key_reused() {
    let server = Server::start();
    server.receive("mug", 10).await;
    let first = support::order(None, "c-1", &[("mug", 2)]);
    server.post_keyed("/v1/orders", "k-1", &first).await.ok(StatusCode::CREATED);
    for other in [
        support::order(None, "c-1", &[("mug", 3)]),
        support::order(None, "c-2", &[("mug", 2)]),
        support::order(Some("o-explicit"), "c-1", &[("mug", 2)]),
    ] {
        let reply = server.post_keyed("/v1/orders", "k-1", &other).await;
        let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
        assert_eq!(details["idempotency_key"], "k-1");
    }
    // A key is one command across routes too.
    let receive =
        server.post_keyed("/v1/inventory/mug/receive", "k-1", &json!({ "quantity": 1 })).await;
    receive.error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
}

#[tokio::test]
async fn the_payments_process_keys_are_reserved() {
    let server = Server::start();
    server.receive("mug", 10).await;
    // Taken first, this key would make the process's authorization of o-9 look reused.
    let order = support::order(Some("o-9"), "c-1", &[("mug", 1)]);
    let reply = server.post_keyed("/v1/orders", "pm:auth:o-9", &order).await;
    let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "Idempotency-Key");
    server.post_keyed("/v1/orders", "pm-like-but-mine", &order).await.ok(StatusCode::CREATED);
}

/// Two keys on one request (a proxy or a library adding its own) are refused: with one of them
/// counted, a retry under the other would run the command again.
#[tokio::test]
async fn several_idempotency_keys_on_one_request_are_refused() {
    let server = Server::start();
    let mut request =
        support::post("/v1/inventory/mug/receive", Some(&server.token), &json!({ "quantity": 1 }));
    for key in ["k-1", "k-2"] {
        request.headers_mut().append("idempotency-key", key.parse().expect("a header value"));
    }
    let reply = server.call(request).await;
    let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "Idempotency-Key");
    let mug = server.get("/v1/inventory/mug").await;
    mug.error(StatusCode::NOT_FOUND, "unknown_sku");
}

#[tokio::test]
async fn stock_and_order_commands_replay_too() {
    let server = Server::start();
    let body = json!({ "quantity": 5 });
    let first =
        server.post_keyed("/v1/inventory/mug/receive", "r-1", &body).await.ok(StatusCode::OK);
    let again = server.post_keyed("/v1/inventory/mug/receive", "r-1", &body).await;
    assert!(again.replayed());
    assert_eq!(again.ok(StatusCode::OK), first);
    let mug = server.get(&format!("/v1/inventory/mug?min_position={}", position(&first))).await;
    assert_eq!(mug.ok(StatusCode::OK)["on_hand"], 5, "received once");

    server.place("o-1", "c-1", &[("mug", 1)]).await;
    let cancel =
        server.post_keyed("/v1/orders/o-1/cancel", "x-1", &json!(null)).await.ok(StatusCode::OK);
    let again = server.post_keyed("/v1/orders/o-1/cancel", "x-1", &json!(null)).await;
    assert!(again.replayed());
    assert_eq!(again.ok(StatusCode::OK), cancel);
    // Without the key a second cancel is a new command, refused by the domain.
    let unkeyed = server.post("/v1/orders/o-1/cancel", &json!(null)).await;
    unkeyed.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_transition");
}

#[tokio::test]
async fn keys_outlive_a_restart() {
    let mut server = Server::start();
    server.receive("mug", 10).await;
    let body = support::order(None, "c-1", &[("mug", 2)]);
    let first = server.post_keyed("/v1/orders", "k-1", &body).await.ok(StatusCode::CREATED);

    server.restart();

    let again = server.post_keyed("/v1/orders", "k-1", &body).await;
    assert!(again.replayed());
    assert_eq!(again.ok(StatusCode::CREATED), first);
    let other = support::order(None, "c-1", &[("mug", 1)]);
    let reused = server.post_keyed("/v1/orders", "k-1", &other).await;
    reused.error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    let id = first["order_id"].as_str().expect("an id");
    let uri = format!("/v1/orders/{id}?min_position={}", position(&first));
    assert_eq!(server.get(&uri).await.ok(StatusCode::OK)["status"], "placed");
}

#[tokio::test]
async fn a_retry_of_a_place_an_earlier_release_recorded_under_an_id_derived_from_its_key_replays() {
    let server = Server::start();
    server.receive("mug", 10).await;
    // As releases before fresh ids recorded a keyed place without an order id: under
    // "o-" and the first 12 bytes of blake3("{tenant}/{key}") in hex, part of its fingerprint.
    let digest = blake3::hash(format!("{}/k-old", support::TENANT).as_bytes());
    let hex: String = digest.as_bytes()[..12].iter().map(|b| format!("{b:02x}")).collect();
    let derived = format!("o-{hex}");
    let lines = vec![OrderLine {
        sku: Sku::new("mug").unwrap(),
        quantity: Quantity::new(2).unwrap(),
        unit_price: 1000,
    }];
    let place = OrderCommand::Place {
        customer: CustomerId::new("c-1").unwrap(),
        currency: Currency::new("EUR").unwrap(),
        lines,
    };
    let command = Command::Order { order: OrderId::new(&derived).unwrap(), command: place };
    let envelope = Envelope::new(support::tenant(support::TENANT), command)
        .with_key(IdempotencyKey::new("k-old").unwrap());
    let node = server.app.node().expect("the node is open");
    let first = node.engine().execute(envelope).await.expect("placed");

    let body = support::order(None, "c-1", &[("mug", 2)]);
    let retry = server.post_keyed("/v1/orders", "k-old", &body).await;
    assert!(retry.replayed(), "no idempotent-replayed header: {:?}", retry.headers);
    let retried = retry.ok(StatusCode::CREATED);
    assert_eq!(retried["order_id"], derived.as_str());
    assert_eq!(position(&retried), first.next_position().0);
    // Another body under that key is still a reuse of it.
    let other = support::order(None, "c-1", &[("mug", 3)]);
    let reused = server.post_keyed("/v1/orders", "k-old", &other).await;
    reused.error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
}
