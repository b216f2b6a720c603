//! `orderly bench`: the Black Friday day of [`orderly_core::workload`] through the embedded,
//! durable engine, as fast as the machine takes it, then checked.
//!
//! The run: the machine's own limits are measured in it (`machine.rs`): first the disk's
//! fdatasync'd sequential write speed in the same folder (the figure the log is bounded by);
//! after the day, the time of a random memory access (what the engine's map lookups wait
//! for). The day: every step goes through [`Engine::send_ack`] (see `drive.rs`), answered only
//! once durable; the engine's clock is a `ManualClock` set to the steps' virtual times, so it
//! expires unpaid holds itself. The checks, on the closed log, in one pass of
//! `audit::check`: the log verifies, reconciling it finds nothing, no SKU is oversold, every
//! acknowledged order is there with the status the model expects, and every retry got its
//! first answer back.

mod drive;
mod machine;
mod report;
mod threads;

pub use threads::ThreadCpu;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use orderly_core::audit::{self, OrderCounts};
use orderly_core::domain::limits::DEFAULT_HOLD_TTL_MS;
use orderly_core::engine::{Config, Engine, ManualClock};
use orderly_core::workload::{Workload, WorkloadConfig};
use serde::Serialize;

/// Commands in flight at once: enough for group commit to fill its batches (the virtual-time
/// window bounds them further; on the record day 16,384 ran faster than 4,096).
pub const DEFAULT_IN_FLIGHT: usize = 16_384;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Orders in the day.
    pub orders: u64,
    /// Tenants sharing them.
    pub tenants: usize,
    /// Seeds the workload: the same seed runs the same day.
    pub seed: u64,
    /// The data folder (must not hold a log yet); a temporary folder, removed after, if none.
    pub data: Option<PathBuf>,
    /// Where to write `report.md` and the charts, if anywhere.
    pub report: Option<PathBuf>,
    /// MiB written to measure the raw disk (in 1 MiB fdatasync'd chunks).
    pub raw_mib: u64,
    /// MiB of memory read at random to time one access (0: not measured).
    pub memory_mib: u64,
    /// Commands in flight at once.
    pub in_flight: usize,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl BenchConfig {
    /// The record day: 1,033,625 orders over 50 tenants.
    #[must_use]
    pub fn record_day(seed: u64) -> BenchConfig {
        BenchConfig {
            orders: orderly_core::workload::RECORD_DAY_ORDERS,
            tenants: 50,
            seed,
            data: None,
            report: None,
            raw_mib: 256,
            memory_mib: 256,
            in_flight: DEFAULT_IN_FLIGHT,
            progress: false,
        }
    }
}

