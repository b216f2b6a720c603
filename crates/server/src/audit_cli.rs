//! `orderly audit …` and `orderly replay`: the audit library on the command line.
//!
//! Every command reads the log read-only (a running server may hold the folder), shows a
//! progress bar on stderr, and prints a human summary or, with `--json`, one JSON object on
//! stdout whose `ok` is true exactly when the exit code is 0 (also when it cannot run:
//! `{"ok":false,"error":{"code":"cannot_run",…}}`). Exit codes tell a cron job what happened: 0 the answer is yes (the log is intact,
//! reconciles, has the order or the tenant), 1 it is no ([`ANSWER_NO`]), 2 the audit could not run
//! ([`CANNOT_AUDIT`]: bad arguments, no log in the folder, an unreadable file).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use orderly_core::Position;
use orderly_core::audit::{self, AuditError, Digest, Progress, ReplayPoint, TornTailWarning};
use orderly_core::codec::DecodeError;
use orderly_core::domain::{OrderId, TenantId, Timestamp};
use orderly_core::engine::CommittedEvent;
use orderly_core::node::LOG_DIR;
use orderly_server::api::event_json;
use serde::Serialize;
use serde_json::json;

/// Exit code: the audit ran and its answer is no: the log is not intact, does not reconcile,
/// or has no such order (trace) or no events of the tenant (replay).
pub const ANSWER_NO: u8 = 1;
/// Exit code: the audit could not run (bad arguments, no log in the folder, a file that
/// cannot be read), so it says nothing about the log.
pub const CANNOT_AUDIT: u8 = 2;

/// The log of a data folder (`DIR/log`), or `DIR` itself when it is a copy of a log folder.
/// A folder that holds no log is refused by the audit itself (`no_log`).
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
    // A record of a newer orderly is not damage: this build cannot say either way.
    let could_not_run = matches!(
        error,
        AuditError::Io { .. }
            | AuditError::NoLog { .. }
            | AuditError::BeyondHead { .. }
            | AuditError::Undecodable { error: DecodeError::NewerSchema { .. }, .. }
    );
    if json {
        let body = json!({ "ok": false, "error": {
            "code": error.code(),
            "message": error.to_string(),
            "segment": location.as_ref().map(|l| l.segment.display().to_string()),
            "offset": location.as_ref().map(|l| l.offset),
            "position": location.as_ref().and_then(|l| l.position),
        }});
        let _ = writeln!(std::io::stdout(), "{body}");
    } else if could_not_run {
        eprintln!("cannot audit ({}): {error}", error.code());
    } else {
        eprintln!("NOT INTACT ({}): {error}", error.code());
        if let Some(at) = location {
            eprintln!("  first problem in {at}");
        }
    }
    ExitCode::from(if could_not_run { CANNOT_AUDIT } else { ANSWER_NO })
}

/// Prints, as JSON on stdout, why an audit asked for JSON could not run (a bad argument, a
/// missing folder): `{"ok":false,"error":{"code":"cannot_run","message":…}}`.
pub fn cannot_run(why: &str) {
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        json!({ "ok": false, "error": { "code": "cannot_run", "message": why } })
    );
}

/// Says on stderr, for every command, what a pass left out after the last complete batch.
fn warn_of(torn: Option<&TornTailWarning>) {
    if let Some(torn) = torn {
        eprintln!(
            "warning: {} byte(s) after the last complete batch in {} at offset {} are left out: \
             a write in progress, or one a crash cut short (neither acknowledged), unless a \
             crash came within a second of acknowledging the last records and damaged them; \
             a digest published since tells the two apart",
            torn.bytes,
            torn.segment.display(),
            torn.offset
        );
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    // An error, not a panic, when stdout cannot take it (a full disk, a closed pipe).
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(value)?)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(())
}

