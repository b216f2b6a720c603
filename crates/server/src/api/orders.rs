//! Orders: place one, move it along (ship, deliver, cancel, refund), read it, list a
//! customer's.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use orderly_core::domain::{
    CancelReason, Command, Currency, CustomerId, Envelope, Event, IdempotencyKey, Money,
    OrderCommand, OrderEvent, OrderId, OrderLine, Quantity, Sku, TenantId,
};
use orderly_core::engine::Outcome;
use orderly_core::node::ReadModel;
use orderly_core::projection::{self, CustomerCursor, OrderView};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::inventory::ReadAfter;
use super::{CommandErrors, QueryErrors, execute, execute_envelope, keyed, read_at_least};
use crate::app::Shared;
use crate::error::{ApiError, echo};
use crate::extract::{Caller, IdempotencyKeyHeader, JsonBody, NoBody, PathText, QueryOf};

/// Orders per page of a customer's orders, unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 50;
/// The largest page.
const MAX_PAGE: usize = 500;

/// A new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// The order's id. Optional: without it the server makes a fresh one (`o-`, then 21
    /// base-32 digits; ids made later sort after); a retry with the same `Idempotency-Key` is
    /// answered with the first attempt's order.
    #[schema(example = "o-1001")]
    pub order_id: Option<String>,
    /// Who buys.
    #[schema(example = "c-42")]
    pub customer_id: String,
    /// ISO 4217 code of every price.
    #[schema(example = "EUR")]
    pub currency: String,
    /// What is bought: 1 to 50 lines, each SKU once.
    #[serde(deserialize_with = "crate::extract::objects")]
    pub lines: Vec<Line>,
}

/// One line of an order.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// What is bought.
    #[schema(example = "mug")]
    pub sku: String,
    /// How many, 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000, example = 2)]
    pub quantity: u64,
    /// Price of one unit in minor units (cents), 1 to 100,000,000,000.
    #[schema(minimum = 1, maximum = 100_000_000_000_u64, example = 1200)]
    pub unit_price: u64,
}

/// The order was placed and its stock held.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPlaced {
    /// The order's id.
    pub order_id: String,
    /// Always `placed`: payment follows.
    pub status: String,
    /// Who buys.
    pub customer_id: String,
    /// Currency of the total.
    pub currency: String,
    /// Sum of the lines, in minor units.
    pub total: u64,
    /// When the stock hold runs out unless the order is paid (ms since the Unix epoch).
    pub hold_expires_at_ms: u64,
    /// Pass as `min_position` to read this order back.
    pub position: u64,
}

/// A command moved an order along.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderChanged {
    /// The order's id.
    pub order_id: String,
    /// The order's new status (absent when it did not change, as for a refund).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<String>,
    /// Pass as `min_position` to read the change back.
    pub position: u64,
}

/// Give money back after shipping.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    /// How much, in minor units, 1 or more.
    #[schema(minimum = 1, example = 500)]
    pub amount: u64,
    /// The order's currency.
    #[schema(example = "EUR")]
    pub currency: String,
}

/// An order as the orders read model holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    /// The order's id.
    pub order_id: String,
    /// `placed`, `confirmed`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    /// Why it was cancelled: `requested`, `payment_declined` or `hold_expired`.
    pub cancel_reason: Option<String>,
    /// Who buys.
    pub customer_id: String,
    /// Currency of every amount.
    pub currency: String,
    /// What is bought.
    pub lines: Vec<Line>,
    /// Sum of the lines, in minor units.
    pub total: u64,
    /// Money given back so far, in minor units.
    pub refunded: u64,
    /// The order's payment, once one was attempted.
    pub payment: Option<PaymentBody>,
    /// When the order was placed (ms since the Unix epoch).
    pub placed_at_ms: u64,
    /// While the order is `placed` (not yet paid): when its stock hold runs out and it is
    /// cancelled if still unpaid (ms since the Unix epoch). Absent otherwise, and for orders
    /// recorded by a release that did not keep it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub hold_expires_at_ms: Option<u64>,
    /// Log positions of the order's events, in order.
    pub event_positions: Vec<u64>,
    /// The read holds every event below this log position (and may hold some at or past it).
    pub position: u64,
}

