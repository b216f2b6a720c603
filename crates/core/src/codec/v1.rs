//! Schema version 1 of every event payload: frozen.
//!
//! **Never edit a type in this file once released**: its archived bytes are what logs hold. A
//! change is a new module (as [`v2`](super::v2) is) with new types, an upcaster from the older
//! version to the current domain event, and golden bytes for each
//! (`crates/core/tests/codec/golden_v1.txt`, `golden_v2.txt`). The aggregate id and tenant
//! are in the record's stream id, not repeated here.

use rkyv::{Archive, Deserialize, Serialize};

/// Payload of `StockReceived`.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct StockReceived {
    pub quantity: u32,
}

/// Payload of `StockAdjusted`.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct StockAdjusted {
    pub delta: i64,
}

/// Payload of `StockHeld`.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct StockHeld {
    pub order: String,
    pub quantity: u32,
    pub expires_at: u64,
}

/// Payload of `StockCommitted`, `StockReleased` and `HoldExpired`: a hold that closed.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct HoldClosed {
    pub order: String,
    pub quantity: u32,
}

/// One line of `OrderPlaced`.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
}

/// Payload of `OrderPlaced`.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct OrderPlaced {
    pub customer: String,
    pub currency: [u8; 3],
    pub lines: Vec<Line>,
    pub total: u64,
    pub hold_expires_at: u64,
}

/// Payload of `OrderConfirmed`.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct OrderConfirmed {
    pub payment: String,
}

/// Payload of `OrderCancelled`: 0 requested, 1 payment declined, 2 hold expired.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct OrderCancelled {
    pub reason: u8,
}

/// Payload of `OrderRefunded`, `PaymentCaptured` and `PaymentRefunded`: an amount in the
/// aggregate's currency.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Amount {
    pub amount: u64,
}

/// Payload of `PaymentAuthorized` and `PaymentDeclined`; `reason` is 0 (refused) or
/// 1 (gateway unavailable) for a decline and 0 for an authorization.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct PaymentStarted {
    pub order: String,
    pub amount: u64,
    pub currency: [u8; 3],
    pub gateway: String,
    pub reason: u8,
}

/// Payload of the engine's `CommandAccepted` record: an idempotency key, the fingerprint of
/// the command it was first used with, and how many events that command recorded after this
/// record.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct CommandAccepted {
    pub key: String,
    pub fingerprint: [u8; 16],
    pub events: u32,
}

/// Payload of a `Decision` record: everything one command decided, as one record on the
/// stream of the aggregate the command was about. Each event keeps its own event type and
/// v1 payload (the types above), with the id of its aggregate (SKU, order or payment), since a
/// decision spans aggregates (placing an order holds stock of every line).
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The command's idempotency key, if it carried one.
    pub key: Option<DecisionKey>,
    /// The events, in the order they were decided.
    pub events: Vec<DecidedEvent>,
}

/// The idempotency key of a decision and the fingerprint of its command.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct DecisionKey {
    pub key: String,
    pub fingerprint: [u8; 16],
}

/// One event of a decision.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct DecidedEvent {
    pub event_type: u16,
    /// The SKU, order or payment the event belongs to.
    pub aggregate: String,
    /// The event's own v1 payload.
    pub payload: Vec<u8>,
}
