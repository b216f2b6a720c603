//! The event codec: domain events to log records and back.
//!
//! The engine writes one **decision record** per decided command ([`encode_decision`]): on the
//! stream of the aggregate the command was about (`{tenant}/o/{order}`, `{tenant}/i/{sku}`,
//! `{tenant}/p/{payment}`; ids cannot contain `/`), holding every event the command decided,
//! each with its own event type (stable codes in [`EventType`]), aggregate id and payload, and
//! the command's idempotency key. One record per command rather than per event keeps the
//! log's per-record work (checksum, hash chain, index) per decision: placing an order of five
//! lines is one record, not seven.
//!
//! Logs written before decision records hold one record per event ([`encode_event`]) and a
//! `CommandAccepted` record per key; both stay readable. Payloads are rkyv bytes of a frozen
//! schema version: [`v1`], and [`v2`], which added the gateway's reference to an authorization
//! (version 3 writes v2's payloads, its keys' fingerprints made by another hash:
//! [`Fingerprint`]). Decoding dispatches on (event type, schema version), so an old version
//! stays readable through an upcaster (a v1 authorization decodes with no reference).

mod fingerprint;
pub mod v1;
pub mod v2;
mod write;

pub use fingerprint::{Fingerprint, FingerprintHash, fingerprint, fingerprint_by, fingerprint_of};

use crate::domain::{
    CancelReason, Currency, CustomerId, DeclineReason, Event, GatewayId, GatewayReference,
    IdempotencyKey, InvalidValue, InventoryEvent, Money, OrderEvent, OrderId, OrderLine,
    PaymentEvent, PaymentId, Quantity, Sku, TenantId, Timestamp,
};

/// The schema version every event is written with today. Version 2 added the gateway's
/// reference to `PaymentAuthorized` ([`v2`]). Version 3 changed no payload (its payloads
/// are version 2's, byte for byte): the fingerprints of its idempotency keys are made by
/// xxh3, those of earlier versions by blake3 ([`Fingerprint`]). Every version before it
/// stays readable.
pub const CURRENT_SCHEMA: u16 = 3;

/// The first schema version whose fingerprints are made by xxh3.
const XXH3_FINGERPRINTS: u16 = 3;
const _: () = assert!(
    CURRENT_SCHEMA == XXH3_FINGERPRINTS,
    "a new schema version: see `schema_for`, which writes version 2's payloads as today's"
);

/// The schema version a record holding `key`'s fingerprint is written with: the current
/// one, or version 2 for a fingerprint made by blake3 (the payloads are the same).
///
/// Only while they are the same: a schema after 3 that changes a payload must decide how a
/// blake3 fingerprint is written with it (the engine makes none; tests and tools that write
/// an older engine's records do).
fn schema_for(fingerprint: Option<Fingerprint>) -> u16 {
    match fingerprint.map(|f| f.hash()) {
        Some(FingerprintHash::Blake3) => XXH3_FINGERPRINTS - 1,
        Some(FingerprintHash::Xxh3) | None => CURRENT_SCHEMA,
    }
}

/// The fingerprint `bytes` held by a record of schema `version`.
fn fingerprint_in(version: u16, bytes: [u8; 16]) -> Fingerprint {
    let hash =
        if version < XXH3_FINGERPRINTS { FingerprintHash::Blake3 } else { FingerprintHash::Xxh3 };
    Fingerprint::from_bytes(hash, bytes)
}

/// Stable event type codes: part of the log format, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[allow(missing_docs, reason = "each variant is the event of the same name")]
pub enum EventType {
    StockReceived = 1,
    StockAdjusted = 2,
    StockHeld = 3,
    StockCommitted = 4,
    StockReleased = 5,
    HoldExpired = 6,
    OrderPlaced = 20,
    OrderConfirmed = 21,
    OrderShipped = 22,
    OrderDelivered = 23,
    OrderCancelled = 24,
    OrderRefunded = 25,
    PaymentAuthorized = 40,
    PaymentDeclined = 41,
    PaymentCaptured = 42,
    PaymentVoided = 43,
    PaymentRefunded = 44,
    /// Not a domain event: the engine's record of an idempotency key (see `engine`), in logs
    /// written before decision records.
    CommandAccepted = 60,
    /// Not one event: every event one command decided, and its idempotency key.
    Decision = 70,
}

