//! orderly-core: the pure domain (deciders for inventory, orders and payments) and, around it,
//! the engine, projections and process managers.
//!
//! **Architecture Invariant:** [`domain`] does no IO, reads no clock, draws no randomness and is
//! not async; time enters only through [`domain::Context`].

pub mod audit;
pub mod codec;
pub mod domain;
pub mod engine;
pub mod node;
pub mod payments;
pub mod process;
pub mod projection;
pub mod workload;

/// The log underneath (its configuration, observer and readers).
pub use orderly_store as store;
pub use orderly_store::{Position, StreamVersion};
