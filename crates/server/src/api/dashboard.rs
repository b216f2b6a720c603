//! The live orders dashboard: one static page, embedded in the binary (no CDN, no build step).
//! It takes the tenant's token from the URL fragment (`/#token=…`, never sent to the server in
//! a URL) or asks for it, keeps it in localStorage, and follows `/v1/kpi/stream`.

use axum::http::header;
use axum::response::IntoResponse;

/// The page (`assets/dashboard.html`).
const PAGE: &str = include_str!("../../assets/dashboard.html");

/// The live orders dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    responses((status = 200, description = "The dashboard page", content_type = "text/html"))
)]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads nothing from elsewhere; say so, so nothing injected can either. No
            // other site may frame it (to dress it up as its own, or click through it).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
}