impl EventType {
    const ALL: [EventType; 19] = [
        EventType::StockReceived,
        EventType::StockAdjusted,
        EventType::StockHeld,
        EventType::StockCommitted,
        EventType::StockReleased,
        EventType::HoldExpired,
        EventType::OrderPlaced,
        EventType::OrderConfirmed,
        EventType::OrderShipped,
        EventType::OrderDelivered,
        EventType::OrderCancelled,
        EventType::OrderRefunded,
        EventType::PaymentAuthorized,
        EventType::PaymentDeclined,
        EventType::PaymentCaptured,
        EventType::PaymentVoided,
        EventType::PaymentRefunded,
        EventType::CommandAccepted,
        EventType::Decision,
    ];

    /// The type with this code, if any.
    #[must_use]
    pub fn from_code(code: u16) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| *t as u16 == code)
    }

    /// The type named `name` by [`EventType::name`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The type of a domain event.
    #[must_use]
    pub fn of(event: &Event) -> EventType {
        use InventoryEvent as I;
        use OrderEvent as O;
        use PaymentEvent as P;
        match event {
            Event::Inventory { event, .. } => match event {
                I::StockReceived { .. } => EventType::StockReceived,
                I::StockAdjusted { .. } => EventType::StockAdjusted,
                I::StockHeld { .. } => EventType::StockHeld,
                I::StockCommitted { .. } => EventType::StockCommitted,
                I::StockReleased { .. } => EventType::StockReleased,
                I::HoldExpired { .. } => EventType::HoldExpired,
            },
            Event::Order { event, .. } => match event {
                O::OrderPlaced { .. } => EventType::OrderPlaced,
                O::OrderConfirmed { .. } => EventType::OrderConfirmed,
                O::OrderShipped => EventType::OrderShipped,
                O::OrderDelivered => EventType::OrderDelivered,
                O::OrderCancelled { .. } => EventType::OrderCancelled,
                O::OrderRefunded { .. } => EventType::OrderRefunded,
            },
            Event::Payment { event, .. } => match event {
                P::PaymentAuthorized { .. } => EventType::PaymentAuthorized,
                P::PaymentDeclined { .. } => EventType::PaymentDeclined,
                P::PaymentCaptured { .. } => EventType::PaymentCaptured,
                P::PaymentVoided => EventType::PaymentVoided,
                P::PaymentRefunded { .. } => EventType::PaymentRefunded,
            },
        }
    }

    /// Stable snake_case name, as the API and audit show it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            EventType::StockReceived => "stock_received",
            EventType::StockAdjusted => "stock_adjusted",
            EventType::StockHeld => "stock_held",
            EventType::StockCommitted => "stock_committed",
            EventType::StockReleased => "stock_released",
            EventType::HoldExpired => "hold_expired",
            EventType::OrderPlaced => "order_placed",
            EventType::OrderConfirmed => "order_confirmed",
            EventType::OrderShipped => "order_shipped",
            EventType::OrderDelivered => "order_delivered",
            EventType::OrderCancelled => "order_cancelled",
            EventType::OrderRefunded => "order_refunded",
            EventType::PaymentAuthorized => "payment_authorized",
            EventType::PaymentDeclined => "payment_declined",
            EventType::PaymentCaptured => "payment_captured",
            EventType::PaymentVoided => "payment_voided",
            EventType::PaymentRefunded => "payment_refunded",
            EventType::CommandAccepted => "command_accepted",
            EventType::Decision => "decision",
        }
    }
}

