//! Inventory of one SKU of one tenant: stock on hand and the units reserved against it.
//!
//! A hold reserves units for an order until it is committed (the order shipped), released (the
//! order was cancelled) or expired (the order was not paid in time). Invariant: `reserved` is
//! the sum of open holds and never exceeds `on_hand`; available = on_hand − reserved.
//!
//! The holds themselves are the lines of open orders: the SKU keeps only their sum and count.
//! An order presents its line's quantity to close a hold, and `tenant` (the only decider the
//! engine runs) lets only a placed or confirmed order, once per line, do so. Keeping a map of
//! holds per SKU as well would cost two hash probes per line on every order command, and the
//! order is at hand anyway.

use super::decider::{Context, Decider};
use super::limits::{MAX_ON_HAND, MAX_QUANTITY, is_adjustment};
use super::types::{OrderId, Quantity, Timestamp};

/// The inventory decider.
#[derive(Debug)]
pub enum Inventory {}

/// Stock of one SKU. Fields are private so that only events change them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryState {
    known: bool,
    on_hand: u64,
    reserved: u64,
    open_holds: u64,
}

impl InventoryState {
    /// Whether the SKU has ever been stocked; an unknown SKU cannot be held or adjusted.
    #[must_use]
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// Units physically in stock, held or not.
    #[must_use]
    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    /// Units held for orders not yet shipped: the sum of the open holds.
    #[must_use]
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Units that can still be held: on hand minus reserved.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.on_hand - self.reserved
    }

    /// How many holds are open: orders placed or confirmed with a line of this SKU.
    #[must_use]
    pub fn open_holds(&self) -> u64 {
        self.open_holds
    }

    /// The state the accessors above read, as the engine's snapshot kept it.
    pub(crate) fn restored(known: bool, on_hand: u64, reserved: u64, open_holds: u64) -> Self {
        InventoryState { known, on_hand, reserved, open_holds }
    }
}

/// Commands on one SKU's inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventoryCommand {
    /// Goods arrived: add to on hand.
    Receive {
        /// Units received.
        quantity: Quantity,
    },
    /// A stock count found more (positive) or fewer (negative) units than recorded.
    Adjust {
        /// Signed change of on hand, at most [`MAX_QUANTITY`] either way, never zero.
        delta: i64,
    },
    /// Reserve units for an order; from `expires_at` on, the order may let them expire (the
    /// order checks the time, not the SKU).
    Hold {
        /// The order the units are for.
        order: OrderId,
        /// Units to reserve.
        quantity: Quantity,
        /// When the hold may be expired.
        expires_at: Timestamp,
    },
    /// The order shipped: the held units leave the warehouse.
    Commit {
        /// The order whose hold is committed.
        order: OrderId,
        /// Units the order holds: its line's quantity.
        quantity: Quantity,
    },
    /// The order was cancelled: the held units become available again.
    Release {
        /// The order whose hold is released.
        order: OrderId,
        /// Units the order holds: its line's quantity.
        quantity: Quantity,
    },
    /// The hold ran out of time (the order checks when): the held units become available
    /// again.
    Expire {
        /// The order whose hold expired.
        order: OrderId,
        /// Units the order holds: its line's quantity.
        quantity: Quantity,
    },
}

/// Facts about one SKU's inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventoryEvent {
    /// Units were added to on hand.
    StockReceived {
        /// Units received.
        quantity: Quantity,
    },
    /// On hand was corrected by a count.
    StockAdjusted {
        /// Signed change of on hand.
        delta: i64,
    },
    /// Units were reserved for an order.
    StockHeld {
        /// The order the units are for.
        order: OrderId,
        /// Units reserved.
        quantity: Quantity,
        /// When the hold may be expired.
        expires_at: Timestamp,
    },
    /// Held units shipped and left on hand.
    StockCommitted {
        /// The order that shipped.
        order: OrderId,
        /// Units that left.
        quantity: Quantity,
    },
    /// Held units were released by a cancellation.
    StockReleased {
        /// The cancelled order.
        order: OrderId,
        /// Units released.
        quantity: Quantity,
    },
    /// Held units were released because the hold ran out of time.
    HoldExpired {
        /// The order whose hold expired.
        order: OrderId,
        /// Units released.
        quantity: Quantity,
    },
}

/// Why an inventory command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryRejection {
    /// The SKU has never been received, so it cannot be held or adjusted.
    #[error("unknown SKU: it has never been received")]
    UnknownSku,
    /// Fewer units are available than requested.
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock {
        /// Units requested.
        requested: u64,
        /// Units available.
        available: u64,
    },
    /// An adjustment was zero or larger than [`MAX_QUANTITY`] either way.
    #[error("adjustment must be non-zero and at most {MAX_QUANTITY} either way, got {delta}")]
    InvalidAdjustment {
        /// The rejected change.
        delta: i64,
    },
    /// A negative adjustment would leave fewer units on hand than are reserved.
    #[error(
        "adjustment {delta} would leave {} on hand (now {on_hand}), below the {reserved} reserved",
        i128::from(*on_hand) + i128::from(*delta)
    )]
    AdjustmentBelowReserved {
        /// The rejected change.
        delta: i64,
        /// Units on hand now.
        on_hand: u64,
        /// Units reserved now.
        reserved: u64,
    },
    /// A receipt or adjustment would take on hand above [`MAX_ON_HAND`].
    #[error("on hand would exceed the limit of {MAX_ON_HAND}")]
    StockLimitExceeded,
    /// An order presented a hold of more units than are held in all: it holds nothing of
    /// this SKU, or less.
    #[error("order {order} cannot close a hold of {quantity}: only {reserved} units are held")]
    HoldExceedsReserved {
        /// The order.
        order: OrderId,
        /// Units the order presented.
        quantity: u64,
        /// Units held in all.
        reserved: u64,
    },
}

