//! The engine's in-memory state, owned by the decision thread: every tenant's aggregates, the
//! idempotency keys, and the hold-expiry timers. All of it is derived from the log and rebuilt
//! by replaying it on open.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

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
    timers: Timers,
}

/// Placed orders by the time their stock hold runs out, earliest first, ties in the order they
/// were set (log order). Entries are never removed early: an order paid or cancelled meanwhile
/// is skipped when its time comes, which is cheaper than finding it on every confirmation.
///
/// One run of the engine sets them in time order (admission times never go back and the hold's
/// time to live is fixed), so they wait in a queue, taken from the front. Only a log written
/// with a longer time to live than the next run's can set one earlier than the last; those
/// wait in a heap beside the queue.
#[derive(Debug, Default)]
struct Timers {
    in_order: VecDeque<Timer>,
    out_of_order: BinaryHeap<Reverse<Timer>>,
    /// Timers set so far.
    set: u64,
}

impl Timers {
    fn push(&mut self, at: Timestamp, tenant: &TenantId, order: &OrderId) {
        self.set += 1;
        let timer = Timer { at, set: self.set, tenant: tenant.clone(), order: order.clone() };
        if self.in_order.back().is_none_or(|last| last.at <= at) {
            self.in_order.push_back(timer);
        } else {
            self.out_of_order.push(Reverse(timer));
        }
    }

    /// The earliest timer, if it has run out by `now`.
    fn pop_due(&mut self, now: Timestamp) -> Option<Timer> {
        let from_heap = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(queued), Some(Reverse(heaped))) => heaped.key() < queued.key(),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if from_heap {
            let Reverse(next) = self.out_of_order.peek()?;
            (next.at <= now).then(|| self.out_of_order.pop().map(|Reverse(t)| t))?
        } else {
            let next = self.in_order.front()?;
            (next.at <= now).then(|| self.in_order.pop_front())?
        }
    }
}

/// When a placed order's hold runs out. Ordered by time, then by when it was set: every order
/// of one turn shares its expiry time, and comparing numbers, not ids, keeps the order cheap.
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
                self.timers.push(*hold_expires_at, tenant, order);
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
        while let Some(Timer { tenant, order, .. }) = self.timers.pop_due(now) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_run_out_by_time_then_in_the_order_set_also_when_set_out_of_order() {
        let tenant = TenantId::new("t").unwrap();
        let mut timers = Timers::default();
        // 3, 4 and the last 5 come after later ones: as when a log written with a longer time
        // to live is replayed.
        let set = [(5, "a"), (3, "b"), (5, "c"), (7, "d"), (4, "e"), (5, "f")];
        for (at, order) in set {
            timers.push(Timestamp(at), &tenant, &OrderId::new(order).unwrap());
        }
        assert_eq!(timers.out_of_order.len(), 3, "those wait in the heap");
        let mut pop_until = |now| {
            let mut popped = Vec::new();
            while let Some(timer) = timers.pop_due(Timestamp(now)) {
                popped.push((timer.at.0, timer.order.to_string()));
            }
            popped
        };
        assert!(pop_until(2).is_empty(), "nothing has run out at 2");
        let expected = [(3, "b"), (4, "e"), (5, "a"), (5, "c"), (5, "f")];
        assert_eq!(pop_until(5), expected.map(|(at, o)| (at, o.to_owned())));
        assert_eq!(pop_until(100), [(7, "d".to_owned())]);
        assert!(timers.pop_due(Timestamp(u64::MAX)).is_none());
    }
}
