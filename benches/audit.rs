//! Audit throughput: verify + replay of a log of at least `ORDERLY_BENCH_AUDIT_EVENTS`
//! [10,000,000] domain events in one single-threaded pass, next to the memory bandwidth
//! measured in the same run.
//!
//! The log is written straight through the store (not the engine, which would take minutes):
//! the Black Friday mix of `support/` as whole order lives — placed with a hold per line,
//! authorized and confirmed, then shipped (holds committed, payment captured) or, one in four,
//! cancelled (holds released, authorization voided) — each command one decision record, and
//! [`TURN`] commands a batch, as the engine writes them under load. It is kept under
//! `target/bench-audit` and reused while it has enough events.
//!
//! Then, each over the page-cached log: `scan` (the store's verifying pass alone: checksums,
//! hash chain, positions, stream versions), `verify` (plus decoding every payload), and
//! `verify + replay` (plus applying every event with the domain's `evolve`), the figure of
//! issue 8. Run with `cargo bench --bench audit`; the last stdout line is one JSON object.

/// The allocator orderly's binaries use (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use orderly::audit::{self, ReplayPoint};
use orderly::codec;
use orderly::domain::{
    CancelReason, Currency, CustomerId, Event, GatewayId, GatewayReference, InventoryEvent, Money,
    OrderEvent, OrderId, PaymentEvent, PaymentId, Quantity, Sku, TenantId, Timestamp,
};
use orderly_store::{Log, LogConfig, NewRecord};

#[path = "support/mod.rs"]
mod support;
use support::{Mix, SKUS_PER_TENANT, TENANTS, env, per_sec, tenant};

const START: u64 = 1_764_115_200_000;

/// Commands in one batch: a turn of the engine under load. In a record day's log (`orderly
/// bench`, session 25) a batch held 97 records on average, and 92% of the records were in
/// batches of 512 or more.
const TURN: usize = 256;

/// Appends batches of events as the engine would, several batches at a time so that the log's
/// group commit is not the bottleneck of writing the benchmark's input.
struct Writer {
    log: Log,
    /// The events of the command being written, and their tenant.
    pending: Vec<Event>,
    tenant: Option<TenantId>,
    /// The decision records of the turn being written.
    turn: Vec<NewRecord>,
    batches: Vec<Vec<NewRecord>>,
    records: u64,
    events: u64,
    now: u64,
}

impl Writer {
    fn event(&mut self, tenant: &TenantId, event: Event) {
        self.tenant = Some(tenant.clone());
        self.pending.push(event);
    }