/// A record's fields as the log stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The stream id: tenant and aggregate.
    pub stream: Vec<u8>,
    /// An [`EventType`] code.
    pub event_type: u16,
    /// The payload's schema version.
    pub schema_version: u16,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Encoded {
    /// The log record of these fields, admitted at `at`, appended whatever its stream's
    /// version (the engine is the log's only appender).
    #[must_use]
    pub fn into_record(self, at: Timestamp) -> orderly_store::NewRecord {
        orderly_store::NewRecord {
            stream: self.stream,
            expected: orderly_store::Expected::Any,
            event_type: self.event_type,
            schema_version: self.schema_version,
            timestamp: at.0,
            payload: self.payload,
        }
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A domain event of `tenant`.
    Event {
        /// The tenant.
        tenant: TenantId,
        /// The event.
        event: Event,
    },
    /// The engine's record that a command with an idempotency key was accepted; the command's
    /// `events` events follow it in the same batch.
    CommandAccepted {
        /// The tenant.
        tenant: TenantId,
        /// The key.
        key: IdempotencyKey,
        /// Fingerprint of the command first sent with the key.
        fingerprint: Fingerprint,
        /// How many events the command recorded.
        events: u32,
    },
    /// Everything one command decided, with its idempotency key.
    Decision {
        /// The tenant.
        tenant: TenantId,
        /// The command's key and fingerprint, if it carried a key.
        key: Option<(IdempotencyKey, Fingerprint)>,
        /// The events, in the order they were decided.
        events: Vec<Event>,
    },
}

impl Decoded {
    /// The tenant the record belongs to.
    #[must_use]
    pub fn tenant(&self) -> &TenantId {
        match self {
            Decoded::Event { tenant, .. }
            | Decoded::CommandAccepted { tenant, .. }
            | Decoded::Decision { tenant, .. } => tenant,
        }
    }

    /// The domain events the record holds: one, none (a key record) or a decision's.
    #[must_use]
    pub fn events(&self) -> &[Event] {
        match self {
            Decoded::Event { event, .. } => std::slice::from_ref(event),
            Decoded::CommandAccepted { .. } => &[],
            Decoded::Decision { events, .. } => events,
        }
    }

    /// The domain events, owned.
    #[must_use]
    pub fn into_events(self) -> Vec<Event> {
        match self {
            Decoded::Event { event, .. } => vec![event],
            Decoded::CommandAccepted { .. } => Vec::new(),
            Decoded::Decision { events, .. } => events,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An event type or schema version this build does not know.
    #[error("unknown event type {event_type} schema version {schema_version}")]
    UnknownType {
        /// The record's event type.
        event_type: u16,
        /// The record's schema version.
        schema_version: u16,
    },
    /// A schema version after this build's: the record was written by a newer orderly (a
    /// folder opened again by the release before an upgrade), not damaged.
    #[error(
        "written by a newer orderly: schema version {schema_version}, this build reads up to {CURRENT_SCHEMA}"
    )]
    NewerSchema {
        /// The record's schema version.
        schema_version: u16,
    },
    /// The stream id does not name a tenant and an aggregate of the event's kind.
    #[error("malformed stream id {0:?}")]
    BadStream(String),
    /// The payload does not validate against its schema.
    #[error("payload does not match its schema: {0}")]
    BadPayload(String),
    /// The payload holds a value outside the domain's rules.
    #[error("payload holds an invalid value: {0}")]
    InvalidValue(#[from] InvalidValue),
}

fn stream(tenant: &TenantId, kind: &str, id: &str) -> Vec<u8> {
    let mut s = Vec::with_capacity(tenant.as_str().len() + kind.len() + id.len() + 2);
    write_stream(tenant, kind, id, &mut s);
    s
}

fn write_stream(tenant: &TenantId, kind: &str, id: &str, s: &mut Vec<u8>) {
    s.extend_from_slice(tenant.as_str().as_bytes());
    s.push(b'/');
    s.extend_from_slice(kind.as_bytes());
    if !id.is_empty() {
        s.push(b'/');
        s.extend_from_slice(id.as_bytes());
    }
}

/// The record of one domain event of `tenant`.
#[must_use]
pub fn encode_event(tenant: &TenantId, event: &Event) -> Encoded {
    let (kind, id) = aggregate_of(event);
    let mut payload = Vec::with_capacity(64);
    write_payload(&mut write::Out::new(&mut payload), event);
    Encoded {
        stream: stream(tenant, kind, id),
        event_type: EventType::of(event) as u16,
        schema_version: CURRENT_SCHEMA,
        payload,
    }
}

/// Writes the payload of `event` in the current schema version (without its aggregate id,
/// which the record names).
fn write_payload(out: &mut write::Out<'_>, event: &Event) {
    use InventoryEvent as I;
    use OrderEvent as O;
    use PaymentEvent as P;
    match event {
        Event::Inventory { event, .. } => match event {
            I::StockReceived { quantity } => out.stock_received(q(*quantity)),
            I::StockAdjusted { delta } => out.stock_adjusted(*delta),
            I::StockHeld { order, quantity, expires_at } => {
                out.stock_held(order.as_str(), q(*quantity), expires_at.0);
            }
            I::StockCommitted { order, quantity }
            | I::StockReleased { order, quantity }
            | I::HoldExpired { order, quantity } => out.hold_closed(order.as_str(), q(*quantity)),
        },
        Event::Order { event, .. } => match event {
            O::OrderPlaced { customer, currency, lines, total, hold_expires_at } => out
                .order_placed(
                    customer.as_str(),
                    currency_bytes(*currency),
                    lines.iter().map(|l| (l.sku.as_str(), q(l.quantity), l.unit_price)),
                    *total,
                    hold_expires_at.0,
                ),
            O::OrderConfirmed { payment } => out.order_confirmed(payment.as_str()),
            O::OrderShipped | O::OrderDelivered => {}
            O::OrderCancelled { reason } => out.order_cancelled(cancel_code(*reason)),
            O::OrderRefunded { amount } => out.amount(*amount),
        },
        Event::Payment { event, .. } => match event {
            P::PaymentAuthorized { order, amount, gateway, reference } => out.payment_started(
                order.as_str(),
                amount.minor,
                currency_bytes(amount.currency),
                gateway.as_str(),
                0,
                reference.as_ref().map_or("", GatewayReference::as_str),
            ),
            P::PaymentDeclined { order, amount, gateway, reason } => out.payment_started(
                order.as_str(),
                amount.minor,
                currency_bytes(amount.currency),
                gateway.as_str(),
                decline_code(*reason),
                "",
            ),
            P::PaymentCaptured { amount } | P::PaymentRefunded { amount } => out.amount(*amount),
            P::PaymentVoided => {}
        },
    }
}

/// The engine's record that `key` was accepted with a command of `fingerprint` that recorded
/// `events` events.
#[must_use]
pub fn encode_command_accepted(
    tenant: &TenantId,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    events: u32,
) -> Encoded {
    let accepted =
        v1::CommandAccepted { key: key.to_string(), fingerprint: fingerprint.bytes(), events };
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&accepted)
        .expect("plain data always serializes")
        .to_vec();
    Encoded {
        stream: stream(tenant, "k", ""),
        event_type: EventType::CommandAccepted as u16,
        schema_version: schema_for(Some(fingerprint)),
        payload,
    }
}

/// The one record of everything a command of `tenant` decided: `events` (at least one), on
/// the stream of the first event's aggregate (the one the command was about), with the
/// command's idempotency key and fingerprint (of the current schema version, or of version 2
/// for a fingerprint made by blake3).
#[must_use]
pub fn encode_decision(
    tenant: &TenantId,
    key: Option<(&IdempotencyKey, Fingerprint)>,
    events: &[Event],
) -> Encoded {
    let mut encoded = Encoded {
        stream: Vec::new(),
        event_type: EventType::Decision as u16,
        schema_version: schema_for(key.map(|(_, f)| f)),
        payload: Vec::new(),
    };
    write_decision(tenant, key, events, &mut encoded.stream, &mut encoded.payload);
    encoded
}

/// [`encode_decision`] into `record`, admitted at `at`, reusing its buffers: for a caller that
/// writes records by the thousand, such as the engine's decision thread.
pub fn encode_decision_into(
    tenant: &TenantId,
    key: Option<(&IdempotencyKey, Fingerprint)>,
    events: &[Event],
    at: Timestamp,
    record: &mut orderly_store::NewRecord,
) {
    record.stream.clear();
    record.payload.clear();
    write_decision(tenant, key, events, &mut record.stream, &mut record.payload);
    record.expected = orderly_store::Expected::Any;
    record.event_type = EventType::Decision as u16;
    record.schema_version = schema_for(key.map(|(_, f)| f));
    record.timestamp = at.0;
}

fn write_decision(
    tenant: &TenantId,
    key: Option<(&IdempotencyKey, Fingerprint)>,
    events: &[Event],
    stream_out: &mut Vec<u8>,
    payload: &mut Vec<u8>,
) {
    assert!(!events.is_empty(), "a decision records at least one event");
    let (kind, id) = aggregate_of(&events[0]);
    // Room for the usual decision without growing: the key, and per event its framing, a
    // short id and a small payload, or per line of a new order.
    let lines: usize = events
        .iter()
        .map(|e| match e {
            Event::Order { event: OrderEvent::OrderPlaced { lines, .. }, .. } => lines.len(),
            _ => 0,
        })
        .sum();
    payload.reserve(64 + 64 * events.len() + 32 * lines);
    write::Out::new(payload).decision(
        key.map(|(key, fingerprint)| (key.as_str(), fingerprint.bytes())),
        events,
        |event| (EventType::of(event) as u16, aggregate_of(event).1),
        write_payload,
    );
    write_stream(tenant, kind, id, stream_out);
}

/// The stream kind (`i`, `o`, `p`) and id of an event's aggregate.
fn aggregate_of(event: &Event) -> (&'static str, &str) {
    match event {
        Event::Inventory { sku, .. } => ("i", sku.as_str()),
        Event::Order { order, .. } => ("o", order.as_str()),
        Event::Payment { payment, .. } => ("p", payment.as_str()),
    }
}

/// Decodes one record as the log stores it ([`decode`] of its fields).
pub fn decode_stored(record: &orderly_store::Record) -> Result<Decoded, DecodeError> {
    decode(&record.stream, record.event_type, record.schema_version, &record.payload)
}

/// Decodes one record.
pub fn decode(
    stream_id: &[u8],
    event_type: u16,
    schema_version: u16,
    payload: &[u8],
) -> Result<Decoded, DecodeError> {
    // A newer orderly's record may be of a type this build has never heard of, too.
    if schema_version > CURRENT_SCHEMA {
        return Err(DecodeError::NewerSchema { schema_version });
    }
    let unknown = DecodeError::UnknownType { event_type, schema_version };
    let Some(kind) = EventType::from_code(event_type) else { return Err(unknown) };
    if schema_version == 0 {
        return Err(unknown);
    }
    let bad_stream = || DecodeError::BadStream(String::from_utf8_lossy(stream_id).into_owned());
    let text = std::str::from_utf8(stream_id).map_err(|_| bad_stream())?;
    let (tenant, rest) = split_at_slash(text).ok_or_else(bad_stream)?;
    let (aggregate, id) = split_at_slash(rest).unwrap_or((rest, ""));
    let tenant = TenantId::new(tenant)?;
    let expected_aggregate = match kind as u16 {
        1..=19 => "i",
        20..=39 => "o",
        40..=59 => "p",
        60 => "k",
        // A decision is on the stream of the aggregate its command was about.
        _ => aggregate,
    };
    if aggregate != expected_aggregate || !matches!(aggregate, "i" | "o" | "p" | "k") {
        return Err(bad_stream());
    }
    use EventType as T;
    match kind {
        T::CommandAccepted => {
            let p = access::<v1::ArchivedCommandAccepted>(payload)?;
            Ok(Decoded::CommandAccepted {
                tenant,
                key: IdempotencyKey::new(p.key.as_str())?,
                fingerprint: fingerprint_in(schema_version, p.fingerprint),
                events: p.events.to_native(),
            })
        }
        T::Decision => decode_decision(tenant, schema_version, payload),
        _ => Ok(Decoded::Event {
            tenant,
            event: {
                let mut one = Vec::with_capacity(1);
                decode_event(kind, schema_version, id, payload, &mut Ids::default(), &mut one)?;
                one.pop().expect("one event decoded")
            },
        }),
    }
}

/// `text` before and after its first `/`. A byte loop: the parts of a stream id are short, and
/// `str::split_once` measured slower, searching for a `char`.
fn split_at_slash(text: &str) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == b'/')?;
    Some((&text[..at], &text[at + 1..]))
}

