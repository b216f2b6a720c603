//! Never a 5xx for a client's mistake: a table of malformed requests — broken and hostile JSON,
//! wrong types, values past every domain limit, bad ids in paths, bad query strings and
//! headers, wrong methods — is each answered with a 4xx in the one error shape.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::support::{self, Server};

/// One malformed request: method, path, body (sent as JSON) and the headers to add.
struct Case {
    method: Method,
    uri: String,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
}

fn post(uri: &str, body: impl Into<String>) -> Case {
    Case { method: Method::POST, uri: uri.to_owned(), body: Some(body.into()), headers: Vec::new() }
}

fn get(uri: &str) -> Case {
    Case { method: Method::GET, uri: uri.to_owned(), body: None, headers: Vec::new() }
}

fn order(lines: Value) -> String {
    json!({ "customer_id": "c-1", "currency": "EUR", "lines": lines }).to_string()
}

fn line(sku: &str, quantity: Value, unit_price: Value) -> Value {
    json!({ "sku": sku, "quantity": quantity, "unit_price": unit_price })
}

fn cases() -> Vec<Case> {
    let long = "x".repeat(65);
    let many_lines: Vec<Value> =
        (0..51).map(|n| line(&format!("s-{n}"), json!(1), json!(1))).collect();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut cases = vec![
        // Broken or hostile JSON.
        post("/v1/orders", ""),
        post("/v1/orders", "{"),
        post("/v1/orders", "[]"),
        post("/v1/orders", "null"),
        post("/v1/orders", "\"order\""),
        post("/v1/orders", deep.clone()),
        post("/v1/inventory/mug/receive", deep),
        post("/v1/orders", "{\"customer_id\": \"c-1\", \"customer_id\": \"c-2\"}"),
        post("/v1/orders", "{\"customer_id\": \"\\ud800\"}"),
        post("/v1/orders", vec!['\u{feff}'; 3].into_iter().collect::<String>()),
        post("/v1/inventory/mug/receive", "{\"quantity\": 1e400}"),
        post("/v1/inventory/mug/receive", "{\"quantity\": NaN}"),
        // Wrong types and unknown fields.
        post("/v1/inventory/mug/receive", "{\"quantity\": \"1\"}"),
        post("/v1/inventory/mug/receive", "{\"quantity\": 1.5}"),
        post("/v1/inventory/mug/receive", "{\"quantity\": -1}"),
        post("/v1/inventory/mug/receive", "{\"quantity\": 18446744073709551616}"),
        post("/v1/inventory/mug/receive", "{\"quantity\": 1, \"extra\": true}"),
        post("/v1/inventory/mug/receive", "{}"),
        post("/v1/inventory/mug/adjust", "{\"delta\": 0}"),
        post("/v1/inventory/mug/adjust", "{\"delta\": -9223372036854775808}"),
        post("/v1/inventory/mug/adjust", "{\"delta\": 9223372036854775807}"),
        post("/v1/inventory/mug/adjust", "{\"delta\": 9223372036854775808}"),
        post("/v1/orders", order(json!(null))),
        post("/v1/orders", order(json!({}))),
        post("/v1/orders", order(json!([null]))),
        post("/v1/orders", order(json!([]))),
        post("/v1/orders", order(Value::Array(many_lines))),
        // Past the domain's limits.
        post("/v1/inventory/mug/receive", "{\"quantity\": 1000001}"),
        post("/v1/inventory/mug/receive", json!({ "quantity": u64::MAX }).to_string()),
        post("/v1/orders", order(json!([line("mug", json!(1_000_001), json!(1))]))),
        post("/v1/orders", order(json!([line("mug", json!(1), json!(0))]))),
        post("/v1/orders", order(json!([line("mug", json!(1), json!(u64::MAX))]))),
        post("/v1/orders", order(json!([line("mug", json!(1_000_000), json!(100_000_000_000_u64))]))),
        post("/v1/orders", order(json!([line(&long, json!(1), json!(1))]))),
        post("/v1/orders", order(json!([line("", json!(1), json!(1))]))),
        post("/v1/orders", order(json!([line("mug", json!(1), json!(1)), line("mug", json!(1), json!(1))]))),
        post("/v1/orders", json!({ "customer_id": long, "currency": "EUR", "lines": [] }).to_string()),
        post("/v1/orders", json!({ "order_id": "", "customer_id": "c", "currency": "EUR", "lines": [line("mug", json!(1), json!(1))] }).to_string()),
        post("/v1/orders", json!({ "customer_id": "c", "currency": "€", "lines": [line("mug", json!(1), json!(1))] }).to_string()),
        post("/v1/orders/o-1/refund", json!({ "amount": 0, "currency": "EUR" }).to_string()),
        post("/v1/orders/o-1/refund", json!({ "amount": 10_000, "currency": "EUR" }).to_string()),
        post("/v1/orders/o-1/refund", json!({ "amount": 1, "currency": "USD" }).to_string()),
        post("/v1/orders/o-1/refund", json!({ "amount": u64::MAX, "currency": "EUR" }).to_string()),
        post("/v1/orders/o-1/ship", "garbage is ignored where no body is read"),
        // Bad ids in paths.
        post(&format!("/v1/inventory/{long}/receive"), "{\"quantity\": 1}"),
        post("/v1/inventory/%E2%82%AC/receive", "{\"quantity\": 1}"),
        post("/v1/inventory/%FF/receive", "{\"quantity\": 1}"),
        post(&format!("/v1/orders/{long}/ship"), "{}"),
        post("/v1/orders/%00/cancel", "{}"),
        get(&format!("/v1/orders/{long}")),
        get(&format!("/v1/inventory/{long}")),
        get("/v1/inventory/%FF"),
        get("/v1/orders/%2F%2E%2E"),
        // Bad query strings.
        get("/v1/orders?customer_id=c-1&limit=-1"),
        get("/v1/orders?customer_id=c-1&limit=99999999999999999999999"),
        get("/v1/orders?customer_id=c-1&after=1.%00"),
        get("/v1/orders?customer_id=c-1&after=abc.o-1"),
        get("/v1/orders?customer_id=%FF"),
        get("/v1/orders?customer_id=c-1&min_position=18446744073709551615"),
        get("/v1/orders/o-1?min_position=18446744073709551616"),
        get("/v1/inventory/mug?min_position=1e3"),
        // Wrong methods and routes.
        Case { method: Method::PUT, uri: "/v1/orders".to_owned(), body: None, headers: Vec::new() },
        Case { method: Method::PATCH, uri: "/v1/orders/o-1".to_owned(), body: None, headers: Vec::new() },
        Case { method: Method::DELETE, uri: "/v1/inventory/mug".to_owned(), body: None, headers: Vec::new() },
        get("/v1/inventory/mug/receive"),
        get("/v1/orders/o-1/ship"),
        get("/v1/orders/o-1/extra/segments"),
        get("/openapi.yaml"),
    ];
    // Bad headers.
    let keyed = |key: &str| {
        let mut case = post("/v1/inventory/mug/receive", "{\"quantity\": 1}");
        case.headers.push(("idempotency-key", key.to_owned()));
        case
    };
    cases.push(keyed(""));
    cases.push(keyed(&long));
    cases.push(keyed("has space"));
    let mut json_as_text = post("/v1/orders", order(json!([line("mug", json!(1), json!(1))])));
    json_as_text.headers.push(("content-type", "text/json".to_owned()));
    cases.push(json_as_text);
    let mut multipart = post("/v1/orders", "--x--");
    multipart.headers.push(("content-type", "multipart/form-data; boundary=x".to_owned()));
    cases.push(multipart);
    cases
}

