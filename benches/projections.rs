//! Projection throughput and lag, in one run.
//!
//! 1. **catch-up**: a log of at least `ORDERLY_BENCH_EVENTS` [5,000,000] events is written
//!    through the durable engine (orders of 1–5 lines over 50 tenants, placed by many concurrent
//!    callers). Then the first `ORDERLY_BENCH_PROJECTIONS` [5: what the server runs] of the read
//!    models (inventory, orders, orders by customer, KPIs, units held, in that order) start on one
//!    projection host, as `Node` runs them, on an empty redb file, and catch up with it:
//!    `projection_events_per_sec` = events / time until all reached the head (one decision
//!    record holds an order and its holds: about four events).
//!    The bound it is compared with: one pass that reads and decodes every record and writes
//!    nothing (`decode_events_per_sec`, `ratio_to_decode`), which a host, reading and decoding
//!    each record once, cannot beat.
//! 2. **lag**: with the projections caught up, the engine takes a paced load of
//!    `ORDERLY_BENCH_LAG_RATE` [30,000] orders/s (about four events each) for
//!    `ORDERLY_BENCH_LAG_SECONDS` [5]; every 5 ms a sampler notes the log's head and the time,
//!    and measures how long all projections take to reach it: `lag_p50_ms`, `lag_p99_ms`.
//!
//! `ORDERLY_BENCH_MAX_BATCH` overrides the host's batch cap.
//!
//! Run with `cargo bench --bench projections`. The last stdout line is one JSON object. Data
//! lives under `target/bench-projections` and is removed at the end.

/// The allocator orderly's binaries use (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orderly::Position;
use orderly::domain::{Envelope, OrderId};
use orderly::engine::CommittedEvent;
use orderly::engine::{Config, Engine};
use orderly::projection::{
    CustomersProjection, Hosted, InventoryProjection, KpiProjection, OpenHoldsProjection,
    OrdersProjection, ProjectionHost, WorkerConfig,
};

#[path = "support/mod.rs"]
mod support;
use support::{Mix, TENANTS, env, per_sec, percentile, place, stock_commands, tenant};

/// Concurrent callers writing the log.
const CALLERS: u64 = 4096;