impl InventoryRejection {
    /// Stable snake_case code, part of the API: the variant's name in snake_case
    /// (`InsufficientStock` is `insufficient_stock`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            InventoryRejection::UnknownSku => "unknown_sku",
            InventoryRejection::InsufficientStock { .. } => "insufficient_stock",
            InventoryRejection::InvalidAdjustment { .. } => "invalid_adjustment",
            InventoryRejection::AdjustmentBelowReserved { .. } => "adjustment_below_reserved",
            InventoryRejection::StockLimitExceeded => "stock_limit_exceeded",
            InventoryRejection::HoldExceedsReserved { .. } => "hold_exceeds_reserved",
        }
    }
}

impl Inventory {
    /// Decides `command` against `state`: every inventory command records exactly one event.
    ///
    /// [`Decider::decide`] is this event in a `Vec`; `tenant` calls this instead, to gather a
    /// decision's events in one `Vec` without one per aggregate. No inventory decision
    /// depends on the time (a hold's expiry is the order's to check).
    pub fn decide_event(
        state: &InventoryState,
        command: &InventoryCommand,
        _ctx: &Context,
    ) -> Result<InventoryEvent, InventoryRejection> {
        use InventoryCommand as C;
        use InventoryEvent as E;
        use InventoryRejection as R;
        let event = match command {
            C::Receive { quantity } => {
                if state.on_hand + quantity.get() > MAX_ON_HAND {
                    return Err(R::StockLimitExceeded);
                }
                E::StockReceived { quantity: *quantity }
            }
            C::Adjust { delta } => {
                let delta = *delta;
                if !is_adjustment(delta) {
                    return Err(R::InvalidAdjustment { delta });
                }
                if !state.known {
                    return Err(R::UnknownSku);
                }
                match state.on_hand.checked_add_signed(delta) {
                    Some(after) if after > MAX_ON_HAND => return Err(R::StockLimitExceeded),
                    Some(after) if after >= state.reserved => {}
                    _ => {
                        return Err(R::AdjustmentBelowReserved {
                            delta,
                            on_hand: state.on_hand,
                            reserved: state.reserved,
                        });
                    }
                }
                E::StockAdjusted { delta }
            }
            C::Hold { order, quantity, expires_at } => {
                if !state.known {
                    return Err(R::UnknownSku);
                }
                if quantity.get() > state.available() {
                    return Err(R::InsufficientStock {
                        requested: quantity.get(),
                        available: state.available(),
                    });
                }
                E::StockHeld { order: order.clone(), quantity: *quantity, expires_at: *expires_at }
            }
            C::Commit { order, quantity } => {
                check_held(state, order, *quantity)?;
                E::StockCommitted { order: order.clone(), quantity: *quantity }
            }
            C::Release { order, quantity } => {
                check_held(state, order, *quantity)?;
                E::StockReleased { order: order.clone(), quantity: *quantity }
            }
            C::Expire { order, quantity } => {
                check_held(state, order, *quantity)?;
                E::HoldExpired { order: order.clone(), quantity: *quantity }
            }
        };
        Ok(event)
    }
}

impl Decider for Inventory {
    type State = InventoryState;
    type Command = InventoryCommand;
    type Event = InventoryEvent;
    type Rejection = InventoryRejection;

    fn decide(
        state: &InventoryState,
        command: &InventoryCommand,
        ctx: &Context,
    ) -> Result<Vec<InventoryEvent>, InventoryRejection> {
        Inventory::decide_event(state, command, ctx).map(|event| vec![event])
    }

    fn evolve(state: &mut InventoryState, event: &InventoryEvent) {
        use InventoryEvent as E;
        match event {
            E::StockReceived { quantity } => {
                state.known = true;
                state.on_hand += quantity.get();
            }
            E::StockAdjusted { delta } => {
                state.on_hand = state
                    .on_hand
                    .checked_add_signed(*delta)
                    .expect("an adjustment never takes on hand below zero");
            }
            E::StockHeld { quantity, .. } => {
                state.reserved += quantity.get();
                state.open_holds += 1;
            }
            E::StockCommitted { quantity, .. } => {
                close_hold(state, *quantity);
                state.on_hand -= quantity.get();
            }
            E::StockReleased { quantity, .. } | E::HoldExpired { quantity, .. } => {
                close_hold(state, *quantity);
            }
        }
        assert!(state.reserved <= state.on_hand, "reserved never exceeds on hand");
        // What the SKU can still see of its holds: each holds at least one unit.
        assert!(state.reserved >= state.open_holds, "every open hold holds a unit or more");
        assert_eq!(state.open_holds == 0, state.reserved == 0, "nothing reserved without a hold");
    }
}

/// Checks what the SKU can see of a hold the order presents: that many units are held.
fn check_held(
    state: &InventoryState,
    order: &OrderId,
    quantity: Quantity,
) -> Result<(), InventoryRejection> {
    if state.open_holds == 0 || quantity.get() > state.reserved {
        return Err(InventoryRejection::HoldExceedsReserved {
            order: order.clone(),
            quantity: quantity.get(),
            reserved: state.reserved,
        });
    }
    Ok(())
}

fn close_hold(state: &mut InventoryState, quantity: Quantity) {
    assert!(state.open_holds > 0, "a hold is closed only while one is open");
    state.reserved =
        state.reserved.checked_sub(quantity.get()).expect("a hold closes no more than is held");
    state.open_holds -= 1;
}
