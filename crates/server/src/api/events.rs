//! The live event stream: a tenant's events as Server-Sent Events, in commit order.
//!
//! Each stream has its own reader thread following the log. A log record holds the events one
//! command decided; they are sent together, and the last of them carries the `id:`, the
//! record's global position, so `Last-Event-ID` resumes exactly after the last record seen: no
//! gap, no duplicate. A stream also names where it stands when it has sent nothing for a
//! while: an event with an `id:` and no data, which a client takes as its last event id
//! without showing anything (so a tenant with few events, or a narrow `types=`, resumes
//! where it left off instead of losing what came meanwhile or reading the log again from far
//! back). One goes out as the stream opens (naming the position before its first), then at most
//! every [`MARK_EVERY`] while records pass that it does not send. The thread
//! hands events to the response through a bounded buffer; a client that lets the buffer fill is
//! cut off (the stream ends, and it reconnects with `Last-Event-ID`), so a slow client never
//! holds up commits or other clients. Streams per tenant are capped, and so is how often a
//! tenant opens event streams (its cap at once, then one a second); their threads run at a
//! lower priority than the engine and the requests.

use std::cell::Cell;
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use orderly_core::Position;
use orderly_core::codec::EventType;
use orderly_core::domain::TenantId;
use orderly_core::engine::CommittedEvent;
use orderly_core::store::LogReader;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use utoipa::IntoParams;

use super::QueryErrors;
use super::event_json::event_json;
use crate::app::Shared;
use crate::error::{ApiError, echo};
use crate::extract::{Caller, QueryOf, bearer_token};

/// Events buffered per client before it counts as too slow and is cut off.
pub const CLIENT_BUFFER: usize = 4_096;
/// A comment is sent on an idle stream this often, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream checks that its token was not revoked.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);
/// How often an idle reader thread checks that its client is still there.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// How often, at most, a stream names how far it has read when it sends no events.
const MARK_EVERY: Duration = Duration::from_secs(1);

/// Where to start and what to send.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start at this log position (inclusive). Without it (and without `Last-Event-ID`), the
    /// stream starts at the head: new events only.
    pub from: Option<u64>,
    /// Only these event types, comma-separated (`order_placed,order_cancelled`). Empty names
    /// are skipped; with none (`types=`, `types=,`), as without `types`, every type is sent.
    pub types: Option<String>,
}

/// The tenant's events as Server-Sent Events: `id:` is the position, `data:` the event JSON.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position (sent by reconnecting clients); wins over `from`"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`; each event's `id` is its log position and its `data` the event as JSON; an `id` without `data` names how far the stream has read (as it opens, then at most once a second while it sends nothing)", content_type = "text/event-stream", body = String),
        (status = 429, description = "`too_many_streams`: the tenant has the most streams open", body = crate::error::ErrorBody),
        QueryErrors,
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(app): State<Shared>,
    Caller(tenant, _in_progress): Caller,
    headers: HeaderMap,
    QueryOf(query): QueryOf<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let node = app.node()?;
    let head = node.engine().head().0;
    // Each refusal names what the client sent: `Last-Event-ID: 32` stands for `from` 33.
    let from = match headers.get("last-event-id") {
        Some(value) => {
            let last: u64 =
                value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
                    ApiError::validation("Last-Event-ID", "Last-Event-ID must be a position")
                })?;
            if last >= head {
                let message = format!(
                    "Last-Event-ID {last} names no event: the log ends before position {head}"
                );
                return Err(ApiError::validation("Last-Event-ID", message));
            }
            last + 1
        }
        None => query.from.unwrap_or(head),
    };
    if from > head {
        return Err(ApiError::validation(
            "from",
            format!("from {from} is beyond the log's head {head}"),
        ));
    }
    let types = parse_types(query.types.as_deref())?;
    let token = bearer_token(&headers)?.to_owned();
    let slot = app.open_event_stream(&tenant)?;
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let log = node.engine().log();
    let server = app.clone();
    std::thread::Builder::new()
        .name("orderly-sse".into())
        .spawn(move || {
            // Streams follow the commands: one catching up from far back (the whole log, read
            // and checked record by record) takes no core from the engine or other requests.
            orderly_core::engine::yield_to_others();
            // A token revoked while its stream is open ends the stream too (checked now and
            // then: the reader asks for every record of the log).
            let (checked, revoked) = (Cell::new(Instant::now()), Cell::new(false));
            let closing = || {
                if !revoked.get() && checked.get().elapsed() >= REVOCATION_CHECK {
                    checked.set(Instant::now());
                    revoked.set(server.tenants().authenticate(&token).as_ref() != Some(&tenant));
                }
                server.is_closing() || revoked.get()
            };
            let patience = server.config().stream_patience;
            let client = Client { tx: &tx, closing: &closing, patience };
            follow(&log, &tenant, Position(from), types.as_ref(), &client);
        })
        .map_err(|e| ApiError::internal(&e))?;
    // The tenant's stream slot is held by the response, for as long as its connection sends
    // it: a reader thread that cut its client off does not free it while the client holds on.
    let stream = futures_util::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        rx.recv().await.map(|event| (Ok(event), (rx, slot)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The event types wanted, or `None` for every type. An empty set would match nothing, which
/// no client means by an empty `types=`: that is no filter, like no `types` at all.
fn parse_types(types: Option<&str>) -> Result<Option<HashSet<EventType>>, ApiError> {
    let Some(types) = types else { return Ok(None) };
    let wanted = types
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            EventType::from_name(name)
                .filter(|t| !matches!(t, EventType::CommandAccepted | EventType::Decision))
                .ok_or_else(|| {
                    ApiError::validation("types", format!("unknown event type {}", echo(name)))
                })
        })
        .collect::<Result<HashSet<_>, _>>()?;
    Ok((!wanted.is_empty()).then_some(wanted))
}

