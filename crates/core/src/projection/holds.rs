//! Units held per tenant: the sum of every SKU's open holds, what the dashboard shows as open
//! reservations. Kept apart from the inventory read model, so that reading it costs one row
//! whatever the size of the catalog (the dashboard's figures, read every second for every
//! stream, summed every SKU's row).
//!
//! Table `open_holds`: key the tenant, value the units held. Maintained from `StockHeld` (+)
//! and `StockCommitted`, `StockReleased` and `HoldExpired` (−). The sums saturate: a dashboard
//! figure out of range must not stop the read models every tenant reads (the inventory read
//! model checks every SKU's level).

use std::collections::hash_map::Entry;

use redb::{Database, TableDefinition};
use rustc_hash::FxHashMap;

use super::pending::read_table;
use super::{Projection, ProjectionError, Rows, Stage};
use crate::domain::{Event, InventoryEvent, TenantId};
use crate::engine::CommittedEvent;

/// The open holds table: tenant → units held.
pub const OPEN_HOLDS: TableDefinition<'static, &str, u64> = TableDefinition::new("open_holds");

/// Maintains the [`OPEN_HOLDS`] table. Checkpoint name `open_holds`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenHoldsProjection;

impl Projection for OpenHoldsProjection {
    type Tables<'s> = Rows<'s, &'static str, u64>;

    fn name(&self) -> &str {
        "open_holds"
    }

    fn tables(&self) -> Vec<String> {
        vec![redb::TableHandle::name(&OPEN_HOLDS).to_owned()]
    }

    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError> {
        stage.table(OPEN_HOLDS)
    }

    fn apply(
        &self,
        table: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        // Each tenant touched by the batch is read once and written once.
        let mut held: FxHashMap<&str, u64> = FxHashMap::default();
        for committed in events {
            let Event::Inventory { event, .. } = &committed.event else { continue };
            let change = match event {
                InventoryEvent::StockHeld { quantity, .. } => (true, quantity.get()),
                InventoryEvent::StockCommitted { quantity, .. }
                | InventoryEvent::StockReleased { quantity, .. }
                | InventoryEvent::HoldExpired { quantity, .. } => (false, quantity.get()),
                InventoryEvent::StockReceived { .. } | InventoryEvent::StockAdjusted { .. } => {
                    continue;
                }
            };
            let tenant = committed.tenant.as_str();
            let units = match held.entry(tenant) {
                Entry::Occupied(cached) => cached.into_mut(),
                Entry::Vacant(missing) => {
                    missing.insert(table.get(tenant)?.map_or(0, |v| v.value()))
                }
            };
            *units = match change {
                (true, n) => units.saturating_add(n),
                (false, n) => units.saturating_sub(n),
            };
        }
        for (tenant, units) in held {
            table.insert(tenant, units);
        }
        Ok(())
    }
}

/// Units held for `tenant`'s open orders, over every SKU, as far as the projection has come.
pub fn open_holds(db: &Database, tenant: &TenantId) -> Result<u64, ProjectionError> {
    let table = read_table(db, OPEN_HOLDS)?;
    Ok(table.get(tenant.as_str())?.map_or(0, |v| v.value()))
}