    /// Ends the command: its decision record, in the turn's batch.
    fn commit(&mut self) {
        let tenant = self.tenant.take().expect("a command has events");
        let encoded = codec::encode_decision(&tenant, None, &self.pending);
        self.events += self.pending.len() as u64;
        self.pending.clear();
        self.records += 1;
        self.turn.push(encoded.into_record(Timestamp(self.now)));
        self.now += 1;
        if self.turn.len() >= TURN {
            self.batches.push(std::mem::take(&mut self.turn));
            if self.batches.len() >= 8 {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if !self.turn.is_empty() {
            self.batches.push(std::mem::take(&mut self.turn));
        }
        // One `append` per turn keeps the batches of the engine; appending them through the
        // asynchronous path lets the writer group them.
        let (tx, rx) = std::sync::mpsc::channel();
        let count = self.batches.len();
        for batch in self.batches.drain(..) {
            let tx = tx.clone();
            self.log.append_or_wait(&batch, move |r| drop(tx.send(r))).unwrap();
        }
        for _ in 0..count {
            rx.recv().unwrap().unwrap();
        }
    }
}

/// Writes the log; returns its records and events.
fn write_log(dir: &Path, events: u64) -> (u64, u64) {
    let (log, _) = Log::open(dir, LogConfig::default()).unwrap();
    let mut w = Writer {
        log,
        pending: Vec::new(),
        tenant: None,
        turn: Vec::new(),
        batches: Vec::new(),
        records: 0,
        events: 0,
        now: START,
    };
    let eur = Currency::new("EUR").unwrap();
    let customer = CustomerId::new("c-1").unwrap();
    let gateway = GatewayId::new("sim-1").unwrap();
    for t in 0..TENANTS {
        for s in 0..SKUS_PER_TENANT {
            let sku = Sku::new(&format!("sku-{s}")).unwrap();
            let quantity = Quantity::new(1_000_000).unwrap();
            w.event(
                &tenant(t),
                Event::Inventory { sku, event: InventoryEvent::StockReceived { quantity } },
            );
            w.commit();
        }
    }
    let mut mix = Mix(42);
    let mut n = 0u64;
    while w.events < events {
        let t = tenant(mix.below(TENANTS));
        let order = OrderId::new(&format!("o-{n}")).unwrap();
        let payment = PaymentId::new(&format!("pay-{n}")).unwrap();
        n += 1;
        let lines = mix.basket();
        let total: u64 = lines.iter().map(|l| l.amount()).sum();
        let held: Vec<(Sku, Quantity)> =
            lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        let expires_at = Timestamp(w.now + 900_000);
        let placed = OrderEvent::OrderPlaced {
            customer: customer.clone(),
            currency: eur,
            lines,
            total,
            hold_expires_at: expires_at,
        };
        w.event(&t, Event::Order { order: order.clone(), event: placed });
        for (sku, quantity) in &held {
            let event =
                InventoryEvent::StockHeld { order: order.clone(), quantity: *quantity, expires_at };
            w.event(&t, Event::Inventory { sku: sku.clone(), event });
        }
        w.commit();
        let amount = Money::new(total, eur);
        let authorized = PaymentEvent::PaymentAuthorized {
            order: order.clone(),
            amount,
            gateway: gateway.clone(),
            reference: Some(GatewayReference::new(&format!("auth-{order}")).unwrap()),
        };
        w.event(&t, Event::Payment { payment: payment.clone(), event: authorized });
        w.event(
            &t,
            Event::Order {
                order: order.clone(),
                event: OrderEvent::OrderConfirmed { payment: payment.clone() },
            },
        );
        w.commit();
        let cancel = mix.below(4) == 0;
        if cancel {
            let reason = CancelReason::Requested;
            w.event(
                &t,
                Event::Order { order: order.clone(), event: OrderEvent::OrderCancelled { reason } },
            );
        } else {
            w.event(&t, Event::Order { order: order.clone(), event: OrderEvent::OrderShipped });
        }
        for (sku, quantity) in held {
            let (order, quantity) = (order.clone(), quantity);
            let event = if cancel {
                InventoryEvent::StockReleased { order, quantity }
            } else {
                InventoryEvent::StockCommitted { order, quantity }
            };
            w.event(&t, Event::Inventory { sku, event });
        }
        let event = if cancel {
            PaymentEvent::PaymentVoided
        } else {
            PaymentEvent::PaymentCaptured { amount: total }
        };
        w.event(&t, Event::Payment { payment, event });
        w.commit();
    }
    w.flush();
    (w.records, w.events)
}

/// The log under `target/bench-audit`, written unless a large enough one of decision records
/// is there; returns its folder, records and events.
fn prepared_log(events: u64) -> (std::path::PathBuf, u64, u64) {
    let dir = Path::new("target/bench-audit");
    // Named for the record format and the batches: a log of an older kind is written again.
    let marker = dir.join("format-3-turns");
    let known = std::fs::read_to_string(&marker).ok().and_then(|s| {
        let (records, events) = s.trim().split_once(' ')?;
        Some((records.parse().ok()?, events.parse().ok()?))
    });
    if let Some((records, logged)) = known
        && logged >= events
    {
        eprintln!("reusing the log of {records} records, {logged} events in {}", dir.display());
        return (dir.join("log"), records, logged);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let started = Instant::now();
    let (records, logged) = write_log(&dir.join("log"), events);
    eprintln!(
        "wrote {records} records, {logged} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(&marker, format!("{records} {logged}")).unwrap();
    (dir.join("log"), records, logged)
}

/// Memory bandwidth: bytes copied per second by `memcpy` between two 256 MiB buffers.
fn memory_gb_per_sec() -> f64 {
    let len = 256 << 20;
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src);
    let rounds = 8;
    let started = Instant::now();
    for i in 0..rounds {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst[i]);
    }
    per_sec(rounds as u64 * len as u64, started.elapsed()) / 1e9
}

fn log_bytes(dir: &Path) -> u64 {
    let mut bytes = 0;
    orderly_store::scan(
        dir,
        |_| {},
        |r| {
            bytes += r.len;
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    bytes
}

fn timed<T>(what: &str, events: u64, run: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = run();
    let elapsed = started.elapsed();
    eprintln!("{what}: {:.2} s, {:.0} events/s", elapsed.as_secs_f64(), per_sec(events, elapsed));
    (out, elapsed)
}

fn main() {
    // As `orderly` runs.
    orderly::engine::use_small_pages();
    let events = env("ORDERLY_BENCH_AUDIT_EVENTS", 10_000_000);
    let (dir, records, events) = prepared_log(events);
    let bytes = log_bytes(&dir); // also brings the log into the page cache
    let mem = memory_gb_per_sec();
    eprintln!(
        "memory bandwidth (memcpy): {mem:.1} GB/s; log: {records} records, {events} events, {:.0} MB",
        bytes as f64 / 1e6
    );

    let (_, scan) =
        timed("scan (store pass: crc32c, blake3 chain, positions, versions)", events, || {
            orderly_store::scan(&dir, |_| {}, |_| ControlFlow::Continue(())).unwrap()
        });
    let (_, verify) = timed("verify (scan + decode every payload)", events, || {
        audit::verify(&dir, None, &mut audit::no_progress).unwrap()
    });
    let (state, both) = timed("verify + replay (one pass)", events, || {
        audit::replay(&dir, ReplayPoint::Head, None, &mut audit::no_progress).unwrap()
    });
    assert_eq!(state.digest.head, records, "replay reached the head");

    let events_per_sec = per_sec(events, both);
    let mb_per_sec = per_sec(bytes, both) / 1e6;
    let ratio = mb_per_sec / (mem * 1e3);
    println!(
        "{{\"records\":{records},\"events\":{events},\"log_mb\":{:.0},\"seconds\":{:.3},\"events_per_sec\":{events_per_sec:.0},\"mb_per_sec\":{mb_per_sec:.1},\"mem_gb_per_sec\":{mem:.2},\"ratio_to_mem_bandwidth\":{ratio:.4},\"scan_events_per_sec\":{:.0},\"verify_events_per_sec\":{:.0},\"target_events_per_sec\":5000000}}",
        bytes as f64 / 1e6,
        both.as_secs_f64(),
        per_sec(events, scan),
        per_sec(events, verify),
    );
}
