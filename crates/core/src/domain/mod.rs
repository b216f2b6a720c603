//! The pure domain: inventory, orders and payments as deciders.
//!
//! **Architecture Invariant:** nothing here does IO, reads a clock, draws randomness or is
//! async. A decision depends only on the state, the command and the [`Context`], so replaying
//! the log gives the same state every time. `crates/core/tests/domain_purity.rs` checks it.
//!
//! Each aggregate is a [`Decider`]: [`Inventory`] per (tenant, SKU), [`Order`] and [`Payment`].
//! [`Tenant`] composes them into the decisions that span aggregates (placing an order holds the
//! stock of every line atomically); it is what the engine runs.

mod decider;
mod envelope;
mod growing;
pub mod inventory;
pub mod limits;
pub mod order;
pub mod payment;
mod tenant;
mod types;

pub(crate) use decider::broken_invariant;
pub use decider::{Context, Decider};
pub use envelope::{Envelope, RESERVED_KEY_PREFIX};
pub(crate) use growing::GrowingMap;
pub use inventory::{
    Inventory, InventoryCommand, InventoryEvent, InventoryRejection, InventoryState,
};
pub use order::{
    CancelReason, Order, OrderCommand, OrderEvent, OrderLine, OrderRejection, OrderState,
    OrderStatus, Shortage,
};
pub use payment::{
    DeclineReason, Payment, PaymentCommand, PaymentEvent, PaymentRejection, PaymentState,
    PaymentStatus,
};
pub use tenant::{Command, Event, Rejection, Tenant, TenantState};
pub use types::{
    Currency, CustomerId, GatewayId, GatewayReference, IdempotencyKey, InvalidValue, Money,
    OrderId, PaymentId, Quantity, Sku, TenantId, Timestamp,
};
