//! Every error code the API promises, each in the one error shape: 400 `invalid_json`, 422
//! `validation_failed` naming the field (body, path and query; a body that is not an object),
//! 422 `unknown_currency`, 401 `unauthorized` (missing, malformed, unknown token; the scheme in
//! any case is accepted), 413 `payload_too_large` (declared and undeclared lengths), 415, 422
//! domain rejections with their codes and particulars, 404 for unknown orders, SKUs and routes,
//! 405, 429 `rate_limited`, 503 `request_timeout` and `overloaded` with `Retry-After`, and
//! 504 `outcome_unknown` for a command answered after the time limit;
//! messages show ids plainly and cut a client's long input short.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use orderly_core::domain::limits::MAX_ID_LEN;
use orderly_core::engine::{EngineError, ExecuteError};
use orderly_core::store::{GroupSynced, SyncObserver};
use orderly_server::app::DEFAULT_BODY_LIMIT;
use orderly_server::error::ApiError;
use serde_json::json;

use super::support::{self, Server};

#[tokio::test]
async fn broken_json_is_400_invalid_json() {
    let server = Server::start();
    // Broken JSON that starts like the wrong shape (an array) is broken JSON all the same.
    let arrays = ["[", "[1,", "[[", "[1] trailing"];
    for text in ["{", "{\"quantity\": 1", "not json", "{\"quantity\": 1} trailing", ""]
        .into_iter()
        .chain(arrays)
    {
        let request =
            support::request(Method::POST, "/v1/inventory/mug/receive", Some(&server.token))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(text))
                .expect("a request");
        let details = server.call(request).await.error(StatusCode::BAD_REQUEST, "invalid_json");
        assert!(details["line"].is_u64() && details["column"].is_u64(), "{text:?}: {details}");
    }
}

/// A field given twice is named, as a missing one is, not as the object holding it (`.`).
#[tokio::test]
async fn a_field_given_twice_is_422_naming_it() {
    let server = Server::start();
    let request = support::request(Method::POST, "/v1/inventory/mug/receive", Some(&server.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"quantity": 1, "quantity": 2}"#))
        .expect("a request");
    let details =
        server.call(request).await.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "quantity", "{details}");
}

#[tokio::test]
async fn wrong_fields_are_422_validation_failed_naming_the_field() {
    let server = Server::start();
    server.receive("mug", 10).await;
    let line = |quantity: serde_json::Value| json!({ "sku": "mug", "quantity": quantity, "unit_price": 100 });
    let cases = [
        // Refused by the domain's types.
        (
            json!({ "customer_id": "c-1", "currency": "EUR", "lines": [line(json!(0))] }),
            "lines[0].quantity",
        ),
        (
            json!({ "customer_id": "c-1", "currency": "EUR", "lines": [line(json!(1)), { "sku": "bad sku", "quantity": 1, "unit_price": 1 }] }),
            "lines[1].sku",
        ),
        (json!({ "customer_id": "", "currency": "EUR", "lines": [line(json!(1))] }), "customer_id"),
        (
            json!({ "customer_id": "c-1", "currency": "euro", "lines": [line(json!(1))] }),
            "currency",
        ),
        (
            json!({ "order_id": "no spaces", "customer_id": "c-1", "currency": "EUR", "lines": [line(json!(1))] }),
            "order_id",
        ),
        // An id a URL could not name: clients resolve `..` (`/v1/orders/..` is `/v1/`).
        (
            json!({ "order_id": "..", "customer_id": "c-1", "currency": "EUR", "lines": [line(json!(1))] }),
            "order_id",
        ),
        // Refused by the JSON's shape.
        (
            json!({ "customer_id": "c-1", "currency": "EUR", "lines": [line(json!("two"))] }),
            "lines[0].quantity",
        ),
        (
            json!({ "customer_id": "c-1", "currency": "EUR", "lines": [line(json!(-1))] }),
            "lines[0].quantity",
        ),
        (json!({ "customer_id": 7, "currency": "EUR", "lines": [] }), "customer_id"),
        (json!({ "customer_id": "c-1", "currency": "EUR", "lines": "mug" }), "lines"),
        (json!({ "currency": "EUR", "lines": [line(json!(1))] }), "customer_id"),
        (
            json!({ "customer_id": "c-1", "currency": "EUR", "lines": [{ "sku": "mug", "unit_price": 1 }] }),
            "lines[0].quantity",
        ),
        (
            json!({ "customer_id": "c-1", "currency": "EUR", "lines": [line(json!(1)), { "sku": "tea", "quantity": 1, "unit_price": 1, "note": "x" }] }),
            "lines[1].note",
        ),
    ];
    for (body, field) in cases {
        let reply = server.post("/v1/orders", &body).await;
        let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], field, "{body}");
    }

    let receive = server.post("/v1/inventory/mug/receive", &json!({ "quantity": 0 })).await;
    let details = receive.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "quantity");
    // A stock count's change has the bounds of a quantity, either way, and is never zero.
    for delta in [0, 1_000_001, -1_000_001] {
        let adjust = server.post("/v1/inventory/mug/adjust", &json!({ "delta": delta })).await;
        let details = adjust.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], "delta", "{delta}");
    }
    let unknown = json!({ "quantity": 1, "extra": true });
    let receive = server.post("/v1/inventory/mug/receive", &unknown).await;
    let details = receive.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "extra");
    for bad in ["bad%20sku", "%2E%2E", "."] {
        let uri = format!("/v1/inventory/{bad}/receive");
        let path = server.post(&uri, &json!({ "quantity": 1 })).await;
        let details = path.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], "sku", "{bad}");
    }
    let refund =
        server.post("/v1/orders/o-1/refund", &json!({ "amount": 1, "currency": "E" })).await;
    let details = refund.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "currency");
}

