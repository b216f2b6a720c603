//! The server's state and its HTTP stack.
//!
//! ```text
//! request ─▶ uniform errors ─▶ metrics ─▶ body limit ─▶ timeout ─▶ concurrency ─▶ route ─▶ handler
//!                                                                                   │
//!                    Caller (token → tenant, rate limit), JsonBody, QueryOf ◀───────┘
//!                                                                                   ▼
//!                                              Node: engine (commands), read models (queries)
//! ```
//! The node opens after the listener is up, so `/healthz` answers at once and `/readyz` says
//! when recovery is done; until then the API answers `503 not_ready`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use orderly_core::Position;
use orderly_core::domain::{Currency, GatewayId, TenantId};
use orderly_core::node::{Node, NodeConfig, NodeError};
use orderly_core::payments::{
    Fee, Route, Router, RouterConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::api;
use crate::error::{ApiError, uniform_errors};
use crate::metrics::{self, Metrics};
use crate::tenants::Tenants;

/// Request bodies above this many bytes are refused by default.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// Requests in progress at once by default; more wait their turn.
pub const DEFAULT_MAX_CONCURRENT: usize = 8_192;
/// Requests per second each tenant may make by default (bursts up to the same number).
pub const DEFAULT_TENANT_RATE: u32 = 200_000;
/// How long a connection may be without a request under way by default (see
/// [`ServerConfig::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Event and KPI streams each tenant may have open at once by default.
pub const DEFAULT_STREAMS_PER_TENANT: usize = 16;
/// Requests each tenant may have in progress at once by default. Every queue behind the HTTP
/// layer is first come, first served over all tenants, so another tenant's request waits
/// behind about this many of a busy tenant's. Measured on the development machine (2 cores),
/// with one tenant on 512 connections next to another placing 200 orders a second: at 1,024
/// the second tenant's median was 10–18 ms, at 256 10–12 ms, at 128 4–6 ms; the busy tenant
/// alone, its excess requests answered `429` and sent again after `Retry-After`, kept 80–90%
/// of its throughput at 128 (17.7–19.6k records/s against 22.1–22.7k). One tenant's slow or
/// stuck requests (bodies that trickle in, commands waiting on a stalled disk) cannot hold
/// every place either.
pub const DEFAULT_REQUESTS_PER_TENANT: usize = 128;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The data folder.
    pub data: PathBuf,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a request may take before it is answered `503 request_timeout`.
    pub request_timeout: Duration,
    /// Requests in progress at once.
    pub max_concurrent: usize,
    /// Requests per second per tenant; `None` for no limit.
    pub tenant_rate: Option<NonZeroU32>,
    /// How long a query with `?min_position=` waits for the read model at most.
    pub read_wait: Duration,
    /// Event and KPI streams a tenant may have open at once.
    pub streams_per_tenant: usize,
    /// How long an event stream waits, its client's buffer full, for the client to take an
    /// event before it cuts the client off. A client catching up on history takes its events
    /// slower than the server reads them, but it takes them.
    pub stream_patience: Duration,
    /// Requests a tenant may have in progress at once.
    pub requests_per_tenant: usize,
    /// How long a connection may be without a request under way (idle between requests, or
    /// with a request's headers unfinished) before it is closed.
    pub idle_timeout: Duration,
    /// Payments through the simulated gateways ([`simulated_payments`], their books kept in
    /// the data folder), set up when the node opens; `node.payments` is used as it is if this
    /// is off.
    pub simulated_gateways: bool,
    /// The node's settings.
    pub node: NodeConfig,
}

impl ServerConfig {
    /// The defaults, on the data folder `data`.
    #[must_use]
    pub fn new(data: PathBuf) -> ServerConfig {
        ServerConfig {
            data,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: Duration::from_secs(30),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            tenant_rate: NonZeroU32::new(DEFAULT_TENANT_RATE),
            read_wait: Duration::from_secs(5),
            streams_per_tenant: DEFAULT_STREAMS_PER_TENANT,
            stream_patience: Duration::from_secs(10),
            requests_per_tenant: DEFAULT_REQUESTS_PER_TENANT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            simulated_gateways: false,
            node: NodeConfig::default(),
        }
    }
}

