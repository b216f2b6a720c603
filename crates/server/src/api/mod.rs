//! The HTTP API: routes, their OpenAPI description, and what handlers share.
//!
//! Every route is registered through [`routes`] with its `#[utoipa::path]` description, so
//! `/openapi.json` cannot miss one.

mod dashboard;
mod event_json;
mod events;
mod inventory;
mod kpi;
mod ops;
mod orders;

pub use event_json::event_json;
pub use events::CLIENT_BUFFER;
pub use kpi::{CurrencyFigures, DayFigures, GatewayFigures, day_figures};

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use orderly_core::Position;
use orderly_core::domain::{Command, Envelope, IdempotencyKey, TenantId};
use orderly_core::engine::{ExecuteError, Outcome};
use orderly_core::node::{Node, ReadModel};
use orderly_core::projection::WaitError;
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{App, Shared};
use crate::error::{ApiError, ErrorBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderly",
        description = "Inventory, orders and payments over HTTP. Every /v1 route takes a \
                       tenant's bearer token; every error has the shape of ErrorBody."
    ),
    modifiers(&BearerToken),
    // Every error response refers to this one schema.
    components(schemas(ErrorBody)),
    tags(
        (name = "inventory", description = "Stock per SKU"),
        (name = "orders", description = "Placing orders and moving them along"),
        (name = "events", description = "Live streams: events and KPIs (Server-Sent Events)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the /v1 routes use.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The errors any command route may answer.
#[allow(dead_code, reason = "describes responses for OpenAPI; never built")]
#[derive(IntoResponses)]
enum CommandErrors {
    /// `invalid_json`: the body is not JSON.
    #[response(status = 400)]
    InvalidJson(ErrorBody),
    /// `unauthorized`: the bearer token is missing or unknown.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `payload_too_large`: the body is over the limit (1 MiB by default).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `unsupported_media_type`: the body is not sent as application/json.
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// `validation_failed` (naming the field), `unknown_currency` (placing an order in a code
    /// ISO 4217 does not list as a circulating currency), `idempotency_key_reused`, or a
    /// domain rejection with its code (`insufficient_stock`, `invalid_transition`,
    /// `currency_mismatch`, …).
    #[response(status = 422)]
    Rejected(ErrorBody),
    /// `rate_limited` (the tenant is over its rate) or `too_many_requests` (it has the most
    /// requests in progress it may); see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// `overloaded`, `not_ready`, `shutting_down` or `request_timeout` (nothing was done;
    /// see `Retry-After`), or `engine_stopped` (the log failed: a command the engine had
    /// taken may or may not be recorded; once the server is back, retry with the same key).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `outcome_unknown`: the command went to the engine but its answer took longer than the
    /// request may, so it may have been recorded; retry with the same `Idempotency-Key`.
    #[response(status = 504)]
    OutcomeUnknown(ErrorBody),
}

/// The errors any query route may answer.
#[allow(dead_code, reason = "describes responses for OpenAPI; never built")]
#[derive(IntoResponses)]
enum QueryErrors {
    /// `unauthorized`: the bearer token is missing or unknown.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `unknown_order` or `unknown_sku`; `details.position` is how far the read model had
    /// read (pass a command's `position` as `min_position` to read after it).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `validation_failed`: a query parameter is wrong (named in `details.field`).
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited` (the tenant is over its rate) or `too_many_requests` (it has the most
    /// requests in progress it may); see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// `read_model_behind` (`min_position` not reached in time), `not_ready` (see
    /// `Retry-After`); `read_model_stopped` (the read model stopped: no read until a restart).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Refuses `.` and `..` as the id of a new order or SKU: clients resolve them as path
/// segments (`/v1/orders/..` is `/v1/`), so it could not be read, cancelled or stocked again.
fn addressable(field: &str, text: &str) -> Result<(), ApiError> {
    if matches!(text, "." | "..") {
        let message = format!("{text:?} cannot be a path segment of a URL");
        return Err(ApiError::validation(field, message));
    }
    Ok(())
}

/// Every route with its OpenAPI description.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(inventory::receive))
        .routes(routes!(inventory::adjust))
        .routes(routes!(inventory::level))
        .routes(routes!(orders::place, orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(orders::ship))
        .routes(routes!(orders::deliver))
        .routes(routes!(orders::cancel))
        .routes(routes!(orders::refund))
        .routes(routes!(events::events))
        .routes(routes!(kpi::kpi_stream))
        .routes(routes!(dashboard::page))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
}

/// The OpenAPI document of [`routes`], built once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| routes().split_for_parts().1)
}

/// Set on a response that repeats the first outcome of an idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Runs `command` for `tenant` with `key`: answered once durable, or the error to send.
async fn execute(
    app: &App,
    tenant: TenantId,
    key: Option<IdempotencyKey>,
    command: Command,
) -> Result<(Outcome, HeaderMap), ApiError> {
    execute_envelope(app, keyed(Envelope::new(tenant, command), key), None).await
}

/// `envelope`, with `key` when there is one.
fn keyed(envelope: Envelope, key: Option<IdempotencyKey>) -> Envelope {
    match key {
        Some(key) => envelope.with_key(key),
        None => envelope,
    }
}

/// [`execute`] for a command whose envelope the caller made; `alias`, when given, is run
/// instead if the engine answers that the envelope's key was used for another command.
async fn execute_envelope(
    app: &App,
    envelope: Envelope,
    alias: Option<Envelope>,
) -> Result<(Outcome, HeaderMap), ApiError> {
    let node = app.node()?;
    crate::error::command_taken();
    let outcome = match (node.engine().execute(envelope).await, alias) {
        (Err(ExecuteError::IdempotencyKeyReused { .. }), Some(alias)) => {
            node.engine().execute(alias).await?
        }
        (answer, _) => answer?,
    };
    let mut headers = HeaderMap::new();
    if outcome.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok((outcome, headers))
}

/// Waits (bounded by the server's read wait) until `model` has applied every position below
/// `min_position`, and returns the position the read model has reached. A read model that
/// stopped answers no read: `503 read_model_stopped`, not a stale answer ("no such order" for
/// an order acknowledged since; a batch it had taken in but not committed when it stopped is
/// counted as reached, yet gone).
async fn read_at_least(
    app: &Shared,
    node: &Arc<Node>,
    model: ReadModel,
    min_position: Option<u64>,
) -> Result<u64, ApiError> {
    let worker = node.projection(model);
    if let Some(why) = worker.ended() {
        return Err(read_model_stopped(model, &why));
    }
    let Some(wanted) = min_position else { return Ok(worker.reached().0) };
    let head = node.engine().head().0;
    if wanted > head {
        return Err(ApiError::validation(
            "min_position",
            format!("min_position {wanted} is beyond the log's head {head}"),
        ));
    }
    if worker.reached().0 < wanted {
        let (node, wait) = (node.clone(), app.config().read_wait);
        let waited = tokio::task::spawn_blocking(move || {
            node.projection(model).wait_for(Position(wanted), wait)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
        match waited {
            Ok(()) => {}
            Err(WaitError::TimedOut { reached, .. }) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_model_behind",
                    format!("the read model reached {reached}, not yet {wanted}; retry"),
                )
                .retry_after(Duration::from_secs(1)));
            }
            Err(WaitError::Stopped { cause, .. }) => return Err(read_model_stopped(model, &cause)),
        }
    }
    Ok(worker.reached().0)
}

/// `503 read_model_stopped`: `model` stopped (`why`), and what it holds is stale.
pub(crate) fn read_model_stopped(model: ReadModel, why: &str) -> ApiError {
    let message = format!("read model {} stopped ({why}): its queries are stale", model.name());
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_model_stopped", message)
}
