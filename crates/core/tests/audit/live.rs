//! Audits read a log that a running engine holds open and keeps appending to: no lock error,
//! nothing modified, and each audit sees a consistent prefix of the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orderly_core::audit::{self, ReplayPoint};
use orderly_core::engine::{Engine, ManualClock};

use super::{START, config, no_progress, place, receive};

#[test]
fn verify_works_while_a_writer_holds_and_appends_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock, 64 << 10)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 1_000_000)).unwrap();
    let head = engine.head().0;
    let report = audit::verify(dir.path(), None, &mut no_progress()).unwrap();
    assert_eq!(report.records, head, "no lock fight with the engine that holds the folder");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                engine.execute_blocking(place("acme", &format!("o-{n}"), &[("sku-1", 1)])).unwrap();
                n += 1;
            }
        })
    };
    // At least 20 audits, and on until one has seen the log grow: a release build audits a
    // log this small many times over while one command is made durable.
    let started = Instant::now();
    let (mut seen, mut audits) = (0, 0);
    while audits < 20 || seen <= head {
        assert!(started.elapsed() < Duration::from_secs(30), "the log grows while audited");
        audits += 1;
        let report = audit::verify(dir.path(), None, &mut no_progress()).unwrap();
        assert!(report.records >= seen, "the log only grows");
        seen = report.records;
        let state = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress()).unwrap();
        let sku = &state.tenants[0].skus[0];
        assert_eq!(sku.on_hand, 1_000_000);
        assert_eq!(sku.reserved, state.tenants[0].orders.placed, "whole batches only");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // The engine still works, and reopening finds nothing to repair.
    engine.execute_blocking(receive("acme", "sku-1", 1)).unwrap();
    let final_head = engine.head().0;
    engine.shutdown();
    drop(engine);
    let report = audit::verify(dir.path(), None, &mut no_progress()).unwrap();
    assert_eq!((report.records, report.torn_tail), (final_head, None));
}
