//! `/openapi.json` (no token) describes every route the router serves, each with its
//! parameters, request body, success response and error responses in the shape of `ErrorBody`;
//! and every operation it describes is served.

use axum::http::{Method, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::support::{self, Server};

/// Every route the router serves: method, OpenAPI path, whether it takes a JSON body, and
/// whether it needs a token.
const ROUTES: &[(&str, &str, bool, bool)] = &[
    ("post", "/v1/inventory/{sku}/receive", true, true),
    ("post", "/v1/inventory/{sku}/adjust", true, true),
    ("get", "/v1/inventory/{sku}", false, true),
    ("post", "/v1/orders", true, true),
    ("get", "/v1/orders", false, true),
    ("get", "/v1/orders/{id}", false, true),
    ("post", "/v1/orders/{id}/ship", false, true),
    ("post", "/v1/orders/{id}/deliver", false, true),
    ("post", "/v1/orders/{id}/cancel", false, true),
    ("post", "/v1/orders/{id}/refund", true, true),
    ("get", "/v1/events", false, true),
    ("get", "/v1/kpi/stream", false, true),
    ("get", "/", false, false),
    ("get", "/healthz", false, false),
    ("get", "/readyz", false, false),
    ("get", "/metrics", false, false),
    ("get", "/openapi.json", false, false),
];

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

#[tokio::test]
async fn the_document_describes_every_route_with_its_schemas() {
    let server = Server::start();
    let doc = server.call(support::get("/openapi.json", None)).await.ok(StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    assert!(error_body["properties"]["error"].is_object(), "ErrorBody: {error_body}");

    for &(method, path, has_body, needs_token) in ROUTES {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        let responses = operation["responses"].as_object().expect("responses");
        let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert!(!success.is_empty(), "{method} {path}: no success response");
        for status in success {
            let content = &responses[status]["content"];
            assert!(content.is_object(), "{method} {path} {status}: no content");
        }
        if has_body {
            let body = &operation["requestBody"]["content"]["application/json"]["schema"];
            let schema = resolve(&doc, body);
            assert!(schema["properties"].is_object(), "{method} {path}: no request schema: {body}");
        }
        if path.starts_with("/v1/") {
            for param in path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
                let described = operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == param && p["in"] == "path"));
                assert!(described, "{method} {path}: path parameter {param} not described");
            }
        }
        if needs_token {
            assert!(operation["security"].is_array(), "{method} {path}: no security");
            let mut errors = vec!["401", "422", "429", "503"];
            if method == "get" || path.starts_with("/v1/orders/") {
                errors.push("404");
            }
            if has_body {
                errors.extend(["400", "413", "415"]);
            }
            for status in errors {
                let schema = &responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path}: no {status} response"))["content"]
                    ["application/json"]["schema"];
                assert_eq!(schema["$ref"], ERROR_BODY, "{method} {path} {status}");
            }
        }
        // Every error response the document lists has the one shape.
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(schema["$ref"], ERROR_BODY, "{method} {path} {status}");
            }
        }
    }
}

#[tokio::test]
async fn every_described_operation_is_served() {
    let server = Server::start();
    let doc = server.call(support::get("/openapi.json", None)).await.ok(StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    let mut described = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                described.push((method.clone(), path.clone()));
            }
        }
    }
    for &(method, path, ..) in ROUTES {
        assert!(
            described.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is served but not described"
        );
    }
    for (method, path) in &described {
        let uri = path.replace("{sku}", "mug").replace("{id}", "o-1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let request = support::request(method.clone(), &uri, Some(&server.token))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .expect("a request");
        // Only the status and the headers: a streaming route's body never ends.
        let response = server.app.router().oneshot(request).await.expect("infallible");
        let status = response.status();
        // Served: whatever it answers, it is not the router's "no such route" or "method not
        // allowed".
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND
                && support::reply(response).await.json()["error"]["code"] == "not_found");
        assert!(!unrouted, "{method} {uri} is described but not served");
    }
}

/// A field the server leaves out when it has no value is described as optional and never
/// null, so that a client validating against the document accepts what is sent.
#[tokio::test]
async fn fields_left_out_are_optional_and_not_null() {
    let server = Server::start();
    let doc = server.call(support::get("/openapi.json", None)).await.ok(StatusCode::OK);
    for (schema, field) in [("OrderChanged", "status"), ("OrdersPage", "next")] {
        let schema = &doc["components"]["schemas"][schema];
        let required = schema["required"].as_array().expect("required fields");
        assert!(!required.contains(&Value::from(field)), "{field} is required: {schema}");
        assert_eq!(schema["properties"][field]["type"], "string", "{field}: {schema}");
    }
}

/// `schema` itself, or the component it refers to.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}
