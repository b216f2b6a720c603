//! orderly-store: a generic, durable, append-only log of records.
//!
//! **Architecture Invariant:** this crate knows nothing of orders, tenants or HTTP; payloads are
//! opaque bytes.

mod position;

pub use position::{Position, StreamVersion};