/// What a run measured and what its checks found. Serialized as the command's last line.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Orders in the day (placements sent).
    pub orders: u64,
    /// Tenants.
    pub tenants: usize,
    /// The workload's seed.
    pub seed: u64,
    /// Domain events in the log, as `audit::check` counted them.
    pub events: u64,
    /// Records in the log.
    pub records: u64,
    /// Commands sent and answered.
    pub commands: u64,
    /// Wall time from the first command sent to the last answer.
    pub seconds: f64,
    /// `orders / seconds`.
    pub orders_per_sec: f64,
    /// Answers per second.
    pub commands_per_sec: f64,
    /// Median time from sending a command to its durable answer.
    pub ack_p50_ms: f64,
    /// 99th percentile of the same.
    pub ack_p99_ms: f64,
    /// Slowest answer.
    pub ack_max_ms: f64,
    /// Log bytes written per second of the run.
    pub log_mb_per_sec: f64,
    /// The disk's fdatasync'd sequential write speed, measured in the same run.
    pub raw_mb_per_sec: f64,
    /// One random memory access, in nanoseconds, measured in the same run right after the day
    /// (within [`BenchConfig::memory_mib`], 256 MiB by default; 0 if not measured): what
    /// most lookups in the engine's maps wait for.
    pub mem_access_ns: f64,
    /// Peak resident memory of the process after the run (VmHWM), in MB.
    pub rss_mb: f64,
    /// Placements accepted.
    pub placed: u64,
    /// Placements refused because a flash-sale product had sold out.
    pub sold_out: u64,
    /// Follow-ups not sent because their placement was refused.
    pub skipped: u64,
    /// Retries answered with the first outcome.
    pub retries_replayed: u64,
    /// Orders in the log at the end (must be `placed`).
    pub orders_found: u64,
    /// Units whose holds expired (orders never paid).
    pub expired_units: u64,
    /// Holds still open at the end (all must have expired, shipped or been released).
    pub open_holds: u64,
    /// SKUs whose stock was oversold at any event of the log or at its end: on hand below
    /// zero, more reserved than on hand, or more shipped than received.
    pub oversold: u64,
    /// The stock the log received, per SKU, is the model's opening stock: no receipt lost or
    /// applied twice.
    pub stock_received_ok: bool,
    /// The log verified (`audit::check`) with a clean end.
    pub verify_ok: bool,
    /// Reconciling the log (`audit::check`) found no discrepancy.
    pub reconcile_ok: bool,
    /// Every acknowledged order is in the log, each tenant with the statuses the model expects.
    pub orders_ok: bool,
    /// The money the log moved per currency (authorized, declined, captured, refunded) is what
    /// the acknowledged commands moved: none lost, none moved twice.
    pub money_ok: bool,
    /// Every retry was answered with its first outcome.
    pub retries_ok: bool,
    /// Retries answered as replays whose answer points at anything but their first send's
    /// decision in the log (same tenant, same key, the same kind of command): must be none.
    pub misplaced_replays: u64,
    /// Refusals other than sold-out placements, by code (none expected).
    pub unexpected_rejections: BTreeMap<String, u64>,
    /// Seconds the checks took.
    pub check_seconds: f64,
    /// CPU seconds of the process's threads by role over the day (the same span as `seconds`;
    /// Linux only): what bounds the run.
    pub thread_cpu_seconds: Option<ThreadCpu>,
    /// The decision thread's share of the day it was on a CPU: near 1, the single writer is
    /// the limit.
    pub decision_busy: Option<f64>,
    /// The driver's thread yielded to the engine's when it woke (a Linux batch thread), as
    /// an embedding program's load generator should.
    pub driver_yields: bool,
    /// Why `--report`'s files could not be written, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_error: Option<String>,
}

impl BenchReport {
    /// True when every check passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.verify_ok
            && self.reconcile_ok
            && self.orders_ok
            && self.money_ok
            && self.retries_ok
            && self.oversold == 0
            && self.stock_received_ok
            && self.open_holds == 0
            && self.unexpected_rejections.is_empty()
            && self.placed + self.sold_out == self.orders
    }
}

/// SKUs whose stock was oversold at any point of the log: short at the end (on hand below zero,
/// more reserved than on hand, more shipped than received), or at some event in between, as
/// reconcile flags them (holds beyond the stock that later expired leave no trace at the end).
fn oversold_skus(books: &audit::Reconciliation) -> u64 {
    let short_at_the_end = books.stock.iter().filter(|l| {
        let received = i64::try_from(l.received).unwrap_or(i64::MAX).saturating_add(l.adjusted);
        l.on_hand < 0
            || i64::try_from(l.reserved).unwrap_or(i64::MAX) > l.on_hand
            || i64::try_from(l.shipped).unwrap_or(i64::MAX) > received
    });
    let short_in_between = books
        .discrepancies
        .iter()
        .filter(|d| matches!(d.code, "negative_stock" | "reserved_exceeds_on_hand"));
    let skus: std::collections::BTreeSet<(&str, &str)> = short_at_the_end
        .map(|l| (l.tenant.as_str(), l.sku.as_str()))
        .chain(short_in_between.map(|d| (d.tenant.as_str(), d.subject.as_str())))
        .collect();
    skus.len() as u64
}

