//! orderly: an event-sourced CQRS order engine for commerce (inventory, orders, payments).
//!
//! This facade re-exports the public API so that an embedding program depends on one crate.
//! See `ARCHITECTURE.md` for the map of the workspace.

pub use orderly_core::*;