/// Decodes a decision of `tenant` (its key and events) from its payload of `version` (the
/// decision's own layout is the same in every version; its events' payloads are of
/// `version`).
///
/// The decision is validated once and read in place; each event's own payload is a byte
/// slice inside it, validated and read in place as well, so nothing is copied on the way to
/// the domain values.
fn decode_decision(tenant: TenantId, version: u16, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let p = access::<v1::ArchivedDecision>(payload)?;
    let key = p
        .key
        .as_ref()
        .map(|k| {
            let fingerprint = fingerprint_in(version, k.fingerprint);
            Ok::<_, DecodeError>((IdempotencyKey::new(k.key.as_str())?, fingerprint))
        })
        .transpose()?;
    if p.events.is_empty() {
        return Err(DecodeError::BadPayload("a decision without events".into()));
    }
    // Events of one decision name the same order, payment and SKUs again and again (an
    // order's holds, its confirmation): each id is made once and shared.
    let mut ids = Ids::default();
    // Sized once: collecting `Result`s would grow the vector from four events, moving them.
    let mut events = Vec::with_capacity(p.events.len());
    for e in p.events.iter() {
        let event_type = e.event_type.to_native();
        let unknown = DecodeError::UnknownType { event_type, schema_version: version };
        let kind = EventType::from_code(event_type).ok_or(unknown)?;
        let payload = e.payload.as_slice();
        decode_event(kind, version, e.aggregate.as_str(), payload, &mut ids, &mut events)?;
    }
    Ok(Decoded::Decision { tenant, key, events })
}

