//! orderly-server: the standalone order server (`orderly serve`) and the command-line tool.
//!
//! **Architecture Invariant:** only this crate knows HTTP and JSON; it turns requests into the
//! core's commands and queries and their answers back into responses, and decides nothing.

pub mod api;
pub mod app;
pub mod bench;
pub mod error;
pub mod extract;
pub mod load;
pub mod metrics;
pub mod serve;
pub mod tenants;