/// Runs the day and checks it. Errors are failures to run (IO, a stopped engine), not failed
/// checks: those are in the report ([`BenchReport::passed`]).
pub fn run(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let scratch;
    let data = match &config.data {
        Some(data) => data.clone(),
        None => {
            scratch = Scratch::new()?;
            scratch.path().to_path_buf()
        }
    };
    crate::serve::refuse_a_log_folder(&data)?;
    let log_dir = data.join("log");
    if log_dir.exists() {
        let held = orderly_core::store::Log::held_elsewhere(&log_dir).unwrap_or(false);
        let why = if held { ", in use by another process" } else { "" };
        bail!("{} already holds a log{why}: the day needs an empty data folder", data.display());
    }
    match std::fs::read_dir(&data).map(|mut entries| entries.next().is_some()) {
        Ok(true) => bail!("{} is not empty: the day needs an empty data folder", data.display()),
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", data.display())),
    }
    // The report's folder is made, and written to, before the day, so that a --report that
    // cannot be written (a file there, no permission) is said at once, not after the run.
    if let Some(dir) = &config.report {
        let probe = dir.join(".orderly-bench-probe");
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe))
            .with_context(|| format!("--report: cannot write in the folder {}", dir.display()))?;
    }
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let raw_mb_per_sec = machine::raw_mb_per_sec(&data, config.raw_mib)?;
    if config.progress {
        eprintln!("raw fdatasync'd sequential writes: {raw_mb_per_sec:.0} MB/s");
    }

    let workload = Workload::new(WorkloadConfig::new(config.orders, config.tenants, config.seed));
    let curve = workload.curve().to_vec();
    let opening_stock: BTreeMap<(String, String), u64> = workload
        .opening_stock()
        .map(|(tenant, sku, units)| ((tenant.to_string(), sku.to_string()), units))
        .collect();
    let clock = ManualClock::default();
    let engine_config = Config { clock: Arc::new(clock.clone()), ..Config::default() };
    let hold_ttl_ms = engine_config.hold_ttl_ms;
    assert_eq!(hold_ttl_ms, DEFAULT_HOLD_TTL_MS, "the model plans for the default hold");
    let engine = Engine::open(&log_dir, engine_config)?;
    let progress = bar(config.progress, config.orders, "orders");
    let tally = drive::run(
        &engine,
        &clock,
        workload,
        config.orders,
        config.in_flight.max(1),
        hold_ttl_ms,
        &progress,
    )?;
    progress.finish_and_clear();
    let records = engine.head().0;
    let misplaced_replays = drive::misplaced_replays(&engine, &tally.replays)?;
    engine.shutdown();
    drop(engine);
    let rss_mb = peak_rss_mb();
    // After the day's peak memory is read, so that the probe's own memory does not count in it.
    let mem_access_ns = machine::memory_access_ns(config.memory_mib);
    if config.progress {
        eprintln!("random memory access: {mem_access_ns:.0} ns");
    }

    let checks_started = Instant::now();
    // Verify, reconcile and replay in one pass over the log.
    let check_bar = audit_bar(config.progress, "verify, reconcile, replay");
    let checked = audit::check(&log_dir, &mut |p| {
        check_bar.set_length(p.bytes_total);
        check_bar.set_position(p.bytes_done);
    })?;
    check_bar.finish_and_clear();
    let audit::Checked { verify: verified, reconciliation: books, state } = checked;
    let verify_ok = verified.torn_tail.is_none() && verified.records == records;
    let (log_bytes, events) = (verified.bytes, verified.events);
    let oversold = oversold_skus(&books);
    // Every unit received is the model's opening stock, no more, no less: a receipt lost or
    // applied twice would hide an oversell from the checks above, which compare the log with
    // itself.
    let received: BTreeMap<(String, String), u64> = books
        .stock
        .iter()
        .filter(|l| l.received > 0)
        .map(|l| ((l.tenant.clone(), l.sku.clone()), l.received))
        .collect();
    let stock_received_ok = received == opening_stock;
    let expired_units = books.stock.iter().map(|l| l.expired).sum::<u64>();
    let open_holds = books.stock.iter().map(|l| l.open_holds).sum::<u64>();
    let found: BTreeMap<String, OrderCounts> =
        state.tenants.into_iter().map(|t| (t.tenant, t.orders)).collect();
    let none = OrderCounts::default();
    let orders_found: u64 = found.values().map(total).sum();
    // Every acknowledged order is there (and no other), and each tenant's orders ended as the
    // model says: none still waiting for payment, none paid and left unshipped.
    let orders_ok = orders_found == tally.placed
        && found.keys().chain(tally.expected.keys()).all(|tenant| {
            found.get(tenant).unwrap_or(&none) == tally.expected.get(tenant).unwrap_or(&none)
        });
    // The money the log moved is what the acknowledged commands moved, currency by currency.
    let logged: BTreeMap<String, drive::MoneyMoved> = books
        .money
        .iter()
        .map(|m| {
            let moved = drive::MoneyMoved {
                authorized: m.authorized,
                declined: m.declined,
                captured: m.captured,
                voided: m.voided,
                refunded: m.refunded,
            };
            (m.currency.clone(), moved)
        })
        .filter(|(_, moved)| *moved != drive::MoneyMoved::default())
        .collect();
    let money_ok = logged == tally.money;
    let check_seconds = checks_started.elapsed().as_secs_f64();

    let seconds = tally.elapsed.as_secs_f64();
    let report = BenchReport {
        orders: config.orders,
        tenants: config.tenants,
        seed: config.seed,
        events,
        records,
        commands: tally.commands,
        seconds,
        orders_per_sec: per_sec(config.orders, seconds),
        commands_per_sec: per_sec(tally.commands, seconds),
        ack_p50_ms: ms(tally.latency.value_at_quantile(0.5)),
        ack_p99_ms: ms(tally.latency.value_at_quantile(0.99)),
        ack_max_ms: ms(tally.latency.max()),
        log_mb_per_sec: per_sec(log_bytes, seconds) / 1e6,
        raw_mb_per_sec,
        mem_access_ns,
        rss_mb,
        placed: tally.placed,
        sold_out: tally.sold_out,
        skipped: tally.skipped,
        retries_replayed: tally.retries_replayed,
        orders_found,
        expired_units,
        open_holds,
        oversold,
        stock_received_ok,
        verify_ok,
        reconcile_ok: books.discrepancies.is_empty(),
        orders_ok,
        money_ok,
        retries_ok: tally.retries_not_replayed == 0 && misplaced_replays == 0,
        misplaced_replays,
        unexpected_rejections: tally.unexpected.clone(),
        check_seconds,
        decision_busy: tally.cpu.as_ref().map(|cpu| cpu.decision / seconds),
        thread_cpu_seconds: tally.cpu.clone(),
        driver_yields: tally.driver_yields,
        report_error: None,
    };
    let mut report = report;
    if let Some(dir) = &config.report
        && let Err(e) = report::write(dir, config, &report, &tally, &curve)
    {
        // The day's figures are still printed, with why the files are missing.
        report.report_error = Some(format!("{e:#}"));
    }
    Ok(report)
}