/// Serde's derived structs also read an array of their fields in order; the API takes only
/// objects, at the top and inside, and nothing of such a body is recorded.
#[tokio::test]
async fn a_body_that_is_not_an_object_is_422_and_records_nothing() {
    let server = Server::start();
    let head = server.receive("mug", 10).await;
    let cases = [
        ("/v1/orders", json!(["o-arr", "c-1", "EUR", [["mug", 2, 150]]]), "."),
        (
            "/v1/orders",
            json!({ "order_id": "o-arr", "customer_id": "c-1", "currency": "EUR", "lines": [["mug", 2, 150]] }),
            "lines[0]",
        ),
        ("/v1/orders/o-1/refund", json!([1, "EUR"]), "."),
        ("/v1/inventory/mug/receive", json!([1]), "."),
        ("/v1/inventory/mug/adjust", json!([-1]), "."),
        ("/v1/inventory/mug/receive", json!(1), "."),
    ];
    for (uri, body, field) in cases {
        let reply = server.post(uri, &body).await;
        let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], field, "{uri} {body}");
    }
    let ready = server.call(support::get("/readyz", None)).await.ok(StatusCode::OK);
    assert_eq!(ready["head"], head, "a body that is not an object was recorded");
}

/// Ship, deliver and cancel take no body: none, `{}` or `null` pass; a field (a cancel's
/// reason) is `422` naming it and a body that is not JSON `415`, with nothing recorded, rather
/// than silently dropped.
#[tokio::test]
async fn a_command_that_takes_no_body_refuses_one() {
    let server = Server::start();
    server.receive("mug", 10).await;
    server.place("o-1", "c-1", &[("mug", 1)]).await;
    server.place("o-2", "c-1", &[("mug", 1)]).await;
    server.place("o-3", "c-1", &[("mug", 1)]).await;
    let send = |uri: &str, content_type: Option<&str>, body: &'static str| {
        let mut request = support::request(Method::POST, uri, Some(&server.token));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        server.call(request.body(Body::from(body)).expect("a request"))
    };
    let json = Some("application/json");
    let ready = server.call(support::get("/readyz", None)).await.ok(StatusCode::OK);
    let reason = send("/v1/orders/o-1/cancel", json, r#"{"reason":"changed mind"}"#).await;
    let details = reason.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "reason", "{details}");
    let junk = send("/v1/orders/o-1/ship", Some("text/plain"), "ship it please").await;
    junk.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let list = send("/v1/orders/o-1/ship", json, "[]").await;
    list.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let deliver = send("/v1/orders/o-1/deliver", json, r#"{"at":"door"}"#).await;
    deliver.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let after = server.call(support::get("/readyz", None)).await.ok(StatusCode::OK);
    assert_eq!(after["head"], ready["head"], "a refused body recorded something");

    send("/v1/orders/o-1/cancel", json, "{}").await.ok(StatusCode::OK);
    send("/v1/orders/o-2/cancel", None, "").await.ok(StatusCode::OK);
    send("/v1/orders/o-3/cancel", json, " null ").await.ok(StatusCode::OK);
}