/// The state every handler shares.
pub type Shared = Arc<App>;

/// The server: its node (once open), tenants, metrics and limits.
#[derive(Debug)]
pub struct App {
    config: ServerConfig,
    node: RwLock<Option<Arc<Node>>>,
    /// The log's head when the node opened: the server is ready once every read model has
    /// reached it (after a lost read models' file, they are rebuilt from the log first).
    head_at_open: AtomicU64,
    tenants: Tenants,
    metrics: Metrics,
    limiter: Option<DefaultKeyedRateLimiter<TenantId>>,
    /// Event streams opened per tenant: as many as it may hold at once, then one a second. An
    /// event stream that starts far back reads the log from there on a thread of its own, so
    /// opening them over and over would keep a core busy. (A KPI stream shares the figures read
    /// once a second: it costs nothing to open, and a dashboard is never kept out by an event
    /// client reconnecting in a loop.)
    event_stream_opens: DefaultKeyedRateLimiter<TenantId>,
    /// Streams open per tenant.
    streams: PerTenant,
    /// Requests in progress per tenant.
    requests: PerTenant,
    /// Set when the server starts closing: endless streams end, so that a graceful shutdown
    /// (which waits for every connection) can finish.
    closing: AtomicBool,
    /// The KPI figures last read per tenant and UTC offset (as JSON), with the second they
    /// were read in: a tenant's KPI streams share one read a second, however many screens
    /// watch it.
    kpi_figures: Mutex<KpiFigures>,
}

/// Per tenant and UTC offset: the second the figures were read in, and the figures as JSON.
type KpiFigures = HashMap<(TenantId, i32), (u64, Arc<str>)>;

/// How many of something (streams, requests) each tenant has at once.
type PerTenant = Arc<Mutex<HashMap<TenantId, usize>>>;

/// A tenant's place among its streams or requests in progress; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    tenant: TenantId,
    counts: PerTenant,
}

impl Slot {
    /// A place for one more of `tenant`'s, unless it has `most` already.
    fn take(counts: &PerTenant, tenant: &TenantId, most: usize) -> Option<Slot> {
        let mut taken = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let open = taken.entry(tenant.clone()).or_default();
        if *open >= most {
            return None;
        }
        *open += 1;
        Some(Slot { tenant: tenant.clone(), counts: counts.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = taken.get_mut(&self.tenant) {
            *open -= 1;
            if *open == 0 {
                taken.remove(&self.tenant);
            }
        }
    }
}

impl App {
    /// The server on `config.data`, its node not open yet (see [`App::open_node`]).
    pub fn new(config: ServerConfig) -> anyhow::Result<Shared> {
        let tenants = Tenants::open(&config.data)?;
        let limiter = config.tenant_rate.map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        let stream_burst = u32::try_from(config.streams_per_tenant)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        let event_stream_opens =
            RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN).allow_burst(stream_burst));
        let mut config = config;
        let metrics = Metrics::new();
        let also = config.node.engine.log.observer.take();
        config.node.engine.log.observer = Some(metrics.sync_observer(also));
        Ok(Arc::new(App {
            config,
            node: RwLock::new(None),
            head_at_open: AtomicU64::new(0),
            tenants,
            metrics,
            limiter,
            event_stream_opens,
            streams: PerTenant::default(),
            requests: PerTenant::default(),
            closing: AtomicBool::new(false),
            kpi_figures: Mutex::default(),
        }))
    }

    /// The server with its node open: what tests and embedders usually want.
    pub fn open(config: ServerConfig) -> anyhow::Result<Shared> {
        let app = App::new(config)?;
        app.open_node()?;
        Ok(app)
    }

