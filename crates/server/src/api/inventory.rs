//! Stock per SKU: receive goods, correct a count, read the level.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use orderly_core::domain::limits::{MAX_QUANTITY, is_adjustment};
use orderly_core::domain::{Command, Quantity, Sku};
use orderly_core::node::ReadModel;
use orderly_core::projection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{CommandErrors, QueryErrors, execute, read_at_least};
use crate::app::Shared;
use crate::error::{ApiError, echo};
use crate::extract::{Caller, IdempotencyKeyHeader, JsonBody, PathText, QueryOf};

/// Goods arrived.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStock {
    /// Units received, 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000, example = 100)]
    pub quantity: u64,
}

/// A stock count found more or fewer units than recorded.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    /// Signed change of on hand: 1 to 1,000,000 units either way, never zero.
    #[schema(minimum = -1_000_000, maximum = 1_000_000, example = -2)]
    pub delta: i64,
}

/// A stock command was recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockChanged {
    /// The SKU.
    pub sku: String,
    /// Pass as `min_position` to read this change back.
    pub position: u64,
}

/// The stock of one SKU.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units in the warehouse, held or not.
    pub on_hand: u64,
    /// Units held for orders not yet shipped.
    pub reserved: u64,
    /// Units that can still be ordered: on hand minus reserved.
    pub available: u64,
    /// The read holds every event below this log position (and may hold some at or past it).
    pub position: u64,
}

/// Read-your-writes: wait until the read model includes a command's position.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadAfter {
    /// Wait (bounded) until the read model has reached this position (a command's
    /// `position`).
    pub min_position: Option<u64>,
}

fn sku(text: &str) -> Result<Sku, ApiError> {
    super::addressable("sku", text)?;
    Sku::new(text).map_err(|e| ApiError::validation("sku", e.to_string()))
}

/// Record goods received.
#[utoipa::path(
    post,
    path = "/v1/inventory/{sku}/receive",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU"), ("Idempotency-Key" = Option<String>, Header, description = "Makes the command safe to retry")),
    request_body = ReceiveStock,
    responses((status = 200, description = "Recorded, durably", body = StockChanged), CommandErrors),
    security(("bearer" = []))
)]
pub async fn receive(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    PathText(sku_text): PathText,
    JsonBody(body): JsonBody<ReceiveStock>,
) -> Result<(HeaderMap, Json<StockChanged>), ApiError> {
    let sku = sku(&sku_text)?;
    let quantity = Quantity::new(body.quantity)
        .map_err(|e| ApiError::validation("quantity", e.to_string()))?;
    let command = Command::ReceiveStock { sku: sku.clone(), quantity };
    let (outcome, headers) = execute(&app, tenant, key, command).await?;
    let position = outcome.next_position().0;
    Ok((headers, Json(StockChanged { sku: sku.as_str().to_owned(), position })))
}

/// Correct on hand after a stock count.
#[utoipa::path(
    post,
    path = "/v1/inventory/{sku}/adjust",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU"), ("Idempotency-Key" = Option<String>, Header, description = "Makes the command safe to retry")),
    request_body = AdjustStock,
    responses((status = 200, description = "Recorded, durably", body = StockChanged), CommandErrors),
    security(("bearer" = []))
)]
pub async fn adjust(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    PathText(sku_text): PathText,
    JsonBody(body): JsonBody<AdjustStock>,
) -> Result<(HeaderMap, Json<StockChanged>), ApiError> {
    let sku = sku(&sku_text)?;
    let delta = body.delta;
    if !is_adjustment(delta) {
        let message =
            format!("delta must be a change of 1 to {MAX_QUANTITY} units either way, got {delta}");
        return Err(ApiError::validation("delta", message));
    }
    let command = Command::AdjustStock { sku: sku.clone(), delta };
    let (outcome, headers) = execute(&app, tenant, key, command).await?;
    let position = outcome.next_position().0;
    Ok((headers, Json(StockChanged { sku: sku.as_str().to_owned(), position })))
}

/// The stock of one SKU, from the inventory read model.
#[utoipa::path(
    get,
    path = "/v1/inventory/{sku}",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU"), ReadAfter),
    responses((status = 200, description = "The level", body = StockLevel), QueryErrors),
    security(("bearer" = []))
)]
pub async fn level(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    PathText(sku_text): PathText,
    QueryOf(read): QueryOf<ReadAfter>,
) -> Result<Json<StockLevel>, ApiError> {
    let unknown =
        || ApiError::not_found("unknown_sku", format!("no stock of SKU {}", echo(&sku_text)));
    let sku = Sku::new(&sku_text).map_err(|_| unknown())?;
    let node = app.node()?;
    let position = read_at_least(&app, &node, ReadModel::Inventory, read.min_position).await?;
    let level = projection::inventory(node.read_models(), &tenant, &sku)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| unknown().read_up_to(position))?;
    Ok(Json(StockLevel {
        sku: sku.as_str().to_owned(),
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available(),
        position,
    }))
}