/// The payment of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentBody {
    /// The payment's id.
    pub payment_id: String,
    /// `authorized`, `declined`, `captured` or `voided`.
    pub status: Option<String>,
    /// Amount authorized, in minor units.
    pub authorized: u64,
    /// Amount captured, in minor units.
    pub captured: u64,
    /// The gateway that authorized or declined it.
    pub gateway: Option<String>,
    /// Why it was declined: `refused` (the customer's bank) or `gateway_unavailable` (no
    /// gateway could be reached).
    pub decline_reason: Option<String>,
}

/// One page of a customer's orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrdersPage {
    /// The orders.
    pub orders: Vec<OrderBody>,
    /// Pass as `after` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next: Option<String>,
    /// The read holds every event below this log position (and may hold some at or past it).
    pub position: u64,
}

/// Which orders to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListOrders {
    /// The customer whose orders to list.
    pub customer_id: String,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Orders per page, 1 to 500 (50 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Wait (bounded) until the read model has reached this position.
    pub min_position: Option<u64>,
}

/// Place an order: every line's stock is held in the same decision, or nothing is.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes placing safe to retry: the same key and body return the first response")),
    request_body = PlaceOrder,
    responses(
        (status = 201, description = "Placed, durably; payment follows", body = OrderPlaced, headers(
            ("Location" = String, description = "The order's URL, `/v1/orders/{order_id}`"),
            ("idempotent-replayed" = String, description = "`true` when the answer is the first attempt's, for a retry with its key"),
        )),
        CommandErrors,
    ),
    security(("bearer" = []))
)]
pub async fn place(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    JsonBody(body): JsonBody<PlaceOrder>,
) -> Result<(StatusCode, HeaderMap, Json<OrderPlaced>), ApiError> {
    let (order, fresh) = match &body.order_id {
        Some(id) => {
            super::addressable("order_id", id)?;
            (OrderId::new(id).map_err(|e| ApiError::validation("order_id", e.to_string()))?, false)
        }
        None => (fresh_order_id(), true),
    };
    let customer = CustomerId::new(&body.customer_id)
        .map_err(|e| ApiError::validation("customer_id", e.to_string()))?;
    let currency = currency(&body.currency, "currency")?;
    let lines = body
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let field = |name: &str| format!("lines[{i}].{name}");
            Ok(OrderLine {
                sku: Sku::new(&line.sku)
                    .map_err(|e| ApiError::validation(&field("sku"), e.to_string()))?,
                quantity: Quantity::new(line.quantity)
                    .map_err(|e| ApiError::validation(&field("quantity"), e.to_string()))?,
                unit_price: line.unit_price,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let command =
        Command::Order { order, command: OrderCommand::Place { customer, currency, lines } };
    let mut envelope = keyed(Envelope::new(tenant, command), key);
    let mut earlier = None;
    if fresh {
        earlier = placed_before_fresh_ids(&envelope);
        envelope = envelope.with_fresh_order_id();
    }
    // A replayed answer names the first attempt's order, which is not `order` when it is fresh.
    let (outcome, mut headers) = execute_envelope(&app, envelope, earlier).await?;
    let placed = outcome.events.iter().find_map(|e| match &e.event {
        Event::Order {
            order,
            event: OrderEvent::OrderPlaced { customer, currency, total, hold_expires_at, .. },
        } => Some(OrderPlaced {
            order_id: order.as_str().to_owned(),
            status: "placed".to_owned(),
            customer_id: customer.as_str().to_owned(),
            currency: currency.as_str().to_owned(),
            total: *total,
            hold_expires_at_ms: hold_expires_at.0,
            position: outcome.next_position().0,
        }),
        _ => None,
    });
    let placed = placed.ok_or_else(|| ApiError::internal(&"placing recorded no OrderPlaced"))?;
    // Ids are made of characters a path and a header value take as they are.
    let location = HeaderValue::from_str(&format!("/v1/orders/{}", placed.order_id))
        .map_err(|e| ApiError::internal(&e))?;
    headers.insert(header::LOCATION, location);
    Ok((StatusCode::CREATED, headers, Json(placed)))
}

/// A fresh order id, 23 bytes (so that it is kept inline, not on the heap, wherever it is
/// held): `o-`, then the milliseconds since 1970 in 9 digits and 60 random bits in 12, base 32
/// (`0-9a-z` without `i l o u`, in ASCII order). Ids made later sort after (the read models'
/// tables, keyed by id, then grow at their end instead of rewriting pages all over them), and
/// none repeats. A retry of the request gets another one, which the engine knows to ignore
/// ([`Envelope::fresh_order_id`]): it answers with the first attempt's order.
fn fresh_order_id() -> OrderId {
    const DIGITS: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let since_1970 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let millis = u64::try_from(since_1970.as_millis()).unwrap_or(u64::MAX);
    let mut id = *b"o-000000000000000000000";
    let (time, random) = id[2..].split_at_mut(9);
    for (digits, mut n) in [(time, millis), (random, rand::random::<u64>())] {
        for digit in digits.iter_mut().rev() {
            *digit = DIGITS[(n % 32) as usize];
            n /= 32;
        }
    }
    let id = std::str::from_utf8(&id).expect("ASCII digits");
    OrderId::new(id).expect("o- and base-32 digits make an id")
}

/// A keyed place without an order id as releases before fresh ids sent it: under an id derived
/// from the tenant and key, a part of its fingerprint. A retry of a request that such a release
/// recorded is the same command as this one, not a reuse of its key.
fn placed_before_fresh_ids(envelope: &Envelope) -> Option<Envelope> {
    let key = envelope.idempotency_key.as_ref()?;
    let Command::Order { command: place @ OrderCommand::Place { .. }, .. } = &envelope.command
    else {
        return None;
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update(envelope.tenant.as_str().as_bytes()).update(b"/").update(key.as_str().as_bytes());
    // The first 12 bytes of the hash, in hex.
    let hex = &hasher.finalize().to_hex()[..24];
    let order = OrderId::new(&format!("o-{hex}")).expect("o- and hex digits make an id");
    let command = Command::Order { order, command: place.clone() };
    Some(Envelope::new(envelope.tenant.clone(), command).with_key(key.clone()))
}

/// `text` as a new order's currency: three upper-case letters (else `422 validation_failed`)
/// that ISO 4217 lists as a circulating currency (else `422 unknown_currency`). The domain's `Currency` takes any three
/// letters, so that logs written before this check still read; the list is checked where an
/// order's currency is chosen.
fn currency(text: &str, field: &str) -> Result<Currency, ApiError> {
    let currency = Currency::new(text).map_err(|e| ApiError::validation(field, e.to_string()))?;
    let refused = match iso_currency::Currency::from_code(text) {
        None => "is not an ISO 4217 currency code",
        // Funds (USN, CHE, …), special codes (XXX no currency, XTS testing, XAU gold, …) and
        // superseded ones (HRK, …) are listed, but no shop prices an order in them.
        Some(iso) if !iso.flags().is_empty() => {
            "is an ISO 4217 fund, special or superseded code, not a currency orders are priced in"
        }
        Some(_) => return Ok(currency),
    };
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_currency",
        format!("{text} {refused}"),
    )
    .with_details(json!({ "field": field, "currency": text })))
}

fn order_id(text: &str) -> Result<OrderId, ApiError> {
    OrderId::new(text)
        .map_err(|_| ApiError::not_found("unknown_order", format!("no order {}", echo(text))))
}

/// Runs an order command and answers with the order's new status.
async fn change(
    app: Shared,
    tenant: TenantId,
    key: Option<IdempotencyKey>,
    order_text: &str,
    command: OrderCommand,
) -> Result<(HeaderMap, Json<OrderChanged>), ApiError> {
    let order = order_id(order_text)?;
    let command = Command::Order { order: order.clone(), command };
    let (outcome, headers) = execute(&app, tenant, key, command).await?;
    let status = new_status(&outcome).map(str::to_owned);
    let position = outcome.next_position().0;
    Ok((headers, Json(OrderChanged { order_id: order.as_str().to_owned(), status, position })))
}

fn new_status(outcome: &Outcome) -> Option<&'static str> {
    outcome.events.iter().rev().find_map(|e| match &e.event {
        Event::Order { event, .. } => match event {
            OrderEvent::OrderPlaced { .. } => Some("placed"),
            OrderEvent::OrderConfirmed { .. } => Some("confirmed"),
            OrderEvent::OrderShipped => Some("shipped"),
            OrderEvent::OrderDelivered => Some("delivered"),
            OrderEvent::OrderCancelled { .. } => Some("cancelled"),
            OrderEvent::OrderRefunded { .. } => None,
        },
        _ => None,
    })
}