    /// Opens the node (recovering the log, which may take a while): blocks.
    pub fn open_node(&self) -> anyhow::Result<()> {
        let mut config = self.config.node.clone();
        if self.config.simulated_gateways {
            config.payments = Some(simulated_payments(&self.config.data)?);
        }
        let node = Node::open(&self.config.data, config)?;
        self.head_at_open.store(node.engine().head().0, Ordering::Release);
        *self.node.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(node));
        Ok(())
    }

    /// The HTTP routes with every layer.
    pub fn router(self: &Shared) -> axum::Router {
        let (routes, _) = api::routes().split_for_parts();
        routes
            .layer(GlobalConcurrencyLimitLayer::new(self.config.max_concurrent))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                self.config.request_timeout,
            ))
            // Inside metrics and uniform errors, so that a body refused for its declared
            // length is counted and answered in the one shape too.
            .layer(DefaultBodyLimit::disable())
            .layer(RequestBodyLimitLayer::new(self.config.body_limit))
            .layer(middleware::from_fn_with_state(self.clone(), metrics::track))
            .layer(middleware::from_fn(uniform_errors))
            // Every answer is what its Content-Type says (JSON errors echo what was sent): no
            // browser is to guess otherwise.
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .with_state(self.clone())
    }

    /// The open node, or `503 not_ready` while it is recovering (or after shutdown).
    pub fn node(&self) -> Result<Arc<Node>, ApiError> {
        let node = self.node.read().unwrap_or_else(PoisonError::into_inner);
        node.clone().ok_or_else(ApiError::not_ready)
    }

    /// The log's head when the node opened.
    pub fn head_at_open(&self) -> Position {
        Position(self.head_at_open.load(Ordering::Acquire))
    }

    /// Whether the node is open and accepting commands.
    pub fn is_ready(&self) -> bool {
        self.node.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Starts closing: event and KPI streams end (within a second), new ones are refused.
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether the server is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Closes the node: no new requests reach it, commands admitted are answered, the log is
    /// closed. Waits (bounded) for requests still holding it. An error is the log's, if it
    /// failed while the server ran, or a read model that had stopped on one (what it had
    /// committed stays; the next start goes on from there).
    pub fn shutdown(&self) -> anyhow::Result<()> {
        self.begin_close();
        let Some(mut node) = self.node.write().unwrap_or_else(PoisonError::into_inner).take()
        else {
            return Ok(());
        };
        // Longer than a `?min_position=` wait (`read_wait`) may hold the node.
        let patience = self.config.read_wait + Duration::from_secs(5);
        let started = std::time::Instant::now();
        while started.elapsed() < patience {
            match Arc::try_unwrap(node) {
                Ok(node) => {
                    return node.shutdown().map_err(|e| match e {
                        NodeError::LogFailed { .. } => anyhow::Error::new(e),
                        e => anyhow::anyhow!("read models stopped on an error: {e}"),
                    });
                }
                Err(shared) => node = shared,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Something still holds the node (a stuck client): close the engine under it anyway,
        // the payments process first, as the node's own shutdown does.
        tracing::warn!("requests still running at shutdown; closing the engine under them");
        node.stop_payments();
        node.engine().shutdown();
        node.log_failure()?;
        // The host stops with the process; one that had stopped on an error says so here too.
        let failed =
            node.projections().iter().find_map(|p| p.ended().filter(|why| why != "stopped"));
        match failed {
            Some(why) => Err(anyhow::anyhow!("read models stopped on an error: {why}")),
            None => Ok(()),
        }
    }

    /// The tenants.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.config.body_limit
    }

    /// A place for one more request of `tenant` in progress, or `429 too_many_requests`.
    pub fn take_request(&self, tenant: &TenantId) -> Result<Slot, ApiError> {
        let most = self.config.requests_per_tenant;
        Slot::take(&self.requests, tenant, most).ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("tenant {tenant} has {most} requests in progress, the most allowed"),
            )
            .retry_after(Duration::from_secs(1))
        })
    }

    /// `tenant`'s KPI figures of the day at `utc_offset` if a stream read them in `second`
    /// already.
    pub fn kpi_figures(&self, tenant: &TenantId, utc_offset: i32, second: u64) -> Option<Arc<str>> {
        let read = self.kpi_figures.lock().unwrap_or_else(PoisonError::into_inner);
        let figures = read.get(&(tenant.clone(), utc_offset));
        figures.filter(|(at, _)| *at == second).map(|(_, json)| json.clone())
    }

    /// Keeps `tenant`'s KPI figures of the day at `utc_offset` read in `second`, for its other
    /// streams.
    pub fn keep_kpi_figures(
        &self,
        tenant: &TenantId,
        utc_offset: i32,
        second: u64,
        json: Arc<str>,
    ) {
        let mut read = self.kpi_figures.lock().unwrap_or_else(PoisonError::into_inner);
        read.insert((tenant.clone(), utc_offset), (second, json));
    }

    /// A place for one more stream of `tenant`, or `429 too_many_streams` (it has the most
    /// open).
    pub fn open_stream(&self, tenant: &TenantId) -> Result<Slot, ApiError> {
        if self.is_closing() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
            .retry_after(Duration::from_secs(5)));
        }
        let most = self.config.streams_per_tenant;
        Slot::take(&self.streams, tenant, most).ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("tenant {tenant} has {most} streams open, the most allowed; close one"),
            )
            .retry_after(Duration::from_secs(5))
        })
    }

    /// [`App::open_stream`] for an event stream, which also counts against how often the
    /// tenant opens them: `429 rate_limited` beyond its cap at once, then one a second (only
    /// an open that found a place counts; its place is freed again).
    pub fn open_event_stream(&self, tenant: &TenantId) -> Result<Slot, ApiError> {
        let slot = self.open_stream(tenant)?;
        if self.event_stream_opens.check_key(tenant).is_err() {
            let most = self.config.streams_per_tenant;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "tenant {tenant} opens event streams too often: {most} at once, then one a second"
                ),
            )
            .retry_after(Duration::from_secs(1)));
        }
        Ok(slot)
    }

    /// `429 rate_limited` when `tenant` is over its rate.
    pub fn check_rate(&self, tenant: &TenantId) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(tenant).map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("tenant {tenant} is over its rate limit; slow down"),
            )
            .retry_after(Duration::from_secs(1))
        })
    }
}

