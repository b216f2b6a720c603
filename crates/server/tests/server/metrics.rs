//! `/metrics` (no token) reports in the Prometheus text format what the issue lists: requests
//! by route template and status, the engine's queue depth, group commit sizes and fsync
//! latency, projection lag and orders by status. A body refused for its declared length is
//! counted like any other answer.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use orderly_server::app::DEFAULT_BODY_LIMIT;

use super::support::{self, Server};

#[tokio::test]
async fn metrics_count_requests_and_show_the_engine_the_log_and_the_read_models() {
    let server = Server::start();
    server.receive("mug", 10).await;
    let placed = server.place("o-1", "c-1", &[("mug", 1)]).await;
    server.place("o-2", "c-1", &[("mug", 1)]).await;
    let cancelled = server.post("/v1/orders/o-2/cancel", &serde_json::json!(null)).await;
    let at = support::position(&cancelled.ok(StatusCode::OK));
    server.get(&format!("/v1/orders/o-1?min_position={at}")).await.ok(StatusCode::OK);
    server.get("/v1/orders/o-missing").await.error(StatusCode::NOT_FOUND, "unknown_order");
    server.get("/no/such/route").await.error(StatusCode::NOT_FOUND, "not_found");
    let too_large = support::request(Method::POST, "/v1/orders", Some(&server.token))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, DEFAULT_BODY_LIMIT + 1)
        .body(Body::empty())
        .expect("a request");
    server.call(too_large).await.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Any token is a method; made-up ones share one label.
    for made_up in ["FROB", "M12345"] {
        let method = Method::from_bytes(made_up.as_bytes()).expect("a method token");
        let request = support::request(method, "/healthz", None).body(Body::empty()).expect("ok");
        server.call(request).await.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    assert!(support::position(&placed) > 0);

    let reply = server.call(support::get("/metrics", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers.get("content-type").expect("a content type");
    assert!(content_type.to_str().is_ok_and(|t| t.contains("text")), "{content_type:?}");
    let text = &reply.text;
    let has = |needle: &str| {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    };

    // Requests by route template (never the raw path) and status.
    has(r#"orderly_http_requests_total{route="/v1/orders",method="POST",status="201"} 2"#);
    has(
        r#"orderly_http_requests_total{route="/v1/orders/{id}/cancel",method="POST",status="200"} 1"#,
    );
    has(r#"orderly_http_requests_total{route="/v1/orders/{id}",method="GET",status="200"} 1"#);
    has(r#"orderly_http_requests_total{route="/v1/orders/{id}",method="GET",status="404"} 1"#);
    has(r#"orderly_http_requests_total{route="unmatched",method="GET",status="404"} 1"#);
    has(r#"orderly_http_requests_total{route="/v1/orders",method="POST",status="413"} 1"#);
    has(r#"orderly_http_request_duration_seconds_bucket{"#);
    assert!(!text.contains("o-missing") && !text.contains("/no/such/route"), "raw paths in labels");
    has(r#"orderly_http_requests_total{route="/healthz",method="other",status="405"} 2"#);
    assert!(!text.contains("FROB") && !text.contains("M12345"), "made-up methods in labels");
    // The engine, the log and the read models.
    has("orderly_engine_queue_depth ");
    has("orderly_log_head_position ");
    has("orderly_log_failed 0");
    has("orderly_log_group_records_bucket{");
    has("orderly_log_fsync_duration_seconds_bucket{");
    has("orderly_log_fsync_duration_seconds_count ");
    for projection in ["inventory", "orders", "orders_by_customer", "sales_kpis"] {
        has(&format!(r#"orderly_projection_lag_positions{{projection="{projection}"}}"#));
        has(&format!(r#"orderly_projection_lag_seconds{{projection="{projection}"}}"#));
        has(&format!(r#"orderly_projection_stopped{{projection="{projection}"}} 0"#));
    }
    // Summed over tenants: `/metrics` needs no token and names no tenant.
    has(r#"orderly_orders{status="placed"} 1"#);
    has(r#"orderly_orders{status="cancelled"} 1"#);
    assert!(!text.contains("acme"), "a tenant's name in the metrics");
    // Every group commit so far was observed.
    let groups = sample(text, "orderly_log_group_records_count");
    assert!(groups >= 1.0, "{groups}");
    let records = sample(text, "orderly_log_group_records_sum");
    assert!(records >= 4.0, "receive, two places, a cancel: {records}");
}

/// The value of the sample named exactly `name` (no labels).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// A capture the log records and the gateway refuses (its books were lost, so it no longer
/// knows the authorization) is counted where operators watch: the order reads as shipped and
/// captured, as the log says, and the money did not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_the_gateway_refused_is_counted() {
    let mut server = Server::with_payments();
    server.receive("mug", 10).await;
    server.place("o-1", "c-1", &[("mug", 1)]).await;
    server.wait_for_status("o-1", "confirmed").await;
    let not_made = |text: &str, outcome: &str| {
        let name = format!(r#"orderly_payment_movements_not_made{{outcome="{outcome}"}}"#);
        sample(text, &name)
    };
    let before = server.call(support::get("/metrics", None)).await.text;
    assert_eq!(not_made(&before, "refused"), 0.0, "{before}");
    assert_eq!(not_made(&before, "left_for_next_start"), 0.0, "{before}");

    server.app.shutdown().expect("closes");
    std::fs::remove_dir_all(server.dir().join("gateways")).expect("the books are lost");
    server.restart();
    server.post("/v1/orders/o-1/ship", &serde_json::json!(null)).await.ok(StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = server.call(support::get("/metrics", None)).await.text;
        if not_made(&text, "refused") == 1.0 {
            assert_eq!(not_made(&text, "left_for_next_start"), 0.0, "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the refused capture is never counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
