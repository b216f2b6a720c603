//! The dashboard page `/`: served without a token as UTF-8 HTML with a Content-Security-Policy
//! that lets it load nothing from elsewhere, holding the big `orders-today` number and reading
//! the KPI stream of this server (the browser test in `.ci/run` checks it live).

use axum::http::{StatusCode, header};

use super::support::{self, Server};

#[tokio::test]
async fn the_dashboard_is_one_self_contained_html_page() {
    let server = Server::start();
    let page = server.call(support::get("/", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    let header = |name| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    let policy = header(header::CONTENT_SECURITY_POLICY);
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(!policy.contains("http"), "no other origin is allowed: {policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "no other site frames it: {policy}");
    assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(page.text.starts_with("<!doctype html>") || page.text.starts_with("<!DOCTYPE html>"));
    assert!(page.text.contains(r#"id="orders-today""#));
    assert!(page.text.contains("/v1/kpi/stream"));
    // Nothing is loaded from a CDN.
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!page.text.contains(external), "the page loads {external}…");
    }
    // The page is the same with a token: it never needs one to load.
    let with_token = server.get("/").await;
    assert_eq!((with_token.status, &with_token.text), (StatusCode::OK, &page.text));
}
