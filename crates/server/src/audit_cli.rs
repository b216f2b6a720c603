//! `orderly audit …` and `orderly replay`: the audit library on the command line.
//!
//! Every command reads the log read-only (a running server may hold the folder), shows a
//! progress bar on stderr, prints a human summary or, with `--json`, one JSON object on stdout,
//! and exits non-zero when the log is not intact or does not reconcile.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use orderly_core::audit::{self, AuditError, Digest, Progress, ReplayPoint};
use orderly_core::domain::{OrderId, TenantId};
use orderly_core::node::LOG_DIR;
use serde::Serialize;
use serde_json::json;

/// The log of a data folder (`DIR/log`), or `DIR` itself when it is a copy of a log folder.
fn log_dir(data: &Path) -> PathBuf {
    let inside = data.join(LOG_DIR);
    if inside.is_dir() { inside } else { data.to_path_buf() }
}

/// A progress bar over the bytes of the log, on stderr (hidden when stderr is not a terminal).
fn progress_bar() -> (ProgressBar, impl FnMut(Progress)) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    (bar, move |p: Progress| {
        shown.set_length(p.bytes_total);
        shown.set_position(p.bytes_done);
    })
}

/// Prints an audit failure (JSON or text) and gives the exit code.
fn failed(error: &AuditError, json: bool) -> ExitCode {
    let location = error.location();
    if json {
        let body = json!({ "ok": false, "error": {
            "code": error.code(),
            "message": error.to_string(),
            "segment": location.as_ref().map(|l| l.segment.display().to_string()),
            "offset": location.as_ref().map(|l| l.offset),
            "position": location.as_ref().and_then(|l| l.position),
        }});
        println!("{body}");
    } else {
        eprintln!("NOT INTACT ({}): {error}", error.code());
        if let Some(at) = location {
            eprintln!("  first problem in {at}");
        }
    }
    ExitCode::FAILURE
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `orderly audit verify`.
pub fn verify(data: &Path, expected: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let expected = expected
        .map(|text| text.parse::<Digest>().map_err(|e| anyhow::anyhow!("--digest: {e}")))
        .transpose()?;
    let (bar, mut progress) = progress_bar();
    let result = audit::verify(&log_dir(data), expected, &mut progress);
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => return Ok(failed(&error, json)),
    };
    if json {
        print_json(&json!({ "ok": true, "report": report }))?;
    } else {
        println!(
            "intact: {} records in {} segment(s), {} bytes; digest {}",
            report.records, report.segments, report.bytes, report.digest
        );
        if let Some(extends) = &report.extends {
            println!("extends the digest {extends}: nothing before it was rewritten");
        }
        if let Some(torn) = &report.torn_tail {
            println!(
                "warning: {} unacknowledged byte(s) after the last complete batch in {} at offset {} \
                 (a write in progress or a torn write; never acknowledged)",
                torn.bytes,
                torn.segment.display(),
                torn.offset
            );
        }
        if let Some(segment) = &report.unwritten_segment {
            println!("warning: {} was created but never written", segment.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orderly audit digest`.
pub fn digest(data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (bar, mut progress) = progress_bar();
    let result = audit::digest(&log_dir(data), &mut progress);
    bar.finish_and_clear();
    match result {
        Ok(digest) if json => print_json(&json!({ "ok": true, "digest": digest }))?,
        Ok(digest) => println!("{digest}"),
        Err(error) => return Ok(failed(&error, json)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `orderly replay --at POSITION|RFC3339`.
pub fn replay(data: &Path, at: &str, tenant: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let point = parse_point(at)?;
    let tenant = tenant.map(TenantId::new).transpose().context("--tenant")?;
    let (bar, mut progress) = progress_bar();
    let result = audit::replay(&log_dir(data), point, tenant.as_ref(), &mut progress);
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => return Ok(failed(&error, json)),
    };
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("state as of position {} (digest {})", report.digest.head, report.digest);
    for snapshot in &report.tenants {
        let o = &snapshot.orders;
        println!(
            "\ntenant {}: orders placed {} · confirmed {} · shipped {} · delivered {} · cancelled {}",
            snapshot.tenant, o.placed, o.confirmed, o.shipped, o.delivered, o.cancelled
        );
        println!("  {:<24} {:>12} {:>12} {:>12}", "sku", "on hand", "reserved", "available");
        for sku in &snapshot.skus {
            println!(
                "  {:<24} {:>12} {:>12} {:>12}",
                sku.sku, sku.on_hand, sku.reserved, sku.available
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A position (digits) or an RFC 3339 time.
fn parse_point(at: &str) -> anyhow::Result<ReplayPoint> {
    if !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ReplayPoint::Position(at.parse()?));
    }
    let time: SystemTime = humantime::parse_rfc3339_weak(at)
        .with_context(|| format!("--at {at:?}: neither a position nor an RFC 3339 time"))?;
    let millis = time.duration_since(UNIX_EPOCH).context("--at is before 1970")?.as_millis();
    Ok(ReplayPoint::Time(u64::try_from(millis)?))
}

/// `orderly audit trace ORDER_ID`.
pub fn trace(
    data: &Path,
    order: &str,
    tenant: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let order = OrderId::new(order).context("ORDER_ID")?;
    let tenant = tenant.map(TenantId::new).transpose().context("--tenant")?;
    let (bar, mut progress) = progress_bar();
    let result = audit::trace(&log_dir(data), tenant.as_ref(), &order, &mut progress);
    bar.finish_and_clear();
    let trace = match result {
        Ok(trace) => trace,
        Err(error) => return Ok(failed(&error, json)),
    };
    if trace.entries.is_empty() {
        if json {
            print_json(&trace)?;
        } else {
            eprintln!("no events of order {order}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if json {
        print_json(&trace)?;
        return Ok(ExitCode::SUCCESS);
    }
    // RFC 3339 ends with the year 9999; a later (damaged) time is shown in milliseconds.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    for entry in &trace.entries {
        let time = if entry.timestamp < YEAR_10000_MS {
            let at = UNIX_EPOCH + std::time::Duration::from_millis(entry.timestamp);
            humantime::format_rfc3339_millis(at).to_string()
        } else {
            format!("{} ms", entry.timestamp)
        };
        println!(
            "{:>10}  {time}  {:<10} {:<20} {:<32} {}",
            entry.position, entry.tenant, entry.event_type, entry.stream, entry.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `orderly audit reconcile`.
pub fn reconcile(data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (bar, mut progress) = progress_bar();
    let result = audit::reconcile(&log_dir(data), &mut progress);
    bar.finish_and_clear();
    let books = match result {
        Ok(books) => books,
        Err(error) => return Ok(failed(&error, json)),
    };
    let clean = books.discrepancies.is_empty();
    if json {
        print_json(&json!({ "ok": clean, "reconciliation": books }))?;
    } else {
        println!("reconciled {} records (digest {})", books.digest.head, books.digest);
        println!("stock: {} SKU(s) checked", books.stock.len());
        for money in &books.money {
            println!(
                "money {}: authorized {} · captured {} · voided {} · refunded {} · declined {}",
                money.currency,
                money.authorized,
                money.captured,
                money.voided,
                money.refunded,
                money.declined
            );
        }
        for d in &books.discrepancies {
            let at = d.position.map_or_else(String::new, |p| format!(" at position {p}"));
            eprintln!("DISCREPANCY {} {}/{}{at}: {}", d.code, d.tenant, d.subject, d.detail);
        }
        if clean {
            println!("no discrepancies");
        }
    }
    if clean {
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("{} discrepancy(ies) found", books.discrepancies.len());
    }
    Ok(ExitCode::FAILURE)
}

/// Refuses a data folder that does not exist (rather than auditing an empty log).
pub fn existing(data: &Path) -> anyhow::Result<()> {
    if !data.exists() {
        bail!("no data folder at {}", data.display());
    }
    Ok(())
}