/// The goods left the warehouse: the held stock is committed and the payment captured.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/ship",
    tag = "orders",
    params(("id" = String, Path, description = "The order"), ("Idempotency-Key" = Option<String>, Header, description = "Makes the command safe to retry")),
    responses((status = 200, description = "Shipped, durably", body = OrderChanged), (status = 404, description = "`unknown_order`", body = crate::error::ErrorBody), CommandErrors),
    security(("bearer" = []))
)]
pub async fn ship(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    PathText(id): PathText,
    _none: NoBody,
) -> Result<(HeaderMap, Json<OrderChanged>), ApiError> {
    change(app, tenant, key, &id, OrderCommand::Ship).await
}

/// The goods arrived.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/deliver",
    tag = "orders",
    params(("id" = String, Path, description = "The order"), ("Idempotency-Key" = Option<String>, Header, description = "Makes the command safe to retry")),
    responses((status = 200, description = "Delivered, durably", body = OrderChanged), (status = 404, description = "`unknown_order`", body = crate::error::ErrorBody), CommandErrors),
    security(("bearer" = []))
)]
pub async fn deliver(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    PathText(id): PathText,
    _none: NoBody,
) -> Result<(HeaderMap, Json<OrderChanged>), ApiError> {
    change(app, tenant, key, &id, OrderCommand::Deliver).await
}

