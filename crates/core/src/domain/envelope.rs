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
}

impl Envelope {
    /// An envelope for `command` of `tenant`, without idempotency key, not yet admitted.
    #[must_use]
    pub fn new(tenant: TenantId, command: Command) -> Envelope {
        Envelope { tenant, idempotency_key: None, admitted_at: Timestamp::default(), command }
    }

    /// The same envelope with an idempotency key.
    #[must_use]
    pub fn with_key(mut self, key: IdempotencyKey) -> Envelope {
        self.idempotency_key = Some(key);
        self
    }

    /// The decision context: the admission time and the default hold policy.
    #[must_use]
    pub fn context(&self) -> Context {
        Context { now: self.admitted_at, hold_ttl_ms: DEFAULT_HOLD_TTL_MS }
    }
}
