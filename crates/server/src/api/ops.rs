//! Operations: liveness, readiness, metrics and the API's own description. No token needed.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use orderly_core::node::{Node, ReadModel};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::Shared;
use crate::error::{ApiError, ErrorBody};

/// The server's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` (alive) or `ready` (recovered and accepting commands).
    pub status: &'static str,
    /// Records durable in the log (when ready; absent while the log is recovering).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub head: Option<u64>,
    /// How many records the read model furthest behind has still to apply (when ready): large
    /// after the read models' file was lost and is being rebuilt, when queries lag the
    /// commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub read_models_behind: Option<u64>,
}

/// Alive: the process answers, during recovery too (then without `head`); `503 engine_stopped`
/// once its log failed, since only a restart brings it back (a supervisor's liveness probe
/// then restarts it).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Status), (status = 503, description = "`engine_stopped`: the log failed; restart the server", body = ErrorBody)))]
pub async fn healthz(State(app): State<Shared>) -> Result<Json<Status>, ApiError> {
    let node = app.node().ok();
    if let Some(error) = node.as_ref().and_then(|node| engine_stopped(node)) {
        return Err(error);
    }
    let head = node.map(|node| node.engine().head().0);
    Ok(Json(Status { status: "ok", head, read_models_behind: None }))
}

/// `503 engine_stopped` if `node`'s log failed: no command is accepted until a restart.
fn engine_stopped(node: &Node) -> Option<ApiError> {
    let cause = node.engine().log().failure()?;
    let message = format!("the log failed ({cause}): no command is accepted until a restart");
    Some(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped", message))
}

/// Ready: the log is recovered, commands are accepted, and the read models have caught up with
/// what the log held when the node opened (a load balancer sends no reads to a node whose
/// rebuilt read models would still answer `404` for orders that exist); from then on they
/// follow it, and how far behind they are is in the answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, body = Status), (status = 503, description = "`not_ready`: still recovering, or the read models still catching up with the log as it was at the start; `engine_stopped`: the log failed (a full or failing disk) and no command is accepted until a restart; `read_model_stopped`: a read model stopped and queries would be stale", body = ErrorBody))
)]
pub async fn readyz(State(app): State<Shared>) -> Result<Json<Status>, ApiError> {
    let node = app.node()?;
    // A failed log refuses every command from then on: a supervisor must see it to restart
    // the server or move traffic away, not keep sending it requests.
    if let Some(error) = engine_stopped(&node) {
        return Err(error);
    }
    for model in ReadModel::ALL {
        if let Some(why) = node.projection(model).ended() {
            return Err(super::read_model_stopped(model, &why));
        }
    }
    let at_open = app.head_at_open();
    let to_catch_up = node.projections().iter().map(|p| at_open.0.saturating_sub(p.reached().0));
    if let Some(records) = to_catch_up.max().filter(|records| *records > 0) {
        let message =
            format!("the read models are catching up with the log: {records} records to go");
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
            .retry_after(std::time::Duration::from_secs(1)));
    }
    let behind = node.projections().iter().map(|p| p.lag()).max().unwrap_or(0);
    let head = Some(node.engine().head().0);
    Ok(Json(Status { status: "ready", head, read_models_behind: Some(behind) }))
}

/// Prometheus metrics: requests by route and status, engine queue, group commit and fsync
/// times, projection lag, orders by status, money movements the gateways did not make.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(app): State<Shared>) -> impl IntoResponse {
    let node = app.node().ok();
    let text = app.metrics().render(node.as_deref());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi())
}
