//! The engine's in-memory state, owned by the decision thread: every tenant's aggregates, the
//! idempotency keys, and the hold-expiry timers. All of it is derived from the log and rebuilt
//! by replaying it on open.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::codec::{Decoded, Fingerprint};
use crate::domain::with_slot;
use crate::domain::{
    Decider, Event, IdempotencyKey, OrderEvent, OrderId, OrderStatus, Tenant, TenantId,
    TenantState, Timestamp,
};

/// Where the events of a command accepted with an idempotency key are in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub fingerprint: Fingerprint,
    /// Position of the first record holding the command's events.
    pub first: u64,
    /// Records holding them: one decision record (or, in logs written before decision
    /// records, one record per event).
    pub records: u32,
}

#[derive(Debug, Default)]
pub(crate) struct World {
    tenants: FxHashMap<TenantId, TenantState>,
    /// Per tenant, so that a lookup borrows the tenant and the key instead of cloning both.
    keys: FxHashMap<TenantId, FxHashMap<IdempotencyKey, KeyEntry>>,
    /// Placed orders by the time their stock hold runs out, earliest first. Entries are never
    /// removed early: an order paid or cancelled meanwhile is skipped when its time comes,
    /// which is cheaper than finding it in the heap on every confirmation.
    timers: BinaryHeap<Reverse<Timer>>,
    /// Timers set so far: ties in time come out in the order they were set (log order).
    timers_set: u64,
}

/// When a placed order's hold runs out. Ordered by time, then by when it was set: every order
/// of one turn shares its expiry time, and comparing numbers, not ids, keeps the heap cheap.
#[derive(Debug)]
struct Timer {
    at: Timestamp,
    set: u64,
    tenant: TenantId,
    order: OrderId,
}

impl Timer {
    fn key(&self) -> (Timestamp, u64) {
        (self.at, self.set)
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Timer) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl World {
    /// The state of `tenant`, if it has ever recorded anything.
    pub(crate) fn tenant(&self, tenant: &TenantId) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }

    pub(crate) fn key(&self, tenant: &TenantId, key: &IdempotencyKey) -> Option<KeyEntry> {
        self.keys.get(tenant)?.get(key).copied()
    }

    pub(crate) fn remember_key(
        &mut self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        entry: KeyEntry,
    ) {
        let previous = with_slot(&mut self.keys, tenant, |keys| keys.insert(key.clone(), entry));
        assert!(previous.is_none(), "an idempotency key is accepted once");
    }

    /// Applies the events of one decision (or one event) of `tenant`, keeping the expiry
    /// timers in step. The tenant is looked up once for all of them.
    pub(crate) fn apply(&mut self, tenant: &TenantId, events: &[Event]) {
        for event in events {
            if let Event::Order { order, event: OrderEvent::OrderPlaced { hold_expires_at, .. } } =
                event
            {
                self.timers_set += 1;
                self.timers.push(Reverse(Timer {
                    at: *hold_expires_at,
                    set: self.timers_set,
                    tenant: tenant.clone(),
                    order: order.clone(),
                }));
            }
        }
        with_slot(&mut self.tenants, tenant, |state| {
            for event in events {
                Tenant::evolve(state, event);
            }
        });
    }

    /// Applies a record read back from the log at `position`.
    pub(crate) fn replay(&mut self, position: u64, record: &Decoded) {
        match record {
            Decoded::Event { tenant, event } => self.apply(tenant, std::slice::from_ref(event)),
            Decoded::CommandAccepted { tenant, key, fingerprint, events } => {
                let entry =
                    KeyEntry { fingerprint: *fingerprint, first: position + 1, records: *events };
                self.remember_key(tenant, key, entry);
            }
            Decoded::Decision { tenant, key, events } => {
                self.apply(tenant, events);
                if let Some((key, fingerprint)) = key {
                    let entry = KeyEntry { fingerprint: *fingerprint, first: position, records: 1 };
                    self.remember_key(tenant, key, entry);
                }
            }
        }
    }

    /// Takes every order still unpaid whose hold has run out by `now`.
    pub(crate) fn take_due(&mut self, now: Timestamp) -> Vec<(TenantId, OrderId)> {
        let mut due = Vec::new();
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.at > now {
                break;
            }
            let Reverse(Timer { tenant, order, .. }) = self.timers.pop().expect("just looked");
            let unpaid = self
                .tenant(&tenant)
                .and_then(|t| t.order(&order))
                .is_some_and(|o| o.status() == Some(OrderStatus::Placed));
            if unpaid {
                due.push((tenant, order));
            }
        }
        due
    }
}