/// Where the simulated gateways of a data folder keep their books, a file each.
pub const GATEWAYS_DIR: &str = "gateways";

/// The payments the server runs with until real gateways are configured: two simulated
/// gateways, a cheaper one that declines about 2% of authorizations and a dearer one that
/// declines none. The router prefers the cheaper while its success rate holds. Each keeps its
/// books in `<data>/gateways/<id>.books`, as a provider keeps them across the server's
/// restarts: a capture, void or refund after one finds the authorization it quotes.
///
/// # Errors
/// A gateway's books cannot be read or written.
pub fn simulated_payments(data: &std::path::Path) -> anyhow::Result<Arc<Router>> {
    let dir = data.join(GATEWAYS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let gateway = |id: &str, decline_basis_points, fixed_minor| {
        let id = GatewayId::new(id).expect("a valid gateway id");
        let fees = ["EUR", "USD", "GBP"]
            .iter()
            .map(|code| Currency::new(code).expect("a valid currency"))
            .map(|currency| Fee { currency, fixed_minor, basis_points: 150 })
            .collect();
        let books = dir.join(format!("{id}.books"));
        let config =
            SimulatedGatewayConfig { decline_basis_points, ..SimulatedGatewayConfig::new(id) };
        let gateway = SimulatedGateway::keeping_books_in(config, &books)?;
        Ok::<_, anyhow::Error>(Route { gateway: Arc::new(gateway), fees, currencies: None })
    };
    Ok(Arc::new(Router::new(
        vec![gateway("sim-card", 200, 10)?, gateway("sim-wallet", 0, 25)?],
        RouterConfig::default(),
    )))
}
