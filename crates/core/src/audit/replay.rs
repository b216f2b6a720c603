//! `replay`: the state as of a point in the log, rebuilt with the domain's own `evolve`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::Path;

use serde::Serialize;

use super::digest::Digest;
use super::error::AuditError;
use super::pass::Entry;
use super::state::{DomainState, ENTRIES_AHEAD, TenantSlot};
use super::verify::TornTailWarning;
use super::{Progress, pass};
use crate::domain::{OrderStatus, TenantId, TenantState};

/// How far to replay. Replay applies whole commands only (a state between a command's events
/// never existed): a decision record is one whole command; in a log written before decision
/// records, a command's records were one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayPoint {
    /// The whole log.
    Head,
    /// The first `n` records (positions `0..n`, the same count as a [`Digest`]'s head): a
    /// command whose record is at position `n - 1` is in, the next one is not. That `n` is
    /// what the server answers a command with as its `position`, and in the library
    /// [`Outcome::next_position`](crate::engine::Outcome::next_position), one past the
    /// record's position its events carry. (In a log written before decision records,
    /// rounded down to a batch boundary.)
    Position(u64),
    /// Every batch whose records were all admitted at or before this time (ms since the Unix
    /// epoch); replay stops at the first batch with a record stamped later.
    Time(u64),
}

/// The state as of a point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Records applied (positions `0..position`) and the digest of the log there.
    pub digest: Digest,
    /// Admission time of the last record applied.
    pub last_timestamp: Option<u64>,
    /// Each tenant's state (only the one asked for, if one was), by tenant id.
    pub tenants: Vec<TenantSnapshot>,
    /// Bytes after the last complete batch, left out (see [`TornTailWarning`]).
    pub torn_tail: Option<TornTailWarning>,
}

/// One tenant's stock and orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantSnapshot {
    /// The tenant.
    pub tenant: String,
    /// Stock of every SKU ever received, by SKU.
    pub skus: Vec<SkuLevel>,
    /// Orders by status.
    pub orders: OrderCounts,
}

/// Stock of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkuLevel {
    /// The SKU.
    pub sku: String,
    /// Units in stock, held or not.
    pub on_hand: u64,
    /// Units held for orders not yet shipped.
    pub reserved: u64,
    /// Units that can still be held.
    pub available: u64,
}

/// How many orders are in each status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OrderCounts {
    /// Waiting for payment.
    pub placed: u64,
    /// Paid, not shipped.
    pub confirmed: u64,
    /// Shipped.
    pub shipped: u64,
    /// Delivered.
    pub delivered: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// Rebuilds the state of the log in `dir` as of `point`, for every tenant or only `tenant`,
