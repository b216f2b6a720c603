//! Schema version 2: frozen, like [`v1`](super::v1).
//!
//! Version 2 adds the gateway's reference to an authorization, so that its capture, void or
//! refund can quote it without asking the gateway again. Only the payload of
//! `PaymentAuthorized` and `PaymentDeclined` changed; every other payload of a version 2
//! record is its v1 type, byte for byte. A v1 `PaymentStarted` decodes with no reference (the
//! upcaster is in the codec's `payment_event`).

use rkyv::{Archive, Deserialize, Serialize};

/// Payload of `PaymentAuthorized` and `PaymentDeclined`; `reason` is 0 (refused) or
/// 1 (gateway unavailable) for a decline and 0 for an authorization; `reference` is the
/// gateway's reference of an authorization, empty when none was recorded (always for a
/// decline).
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct PaymentStarted {
    pub order: String,
    pub amount: u64,
    pub currency: [u8; 3],
    pub gateway: String,
    pub reason: u8,
    pub reference: String,
}
