//! `--report DIR`: `report.md` (the figures, the checks, the command to reproduce) and two SVG
//! charts, drawn with plotters' SVG backend (no fonts or bitmaps needed): the run second by
//! second (throughput and ack latency), and the day's orders per minute.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::drive::Tally;
use super::{BenchConfig, BenchReport, ms};
use orderly_core::workload::{MINUTES_PER_DAY, PEAK_MINUTE};

const RUN_CHART: &str = "run.svg";
const CURVE_CHART: &str = "day-curve.svg";

/// Writes `report.md`, `run.svg` and `day-curve.svg` into `dir` (created if missing).
pub(crate) fn write(
    dir: &Path,
    config: &BenchConfig,
    report: &BenchReport,
    tally: &Tally,
    curve: &[u64],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    run_chart(&dir.join(RUN_CHART), tally).context("drawing the run chart")?;
    curve_chart(&dir.join(CURVE_CHART), curve).context("drawing the day's curve")?;
    std::fs::write(dir.join("report.md"), markdown(config, report))?;
    Ok(())
}

fn markdown(config: &BenchConfig, r: &BenchReport) -> String {
    let check = |ok: bool| if ok { "pass" } else { "**FAIL**" };
    let mut md = String::new();
    let _ = writeln!(md, "# orderly bench: a Black Friday day\n");
    let _ = writeln!(
        md,
        "{} orders over {} tenants (seed {}), {} commands, through the embedded engine, \
         each acknowledged after fdatasync.\n",
        r.orders, r.tenants, r.seed, r.commands
    );
    let _ = writeln!(md, "| figure | value |\n| --- | --- |");
    let cpu = r.thread_cpu_seconds.as_ref().map_or_else(
        || "not measured here".to_owned(),
        |c| {
            format!(
                "decision {:.2} ({:.0}% of the day) / log {:.2} / driver {:.2}{} / other {:.2}",
                c.decision,
                100.0 * c.decision / r.seconds,
                c.log,
                c.driver,
                if r.driver_yields { " (yielding to the engine)" } else { "" },
                c.other
            )
        },
    );
    let rows: [(&str, String); 14] = [
        ("seconds", format!("{:.2}", r.seconds)),
        ("orders per second", format!("{:.0}", r.orders_per_sec)),
        ("commands per second", format!("{:.0}", r.commands_per_sec)),
        (
            "ack p50 / p99 / max",
            format!("{:.2} / {:.2} / {:.2} ms", r.ack_p50_ms, r.ack_p99_ms, r.ack_max_ms),
        ),
        ("log records / domain events", format!("{} / {}", r.records, r.events)),
        ("log write speed", format!("{:.1} MB/s", r.log_mb_per_sec)),
        ("raw disk (fdatasync'd, same run)", format!("{:.1} MB/s", r.raw_mb_per_sec)),
        ("random memory access (same run)", format!("{:.0} ns", r.mem_access_ns)),
        ("peak RSS", format!("{:.0} MB", r.rss_mb)),
        ("CPU seconds by thread", cpu),
        ("placements accepted / sold out", format!("{} / {}", r.placed, r.sold_out)),
        ("retries answered with the first outcome", r.retries_replayed.to_string()),
        ("units whose holds expired", r.expired_units.to_string()),
        ("checks took", format!("{:.1} s", r.check_seconds)),
    ];
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {value} |");
    }
    let _ = writeln!(md, "\n## Checks\n\n| check | result |\n| --- | --- |");
    let checks = [
        ("audit verify: every record, the hash chain, a clean end", r.verify_ok),
        ("audit reconcile: no discrepancy", r.reconcile_ok),
        ("no SKU oversold", r.oversold == 0),
        ("no hold left open", r.open_holds == 0),
        ("every acknowledged order present, with the expected status", r.orders_ok),
        ("money authorized, declined, captured and refunded as acknowledged", r.money_ok),
        ("stock received as the model opened the day with", r.stock_received_ok),
        ("every retry answered with its first outcome, read back from the log", r.retries_ok),
        ("no refusal besides sold-out placements", r.unexpected_rejections.is_empty()),
    ];
    for (name, ok) in checks {
        let _ = writeln!(md, "| {name} | {} |", check(ok));
    }
    let _ = writeln!(md, "\n![the run, second by second]({RUN_CHART})\n");
    let _ = writeln!(md, "![the day's orders per minute]({CURVE_CHART})\n");
    let _ = writeln!(
        md,
        "## Reproduce\n\n```sh\ncargo run --release -p orderly-server -- bench --orders {} \
         --tenants {} --seed {} --in-flight {}\n```",
        config.orders, config.tenants, config.seed, config.in_flight
    );
    md
}