/// read-only and without the lock. Every record read is verified as [`super::verify()`] does, so
/// replaying to [`ReplayPoint::Head`] also verifies the whole log in the same pass (without a
/// digest check). An event the domain cannot apply is reported as
/// [`AuditError::Inconsistent`], a position past the log's head as
/// [`AuditError::BeyondHead`].
pub fn replay(
    dir: &Path,
    point: ReplayPoint,
    tenant: Option<&TenantId>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ReplayReport, AuditError> {
    let mut state = DomainState::default();
    let mut digest = Digest { head: 0, hash: [0; 32] };
    let mut last_timestamp = None;
    let mut inconsistent = None;
    let mut stopped_before_end = false;
    // The chain hash of the record just before a position asked for, for its digest.
    let hash_before_point = std::cell::Cell::new(None);
    let scan = pass::run(
        dir,
        progress,
        |record| {
            if let ReplayPoint::Position(n) = point
                && record.position.0 + 1 == n
            {
                hash_before_point.set(record.chain_hash());
            }
        },
        |batch| {
            let Some(last) = batch.entries.last() else {
                return ControlFlow::Continue(());
            };
            // The entries of the batch to apply: all of them, or those before the point.
            let applied = match point {
                ReplayPoint::Head => batch.entries.len(),
                ReplayPoint::Position(n) if last.position < n => batch.entries.len(),
                // A turn of the engine is one batch of many commands, a decision record each.
                ReplayPoint::Position(n) if batch.entries.iter().all(is_one_command) => {
                    batch.entries.iter().take_while(|e| e.position < n).count()
                }
                ReplayPoint::Position(_) => 0,
                ReplayPoint::Time(t) if batch.entries.iter().any(|e| e.timestamp > t) => 0,
                ReplayPoint::Time(_) => batch.entries.len(),
            };
            let entries = &batch.entries[..applied];
            // Each entry's tenant is found when its prefetch is given, ENTRIES_AHEAD before it
            // is applied; those of the first are found first. `None` for a tenant left out.
            let mut ahead: VecDeque<Option<TenantSlot>> = entries
                .iter()
                .take(ENTRIES_AHEAD)
                .map(|entry| prefetched(&mut state, entry, tenant))
                .collect();
            for (i, entry) in entries.iter().enumerate() {
                if let Some(next) = entries.get(i + ENTRIES_AHEAD) {
                    ahead.push_back(prefetched(&mut state, next, tenant));
                }
                let Some(slot) = ahead.pop_front().expect("one slot per entry") else {
                    continue;
                };
                if let Err(message) = state.apply(slot, entry.record.events()) {
                    inconsistent =
                        Some(AuditError::Inconsistent { at: batch.location(entry), message });
                    return ControlFlow::Break(());
                }
            }
            if let Some(applied_last) = applied.checked_sub(1).map(|i| &batch.entries[i]) {
                let hash = if applied == batch.entries.len() {
                    batch.last_hash
                } else {
                    hash_before_point.get().expect("the record before the point was scanned")
                };
                digest = Digest { head: applied_last.position + 1, hash };
                last_timestamp = Some(applied_last.timestamp);
            }
            if applied < batch.entries.len() {
                stopped_before_end = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(error) = inconsistent {
        return Err(error);
    }
    if let ReplayPoint::Position(asked) = point
        && !stopped_before_end
        && asked > digest.head
    {
        return Err(AuditError::BeyondHead { asked, head: digest.head });
    }
    Ok(ReplayReport {
        torn_tail: TornTailWarning::of(&scan),
        ..report(digest, last_timestamp, &state)
    })
}

/// The slot of `entry`'s tenant, once the state its events will look up is prefetched; `None`
/// if only another tenant is replayed.
fn prefetched(
    state: &mut DomainState,
    entry: &Entry,
    only: Option<&TenantId>,
) -> Option<TenantSlot> {
    let of = entry.record.tenant();
    let slot = only.is_none_or(|t| t == of).then(|| state.slot(of))?;
    state.prefetch(slot, entry.record.events());
    Some(slot)
}

/// Whether `entry` is one whole command (a decision record), so that a replay may stop
/// after it, inside its batch.
fn is_one_command(entry: &super::pass::Entry) -> bool {
    matches!(entry.record, crate::codec::Decoded::Decision { .. })
}

/// The report of `state`, rebuilt up to `digest`.
pub(crate) fn report(
    digest: Digest,
    last_timestamp: Option<u64>,
    state: &DomainState,
) -> ReplayReport {
    let mut tenants: Vec<TenantSnapshot> =
        state.tenants().map(|(id, state)| snapshot(id, state)).collect();
    tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    ReplayReport { digest, last_timestamp, tenants, torn_tail: None }
}

fn snapshot(tenant: &TenantId, state: &TenantState) -> TenantSnapshot {
    let mut skus: Vec<SkuLevel> = state
        .inventories()
        .filter(|(_, stock)| stock.is_known())
        .map(|(sku, stock)| SkuLevel {
            sku: sku.to_string(),
            on_hand: stock.on_hand(),
            reserved: stock.reserved(),
            available: stock.available(),
        })
        .collect();
    skus.sort_by(|a, b| a.sku.cmp(&b.sku));
    let mut orders = OrderCounts::default();
    for (_, order) in state.orders() {
        let count = match order.status() {
            Some(OrderStatus::Placed) => &mut orders.placed,
            Some(OrderStatus::Confirmed) => &mut orders.confirmed,
            Some(OrderStatus::Shipped) => &mut orders.shipped,
            Some(OrderStatus::Delivered) => &mut orders.delivered,
            Some(OrderStatus::Cancelled) => &mut orders.cancelled,
            None => continue,
        };
        *count += 1;
    }
    TenantSnapshot { tenant: tenant.to_string(), skus, orders }
}