/// Decodes one domain event of `kind` of the aggregate `id` from its payload of `version` onto
/// the end of `out` (returning it, each event was copied once more on its way into a decision's
/// events: 3% of the audit's verify pass).
fn decode_event(
    kind: EventType,
    version: u16,
    id: &str,
    payload: &[u8],
    ids: &mut Ids,
    out: &mut Vec<Event>,
) -> Result<(), DecodeError> {
    use EventType as T;
    match kind {
        T::StockReceived
        | T::StockAdjusted
        | T::StockHeld
        | T::StockCommitted
        | T::StockReleased
        | T::HoldExpired => {
            let sku = ids.sku(id)?;
            out.push(Event::Inventory { sku, event: inventory_event(kind, payload, ids)? });
        }
        T::OrderPlaced
        | T::OrderConfirmed
        | T::OrderShipped
        | T::OrderDelivered
        | T::OrderCancelled
        | T::OrderRefunded => {
            let order = ids.order(id)?;
            out.push(Event::Order { order, event: order_event(kind, payload, ids)? });
        }
        T::PaymentAuthorized
        | T::PaymentDeclined
        | T::PaymentCaptured
        | T::PaymentVoided
        | T::PaymentRefunded => {
            let event = payment_event(kind, version, payload, ids)?;
            out.push(Event::Payment { payment: ids.payment(id)?, event });
        }
        T::CommandAccepted | T::Decision => {
            return Err(DecodeError::UnknownType { event_type: kind as u16, schema_version: 1 });
        }
    }
    Ok(())
}