/// Cancel an order that has not shipped: its stock is released and its authorization voided.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "orders",
    params(("id" = String, Path, description = "The order"), ("Idempotency-Key" = Option<String>, Header, description = "Makes the command safe to retry")),
    responses((status = 200, description = "Cancelled, durably", body = OrderChanged), (status = 404, description = "`unknown_order`", body = crate::error::ErrorBody), CommandErrors),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    PathText(id): PathText,
    _none: NoBody,
) -> Result<(HeaderMap, Json<OrderChanged>), ApiError> {
    let command = OrderCommand::Cancel { reason: CancelReason::Requested };
    change(app, tenant, key, &id, command).await
}

/// Give money back after shipping, partly or fully; the payment is refunded with it.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/refund",
    tag = "orders",
    params(("id" = String, Path, description = "The order"), ("Idempotency-Key" = Option<String>, Header, description = "Makes the command safe to retry")),
    request_body = Refund,
    responses((status = 200, description = "Refunded, durably", body = OrderChanged), (status = 404, description = "`unknown_order`", body = crate::error::ErrorBody), CommandErrors),
    security(("bearer" = []))
)]
pub async fn refund(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    PathText(id): PathText,
    JsonBody(body): JsonBody<Refund>,
) -> Result<(HeaderMap, Json<OrderChanged>), ApiError> {
    // Any three letters: a refund must be in the order's currency (the domain refuses another
    // one as `currency_mismatch`), which placing checked against ISO 4217, or which an order
    // placed before that check has.
    let currency = Currency::new(&body.currency)
        .map_err(|e| ApiError::validation("currency", e.to_string()))?;
    let amount = Money::new(body.amount, currency);
    change(app, tenant, key, &id, OrderCommand::Refund { amount }).await
}