/// Three upper-case letters are not enough for a new order: its currency must be one ISO 4217
/// lists. (A refund is in its order's currency, which the domain checks: an order placed
/// before this check can still be refunded in its own.)
#[tokio::test]
async fn a_currency_iso_4217_does_not_list_is_422_unknown_currency() {
    let server = Server::start();
    let head = server.receive("mug", 10).await;
    // Not listed; listed but no currency (XXX), for tests (XTS), gold (XAU), a fund (USN),
    // superseded (HRK).
    for code in ["XYZ", "XXX", "XTS", "XAU", "USN", "HRK"] {
        let mut order = support::order(Some("o-1"), "c-1", &[("mug", 1)]);
        order["currency"] = json!(code);
        let reply = server.post("/v1/orders", &order).await;
        let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_currency");
        assert_eq!((&details["field"], &details["currency"]), (&json!("currency"), &json!(code)));
    }
    let ready = server.call(support::get("/readyz", None)).await.ok(StatusCode::OK);
    assert_eq!(ready["head"], head, "an order in an unknown currency was recorded");
    // Listed codes pass, not only the three the simulated gateways charge in.
    for (n, code) in ["EUR", "JPY", "CHF"].into_iter().enumerate() {
        let mut order = support::order(Some(&format!("o-{code}")), "c-1", &[("mug", 1)]);
        order["currency"] = json!(code);
        let reply = server.post("/v1/orders", &order).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{n} {code}: {}", reply.text);
    }
}

#[tokio::test]
async fn wrong_query_parameters_are_422_naming_the_parameter() {
    let server = Server::start();
    let head = server.receive("mug", 1).await;
    let cases = [
        ("/v1/orders?customer_id=c-1&limit=0", "limit"),
        ("/v1/orders?customer_id=c-1&limit=501", "limit"),
        ("/v1/orders?customer_id=c-1&limit=ten", "limit"),
        ("/v1/orders?customer_id=c-1&after=nonsense", "after"),
        ("/v1/orders?customer_id=", "customer_id"),
        ("/v1/orders", "customer_id"),
        ("/v1/orders/o-1?min_position=-1", "min_position"),
        ("/v1/inventory/mug?min_position=x", "min_position"),
        // A parameter the route does not know is refused, not ignored: `status` filters
        // nothing, and a misspelt `min_position` would read without waiting.
        ("/v1/orders?customer_id=c-1&status=confirmed", "status"),
        ("/v1/orders/o-1?min_postion=1", "min_postion"),
        ("/v1/inventory/mug?since=1", "since"),
        ("/v1/events?type=order_placed", "type"),
    ];
    for (uri, field) in cases {
        let details =
            server.get(uri).await.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], field, "{uri}");
    }
    // A position the log has not reached yet cannot be waited for.
    let beyond = server.get(&format!("/v1/inventory/mug?min_position={}", head + 1000)).await;
    let details = beyond.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "min_position");
}

#[tokio::test]
async fn a_missing_malformed_or_unknown_token_is_401() {
    let server = Server::start();
    let body = support::order(Some("o-1"), "c-1", &[("mug", 1)]);
    let body_len = body.to_string().len();
    let authorizations = [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Bearer{}", server.token)),
        Some(format!("Bearerx {}", server.token)),
        Some(
            "Bearer orderly_0000000000000000000000000000000000000000000000000000000000000000"
                .to_owned(),
        ),
        Some(format!("Bearer {}x", server.token)),
    ];
    for authorization in authorizations {
        for method in [Method::GET, Method::POST] {
            let sends_a_body = method == Method::POST;
            let (uri, body) = match method {
                Method::GET => ("/v1/orders/o-1", Body::empty()),
                _ => ("/v1/orders", Body::from(body.to_string())),
            };
            let mut request = support::request(method, uri, None)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(value) = &authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let request = match sends_a_body {
                true => request.header(header::CONTENT_LENGTH, body_len),
                false => request,
            };
            let reply = server.call(request.body(body).expect("a request")).await;
            reply.error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                reply.headers[header::WWW_AUTHENTICATE],
                "Bearer",
                "RFC 9110 names the scheme"
            );
            // Its body is not read: the client is told the connection closes.
            let closes = reply.headers.get(header::CONNECTION).is_some_and(|c| c == "close");
            assert_eq!(closes, sends_a_body, "{authorization:?}");
        }
    }
    // Two tokens, each valid: which one a proxy would have taken is anyone's guess.
    let other = server.add_tenant("globex");
    let request = support::request(Method::POST, "/v1/orders", Some(&server.token))
        .header(header::AUTHORIZATION, format!("Bearer {other}"))
        .header(header::CONTENT_TYPE, "application/json");
    let reply = server.call(request.body(Body::from(body.to_string())).expect("a request")).await;
    let details = reply.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(reply.text.contains("one Authorization header"), "{details} {}", reply.text);
    // Nothing was placed by any of them.
    server.get("/v1/orders/o-1").await.error(StatusCode::NOT_FOUND, "unknown_order");
}