/// An inventory event of `kind` (one of the stock types) from its payload (v1 in every version).
fn inventory_event(
    kind: EventType,
    payload: &[u8],
    ids: &mut Ids,
) -> Result<InventoryEvent, DecodeError> {
    use EventType as T;
    Ok(match kind {
        T::StockReceived => {
            let p = access::<v1::ArchivedStockReceived>(payload)?;
            InventoryEvent::StockReceived { quantity: quantity(p.quantity.to_native())? }
        }
        T::StockAdjusted => InventoryEvent::StockAdjusted {
            delta: access::<v1::ArchivedStockAdjusted>(payload)?.delta.to_native(),
        },
        T::StockHeld => {
            let p = access::<v1::ArchivedStockHeld>(payload)?;
            InventoryEvent::StockHeld {
                order: ids.order(p.order.as_str())?,
                quantity: quantity(p.quantity.to_native())?,
                expires_at: Timestamp(p.expires_at.to_native()),
            }
        }
        _ => {
            let p = access::<v1::ArchivedHoldClosed>(payload)?;
            let order = ids.order(p.order.as_str())?;
            let quantity = quantity(p.quantity.to_native())?;
            match kind {
                T::StockCommitted => InventoryEvent::StockCommitted { order, quantity },
                T::StockReleased => InventoryEvent::StockReleased { order, quantity },
                _ => InventoryEvent::HoldExpired { order, quantity },
            }
        }
    })
}

