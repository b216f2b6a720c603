//! The envelope a command travels in: who sends it, how to recognize a retry, and when it was
//! admitted.

use super::decider::Context;
use super::limits::DEFAULT_HOLD_TTL_MS;
use super::tenant::Command;
use super::types::{IdempotencyKey, TenantId, Timestamp};

/// A command with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The tenant whose aggregates the command is about; it can reach no other tenant's.
    pub tenant: TenantId,
    /// Makes the command safe to retry: a key seen before returns the first outcome. Keys
    /// starting with [`RESERVED_KEY_PREFIX`] are the payments process's (see
    /// [`Envelope::by_payments_process`]).
    pub idempotency_key: Option<IdempotencyKey>,
    /// When the engine admitted the command; the only time the domain sees. The engine stamps
    /// it on admission (a caller's value is overwritten) and the log records it for replay.
    pub admitted_at: Timestamp,
    /// What to do.
    pub command: Command,
    /// Whether the order a place command names got a fresh id made for this request rather
    /// than one the client chose. A retry of such a place gets another fresh id, so the id is
    /// not part of what makes it the same command: a retry with the same key is answered with
    /// the first attempt's order.
    pub fresh_order_id: bool,
    /// Whether the engine's payments process sends the command. Only its commands may carry a
    /// key starting with [`RESERVED_KEY_PREFIX`]: the engine refuses such a key from any other
    /// caller, who could otherwise take a key a payment step will need and stall that order.
    pub by_payments_process: bool,
}

/// Idempotency keys starting with this belong to the payments process (`pm:auth:{order}`, …):
/// the engine takes them only from it ([`Envelope::by_payments_process`]).
pub const RESERVED_KEY_PREFIX: &str = "pm:";

impl Envelope {
    /// An envelope for `command` of `tenant`, without idempotency key, not yet admitted.
    #[must_use]
    pub fn new(tenant: TenantId, command: Command) -> Envelope {
        Envelope {
            tenant,
            idempotency_key: None,
            admitted_at: Timestamp::default(),
            command,
            fresh_order_id: false,
            by_payments_process: false,
        }
    }

    /// The same envelope with an idempotency key.
    #[must_use]
    pub fn with_key(mut self, key: IdempotencyKey) -> Envelope {
        self.idempotency_key = Some(key);
        self
    }

    /// The same envelope, its place command naming an order by a fresh id (see
    /// [`Envelope::fresh_order_id`]).
    #[must_use]
    pub fn with_fresh_order_id(mut self) -> Envelope {
        self.fresh_order_id = true;
        self
    }

    /// The same envelope, sent by the payments process (see
    /// [`Envelope::by_payments_process`]): for the process, and for tests that record what it
    /// would have.
    #[must_use]
    pub fn from_payments_process(mut self) -> Envelope {
        self.by_payments_process = true;
        self
    }

    /// Whether the envelope carries a key of the payments process's that it did not send.
    #[must_use]
    pub fn takes_a_reserved_key(&self) -> bool {
        let reserved = |key: &IdempotencyKey| key.as_str().starts_with(RESERVED_KEY_PREFIX);
        !self.by_payments_process && self.idempotency_key.as_ref().is_some_and(reserved)
    }

    /// The decision context: the admission time and the default hold policy.
    #[must_use]
    pub fn context(&self) -> Context {
        Context { now: self.admitted_at, hold_ttl_ms: DEFAULT_HOLD_TTL_MS }
    }
}