/// One order, from the orders read model.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "The order"), ReadAfter),
    responses((status = 200, description = "The order", body = OrderBody), QueryErrors),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    PathText(id): PathText,
    QueryOf(read): QueryOf<ReadAfter>,
) -> Result<Json<OrderBody>, ApiError> {
    let order = order_id(&id)?;
    let node = app.node()?;
    let position = read_at_least(&app, &node, ReadModel::Orders, read.min_position).await?;
    let view = projection::order(node.read_models(), &tenant, &order)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            let message = format!("no order {} up to position {position}", echo(&id));
            ApiError::not_found("unknown_order", message).read_up_to(position)
        })?;
    Ok(Json(order_body(&order, view, position)))
}

/// A customer's orders, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(ListOrders),
    responses((status = 200, description = "A page of orders", body = OrdersPage), QueryErrors),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    QueryOf(query): QueryOf<ListOrders>,
) -> Result<Json<OrdersPage>, ApiError> {
    let customer = CustomerId::new(&query.customer_id)
        .map_err(|e| ApiError::validation("customer_id", e.to_string()))?;
    let after = match &query.after {
        Some(text) => Some(CustomerCursor::parse(text).ok_or_else(|| {
            ApiError::validation("after", "not a cursor: pass the `next` of the previous page")
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation("limit", format!("limit must be 1 to {MAX_PAGE}")));
    }
    let node = app.node()?;
    // Both read models must have the orders: the index names them, the views describe them.
    let position = read_at_least(&app, &node, ReadModel::Customers, query.min_position)
        .await?
        .min(read_at_least(&app, &node, ReadModel::Orders, query.min_position).await?);
    let db = node.read_models();
    let (ids, next) = projection::orders_of_customer(db, &tenant, &customer, after.as_ref(), limit)
        .map_err(|e| ApiError::internal(&e))?;
    let mut orders = Vec::with_capacity(ids.len());
    for id in ids {
        // The index may run ahead of the order views; an order not yet viewable is left out.
        if let Some(view) =
            projection::order(db, &tenant, &id).map_err(|e| ApiError::internal(&e))?
        {
            orders.push(order_body(&id, view, position));
        }
    }
    Ok(Json(OrdersPage { orders, next: next.map(|cursor| cursor.to_string()), position }))
}

fn order_body(order: &OrderId, view: OrderView, position: u64) -> OrderBody {
    let payment = view.payment.as_ref().map(|payment| PaymentBody {
        payment_id: payment.as_str().to_owned(),
        status: view.payment_status.map(|s| s.as_str().to_owned()),
        authorized: view.authorized,
        captured: view.captured,
        gateway: view.gateway.as_ref().map(|g| g.as_str().to_owned()),
        decline_reason: view.decline_reason.map(|r| r.as_str().to_owned()),
    });
    let unpaid = view.status == orderly_core::domain::OrderStatus::Placed;
    OrderBody {
        order_id: order.as_str().to_owned(),
        status: view.status.as_str().to_owned(),
        cancel_reason: view.cancel_reason.map(|r| r.as_str().to_owned()),
        customer_id: view.customer.as_str().to_owned(),
        currency: view.currency.as_str().to_owned(),
        lines: view
            .lines
            .iter()
            .map(|line| Line {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity.get(),
                unit_price: line.unit_price,
            })
            .collect(),
        total: view.total,
        refunded: view.refunded,
        payment,
        placed_at_ms: view.placed_at.0,
        hold_expires_at_ms: view.hold_expires_at.filter(|_| unpaid).map(|t| t.0),
        event_positions: view.positions.iter().map(|p| p.0).collect(),
        position,
    }
}