fn run_chart(path: &Path, tally: &Tally) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(320);
    let seconds = u32::try_from(tally.seconds.len().max(1))?;
    let elapsed = tally.elapsed.as_secs_f64();
    let series = |pick: fn(&super::drive::Second) -> u64| {
        per_second(tally.seconds.iter().map(pick), elapsed)
    };
    let most = series(|s| s.commands).iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let mut throughput = ChartBuilder::on(&top)
        .caption("answers per second of the run", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..seconds, 0u64..most + most / 10)?;
    throughput.configure_mesh().x_desc("second").y_desc("per second").draw()?;
    throughput
        .draw_series(LineSeries::new(series(|s| s.commands), &BLUE))?
        .label("commands")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    throughput
        .draw_series(LineSeries::new(series(|s| s.orders), &RED))?
        .label("placements")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    throughput.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;

    let p99: Vec<(u32, f64)> = tally
        .seconds
        .iter()
        .zip(0u32..)
        .map(|(s, i)| (i, ms(s.latency.value_at_quantile(0.99))))
        .collect();
    let p50: Vec<(u32, f64)> = tally
        .seconds
        .iter()
        .zip(0u32..)
        .map(|(s, i)| (i, ms(s.latency.value_at_quantile(0.5))))
        .collect();
    let slowest = p99.iter().map(|(_, v)| *v).fold(1.0, f64::max);
    let mut latency = ChartBuilder::on(&bottom)
        .caption("ack latency (ms) per second of the run", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..seconds, 0f64..slowest * 1.1)?;
    latency.configure_mesh().x_desc("second").y_desc("ms").draw()?;
    latency
        .draw_series(LineSeries::new(p99, &MAGENTA))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    latency
        .draw_series(LineSeries::new(p50, &GREEN))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    latency.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

/// `counts` of the run's seconds in turn as rates: the last second is only as long as what was
/// left of the `elapsed` seconds, so its count is taken over its length, or left out if it is
/// too short to be a rate.
fn per_second(counts: impl Iterator<Item = u64>, elapsed: f64) -> Vec<(u32, u64)> {
    counts
        .zip(0u32..)
        .map(|(count, i)| (count, i, (elapsed - f64::from(i)).min(1.0)))
        .filter(|(_, _, length)| *length >= 0.25)
        .map(|(count, i, length)| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a count per second, positive and far below 2^52"
            )]
            let rate = (count as f64 / length).round() as u64;
            (i, rate)
        })
        .collect()
}

fn curve_chart(path: &Path, curve: &[u64]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let peak = curve.get(PEAK_MINUTE).copied().unwrap_or(0).max(1);
    let minutes = u32::try_from(MINUTES_PER_DAY)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("orders per minute over the day (peak {peak} at 20:30)"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..minutes, 0u64..peak + peak / 10 + 1)?;
    chart
        .configure_mesh()
        .x_labels(13)
        .x_label_formatter(&|m| format!("{:02}:{:02}", m / 60, m % 60))
        .x_desc("time of day")
        .y_desc("orders")
        .draw()?;
    chart.draw_series(LineSeries::new(
        curve.iter().copied().zip(0u32..).map(|(c, m)| (m, c)),
        &BLUE,
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A run of 2.5 s: its third second is half long, so its 400 answers are 800 a second; a
    /// run of 2.1 s leaves its last tenth of a second out.
    #[test]
    fn the_last_second_counts_over_its_length() {
        assert_eq!(
            super::per_second([1000, 900, 400].into_iter(), 2.5),
            [(0, 1000), (1, 900), (2, 800)]
        );
        assert_eq!(super::per_second([1000, 900, 80].into_iter(), 2.1), [(0, 1000), (1, 900)]);
    }
}