/// An order event of `kind` (one of the order types) from its payload (v1 in every version).
fn order_event(kind: EventType, payload: &[u8], ids: &mut Ids) -> Result<OrderEvent, DecodeError> {
    use EventType as T;
    Ok(match kind {
        T::OrderPlaced => {
            let p = access::<v1::ArchivedOrderPlaced>(payload)?;
            // Sized once: collecting `Result`s starts at four lines and grows.
            let mut lines = Vec::with_capacity(p.lines.len());
            for l in p.lines.iter() {
                lines.push(OrderLine {
                    sku: ids.sku(l.sku.as_str())?,
                    quantity: quantity(l.quantity.to_native())?,
                    unit_price: l.unit_price.to_native(),
                });
            }
            OrderEvent::OrderPlaced {
                customer: CustomerId::new(p.customer.as_str())?,
                currency: currency(p.currency)?,
                lines,
                total: p.total.to_native(),
                hold_expires_at: Timestamp(p.hold_expires_at.to_native()),
            }
        }
        T::OrderConfirmed => OrderEvent::OrderConfirmed {
            payment: ids
                .payment(access::<v1::ArchivedOrderConfirmed>(payload)?.payment.as_str())?,
        },
        T::OrderShipped => OrderEvent::OrderShipped,
        T::OrderDelivered => OrderEvent::OrderDelivered,
        T::OrderCancelled => OrderEvent::OrderCancelled {
            reason: cancel_reason(access::<v1::ArchivedOrderCancelled>(payload)?.reason)?,
        },
        _ => OrderEvent::OrderRefunded { amount: amount(payload)? },
    })
}

/// A payment event of `kind` (one of the payment types) from its payload of `version`.
fn payment_event(
    kind: EventType,
    version: u16,
    payload: &[u8],
    ids: &mut Ids,
) -> Result<PaymentEvent, DecodeError> {
    use EventType as T;
    Ok(match kind {
        T::PaymentAuthorized | T::PaymentDeclined => {
            let Started { order, minor, currency: code, gateway, reason, reference } =
                payment_started(version, payload)?;
            let order = ids.order(order)?;
            let amount = Money::new(minor, currency(code)?);
            let gateway = GatewayId::new(gateway)?;
            if kind == T::PaymentAuthorized {
                let reference = match reference {
                    "" => None,
                    text => Some(GatewayReference::new(text)?),
                };
                PaymentEvent::PaymentAuthorized { order, amount, gateway, reference }
            } else if reference.is_empty() {
                let reason = decline_reason(reason)?;
                PaymentEvent::PaymentDeclined { order, amount, gateway, reason }
            } else {
                return Err(DecodeError::BadPayload("a decline with a reference".into()));
            }
        }
        T::PaymentCaptured => PaymentEvent::PaymentCaptured { amount: amount(payload)? },
        T::PaymentVoided => PaymentEvent::PaymentVoided,
        _ => PaymentEvent::PaymentRefunded { amount: amount(payload)? },
    })
}

/// The fields of a `PaymentStarted` payload, of either version.
struct Started<'a> {
    order: &'a str,
    minor: u64,
    currency: [u8; 3],
    gateway: &'a str,
    reason: u8,
    /// Empty for none.
    reference: &'a str,
}

/// A `PaymentStarted` payload of `version`: version 1 is version 2 without a reference, and
/// reading it so is its whole upcaster.
fn payment_started(version: u16, payload: &[u8]) -> Result<Started<'_>, DecodeError> {
    Ok(if version == 1 {
        let p = access::<v1::ArchivedPaymentStarted>(payload)?;
        Started {
            order: p.order.as_str(),
            minor: p.amount.to_native(),
            currency: p.currency,
            gateway: p.gateway.as_str(),
            reason: p.reason,
            reference: "",
        }
    } else {
        let p = access::<v2::ArchivedPaymentStarted>(payload)?;
        Started {
            order: p.order.as_str(),
            minor: p.amount.to_native(),
            currency: p.currency,
            gateway: p.gateway.as_str(),
            reason: p.reason,
            reference: p.reference.as_str(),
        }
    })
}

/// The ids one record's events have made so far, to share rather than make again.
///
/// A decision names its order, payment and SKUs in several events: placing an order names the
/// order in its event and in every hold, and each line's SKU again as the aggregate of the
/// hold. Sharing them saves an allocation each, and the state built from the events keeps one
/// copy. Only the last order and payment are remembered (a decision is about one of each), and
/// the first [`SKUS_SHARED`] SKUs of the record: a bound on the linear search, whatever a
/// damaged record holds.
#[derive(Debug, Default)]
struct Ids {
    order: Option<OrderId>,
    payment: Option<PaymentId>,
    /// On the stack, so that decoding a record allocates nothing for them.
    skus: [Option<Sku>; SKUS_SHARED],
}