/// The day's temporary data folder, removed when dropped, and by [`remove_scratch_on_signal`]
/// when the process is interrupted (a record day leaves about 1 GB).
struct Scratch(tempfile::TempDir);

/// The temporary data folder of the run in progress, if it has one.
static SCRATCH: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir = tempfile::tempdir()?;
        *SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(dir.path().to_path_buf());
        Ok(Scratch(dir))
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

/// On SIGINT, SIGTERM or SIGHUP, removes the temporary data folder of the run in progress and
/// ends the process with exit status 130 (whichever signal it was), which would otherwise end
/// without dropping the folder.
fn remove_scratch_on_signal() {
    let installed = ctrlc::set_handler(|| {
        let scratch = SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(dir) = scratch {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => eprintln!("\ninterrupted: removed {}", dir.display()),
                Err(e) => eprintln!("\ninterrupted: could not remove {}: {e}", dir.display()),
            }
        }
        std::process::exit(130);
    });
    if let Err(e) = installed {
        tracing::warn!("no handler for interruptions ({e}): a temporary folder may be left");
    }
}

fn total(counts: &OrderCounts) -> u64 {
    counts.placed + counts.confirmed + counts.shipped + counts.delivered + counts.cancelled
}

/// Peak resident memory of this process (VmHWM), in MB; 0 where /proc is not there.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    per_sec(kib * 1024, 1.0) / 1e6
}

