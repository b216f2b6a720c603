//! orderly-server's behaviour over HTTP: every endpoint and every error code through the
//! `Router` (`oneshot`), tenant isolation, idempotent replay (also across a restart), the
//! OpenAPI document and the metrics; a few tests through a real socket (a 16 MiB body refused
//! with 413 before it is read); the live event stream over a socket (resume without gap or
//! duplicate, a slow client cut off without holding up commits, the per-tenant cap), KPI
//! figures equal to those computed from the log, and the dashboard page; the real binary,
//! SIGKILLed while orders are in flight, restarted with every acknowledged order and
//! idempotency key intact, and its audit commands on the folder a server wrote; and a small
//! Black Friday day through `orderly bench` with all its checks.
//!
//! One binary for the crate (see `../shared/style.md`, "tests as documentation"); each module
//! opens with what it proves.

mod server {
    mod support;

    mod audit;
    mod bench;
    mod binary;
    mod dashboard;
    mod endpoints;
    mod errors;
    mod events;
    mod idempotency;
    mod isolation;
    mod kpi;
    mod malformed;
    mod metrics;
    mod openapi;
    mod socket;
    mod tenants;
}
