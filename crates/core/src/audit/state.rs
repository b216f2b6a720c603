//! The domain's state rebuilt from the log with the domain's own `evolve`, which an audit
//! must survive on any input.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rustc_hash::FxHashMap;

use crate::domain::{Decider, Event, Tenant, TenantId, TenantState};

/// Every tenant's aggregates, as the deciders see them.
#[derive(Debug, Default)]
pub(crate) struct DomainState {
    pub tenants: FxHashMap<TenantId, TenantState>,
}

impl DomainState {
    /// Applies `event` of `tenant` with [`Tenant::evolve`].
    ///
    /// `evolve` cannot fail on a log the engine wrote: it asserts the invariants every
    /// decided event keeps, and panics if one breaks. A log under audit may hold anything
    /// that passes the checksums (a rewrite with recomputed checksums, a bug), so the panic is
    /// caught and returned as the invariant's message; the tenant's state is then unreliable
    /// and the caller stops using it. (The panic hook still prints the message on stderr.)
    pub(crate) fn apply(&mut self, tenant: &TenantId, event: &Event) -> Result<(), String> {
        let state = self.tenants.entry(tenant.clone()).or_default();
        catch_unwind(AssertUnwindSafe(|| Tenant::evolve(state, event))).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "an invariant of the domain broke".to_owned())
        })
    }
}