/// SKUs of a record that [`Ids`] shares: most orders have fewer lines, and a SKU after them is
/// made anew each time it is named (correct, only not shared).
const SKUS_SHARED: usize = 8;

impl Ids {
    fn order(&mut self, text: &str) -> Result<OrderId, DecodeError> {
        reuse(&mut self.order, text, OrderId::as_str, OrderId::new)
    }

    fn payment(&mut self, text: &str) -> Result<PaymentId, DecodeError> {
        reuse(&mut self.payment, text, PaymentId::as_str, PaymentId::new)
    }

    fn sku(&mut self, text: &str) -> Result<Sku, DecodeError> {
        for slot in &mut self.skus {
            match slot {
                Some(sku) if sku.as_str() == text => return Ok(sku.clone()),
                Some(_) => {}
                None => return Ok(slot.insert(Sku::new(text)?).clone()),
            }
        }
        Ok(Sku::new(text)?)
    }
}

/// The id in `slot` if it reads `text`; otherwise a new one from `text`, kept in `slot`.
fn reuse<T: Clone>(
    slot: &mut Option<T>,
    text: &str,
    as_str: fn(&T) -> &str,
    new: fn(&str) -> Result<T, InvalidValue>,
) -> Result<T, DecodeError> {
    if let Some(id) = slot.as_ref().filter(|id| as_str(id) == text) {
        return Ok(id.clone());
    }
    let id = new(text)?;
    *slot = Some(id.clone());
    Ok(id)
}

/// The amount of an `Amount` payload.
fn amount(payload: &[u8]) -> Result<u64, DecodeError> {
    Ok(access::<v1::ArchivedAmount>(payload)?.amount.to_native())
}

/// Validates `payload` as an archived `T` and borrows it in place.
///
/// The format's `unaligned` feature gives every archived type an alignment of 1, so a payload
/// may start at any byte of a record (it does: the log packs records without padding). The
/// low-level validator suffices because the v1 types hold no shared pointers.
fn access<T>(payload: &[u8]) -> Result<&T, DecodeError>
where
    T: rkyv::Portable
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::low::LowValidator<'a, rkyv::rancor::Error>>,
{
    rkyv::api::low::access::<T, rkyv::rancor::Error>(payload)
        .map_err(|e| DecodeError::BadPayload(e.to_string()))
}

fn q(quantity: Quantity) -> u32 {
    u32::try_from(quantity.get()).expect("a quantity fits u32 by its limit")
}

fn quantity(value: u32) -> Result<Quantity, DecodeError> {
    Ok(Quantity::new(u64::from(value))?)
}

fn currency_bytes(currency: Currency) -> [u8; 3] {
    currency.as_str().as_bytes().try_into().expect("a currency is three bytes")
}

fn currency(bytes: [u8; 3]) -> Result<Currency, DecodeError> {
    let currency = match std::str::from_utf8(&bytes) {
        Ok(code) => Currency::new(code),
        // A lossy copy only to name bytes that are not text.
        Err(_) => Currency::new(&String::from_utf8_lossy(&bytes)),
    };
    Ok(currency?)
}

fn cancel_code(reason: CancelReason) -> u8 {
    match reason {
        CancelReason::Requested => 0,
        CancelReason::PaymentDeclined => 1,
        CancelReason::HoldExpired => 2,
    }
}

fn cancel_reason(code: u8) -> Result<CancelReason, DecodeError> {
    match code {
        0 => Ok(CancelReason::Requested),
        1 => Ok(CancelReason::PaymentDeclined),
        2 => Ok(CancelReason::HoldExpired),
        _ => Err(DecodeError::BadPayload(format!("unknown cancel reason {code}"))),
    }
}

fn decline_code(reason: DeclineReason) -> u8 {
    match reason {
        DeclineReason::Refused => 0,
        DeclineReason::GatewayUnavailable => 1,
    }
}

fn decline_reason(code: u8) -> Result<DeclineReason, DecodeError> {
    match code {
        0 => Ok(DeclineReason::Refused),
        1 => Ok(DeclineReason::GatewayUnavailable),
        _ => Err(DecodeError::BadPayload(format!("unknown decline reason {code}"))),
    }
}
