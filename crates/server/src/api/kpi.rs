//! The live KPI stream: a tenant's figures of the day, pushed as Server-Sent Events once a
//! second from the KPI and inventory read models.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use orderly_core::domain::TenantId;
use orderly_core::node::{Node, ReadModel};
use orderly_core::projection::kpi::{MAX_UTC_OFFSET_MINUTES, MINUTE_MS};
use orderly_core::projection::{self, ProjectionError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::QueryErrors;
use crate::app::{Shared, Slot};
use crate::error::ApiError;
use crate::extract::{Caller, QueryOf, bearer_token};

/// How often figures are pushed.
const PERIOD: Duration = Duration::from_secs(1);

/// A tenant's figures for the current day (local to the stream's UTC offset).
#[derive(Debug, Serialize, ToSchema)]
pub struct DayFigures {
    /// The tenant the figures are of.
    pub tenant: String,
    /// When the figures were read (ms since the Unix epoch).
    pub at_ms: u64,
    /// The KPI read model includes every event below this log position.
    pub position: u64,
    /// Start of the day (midnight at the stream's UTC offset, ms since the Unix epoch).
    pub day_start_ms: u64,
    /// The day's offset from UTC, in minutes east (as asked for; 0 by default).
    pub utc_offset_minutes: i32,
    /// Orders placed today.
    pub orders_today: u64,
    /// Orders placed in the current minute so far.
    pub orders_this_minute: u64,
    /// Orders placed in the last full minute.
    pub orders_last_minute: u64,
    /// The most orders placed in one minute today.
    pub peak_per_minute: u64,
    /// When that minute started (ms since the Unix epoch); absent without orders.
    pub peak_minute_ms: Option<u64>,
    /// Booked revenue per currency: totals of the orders placed today, cancelled and refunded
    /// ones included.
    pub revenue: Vec<CurrencyFigures>,
    /// Orders cancelled today.
    pub cancellations: u64,
    /// Payment outcomes per gateway today: authorizations, and declines by the customer's bank.
    pub payments: Vec<GatewayFigures>,
    /// Payments declined today because no gateway answered (an outage, every breaker open):
    /// not counted against any gateway.
    pub payments_unavailable: u64,
    /// Units held for orders not yet shipped, now.
    pub open_reservations: u64,
    /// Orders per minute today: `[minute of the day (0–1439), orders]`, minutes with
    /// orders only.
    pub per_minute: Vec<[u64; 2]>,
}

/// Sales in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyFigures {
    /// ISO 4217 code.
    pub currency: String,
    /// Orders placed in it.
    pub orders: u64,
    /// Sum of their totals, in minor units.
    pub revenue: u64,
    /// Average order total, in minor units.
    pub average_basket: u64,
    /// Digits of its minor unit (ISO 4217: 2 for EUR, 0 for JPY, 3 for KWD): an amount is
    /// `minor / 10^minor_digits` units. `None` for a code without one (orders placed through
    /// the embedded library may use any code).
    pub minor_digits: Option<u16>,
}

/// One gateway's payment outcomes.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayFigures {
    /// The gateway.
    pub gateway: String,
    /// Payments it authorized.
    pub authorized: u64,
    /// Payments it declined (or that failed over to no one after it).
    pub declined: u64,
    /// authorized / (authorized + declined), 0 to 1; absent without payments.
    pub success_rate: Option<f64>,
}

/// Which day the figures are of.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    /// The local day's offset from UTC, in minutes east (−840 to 840; New York in winter is
    /// −300): "today" starts at local midnight. 0 (the UTC day) by default.
    pub utc_offset_minutes: Option<i32>,
}

