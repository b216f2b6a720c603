//! orderly-core's behaviour: the domain as given/when/then scenarios for every command and
//! rejection of each aggregate and as properties that random command sequences must keep, and
//! the event codec's round trips and golden bytes, and the audit commands on intact and damaged
//! logs.
//!
//! One binary for the crate (see `../shared/style.md`, "tests as documentation"); each module
//! opens with what it proves.

mod domain {
    mod fixtures;
    mod harness;

    mod inventory;
    mod order;
    mod payment;
    mod properties;
    mod tenant;
    mod types;
}

mod audit;
mod codec;
mod engine;
mod projection;
mod workload;