/// Where a stream's reader thread sends its client's events.
struct Client<'a> {
    tx: &'a mpsc::Sender<SseEvent>,
    closing: &'a dyn Fn() -> bool,
    /// How long a full buffer may go without the client taking an event.
    patience: Duration,
}

impl Client<'_> {
    /// Whether the client is still there and the server is not closing.
    fn wanted(&self) -> bool {
        !self.tx.is_closed() && !(self.closing)()
    }

    /// Room for `n` events, waited for while the client takes events (the thread is the
    /// stream's own: waiting holds up no commit); `None` once the client has left, the server
    /// closes, or the client took nothing for [`Client::patience`].
    fn room(&self, n: usize) -> Option<mpsc::PermitIterator<'_, SseEvent>> {
        let mut waiting_since: Option<(Instant, usize)> = None;
        loop {
            match self.tx.try_reserve_many(n) {
                Ok(permits) => return Some(permits),
                Err(TrySendError::Closed(())) => return None,
                Err(TrySendError::Full(())) => {}
            }
            let free = self.tx.capacity();
            // The clock restarts whenever the client took something since the last look.
            let since = match waiting_since {
                Some((since, was_free)) if free <= was_free => since,
                _ => Instant::now(),
            };
            if since.elapsed() >= self.patience || !self.wanted() {
                return None;
            }
            waiting_since = Some((since, free));
            std::thread::sleep(ROOM_CHECK);
        }
    }
}

/// How often a reader thread waiting for its client's buffer looks again.
const ROOM_CHECK: Duration = Duration::from_millis(5);

/// The reader thread of one stream: follows the log from `from`, sends the tenant's events of
/// the wanted types, and ends when the client leaves, takes nothing from its full buffer for
/// the stream's patience, or the server closes.
fn follow(
    log: &LogReader,
    tenant: &TenantId,
    from: Position,
    types: Option<&HashSet<EventType>>,
    client: &Client<'_>,
) {
    let prefix = format!("{tenant}/");
    let mut records = log.subscribe(from);
    // The last record read (every one before it too), and the last id the client was sent.
    let mut read = from.0.checked_sub(1);
    let (mut named, mut named_at) = (None, None::<Instant>);
    while client.wanted() {
        if read > named && named_at.is_none_or(|at| at.elapsed() >= MARK_EVERY) {
            // Behind the events already queued, so it names no position the client lacks;
            // with no room it waits for the next mark.
            let at = read.expect("past what was named");
            if client.tx.try_send(SseEvent::default().id(at.to_string())).is_ok() {
                (named, named_at) = (read, Some(Instant::now()));
            }
        }
        let record = match records.next_timeout(IDLE_CHECK) {
            None => continue,
            Some(Ok(record)) => record,
            Some(Err(e)) => {
                tracing::warn!("event stream of {tenant} stopped: {e}");
                return;
            }
        };
        read = Some(record.position.0);
        // Other tenants' records are skipped before decoding.
        if !record.stream.starts_with(prefix.as_bytes()) {
            continue;
        }
        let events = match CommittedEvent::decode_record(&record) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("event stream of {tenant} stopped at {}: {e}", record.position);
                return;
            }
        };
        let wanted: Vec<(usize, CommittedEvent)> = events
            .into_iter()
            .enumerate()
            .filter(|(_, e)| types.is_none_or(|types| types.contains(&EventType::of(&e.event))))
            .collect();
        let Some(last) = wanted.len().checked_sub(1) else { continue };
        // A record's events go out together or not at all, and only the last carries the id:
        // a client resuming with `Last-Event-ID` resumes after a whole record.
        let Some(permits) = client.room(wanted.len()) else {
            if client.wanted() {
                tracing::info!("event stream of {tenant} cut off: the client took nothing");
            }
            return;
        };
        for ((i, (index, event)), permit) in wanted.iter().enumerate().zip(permits) {
            let mut sse = SseEvent::default().data(event_json(event, *index).to_string());
            if i == last {
                sse = sse.id(event.position.0.to_string());
            }
            permit.send(sse);
        }
        (named, named_at) = (read, Some(Instant::now()));
    }
}
