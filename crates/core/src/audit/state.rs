//! The domain's state rebuilt from the log with the domain's own `evolve`, which an audit
//! must survive on any input.

use rustc_hash::FxHashMap;

use crate::domain::{Event, Tenant, TenantId, TenantState};

/// How many records ahead of the one applied a replay loads the orders and payments of: the
/// maps of a long log do not fit in cache, and each first touch of an entry would otherwise
/// wait for memory in turn.
pub(crate) const ENTRIES_AHEAD: usize = 8;

/// Every tenant's aggregates, as the deciders see them.
#[derive(Debug, Default)]
pub(crate) struct DomainState {
    /// In the order first seen; a [`TenantSlot`] is an index into it.
    tenants: Vec<(TenantId, TenantState)>,
    slots: FxHashMap<TenantId, usize>,
}

/// Where a tenant's state is in a [`DomainState`]: a record's tenant is looked up once, for
/// both its prefetch and its apply (three lookups of the id before, 5% of a replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TenantSlot(usize);

impl DomainState {
    /// The slot of `tenant`, whose state is created empty the first time.
    pub(crate) fn slot(&mut self, tenant: &TenantId) -> TenantSlot {
        if let Some(&slot) = self.slots.get(tenant) {
            return TenantSlot(slot);
        }
        self.tenants.push((tenant.clone(), TenantState::default()));
        self.slots.insert(tenant.clone(), self.tenants.len() - 1);
        TenantSlot(self.tenants.len() - 1)
    }

    /// Applies `events` (a record's, in order) to the tenant in `slot` with
    /// [`Tenant::evolve_replayed`].
    ///
    /// `evolve` cannot fail on a log the engine wrote: it asserts the invariants every
    /// decided event keeps, and panics if one breaks. A log under audit may hold anything
    /// that passes the checksums (a rewrite with recomputed checksums, a bug), so the panic is
    /// caught and returned as the invariant's message; the tenant's state is then unreliable
    /// and the caller stops using it. (The panic hook prints nothing of it where
    /// [`crate::engine::install_panic_hook`] was installed.)
    ///
    /// The panic guard is set once for all of a record's events: a decision holds several, and
    /// a replay applies tens of millions.
    pub(crate) fn apply(&mut self, slot: TenantSlot, events: &[Event]) -> Result<(), String> {
        let state = &mut self.tenants[slot.0].1;
        crate::engine::catching(|| {
            for event in events {
                Tenant::evolve_replayed(state, event);
            }
        })
    }

    /// [`DomainState::apply`] to `tenant`'s state.
    pub(crate) fn apply_all(&mut self, tenant: &TenantId, events: &[Event]) -> Result<(), String> {
        let slot = self.slot(tenant);
        self.apply(slot, events)
    }

    /// Starts loading the orders and payments `events` of the tenant in `slot` are about, which
    /// applying them will look up: a hint given a few records ahead (see [`ENTRIES_AHEAD`]).
    pub(crate) fn prefetch(&self, slot: TenantSlot, events: &[Event]) {
        let state = &self.tenants[slot.0].1;
        for event in events {
            state.prefetch_for_event(event);
        }
    }

    /// The state of `tenant`, if any of its events was applied.
    pub(crate) fn tenant(&self, tenant: &TenantId) -> Option<&TenantState> {
        self.slots.get(tenant).map(|&slot| &self.tenants[slot].1)
    }

    /// Every tenant's state.
    pub(crate) fn tenants(&self) -> impl Iterator<Item = (&TenantId, &TenantState)> {
        self.tenants.iter().map(|(id, state)| (id, state))
    }

    /// Leaves out every tenant for which `drop` holds.
    pub(crate) fn remove_tenants(&mut self, drop: impl Fn(&TenantId) -> bool) {
        self.tenants.retain(|(id, _)| !drop(id));
        self.slots = self.tenants.iter().enumerate().map(|(i, (id, _))| (id.clone(), i)).collect();
    }
}

/// What `map` holds for `tenant`, created empty the first time; the id is cloned only then.
pub(crate) fn of_tenant<'m, V: Default>(
    map: &'m mut FxHashMap<TenantId, V>,
    tenant: &TenantId,
) -> &'m mut V {
    // Two lookups on a new tenant, one on every later record: `entry` would take the id by
    // value, cloning it for every record.
    if !map.contains_key(tenant) {
        map.insert(tenant.clone(), V::default());
    }
    map.get_mut(tenant).expect("inserted above")
}
