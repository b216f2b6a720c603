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
    /// Makes the command safe to retry: a key seen before returns the first outcome.
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
}

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

    /// The decision context: the admission time and the default hold policy.
    #[must_use]
    pub fn context(&self) -> Context {
        Context { now: self.admitted_at, hold_ttl_ms: DEFAULT_HOLD_TTL_MS }
    }
}
