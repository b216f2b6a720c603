//! Prometheus metrics: requests by route and status, the engine's queue, group commit, projection
//! lag (in records and in time), orders by status, and money movements the gateways did not
//! make. Counters and histograms are updated as things happen; gauges that
//! mirror state are read when `/metrics` is scraped.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use orderly_core::node::Node;
use orderly_core::projection;
use orderly_core::store::{GroupSynced, SyncObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotMovedLabels {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RequestLabels>,
    queue_depth: Gauge,
    log_head: Gauge,
    log_failed: Gauge,
    group_records: Histogram,
    fsync_seconds: Histogram,
    projection_lag: Family<ProjectionLabels, Gauge>,
    projection_lag_seconds: Family<ProjectionLabels, Gauge<f64, AtomicU64>>,
    projection_stopped: Family<ProjectionLabels, Gauge>,
    orders: Family<StatusLabels, Gauge>,
    money_not_moved: Family<NotMovedLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("orderly");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_seconds: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            request_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "engine_queue_depth",
            "Commands waiting for the decision thread",
            queue_depth.clone(),
        );
        let log_head = Gauge::default();
        registry.register("log_head_position", "Records durable in the log", log_head.clone());
        let log_failed = Gauge::default();
        registry.register(
            "log_failed",
            "1 once the log failed (a full or failing disk): no command is accepted until a restart",
            log_failed.clone(),
        );
        let group_records = Histogram::new(exponential_buckets(1.0, 2.0, 18));
        registry.register(
            "log_group_records",
            "Records per group commit (one write and one fdatasync)",
            group_records.clone(),
        );
        let fsync_seconds = latency_histogram();
        registry.register(
            "log_fsync_duration_seconds",
            "Time of each group's write and fdatasync",
            fsync_seconds.clone(),
        );
        let projection_lag = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_lag_positions",
            "Log records committed but not yet in the projection's read model",
            projection_lag.clone(),
        );
        let projection_lag_seconds = Family::<ProjectionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "projection_lag_seconds",
            "Age of the oldest committed record not yet in the projection's read model",
            projection_lag_seconds.clone(),
        );
        let projection_stopped = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_stopped",
            "1 once the projection stopped, which while the server runs means on an error (its read model's queries answer 503 read_model_stopped until a restart)",
            projection_stopped.clone(),
        );
        let orders = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "orders",
            "Orders by status over all tenants, per the orders read model",
            orders.clone(),
        );
        let money_not_moved = Family::<NotMovedLabels, Gauge>::default();
        registry.register(
            "payment_movements_not_made",
            "Captures, voids and refunds the log records and the gateways did not make, since the payments process started: refused (for good) or left_for_next_start",
            money_not_moved.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            queue_depth,
            log_head,
            log_failed,
            group_records,
            fsync_seconds,
            projection_lag,
            projection_lag_seconds,
            projection_stopped,
            orders,
            money_not_moved,
        }
    }

    /// An observer for the log, recording group sizes and fsync times, then telling `also`
    /// (an embedder's own observer, kept rather than replaced).
    #[must_use]
    pub fn sync_observer(&self, also: Option<SyncObserver>) -> SyncObserver {
        let (records, fsync) = (self.group_records.clone(), self.fsync_seconds.clone());
        SyncObserver::new(move |group: &GroupSynced| {
            #[expect(clippy::cast_precision_loss, reason = "a histogram sample")]
            records.observe(group.records as f64);
            fsync.observe(group.sync.as_secs_f64());
            if let Some(also) = &also {
                also.report(group);
            }
        })
    }

    /// The metrics in the Prometheus text format, after reading the gauges off `node`.
    pub fn render(&self, node: Option<&Node>) -> String {
        if let Some(node) = node {
            self.read_gauges(node);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    fn read_gauges(&self, node: &Node) {
        let engine = node.engine();
        self.queue_depth.set(i64::try_from(engine.queue_depth()).unwrap_or(i64::MAX));
        self.log_head.set(i64::try_from(engine.head().0).unwrap_or(i64::MAX));
        self.log_failed.set(i64::from(engine.log().failure().is_some()));
        for worker in node.projections() {
            let labels = ProjectionLabels { projection: worker.name().to_owned() };
            self.projection_lag.get_or_create(&labels).set(saturate(worker.lag()));
            self.projection_lag_seconds.get_or_create(&labels).set(worker.lag_time().as_secs_f64());
            self.projection_stopped.get_or_create(&labels).set(i64::from(worker.ended().is_some()));
        }
        if let Some(not_moved) = node.money_not_moved() {
            let outcomes = [
                ("refused", not_moved.refused),
                ("left_for_next_start", not_moved.left_for_next_start),
            ];
            for (outcome, count) in outcomes {
                self.money_not_moved
                    .get_or_create(&NotMovedLabels { outcome })
                    .set(saturate(count));
            }
        }
        match projection::order_status_counts(node.read_models()) {
            Ok(counts) => {
                // Summed over tenants: `/metrics` needs no token, so it names no tenant.
                let mut by_status = std::collections::BTreeMap::new();
                for (_, status, count) in counts {
                    *by_status.entry(status.as_str()).or_insert(0u64) += count;
                }
                for (status, count) in by_status {
                    let labels = StatusLabels { status: status.to_owned() };
                    self.orders.get_or_create(&labels).set(saturate(count));
                }
            }
            Err(e) => tracing::warn!("cannot read order counts for metrics: {e}"),
        }
    }

    fn record(&self, route: String, method: String, status: u16, seconds: f64) {
        let labels = RequestLabels { route, method, status };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Counts and times every request by its route template (never the raw path: ids would make
/// the label set unbounded).
pub async fn track(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    // Any token is a valid HTTP method: only the standard ones become labels, so that no
    // client can grow the label set.
    let method = match *request.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS
        | Method::PATCH => request.method().as_str(),
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    app.metrics().record(route, method, response.status().as_u16(), seconds);
    response
}