fn bar(shown: bool, length: u64, what: &str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn audit_bar(shown: bool, what: &str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let template = format!("{{bar:40}} {{bytes}}/{{total_bytes}} {what}  eta {{eta}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

#[allow(clippy::cast_precision_loss, reason = "figures for people, not for arithmetic")]
fn per_sec(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

#[allow(clippy::cast_precision_loss, reason = "microseconds to milliseconds for display")]
fn ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

/// The command line of `orderly bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Orders in the day (the record day by default, which peaks at about 0.9 GB of memory;
    /// at most ten record days).
    #[arg(long, default_value_t = orderly_core::workload::RECORD_DAY_ORDERS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_ORDERS))]
    orders: u64,
    /// Tenants sharing the traffic (each gets a catalog and its opening stock up front).
    #[arg(long, default_value_t = 50,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_TENANTS))]
    tenants: usize,
    /// Seeds the workload: the same seed runs the same day.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The data folder, which must not hold a log yet (default: a temporary one, removed).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write report.md and SVG charts into this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Commands in flight at once.
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_IN_FLIGHT))]
    in_flight: usize,
}

/// The largest `--orders`: ten record days.
const MAX_ORDERS: u64 = 10 * orderly_core::workload::RECORD_DAY_ORDERS;
/// The largest `--tenants`: their catalogs' opening stock is made before the first order.
const MAX_TENANTS: u64 = 10_000;
/// The largest `--in-flight`.
const MAX_IN_FLIGHT: u64 = 1 << 20;

/// Runs `orderly bench`: progress on stderr, the report as the last stdout line (JSON), and
/// a failure exit code if any check failed.
pub fn main(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = BenchConfig {
        orders: args.orders,
        tenants: args.tenants,
        seed: args.seed,
        data: args.data,
        report: args.report,
        in_flight: args.in_flight,
        progress: true,
        ..BenchConfig::record_day(args.seed)
    };
    remove_scratch_on_signal();
    let report = run(&config)?;
    println!("{}", serde_json::to_string(&report)?);
    if let Some(why) = &report.report_error {
        eprintln!("error: the report was not written: {why}");
        return Ok(std::process::ExitCode::FAILURE);
    }
    if report.passed() {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!("error: a check failed (see the report above)");
        Ok(std::process::ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_core::audit::{Digest, Discrepancy, StockLedger};

    fn ledger(sku: &str, on_hand: i64, reserved: u64) -> StockLedger {
        let received = u64::try_from(on_hand.max(0)).unwrap();
        StockLedger {
            tenant: "t".into(),
            sku: sku.into(),
            received,
            on_hand,
            reserved,
            ..StockLedger::default()
        }
    }

    fn flagged(code: &'static str, sku: &str) -> Discrepancy {
        Discrepancy {
            code,
            tenant: "t".into(),
            subject: sku.into(),
            position: Some(7),
            detail: String::new(),
        }
    }

    #[test]
    fn a_sku_oversold_at_an_event_counts_though_its_stock_is_whole_at_the_end() {
        let mut books = audit::Reconciliation {
            digest: Digest { head: 9, hash: [0; 32] },
            discrepancies: vec![],
            stock: vec![ledger("fine", 5, 0), ledger("flash", 0, 0), ledger("short", -1, 0)],
            money: vec![],
            torn_tail: None,
        };
        assert_eq!(oversold_skus(&books), 1, "short at the end");
        books.discrepancies = vec![
            flagged("reserved_exceeds_on_hand", "flash"),
            flagged("negative_stock", "flash"),
            flagged("negative_stock", "short"),
            flagged("capture_exceeds_authorized", "fine"),
        ];
        assert_eq!(oversold_skus(&books), 2, "flash, at an event; short, counted once");
    }
}
