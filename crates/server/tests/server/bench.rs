//! `orderly bench` on a small day (10,000 orders over 4 tenants): the run answers every
//! placement, and every check holds: the log verifies, reconcile finds nothing, no SKU is
//! oversold and no hold is left open, every acknowledged order is there with the status the
//! model gave it, every retry gets its first answer back, and nothing but sold-out placements
//! is refused. The report says which threads used the CPU. The report folder gets `report.md`
//! and the two charts.

use orderly_server::bench::{self, BenchConfig};

#[test]
fn a_small_black_friday_day_runs_durably_and_every_check_holds() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let config = BenchConfig {
        orders: 10_000,
        tenants: 4,
        seed: 9,
        data: Some(folder.path().join("data")),
        report: Some(folder.path().join("report")),
        raw_mib: 4,
        memory_mib: 4,
        ..BenchConfig::record_day(9)
    };
    let report = bench::run(&config).expect("the day runs");

    assert_eq!(report.orders, 10_000);
    assert_eq!(report.placed + report.sold_out, 10_000, "every placement answered");
    assert!(report.sold_out > 0, "flash-sale products sell out");
    assert!(report.placed > 9_000, "only flash-sale products sell out: {report:?}");
    assert!(report.verify_ok, "audit verify: {report:?}");
    assert!(report.reconcile_ok, "audit reconcile: {report:?}");
    assert_eq!(report.oversold, 0);
    assert_eq!(report.open_holds, 0, "every unpaid hold expired");
    assert!(report.expired_units > 0, "some holds ran out");
    assert_eq!(report.orders_found, report.placed, "every acknowledged order is there");
    assert!(report.orders_ok, "statuses as the model says: {report:?}");
    assert!(report.retries_ok && report.retries_replayed > 100, "{report:?}");
    assert_eq!(report.misplaced_replays, 0, "every replay points at its first send");
    assert!(report.money_ok, "the log moved the money the acknowledged commands did");
    assert!(report.stock_received_ok, "the log received the model's opening stock");
    assert!(report.unexpected_rejections.is_empty(), "{:?}", report.unexpected_rejections);
    assert!(report.passed());
    assert!(
        report.records > 0 && report.events > report.records,
        "a decision record holds every event of its command"
    );
    assert!(report.seconds > 0.0 && report.orders_per_sec > 0.0 && report.ack_p99_ms > 0.0);
    assert!(report.raw_mb_per_sec > 0.0 && report.log_mb_per_sec > 0.0 && report.rss_mb > 0.0);
    assert!(report.mem_access_ns > 0.0, "{report:?}");
    if cfg!(target_os = "linux") {
        let cpu = report.thread_cpu_seconds.as_ref().expect("thread CPU is read on Linux");
        assert!(cpu.decision > 0.0 && cpu.log > 0.0 && cpu.driver > 0.0, "{cpu:?}");
        // Other tests' engines run in this process too, and their threads count: no upper
        // bound here.
        assert!(report.decision_busy.is_some_and(|busy| busy > 0.0), "{report:?}");
    }

    let dir = folder.path().join("report");
    let markdown = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    let reproduce = format!("--orders 10000 --tenants 4 --seed 9 --in-flight {}", config.in_flight);
    assert!(markdown.contains(&reproduce), "{markdown}");
    assert!(!markdown.contains("FAIL"), "{markdown}");
    for chart in ["run.svg", "day-curve.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).expect("a chart");
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{chart}");
    }

    // The same data folder cannot take a second day: the checks assume a fresh log.
    let again = bench::run(&BenchConfig { report: None, ..config });
    assert!(again.is_err());
}

#[test]
fn a_folder_that_holds_a_log_is_refused_saying_whether_another_process_holds_it() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let data = folder.path().join("data");
    let config = BenchConfig {
        orders: 10,
        tenants: 1,
        data: Some(data.clone()),
        raw_mib: 1,
        ..BenchConfig::record_day(1)
    };
    let log = orderly_core::store::Log::open(
        &data.join("log"),
        orderly_core::store::LogConfig::default(),
    )
    .expect("a log")
    .0;
    let held = format!("{:#}", bench::run(&config).expect_err("a held folder"));
    assert!(held.contains("already holds a log, in use by another process"), "{held}");
    drop(log);
    let used = format!("{:#}", bench::run(&config).expect_err("a used folder"));
    assert!(used.contains("already holds a log: the day needs an empty data folder"), "{used}");
}