#[tokio::test]
async fn malformed_requests_are_4xx_in_the_error_shape() {
    let server = Server::start();
    server.receive("mug", 10).await;
    let placed = support::position(&server.place("o-1", "c-1", &[("mug", 1)]).await);
    let cases = cases();
    assert!(cases.len() > 60, "the table lost its rows");
    for case in cases {
        let mut request = support::request(case.method.clone(), &case.uri, Some(&server.token));
        let has_type = case.headers.iter().any(|(name, _)| *name == "content-type");
        if case.body.is_some() && !has_type {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let body = case.body.clone().map_or_else(Body::empty, Body::from);
        let reply = server.call(request.body(body).expect("a request")).await;
        let shown = format!(
            "{} {} {:?}",
            case.method,
            case.uri,
            case.body.as_deref().map(|b| &b[..b.len().min(80)])
        );
        assert!(reply.status.is_client_error(), "{shown}: {} {}", reply.status, reply.text);
        let code = support::error_code(&reply.json()).to_owned();
        assert_ne!(code, "internal", "{shown}");
    }
    // None of it changed anything.
    // Read at the log's head: whatever the table recorded is in the read models.
    let head = server.call(support::get("/readyz", None)).await.ok(StatusCode::OK)["head"].clone();
    let head = head.as_u64().expect("a head");
    assert_eq!(head, placed, "the table recorded something");
    let mug =
        server.get(&format!("/v1/inventory/mug?min_position={head}")).await.ok(StatusCode::OK);
    assert_eq!((&mug["on_hand"], &mug["reserved"]), (&json!(10), &json!(1)), "{mug}");
    let order = server.get(&format!("/v1/orders/o-1?min_position={head}")).await.ok(StatusCode::OK);
    assert_eq!(order["status"], "placed");
}
