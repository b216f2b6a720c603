//! orderly-server's behaviour over HTTP: every endpoint and every error code through the
//! `Router` (`oneshot`), tenant isolation, idempotent replay (also across a restart), the
//! OpenAPI document and the metrics; a few tests through a real socket (a 16 MiB body refused
//! with 413 before it is read); and the real binary, SIGKILLed while orders are in flight,
//! restarted with every acknowledged order and idempotency key intact; and a small Black Friday
//! day through `orderly bench` with all its checks.
//!
//! One binary for the crate (see `../shared/style.md`, "tests as documentation"); each module
//! opens with what it proves.

mod server {
    mod support;

    mod bench;
    mod binary;
    mod endpoints;
    mod errors;
    mod idempotency;
    mod isolation;
    mod malformed;
    mod metrics;
    mod openapi;
    mod socket;
    mod tenants;
}
