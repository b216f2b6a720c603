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
    pub tenants: FxHashMap<TenantId, TenantState>,
}

impl DomainState {
    /// Applies `events` of `tenant` (a record's, in order) with [`Tenant::evolve_replayed`].
    ///
    /// `evolve` cannot fail on a log the engine wrote: it asserts the invariants every
    /// decided event keeps, and panics if one breaks. A log under audit may hold anything
    /// that passes the checksums (a rewrite with recomputed checksums, a bug), so the panic is
    /// caught and returned as the invariant's message; the tenant's state is then unreliable
    /// and the caller stops using it. (The panic hook prints nothing of it where
    /// [`crate::engine::install_panic_hook`] was installed.)
    ///
    /// The tenant is looked up, and the panic guard set, once for all of a record's events:
    /// a decision holds several, and a replay applies tens of millions.
    pub(crate) fn apply_all(&mut self, tenant: &TenantId, events: &[Event]) -> Result<(), String> {
        let state = self.tenant_mut(tenant);
        crate::engine::catching(|| {
            for event in events {
                Tenant::evolve_replayed(state, event);
            }
        })
    }

    /// Starts loading the orders and payments `events` of `tenant` are about, which applying
    /// them will look up: a hint given a few records ahead (see [`ENTRIES_AHEAD`]).
    pub(crate) fn prefetch(&self, tenant: &TenantId, events: &[Event]) {
        if let Some(state) = self.tenants.get(tenant) {
            for event in events {
                state.prefetch_for_event(event);
            }
        }
    }

    /// The state of `tenant`, created empty the first time.
    fn tenant_mut(&mut self, tenant: &TenantId) -> &mut TenantState {
        of_tenant(&mut self.tenants, tenant)
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