/// The tenant's live figures as Server-Sent Events: one `DayFigures` JSON per second.
#[utoipa::path(
    get,
    path = "/v1/kpi/stream",
    tag = "events",
    params(KpiQuery),
    responses(
        (status = 200, description = "An endless `text/event-stream` of DayFigures JSON, one a second", content_type = "text/event-stream", body = DayFigures),
        (status = 429, description = "`too_many_streams`: the tenant has the most streams open", body = crate::error::ErrorBody),
        QueryErrors,
    ),
    security(("bearer" = []))
)]
pub async fn kpi_stream(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    headers: HeaderMap,
    QueryOf(query): QueryOf<KpiQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let token = bearer_token(&headers)?.to_owned();
    let utc_offset = query.utc_offset_minutes.unwrap_or(0);
    if !(-MAX_UTC_OFFSET_MINUTES..=MAX_UTC_OFFSET_MINUTES).contains(&utc_offset) {
        let message = format!("an offset from UTC is at most {MAX_UTC_OFFSET_MINUTES} minutes");
        return Err(ApiError::validation("utc_offset_minutes", message));
    }
    // Recovering, the server answers `503 not_ready` as every other route does, rather than a
    // stream that ends at its first tick.
    app.node()?;
    let slot = app.open_stream(&tenant)?;
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let watcher = Watcher { app, tenant, token, ticks, _slot: slot };
    let stream = futures_util::stream::unfold(watcher, move |mut watcher| async move {
        let event = watcher.next(utc_offset).await?;
        Some((Ok(event), watcher))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One open KPI stream: whose, and its place among the tenant's streams.
struct Watcher {
    app: Shared,
    tenant: TenantId,
    token: String,
    ticks: tokio::time::Interval,
    _slot: Slot,
}

impl Watcher {
    /// The next second's figures, or `None` once the stream ends: the server is closing, the
    /// token was revoked (checked every tick), or the node is gone.
    async fn next(&mut self, utc_offset: i32) -> Option<SseEvent> {
        let Watcher { app, tenant, token, ticks, .. } = self;
        ticks.tick().await;
        if app.is_closing() || app.tenants().authenticate(token).as_ref() != Some(&*tenant) {
            return None;
        }
        let now = now_ms();
        let second = now / 1_000;
        // Another stream of the tenant may have read them this second: the read (a day of
        // minutes and every SKU's level) is then done once, not once per screen.
        if let Some(json) = app.kpi_figures(tenant, utc_offset, second) {
            return Some(SseEvent::default().data(&*json));
        }
        let node = app.node().ok()?;
        let reading = tenant.clone();
        let read = move || day_figures(&node, &reading, now, utc_offset);
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok(figures)) => {
                let json: Arc<str> = serde_json::to_string(&figures).ok()?.into();
                app.keep_kpi_figures(tenant, utc_offset, second, json.clone());
                Some(SseEvent::default().data(&*json))
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot read the KPIs of {tenant}: {e}");
                Some(SseEvent::default().comment("figures unavailable"))
            }
            Err(_) => None,
        }
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The figures of `tenant` for the day of `now_ms`, local to `utc_offset` minutes east of UTC,
/// from the read models.
pub fn day_figures(
    node: &Node,
    tenant: &TenantId,
    now_ms: u64,
    utc_offset: i32,
) -> Result<DayFigures, ProjectionError> {
    let position = node.projection(ReadModel::Kpi).reached().0;
    let db = node.read_models();
    let minute = now_ms / MINUTE_MS;
    let day = projection::day(db, tenant, minute, utc_offset)?;
    let open_reservations = projection::open_holds(db, tenant)?;
    // In the day's first minute, the last full minute is the day before's last.
    let last = minute.saturating_sub(1);
    let orders_last_minute = if last < day.first_minute {
        projection::kpis(db, tenant, last, last)?.iter().map(|(_, kpis)| kpis.orders()).sum()
    } else {
        day.orders_in(last)
    };
    let totals = &day.totals;
    let revenue = totals
        .sales
        .iter()
        .map(|s| CurrencyFigures {
            currency: s.currency.as_str().to_owned(),
            orders: s.orders,
            revenue: s.revenue,
            average_basket: s.average_basket(),
            minor_digits: iso_currency::Currency::from_code(s.currency.as_str())
                .and_then(iso_currency::Currency::exponent),
        })
        .collect();
    let mut gateways: Vec<&str> =
        totals.authorizations.iter().chain(&totals.declines).map(|(g, _)| g.as_str()).collect();
    gateways.sort_unstable();
    gateways.dedup();
    let count = |list: &[(orderly_core::domain::GatewayId, u64)], gateway: &str| {
        list.iter().find(|(g, _)| g.as_str() == gateway).map_or(0, |(_, n)| *n)
    };
    let payments = gateways
        .into_iter()
        .map(|gateway| {
            let authorized = count(&totals.authorizations, gateway);
            let declined = count(&totals.declines, gateway);
            #[expect(clippy::cast_precision_loss, reason = "a dashboard ratio")]
            let success_rate = (authorized + declined > 0)
                .then(|| authorized as f64 / (authorized + declined) as f64);
            GatewayFigures { gateway: gateway.to_owned(), authorized, declined, success_rate }
        })
        .collect();
    Ok(DayFigures {
        tenant: tenant.to_string(),
        at_ms: now_ms,
        position,
        day_start_ms: day.first_minute * MINUTE_MS,
        utc_offset_minutes: utc_offset,
        orders_today: totals.orders(),
        orders_this_minute: day.orders_in(minute),
        orders_last_minute,
        peak_per_minute: day.peak.map_or(0, |(_, n)| n),
        peak_minute_ms: day.peak.map(|(m, _)| m * MINUTE_MS),
        revenue,
        cancellations: totals.cancellations.total(),
        payments,
        payments_unavailable: totals.unavailable,
        open_reservations,
        // The read model has a row for every minute with a counted event; a minute with only a
        // cancellation or a payment outcome has no orders and is not one of these.
        per_minute: day
            .per_minute
            .iter()
            .filter(|(_, orders)| *orders > 0)
            .map(|(m, n)| [m - day.first_minute, *n])
            .collect(),
    })
}
