//! Inventory levels per (tenant, SKU): units on hand and reserved; available = on hand −
//! reserved.
//!
//! Table `inventory`: key `(tenant, sku)` (redb tuple of two strings, ordered by tenant then
//! SKU), value `(on_hand, reserved)` (two `u64`). A SKU appears once it has an event.
//! Maintained from `StockReceived` (+on hand), `StockAdjusted` (±on hand), `StockHeld`
//! (+reserved), `StockCommitted` (−reserved, −on hand), `StockReleased` and `HoldExpired`
//! (−reserved). Every change is checked: a level that would go below zero or reserve more than
//! is on hand is [`ProjectionError::Inconsistent`], never a wrap or a panic.

use std::collections::hash_map::Entry;

use redb::{Database, TableDefinition};
use rustc_hash::FxHashMap;

use super::pending::read_table;
use super::{Projection, ProjectionError, Rows, Stage, inconsistent};
use crate::domain::{Event, InventoryEvent, Sku, TenantId};
use crate::engine::CommittedEvent;

/// The inventory table: (tenant, SKU) → (on hand, reserved).
pub const INVENTORY: TableDefinition<'static, (&str, &str), (u64, u64)> =
    TableDefinition::new("inventory");

/// The stock of one SKU as the read model holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InventoryLevel {
    /// Units physically in stock, held or not.
    pub on_hand: u64,
    /// Units held for orders not yet shipped.
    pub reserved: u64,
}

impl InventoryLevel {
    /// Units that can still be held: on hand minus reserved.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// Maintains the [`INVENTORY`] table. Checkpoint name `inventory`.
#[derive(Clone, Copy, Debug, Default)]
pub struct InventoryProjection;

impl Projection for InventoryProjection {
    type Tables<'s> = Rows<'s, (&'static str, &'static str), (u64, u64)>;

    fn name(&self) -> &str {
        "inventory"
    }

    fn tables(&self) -> Vec<String> {
        vec![redb::TableHandle::name(&INVENTORY).to_owned()]
    }

    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError> {
        stage.table(INVENTORY)
    }

    fn apply(
        &self,
        table: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        // Each SKU touched by the batch is read once and written once.
        let mut levels: FxHashMap<(&str, &str), (u64, u64)> = FxHashMap::default();
        for committed in events {
            let Event::Inventory { sku, event } = &committed.event else { continue };
            let key = (committed.tenant.as_str(), sku.as_str());
            let level = match levels.entry(key) {
                Entry::Occupied(cached) => cached.into_mut(),
                Entry::Vacant(missing) => {
                    missing.insert(table.get(key)?.map_or((0, 0), |v| v.value()))
                }
            };
            *level = next_level(committed, sku, event, *level)?;
        }
        for (key, level) in levels {
            table.insert(key, level);
        }
        Ok(())
    }
}

/// The (on hand, reserved) of `sku` after `event`, checked.
fn next_level(
    committed: &CommittedEvent,
    sku: &Sku,
    event: &InventoryEvent,
    (on_hand, reserved): (u64, u64),
) -> Result<(u64, u64), ProjectionError> {
    use InventoryEvent as E;
    let bad = |what: &str| inconsistent(committed, format!("SKU {sku}: {what}"));
    let (on_hand, reserved) = match event {
        E::StockReceived { quantity } => {
            (on_hand.checked_add(quantity.get()).ok_or_else(|| bad("on hand overflows"))?, reserved)
        }
        E::StockAdjusted { delta } => {
            (on_hand.checked_add_signed(*delta).ok_or_else(|| bad("on hand below zero"))?, reserved)
        }
        E::StockHeld { quantity, .. } => (
            on_hand,
            reserved.checked_add(quantity.get()).ok_or_else(|| bad("reserved overflows"))?,
        ),
        E::StockCommitted { quantity, .. } => (
            on_hand.checked_sub(quantity.get()).ok_or_else(|| bad("on hand below zero"))?,
            reserved.checked_sub(quantity.get()).ok_or_else(|| bad("reserved below zero"))?,
        ),
        E::StockReleased { quantity, .. } | E::HoldExpired { quantity, .. } => (
            on_hand,
            reserved.checked_sub(quantity.get()).ok_or_else(|| bad("reserved below zero"))?,
        ),
    };
    if reserved > on_hand {
        return Err(bad("reserved exceeds on hand"));
    }
    Ok((on_hand, reserved))
}

/// The stock of `sku` of `tenant` as far as the inventory projection has come; `None` if the
/// SKU has no event there yet.
pub fn inventory(
    db: &Database,
    tenant: &TenantId,
    sku: &Sku,
) -> Result<Option<InventoryLevel>, ProjectionError> {
    let table = read_table(db, INVENTORY)?;
    let level = table.get((tenant.as_str(), sku.as_str()))?.map(|v| {
        let (on_hand, reserved) = v.value();
        InventoryLevel { on_hand, reserved }
    });
    Ok(level)
}

/// Every SKU of `tenant` with its stock, ordered by SKU.
pub fn inventory_levels(
    db: &Database,
    tenant: &TenantId,
) -> Result<Vec<(Sku, InventoryLevel)>, ProjectionError> {
    let table = read_table(db, INVENTORY)?;
    let mut levels = Vec::new();
    for row in table.range((tenant.as_str(), "")..)? {
        let (key, value) = row?;
        let (row_tenant, sku) = key.value();
        if row_tenant != tenant.as_str() {
            break;
        }
        let sku =
            Sku::new(sku).map_err(|e| ProjectionError::Corrupt(format!("SKU {sku:?}: {e}")))?;
        let (on_hand, reserved) = value.value();
        levels.push((sku, InventoryLevel { on_hand, reserved }));
    }
    Ok(levels)
}