/// Places orders from many concurrent callers until `stop` says so; orders are numbered from
/// `next`. With `rate` (orders per second), callers hold back to keep to it.
async fn place_orders(
    engine: &Engine,
    next: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
    rate: Option<u64>,
    events: &Arc<AtomicU64>,
) {
    let started = Instant::now();
    let first = next.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (engine, next, stop) = (engine.clone(), next.clone(), stop.clone());
            let events = events.clone();
            tokio::spawn(async move {
                let mut mix = Mix(7_000 + c);
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if let Some(rate) = rate {
                        // Order n is due at (n - first) / rate seconds into the run.
                        let due =
                            Duration::from_secs_f64(per_sec(n - first, Duration::from_secs(rate)));
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    let t = tenant(mix.below(TENANTS));
                    let order = OrderId::new(&format!("o-{n}")).unwrap();
                    let placed =
                        engine.execute(Envelope::new(t, place(&order, mix.basket()))).await;
                    match placed {
                        Ok(outcome) => {
                            events.fetch_add(outcome.events.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => assert_eq!(e.code(), "insufficient_stock", "unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn main() {
    // As `orderly` runs.
    orderly::engine::use_small_pages();
    let target_events = env("ORDERLY_BENCH_EVENTS", 5_000_000);
    let lag_rate = env("ORDERLY_BENCH_LAG_RATE", 30_000);
    let lag_seconds = env("ORDERLY_BENCH_LAG_SECONDS", 5);
    let projections = env("ORDERLY_BENCH_PROJECTIONS", 5).clamp(1, 5);
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-projections");
    std::fs::create_dir_all(&base).unwrap();
    let scratch = tempfile::tempdir_in(&base).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let engine = Engine::open(&scratch.path().join("data"), Config::default()).unwrap();
    for (t, command) in stock_commands() {
        engine.execute_blocking(Envelope::new(t, command)).unwrap();
    }
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writing = Instant::now();
    runtime.block_on(async {
        let watcher = {
            let (stop, written) = (stop.clone(), written.clone());
            tokio::spawn(async move {
                while written.load(Ordering::Relaxed) < target_events {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                stop.store(true, Ordering::Relaxed);
            })
        };
        place_orders(&engine, &next, &stop, None, &written).await;
        watcher.await.unwrap();
    });
    let head = engine.head();
    eprintln!("log: {} records written in {:.1} s", head.0, writing.elapsed().as_secs_f64());

    // The bound: read and decode every record once, write nothing.
    let decoding = Instant::now();
    let mut decoded = 0_u64;
    for record in engine.log().read_from(Position(0)) {
        decoded += CommittedEvent::decode_record(&record.unwrap()).unwrap().len() as u64;
    }
    let decode_events_per_sec = per_sec(decoded, decoding.elapsed());
    eprintln!("read + decode only: {decode_events_per_sec:.0} events/s ({decoded} events)");

    // Catch-up: the projections from position 0 on an empty read-model file, on one host.
    let db = Arc::new(orderly::projection::open_db(&scratch.path().join("models.redb")).unwrap());
    let catching_up = Instant::now();
    let hosted: Vec<Hosted> = (0..projections)
        .map(|which| match which {
            0 => InventoryProjection.into(),
            1 => OrdersProjection.into(),
            2 => CustomersProjection.into(),
            3 => KpiProjection.into(),
            _ => OpenHoldsProjection.into(),
        })
        .collect();
    let default = WorkerConfig::default();
    let max_batch = usize::try_from(env("ORDERLY_BENCH_MAX_BATCH", 0)).unwrap();
    let config = WorkerConfig {
        max_batch: if max_batch == 0 { default.max_batch } else { max_batch },
        ..default
    };
    let host = ProjectionHost::start(db, engine.log(), hosted, config).unwrap();
    let workers = host.projections();
    for worker in workers {
        worker.wait_for(head, Duration::from_secs(3_600)).unwrap();
    }
    let catchup = catching_up.elapsed();
    let projection_events_per_sec = per_sec(decoded, catchup);
    eprintln!(
        "catch-up: {} records, {decoded} events in {:.2} s: {projection_events_per_sec:.0} events/s",
        head.0,
        catchup.as_secs_f64()
    );

    // Lag under a paced load.
    stop.store(false, Ordering::Relaxed);
    let before = written.load(Ordering::Relaxed);
    let loading = Instant::now();
    let mut lags: Vec<u64> = Vec::new();
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut lags = Vec::new();
            while loading.elapsed() < Duration::from_secs(lag_seconds) {
                let noted = Instant::now();
                let at = engine.head();
                if at.0 > 0 {
                    for worker in workers {
                        worker.wait_for(Position(at.0), Duration::from_secs(60)).unwrap();
                    }
                    lags.push(u64::try_from(noted.elapsed().as_micros()).unwrap());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            lags
        });
        let (engine, next, stop, written) = (&engine, &next, &stop, &written);
        runtime.block_on(async {
            let stopper = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(lag_seconds)).await;
                    stop.store(true, Ordering::Relaxed);
                })
            };
            place_orders(engine, next, stop, Some(lag_rate), written).await;
            stopper.await.unwrap();
        });
        lags = sampler.join().unwrap();
    });
    let loaded = loading.elapsed();
    let engine_events_per_sec = per_sec(written.load(Ordering::Relaxed) - before, loaded);
    lags.sort_unstable();
    let (lag_p50_ms, lag_p99_ms) = (percentile(&lags, 0.5), percentile(&lags, 0.99));
    eprintln!(
        "lag: engine took {engine_events_per_sec:.0} events/s; projections behind the head p50 {lag_p50_ms:.2} ms, p99 {lag_p99_ms:.2} ms ({} samples)",
        lags.len()
    );
    host.stop().unwrap();
    engine.shutdown();
    println!(
        "{{\"catchup_records\":{},\"catchup_events\":{decoded},\"catchup_seconds\":{:.3},\"projection_events_per_sec\":{projection_events_per_sec:.0},\"decode_events_per_sec\":{decode_events_per_sec:.0},\"ratio_to_decode\":{:.3},\"projections\":{projections},\"lag_engine_events_per_sec\":{engine_events_per_sec:.0},\"lag_p50_ms\":{lag_p50_ms:.3},\"lag_p99_ms\":{lag_p99_ms:.3},\"lag_samples\":{}}}",
        head.0,
        catchup.as_secs_f64(),
        projection_events_per_sec / decode_events_per_sec,
        lags.len(),
    );
}