/// `orderly audit verify`.
pub fn verify(data: &Path, expected: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
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
    warn_of(report.torn_tail.as_ref());
    if json {
        print_json(&json!({ "ok": true, "report": report }))?;
    } else {
        writeln!(
            out,
            "intact: {} records in {} segment(s), {} bytes; digest {}",
            report.records, report.segments, report.bytes, report.digest
        )?;
        if let Some(extends) = &report.extends {
            writeln!(out, "extends the digest {extends}: nothing before it was rewritten")?;
        }
        if let Some(segment) = &report.unwritten_segment {
            writeln!(out, "warning: {} was created but never written", segment.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orderly audit digest`.
pub fn digest(data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let (bar, mut progress) = progress_bar();
    // Verified first, as `audit::digest` does, so that what it left out is said before the
    // digest is published.
    let result = audit::verify(&log_dir(data), None, &mut progress);
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => return Ok(failed(&error, json)),
    };
    warn_of(report.torn_tail.as_ref());
    let digest = report.digest;
    if json {
        print_json(&json!({ "ok": true, "digest": digest, "torn_tail": report.torn_tail }))?;
    } else {
        writeln!(out, "{digest}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `orderly replay --at POSITION|RFC3339`.
pub fn replay(data: &Path, at: &str, tenant: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let point = parse_point(at)?;
    let tenant = tenant.map(TenantId::new).transpose().context("--tenant")?;
    let (bar, mut progress) = progress_bar();
    let result = audit::replay(&log_dir(data), point, tenant.as_ref(), &mut progress);
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => return Ok(failed(&error, json)),
    };
    warn_of(report.torn_tail.as_ref());
    // The answer is no when the tenant asked for has no events up to that point.
    let found = tenant.is_none() || !report.tenants.is_empty();
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = found.into();
        print_json(&value)?;
    } else if let Some(tenant) = tenant.as_ref().filter(|_| !found) {
        eprintln!("tenant {tenant} has no events up to position {}", report.digest.head);
    }
    if !found {
        return Ok(ExitCode::from(ANSWER_NO));
    }
    if json {
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "state as of position {} (digest {})", report.digest.head, report.digest)?;
    for snapshot in &report.tenants {
        let o = &snapshot.orders;
        writeln!(
            out,
            "\ntenant {}: orders placed {} · confirmed {} · shipped {} · delivered {} · cancelled {}",
            snapshot.tenant, o.placed, o.confirmed, o.shipped, o.delivered, o.cancelled
        )?;
        // The SKU column is as wide as the longest SKU (ids run up to 64 characters).
        let width = snapshot.skus.iter().map(|s| s.sku.len()).max().unwrap_or(0).max(24);
        writeln!(
            out,
            "  {:<width$} {:>12} {:>12} {:>12}",
            "sku", "on hand", "reserved", "available"
        )?;
        for sku in &snapshot.skus {
            writeln!(
                out,
                "  {:<width$} {:>12} {:>12} {:>12}",
                sku.sku, sku.on_hand, sku.reserved, sku.available
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A position (digits) or an RFC 3339 time.
fn parse_point(at: &str) -> anyhow::Result<ReplayPoint> {
    if !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) {
        let position =
            at.parse().with_context(|| format!("--at {at}: no log holds that many records"))?;
        return Ok(ReplayPoint::Position(position));
    }
    // With any UTC offset; a time written without one is read as UTC (as before jiff). An
    // annotation (`[Europe/Paris]`, `[+01:00]`) is refused: the civil parse below would drop
    // it and read the time as UTC, an offset away from what was asked.
    if at.contains('[') {
        anyhow::bail!(
            "--at {at:?}: give the offset in the time itself (2025-11-28T12:00:00+01:00), not \
             as a bracketed annotation"
        );
    }
    // A time that names its offset is read as a timestamp only, so that its error is the one
    // said (a year past 9999 is refused for its range, not for a missing offset).
    let time_of_day = at.split_once(['T', 't', ' ']).map_or("", |(_, time)| time);
    let has_offset = time_of_day.contains(['Z', 'z', '+', '-']);
    let time = at
        .parse::<jiff::Timestamp>()
        .or_else(|as_timestamp| {
            if has_offset {
                return Err(as_timestamp);
            }
            let local: jiff::civil::DateTime = at.parse()?;
            local.to_zoned(jiff::tz::TimeZone::UTC).map(|zoned| zoned.timestamp())
        })
        .with_context(|| format!("--at {at:?}: neither a position nor an RFC 3339 time"))?;
    // Checked on the time itself: a time less than a millisecond before 1970 would round to 0.
    if time < jiff::Timestamp::UNIX_EPOCH {
        bail!("--at {at:?} is before 1970, before any log");
    }
    let millis = u64::try_from(time.as_millisecond()).expect("not before 1970");
    Ok(ReplayPoint::Time(millis))
}

/// `orderly audit trace ORDER_ID`.
pub fn trace(
    data: &Path,
    order: &str,
    tenant: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let order = OrderId::new(order).context("ORDER_ID")?;
    let tenant = tenant.map(TenantId::new).transpose().context("--tenant")?;
    let (bar, mut progress) = progress_bar();
    let result = audit::trace(&log_dir(data), tenant.as_ref(), &order, &mut progress);
    bar.finish_and_clear();
    let trace = match result {
        Ok(trace) => trace,
        Err(error) => return Ok(failed(&error, json)),
    };
    warn_of(trace.torn_tail.as_ref());
    if trace.entries.is_empty() {
        if json {
            print_json(&json!({ "ok": false, "order": trace.order, "entries": [] }))?;
        } else if let Some(tenant) = &tenant {
            eprintln!("no events of order {order} of tenant {tenant}");
        } else {
            eprintln!("no events of order {order}");
        }
        return Ok(ExitCode::from(ANSWER_NO));
    }
    // Tenants choose their order ids: the same id of two tenants is two orders.
    let mut tenants: Vec<&str> = trace.entries.iter().map(|e| e.tenant.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    if tenants.len() > 1 {
        let why = format!(
            "order {order} is an order of each of the tenants {}: name one with --tenant",
            tenants.join(", ")
        );
        if json {
            cannot_run(&why);
        } else {
            eprintln!("{why}");
        }
        return Ok(ExitCode::from(CANNOT_AUDIT));
    }
    // Each event as the HTTP API's event stream shows it, with its tenant and stream.
    let mut shown = Vec::with_capacity(trace.entries.len());
    for entry in &trace.entries {
        let committed = CommittedEvent {
            position: Position(entry.position),
            tenant: TenantId::new(&entry.tenant)?,
            event: entry.event.clone(),
            recorded_at: Timestamp(entry.timestamp),
        };
        let mut value = event_json(&committed, entry.index);
        value["tenant"] = entry.tenant.clone().into();
        value["stream"] = entry.stream.clone().into();
        shown.push(value);
    }
    if json {
        print_json(&json!({ "ok": true, "order": trace.order, "entries": shown }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for (entry, value) in trace.entries.iter().zip(&shown) {
        let time = i64::try_from(entry.timestamp)
            .ok()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map_or_else(|| format!("{} ms", entry.timestamp), |t| format!("{t:.3}"));
        writeln!(
            out,
            "{:>10}  {time}  {:<10} {:<20} {:<32} {}",
            entry.position, entry.tenant, entry.event_type, entry.stream, value["data"]
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `orderly audit reconcile`.
pub fn reconcile(data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let (bar, mut progress) = progress_bar();
    let result = audit::reconcile(&log_dir(data), &mut progress);
    bar.finish_and_clear();
    let books = match result {
        Ok(books) => books,
        Err(error) => return Ok(failed(&error, json)),
    };
    warn_of(books.torn_tail.as_ref());
    let clean = books.discrepancies.is_empty();
    if json {
        print_json(&json!({ "ok": clean, "reconciliation": books }))?;
    } else {
        writeln!(out, "reconciled {} records (digest {})", books.digest.head, books.digest)?;
        writeln!(out, "stock: {} SKU(s) checked", books.stock.len())?;
        for money in &books.money {
            writeln!(
                out,
                "money {}: authorized {} · captured {} · voided {} · refunded {} · declined {}",
                money.currency,
                money.authorized,
                money.captured,
                money.voided,
                money.refunded,
                money.declined
            )?;
        }
        for d in &books.discrepancies {
            let at = d.position.map_or_else(String::new, |p| format!(" at position {p}"));
            eprintln!("DISCREPANCY {} {}/{}{at}: {}", d.code, d.tenant, d.subject, d.detail);
        }
        if clean {
            writeln!(out, "no discrepancies")?;
        }
    }
    if clean {
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("{} discrepancy(ies) found", books.discrepancies.len());
    }
    Ok(ExitCode::from(ANSWER_NO))
}

/// Refuses a data folder that does not exist (rather than auditing an empty log).
pub fn existing(data: &Path) -> anyhow::Result<()> {
    if !data.exists() {
        bail!("no data folder at {}", data.display());
    }
    if !data.is_dir() {
        bail!("{} is a file, not a data folder", data.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_point_is_a_position_or_a_time_and_anything_else_names_the_option() {
        assert!(matches!(parse_point("42").unwrap(), ReplayPoint::Position(42)));
        let noon = parse_point("2025-11-28T12:00:00Z").unwrap();
        assert!(matches!(noon, ReplayPoint::Time(1_764_331_200_000)), "{noon:?}");
        let paris = parse_point("2025-11-28T13:00:00+01:00").unwrap();
        assert!(matches!(paris, ReplayPoint::Time(1_764_331_200_000)), "{paris:?}");
        // An annotation jiff would drop (reading the time as UTC) is refused, not ignored.
        let annotated = ["2025-11-28T13:00:00[+01:00]", "2025-11-28T13:00:00[Europe/Paris]"];
        // Before 1970, also by less than a millisecond (which would round to 0).
        let early = ["1969-12-31T23:59:59.9995Z", "1969-12-31T23:59:59Z", "1900-01-01T00:00:00Z"];
        let wrong = ["99999999999999999999999", "yesterday", "", "-1"];
        for wrong in wrong.iter().chain(&annotated).chain(&early) {
            let error = format!("{:#}", parse_point(wrong).unwrap_err());
            assert!(error.starts_with("--at"), "{wrong:?}: {error}");
        }
        // A time with its offset is refused for what is wrong with it, here its range, not
        // for the missing offset of the fallback without one.
        let late = format!("{:#}", parse_point("9999-12-31T00:00:00Z").unwrap_err());
        assert!(late.contains("range") && !late.contains("Zulu"), "{late}");
    }
}