/// RFC 7235: the authentication scheme is case-insensitive.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = Server::start();
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let request = support::request(Method::GET, "/v1/orders?customer_id=c-1", None)
            .header(header::AUTHORIZATION, format!("{scheme} {}", server.token))
            .body(Body::empty())
            .expect("a request");
        let reply = server.call(request).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text);
    }
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body_is_read() {
    let server = Server::start();
    let over = DEFAULT_BODY_LIMIT + 1;
    // The body sent is far shorter than declared: only the header can have been looked at.
    let request = support::request(Method::POST, "/v1/orders", Some(&server.token))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, over)
        .body(Body::from("{}"))
        .expect("a request");
    server.call(request).await.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Exactly the limit passes the size check (and fails as JSON).
    let at_limit = vec![b' '; DEFAULT_BODY_LIMIT];
    let request = support::request(Method::POST, "/v1/inventory/mug/receive", Some(&server.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(at_limit))
        .expect("a request");
    server.call(request).await.error(StatusCode::BAD_REQUEST, "invalid_json");
}

#[tokio::test]
async fn an_undeclared_length_over_the_limit_is_413() {
    let server = Server::start();
    // No Content-Length header: the limit can only be found while reading.
    let request = support::request(Method::POST, "/v1/orders", Some(&server.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; 2 * DEFAULT_BODY_LIMIT]))
        .expect("a request");
    assert!(request.headers().get(header::CONTENT_LENGTH).is_none());
    server.call(request).await.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let server = Server::start();
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request =
            support::request(Method::POST, "/v1/inventory/mug/receive", Some(&server.token));
        if let Some(value) = content_type {
            request = request.header(header::CONTENT_TYPE, value);
        }
        let reply =
            server.call(request.body(Body::from("{\"quantity\": 1}")).expect("a request")).await;
        reply.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // Parameters and case do not matter.
    let request = support::request(Method::POST, "/v1/inventory/mug/receive", Some(&server.token))
        .header(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")
        .body(Body::from("{\"quantity\": 1}"))
        .expect("a request");
    assert_eq!(server.call(request).await.status, StatusCode::OK);
}

#[tokio::test]
async fn domain_rejections_are_422_with_their_codes() {
    let server = Server::start();
    server.receive("mug", 3).await;
    let tea_at = server.receive("tea", 10).await;

    // Overselling names the short SKU.
    let oversell = server
        .post("/v1/orders", &support::order(Some("o-1"), "c-1", &[("tea", 1), ("mug", 4)]))
        .await;
    let details = oversell.error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_stock");
    assert_eq!(details["sku"], "mug", "{details}");
    assert_eq!(details["shortages"], json!([{ "sku": "mug", "requested": 4, "available": 3 }]));
    // ... and held nothing, not even the lines that were in stock.
    let tea =
        server.get(&format!("/v1/inventory/tea?min_position={tea_at}")).await.ok(StatusCode::OK);
    assert_eq!(tea["reserved"], 0);

    let unknown =
        server.post("/v1/orders", &support::order(Some("o-2"), "c-1", &[("nothing", 1)])).await;
    let details = unknown.error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_sku");
    assert_eq!(details["skus"], json!(["nothing"]));

    let duplicate = server
        .post("/v1/orders", &support::order(Some("o-3"), "c-1", &[("mug", 1), ("mug", 1)]))
        .await;
    let details = duplicate.error(StatusCode::UNPROCESSABLE_ENTITY, "duplicate_sku");
    assert_eq!(details["sku"], "mug");

    server.place("o-4", "c-1", &[("mug", 2)]).await;
    let deliver = server.post("/v1/orders/o-4/deliver", &json!(null)).await;
    let details = deliver.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_transition");
    assert_eq!(details["status"], "placed");
    let again = server.post("/v1/orders", &support::order(Some("o-4"), "c-1", &[("tea", 1)])).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", again.text);

    let below = server.post("/v1/inventory/mug/adjust", &json!({ "delta": -2 })).await;
    let details = below.error(StatusCode::UNPROCESSABLE_ENTITY, "adjustment_below_reserved");
    assert_eq!(details["sku"], "mug");
    assert_eq!(details["reserved"], 2);
}

/// The message of an adjustment refused for the reserved units gives what on hand would
/// become, not what it is.
#[tokio::test]
async fn an_adjustment_below_reserved_says_what_on_hand_would_be() {
    let server = Server::start();
    server.receive("mug", 49).await;
    server.place("o-1", "c-1", &[("mug", 18)]).await;
    let reply = server.post("/v1/inventory/mug/adjust", &json!({ "delta": -40 })).await;
    let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "adjustment_below_reserved");
    assert_eq!((&details["on_hand"], &details["reserved"]), (&json!(49), &json!(18)));
    let message = reply.json()["error"]["message"].as_str().expect("a message").to_owned();
    assert!(message.contains("would leave 9 on hand"), "{message}");
    assert!(message.contains("18 reserved"), "{message}");
}

/// Messages are for people: ids appear as the client wrote them, never in Rust's debug form
/// (`[Sku("nope")]`).
#[tokio::test]
async fn messages_show_ids_plainly() {
    let server = Server::start();
    server.receive("mug", 1).await;
    let body = support::order(Some("o-1"), "c-1", &[("nope", 1), ("mug", 1), ("other", 1)]);
    let reply = server.post("/v1/orders", &body).await;
    reply.error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_sku");
    let message = reply.json()["error"]["message"].as_str().expect("a message").to_owned();
    assert!(message.ends_with("unknown SKU(s): nope, other"), "{message}");

    let unknown = server.get("/v1/orders/o-missing").await;
    let message = unknown.json()["error"]["message"].as_str().expect("a message").to_owned();
    assert!(message.starts_with(r#"no order "o-missing" up to position "#), "{message}");
}

/// A number out of an integer field's range is refused naming the range, not as serde's
/// "floating point, expected u64" (a number past 2^64 reaches it as a float).
#[tokio::test]
async fn a_number_out_of_range_is_refused_naming_the_range() {
    let server = Server::start();
    let cases = [
        ("/v1/inventory/mug/receive", r#"{"quantity": 18446744073709551616}"#, "quantity"),
        ("/v1/inventory/mug/receive", r#"{"quantity": -1}"#, "quantity"),
        ("/v1/inventory/mug/adjust", r#"{"delta": 9223372036854775808}"#, "delta"),
    ];
    for (uri, body, field) in cases {
        let request = support::request(Method::POST, uri, Some(&server.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a request");
        let reply = server.call(request).await;
        let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], field, "{body}");
        let message = reply.json()["error"]["message"].as_str().expect("a message").to_owned();
        assert!(message.contains("expected a whole number from "), "{body}: {message}");
        assert!(!message.contains("u64") && !message.contains("i64"), "{body}: {message}");
    }
}

/// A client's long input is not sent back in full: each message quotes at most 64 of its
/// characters and marks the cut with "…".
#[tokio::test]
async fn long_input_is_cut_short_in_error_messages() {
    let server = Server::start();
    server.receive("mug", 1).await;
    let long = "a".repeat(5_000);
    let replies = [
        (server.get(&format!("/v1/orders/{long}")).await, StatusCode::NOT_FOUND),
        (
            server.post(&format!("/v1/orders/{long}/ship"), &json!(null)).await,
            StatusCode::NOT_FOUND,
        ),
        (server.get(&format!("/v1/inventory/{long}")).await, StatusCode::NOT_FOUND),
        (server.get(&format!("/v1/events?types={long}")).await, StatusCode::UNPROCESSABLE_ENTITY),
        (
            server.post("/v1/inventory/mug/receive", &json!({ "quantity": long })).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            server.post("/v1/inventory/mug/receive", &json!({ long.clone(): 1 })).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            server.post("/v1/orders", &support::order(None, &long, &[("mug", 1)])).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (n, (reply, status)) in replies.iter().enumerate() {
        assert_eq!(reply.status, *status, "case {n}: {}", &reply.text[..reply.text.len().min(200)]);
        support::error_code(&reply.json());
        let echoed = "a".repeat(MAX_ID_LEN + 2);
        assert!(!reply.text.contains(&echoed), "case {n} echoes too much: {}", reply.text);
    }
    // A field name with backticks ends serde's quote early; the message is still cut short.
    let tricky = json!({ format!("`{long}\"`"): 1 });
    let reply = server.post("/v1/inventory/mug/receive", &tricky).await;
    reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(reply.text.len() < 600, "{}", reply.text);
    let message = replies[0].0.json()["error"]["message"].as_str().expect("a message").to_owned();
    assert!(message.contains(&format!("{}…", "a".repeat(64))), "{message}");
}

#[tokio::test]
async fn unknown_orders_skus_and_routes_are_404_in_the_error_shape() {
    let server = Server::start();
    let head = server.receive("mug", 1).await;
    // Read models name how far they had read, so that "not yet" can be told from "not there".
    let order = server.get("/v1/orders/o-missing").await;
    let details = order.error(StatusCode::NOT_FOUND, "unknown_order");
    assert!(details["position"].as_u64().is_some_and(|p| p <= head), "{details}");
    let stock = server.get(&format!("/v1/inventory/never-received?min_position={head}")).await;
    let details = stock.error(StatusCode::NOT_FOUND, "unknown_sku");
    assert!(details["position"].as_u64().is_some_and(|p| p >= head), "{details}");
    for action in ["ship", "deliver", "cancel"] {
        let reply = server.post(&format!("/v1/orders/o-missing/{action}"), &json!(null)).await;
        reply.error(StatusCode::NOT_FOUND, "unknown_order");
    }
    let refund = json!({ "amount": 1, "currency": "EUR" });
    let reply = server.post("/v1/orders/o-missing/refund", &refund).await;
    reply.error(StatusCode::NOT_FOUND, "unknown_order");
    // An id that could never exist is unknown too, not a server error.
    server.get("/v1/orders/bad%20id").await.error(StatusCode::NOT_FOUND, "unknown_order");

    for uri in ["/v1", "/v2/orders", "/v1/orders/o-1/teleport", "/v1/inventory"] {
        let reply = support::call(&server.app, support::get(uri, Some(&server.token))).await;
        reply.error(StatusCode::NOT_FOUND, "not_found");
    }
    let delete = support::request(Method::DELETE, "/v1/orders/o-1", Some(&server.token))
        .body(Body::empty())
        .expect("a request");
    let refused = server.call(delete).await;
    refused.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // The methods the route takes stay named, as RFC 9110 asks of a 405.
    let allow = refused.headers[header::ALLOW].to_str().expect("ASCII");
    assert!(allow.contains("GET"), "Allow: {allow}");
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_429_with_retry_after_and_others_are_not() {
    let server = Server::configured(|config| config.tenant_rate = NonZeroU32::new(1));
    let other = server.add_tenant("globex");
    assert_eq!(server.get("/v1/orders?customer_id=c-1").await.status, StatusCode::OK);
    let limited = server.get("/v1/orders?customer_id=c-1").await;
    limited.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    limited.assert_retry_after();
    let theirs = server.call(support::get("/v1/orders?customer_id=c-1", Some(&other))).await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.text);
    // Requests without a tenant are not counted against any.
    let health = server.call(support::get("/healthz", None)).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_503_request_timeout() {
    let server = Server::configured(|config| config.request_timeout = Duration::from_millis(100));
    // A body that never arrives keeps the handler waiting until the timeout answers.
    let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let request = support::request(Method::POST, "/v1/orders", Some(&server.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(never))
        .expect("a request");
    let reply = server.call(request).await;
    reply.error(StatusCode::SERVICE_UNAVAILABLE, "request_timeout");
    reply.assert_retry_after();
}

/// An engine overloaded is `503 overloaded` with `Retry-After`. Filling the admission queue
/// through HTTP is a race against the decision thread, so the mapping is checked directly;
/// `load_is_answered_201_or_503_overloaded` checks what a loaded server answers.
#[tokio::test]
async fn engine_errors_map_to_503_with_retry_after() {
    let cases = [
        (ExecuteError::Engine(EngineError::Overloaded), "overloaded"),
        (ExecuteError::Engine(EngineError::ShuttingDown), "shutting_down"),
    ];
    for (error, code) in cases {
        let reply = support::reply(ApiError::from(error).into_response()).await;
        reply.error(StatusCode::SERVICE_UNAVAILABLE, code);
        reply.assert_retry_after();
    }
    let stopped =
        ApiError::from(ExecuteError::Engine(EngineError::Stopped { cause: "disk".into() }));
    assert_eq!(
        (stopped.status(), stopped.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "engine_stopped")
    );
}

/// A disk that fails an fsync stops the log for good: the command whose group it was is
/// `503 engine_stopped` (it may or may not be recorded), so is every command after it, and
/// `/readyz` and `/healthz` say so, so that a supervisor moves traffic away and restarts it.
#[tokio::test]
async fn a_failed_fsync_makes_commands_engine_stopped_and_the_server_unready() {
    let faults = orderly_core::store::faults::Faults::new();
    let handle = orderly_core::store::FaultsHandle(faults.clone());
    let server = Server::configured(move |config| config.node.engine.log.faults = Some(handle));
    server.receive("mug", 5).await;
    let ready = support::call(&server.app, support::get("/readyz", None)).await;
    ready.ok(StatusCode::OK);

    faults.fail_sync_after(0);
    for _ in 0..2 {
        let reply = server.post("/v1/inventory/mug/receive", &json!({ "quantity": 1 })).await;
        reply.error(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped");
    }
    let ready = support::call(&server.app, support::get("/readyz", None)).await;
    let details = ready.error(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped");
    assert_eq!(details, json!({}));
    // Only a restart brings it back: liveness fails too, so that a supervisor restarts it, and
    // the metrics say so for an alert.
    let health = support::call(&server.app, support::get("/healthz", None)).await;
    health.error(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped");
    let metrics = support::call(&server.app, support::get("/metrics", None)).await;
    assert!(metrics.text.contains("orderly_log_failed 1"), "{}", metrics.text);
    // Stopped, it says so (and `orderly serve` exits non-zero), not that all went well.
    let closed = server.app.shutdown().expect_err("a failed log is an error at the stop");
    assert!(closed.to_string().contains("the log failed while running"), "{closed}");
}

/// A read model that stopped (here: another writer moved its checkpoint under it) answers no
/// read: `503 read_model_stopped`, as `/readyz` says, not `404` for an order acknowledged
/// since, nor `500` for a read that waits for it.
#[tokio::test]
async fn reads_of_a_read_model_that_stopped_are_503_read_model_stopped() {
    let server = Server::start();
    server.receive("mug", 5).await;
    let before = support::position(&server.place("o-1", "c-1", &[("mug", 1)]).await);
    server.get(&format!("/v1/orders/o-1?min_position={before}")).await.ok(StatusCode::OK);

    let node = server.app.node().expect("running");
    let txn = node.read_models().begin_write().expect("a write transaction");
    txn.open_table(orderly_core::projection::CHECKPOINTS)
        .expect("the checkpoints table")
        .insert("orders", 1_000_000)
        .expect("a checkpoint written");
    txn.commit().expect("committed");
    let after = support::position(&server.place("o-2", "c-1", &[("mug", 1)]).await);
    for _ in 0..500 {
        let ready = support::call(&server.app, support::get("/readyz", None)).await;
        if ready.status != StatusCode::OK {
            ready.error(StatusCode::SERVICE_UNAVAILABLE, "read_model_stopped");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.get("/v1/orders/o-2").await.error(StatusCode::SERVICE_UNAVAILABLE, "read_model_stopped");
    let waited = server.get(&format!("/v1/orders/o-2?min_position={after}")).await;
    waited.error(StatusCode::SERVICE_UNAVAILABLE, "read_model_stopped");
    let held = server.get(&format!("/v1/orders/o-1?min_position={before}")).await;
    held.error(StatusCode::SERVICE_UNAVAILABLE, "read_model_stopped");
    server
        .get("/v1/inventory/mug")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "read_model_stopped");
    // And the metrics, for an alert.
    let metrics = support::call(&server.app, support::get("/metrics", None)).await;
    let stopped = r#"orderly_projection_stopped{projection="orders"} 1"#;
    assert!(metrics.text.contains(stopped), "{}", metrics.text);
}

/// With an admission queue of one command, many orders at once: each is placed or refused
/// with `503 overloaded` and `Retry-After`, never anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_answered_201_or_503_overloaded() {
    let server = Arc::new(Server::configured(|config| config.node.engine.admission_queue = 1));
    server.receive("mug", 1_000).await;
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .post(
                        "/v1/orders",
                        &support::order(Some(&format!("o-{n}")), "c-1", &[("mug", 1)]),
                    )
                    .await
            })
        })
        .collect();
    let mut placed = 0;
    for task in tasks {
        let reply = task.await.expect("the task ends");
        if reply.status == StatusCode::CREATED {
            placed += 1;
        } else {
            reply.error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
            reply.assert_retry_after();
        }
    }
    assert!(placed >= 1, "at least the first order is placed");
}

/// A command the engine took but answered after the time limit is `504 outcome_unknown`, not
/// a `503` that tells the client to retry: it was recorded, and a retry without an idempotency
/// key would have placed the order twice.
#[tokio::test]
async fn a_command_answered_after_the_time_limit_is_504_outcome_unknown_and_recorded() {
    let stall = Arc::new(AtomicBool::new(false));
    let observer = {
        let stall = stall.clone();
        // The log answers a group's appenders after its observers: a stalled observer is a
        // slow disk as the engine's callers see it.
        SyncObserver::new(move |_: &GroupSynced| {
            if stall.swap(false, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1500));
            }
        })
    };
    let server = Server::configured(|config| {
        config.request_timeout = Duration::from_millis(300);
        config.node.engine.log.observer = Some(observer);
    });
    let stocked = server.post("/v1/inventory/mug/receive", &json!({ "quantity": 5 })).await;
    assert!(stocked.status.is_success(), "{}", stocked.text);
    stall.store(true, Ordering::SeqCst);
    let order = support::order(Some("o-late"), "c-1", &[("mug", 1)]);
    let late = server.post("/v1/orders", &order).await;
    let details = late.error(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown");
    assert!(late.text.contains("Idempotency-Key"), "{}", late.text);
    assert!(details.is_null() || details.is_object(), "{details}");
    // It was recorded all the same: the order is there once the stalled group is answered.
    until(&server, "/v1/orders/o-late", StatusCode::OK).await;
}

/// A tenant with as many requests in progress as it may have (here bodies that never arrive)
/// gets `429 too_many_requests` for the next one; another tenant does not, and the places come
/// back when the requests end.
#[tokio::test]
async fn a_tenant_over_its_requests_in_progress_is_429_and_others_go_on() {
    let server = Server::configured(|config| config.requests_per_tenant = 2);
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let never =
                futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
            let request = support::request(Method::POST, "/v1/orders", Some(&server.token))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(never))
                .expect("a request");
            let app = server.app.clone();
            tokio::spawn(async move { support::call(&app, request).await })
        })
        .collect();
    let refused = until(&server, "/v1/orders/o-1", StatusCode::TOO_MANY_REQUESTS).await;
    refused.error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    refused.assert_retry_after();
    let other = server.add_tenant("other");
    let theirs = server.call(support::get("/v1/orders/o-1", Some(&other))).await;
    theirs.error(StatusCode::NOT_FOUND, "unknown_order");

    for request in stuck {
        request.abort();
    }
    until(&server, "/v1/orders/o-1", StatusCode::NOT_FOUND).await;
}

/// `GET uri` again until it answers `status` (within 10 s), and that answer.
async fn until(server: &Server, uri: &str, status: StatusCode) -> support::Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = server.get(uri).await;
        if reply.status == status {
            return reply;
        }
        assert!(std::time::Instant::now() < deadline, "never {status}: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An id in the path that is not UTF-8 once percent-decoded is refused as any malformed id is
/// on that route: `404 unknown_order` / `unknown_sku` for reads and order commands, `422
/// validation_failed` naming the SKU for stock commands; not a bare `400`.
#[tokio::test]
async fn a_path_id_that_is_not_utf8_is_refused_as_any_malformed_id() {
    let server = Server::start();
    // Each not-UTF-8 id beside a malformed one that is UTF-8: both answered alike.
    for id in ["%FF", "a%20b"] {
        let order = server.get(&format!("/v1/orders/{id}")).await;
        order.error(StatusCode::NOT_FOUND, "unknown_order");
        let ship = server.post(&format!("/v1/orders/{id}/ship"), &json!(null)).await;
        ship.error(StatusCode::NOT_FOUND, "unknown_order");
        let level = server.get(&format!("/v1/inventory/{id}")).await;
        level.error(StatusCode::NOT_FOUND, "unknown_sku");
        let quantity = json!({ "quantity": 1 });
        let receive = server.post(&format!("/v1/inventory/{id}/receive"), &quantity).await;
        let details = receive.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], "sku", "{id}: {details}");
    }
}
