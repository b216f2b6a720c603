//! `orderly load`: drives a running server's HTTP API with a seeded Black Friday mix and
//! reports throughput and latency.
//!
//! Setup stocks a catalog (a few flash-sale SKUs with little stock that sell out, the rest
//! plentiful); then `concurrency` workers, each on its own keep-alive connection, place orders
//! of 1 to 5 lines with skewed SKU popularity, each with an idempotency key; some placements
//! are retried with the same key (the server must answer the first response again) and some
//! orders are cancelled. The same seed sends the same mix. The keys carry a nonce of the run,
//! so that a second run against the same server places new orders rather than being answered
//! from the first one (a first send answered as a replay is counted apart, and should be none).
//!
//! With `--hello` the same placement requests go to a hello-world server ([`hello_server`])
//! instead: the ceiling of the HTTP stack and of this generator on the same machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;

/// SKUs in the catalog.
const CATALOG: usize = 500;
/// The first SKUs of the catalog are flash-sale items with little stock.
const FLASH_SKUS: usize = 5;
/// Share of order lines that ask for a flash-sale SKU, in percent.
const FLASH_PERCENT: u32 = 2;
/// Units of stock of a flash-sale SKU.
const FLASH_STOCK: u64 = 200;
/// Units received per receive command for the other SKUs (the most one command may take).
const PLENTY: u64 = 1_000_000;
/// Share of placements sent twice with the same key, in percent.
const RETRY_PERCENT: u32 = 3;
/// Share of placed orders cancelled, in percent.
const CANCEL_PERCENT: u32 = 5;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server, `http://host:port`.
    pub target: SocketAddr,
    /// A tenant's bearer token.
    pub token: String,
    /// Orders to place.
    pub orders: u64,
    /// Workers, each with one connection and one request in flight.
    pub concurrency: usize,
    /// Seeds the mix.
    pub seed: u64,
    /// Send the placements to a hello-world server (no setup, no follow-ups).
    pub hello: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// `orders` or `hello`.
    pub mode: &'static str,
    /// Workers (connections).
    pub concurrency: usize,
    /// Placements answered 201.
    pub orders_placed: u64,
    /// Every request of the timed phase.
    pub requests: u64,
    /// Length of the timed phase.
    pub seconds: f64,
    /// Requests answered per second.
    pub requests_per_sec: f64,
    /// Placements answered 201 per second.
    pub orders_per_sec: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers that were not a success, by status (`0` for a failed connection); a 422 is
    /// usually a flash-sale SKU sold out.
    pub errors: BTreeMap<u16, u64>,
    /// First sends of a placement the server answered as a replay of an earlier request with
    /// the same key (`Idempotent-Replayed`): not counted as placed. None unless keys repeat.
    pub replayed_first_sends: u64,
}

/// One worker's tally.
struct Tally {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    placed: u64,
    replayed: u64,
}

/// Runs the load and reports.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    if config.concurrency == 0 {
        bail!("concurrency must be at least 1");
    }
    let run = run_nonce();
    if !config.hello {
        stock_catalog(&config, &run).await.context("stocking the catalog")?;
    }
    let progress = if config.progress {
        let bar = ProgressBar::new(config.orders);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} orders  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let plans: Vec<Vec<Planned>> = (0..config.concurrency)
        .map(|worker| {
            let (concurrency, index) = (config.concurrency as u64, worker as u64);
            let share =
                config.orders / concurrency + u64::from(index < config.orders % concurrency);
            plan(&run, config.seed, worker, share)
        })
        .collect();
    let started = Instant::now();
    let workers: Vec<_> = plans
        .into_iter()
        // A worker with nothing to send opens no connection (more workers than orders).
        .filter(|placements| !placements.is_empty())
        .map(|placements| {
            let (config, progress) = (config.clone(), progress.clone());
            tokio::spawn(async move { work(&config, placements, &progress).await })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut statuses = BTreeMap::new();
    let (mut placed, mut replayed_first_sends) = (0, 0);
    for worker in workers {
        let tally = worker.await??;
        latency.add(&tally.latency)?;
        for (status, n) in tally.statuses {
            *statuses.entry(status).or_default() += n;
        }
        placed += tally.placed;
        replayed_first_sends += tally.replayed;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let requests = latency.len();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let errors = statuses
        .iter()
        .filter(|(status, _)| !(200..300).contains(*status))
        .map(|(status, n)| (*status, *n))
        .collect();
    Ok(LoadReport {
        mode: if config.hello { "hello" } else { "orders" },
        concurrency: config.concurrency,
        orders_placed: placed,
        requests,
        seconds,
        requests_per_sec: requests as f64 / seconds,
        orders_per_sec: placed as f64 / seconds,
        p50_ms: ms(latency.value_at_quantile(0.5)),
        p99_ms: ms(latency.value_at_quantile(0.99)),
        p999_ms: ms(latency.value_at_quantile(0.999)),
        max_ms: ms(latency.max()),
        statuses,
        errors,
        replayed_first_sends,
    })
}

/// A nonce for the keys of one run: the time in nanoseconds and the process, in base 36.
fn run_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut value = nanos ^ (u128::from(std::process::id()) << 96);
    let mut digits = Vec::new();
    while value > 0 {
        let digit = u32::try_from(value % 36).expect("below 36");
        digits.push(char::from_digit(digit, 36).expect("a base-36 digit"));
        value /= 36;
    }
    digits.iter().rev().collect()
}

/// Receives the catalog's stock, one request at a time, keyed for the run `run`.
async fn stock_catalog(config: &LoadConfig, run: &str) -> anyhow::Result<()> {
    let mut connection = Connection::open(config.target, &config.token).await?;
    for sku in 0..CATALOG {
        let quantity = if sku < FLASH_SKUS { FLASH_STOCK } else { PLENTY };
        let path = format!("/v1/inventory/{}/receive", sku_name(sku));
        let key = format!("load-{run}-stock-{sku}");
        let body = json!({ "quantity": quantity }).to_string();
        let answer = connection.post(&path, Some(&key), body).await?;
        if !answer.status.is_success() {
            bail!("receiving stock of {} answered {}", sku_name(sku), answer.status);
        }
    }
    Ok(())
}

fn sku_name(index: usize) -> String {
    format!("sku-{index:03}")
}

/// One placement a worker will send, made before the clock starts so that the timed phase
/// measures the server, not the making of requests.
struct Planned {
    key: String,
    body: String,
    /// Send it a second time with the same key.
    retry: bool,
    /// Cancel the order once placed.
    cancel: bool,
}

/// A worker's placements, from its own seeded generator, keyed for the run `run`.
fn plan(run: &str, seed: u64, worker: usize, orders: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ (worker as u64).wrapping_mul(0x9e37_79b9));
    (0..orders)
        .map(|n| Planned {
            key: format!("load-{run}-{seed}-{worker}-{n}"),
            body: order_body(&mut rng),
            retry: rng.random_range(0..100) < RETRY_PERCENT,
            cancel: rng.random_range(0..100) < CANCEL_PERCENT,
        })
        .collect()
}

/// One worker: its planned placements, with retries and cancels, on one connection.
async fn work(
    config: &LoadConfig,
    placements: Vec<Planned>,
    progress: &ProgressBar,
) -> anyhow::Result<Tally> {
    let mut tally =
        Tally { latency: Histogram::new(3)?, statuses: BTreeMap::new(), placed: 0, replayed: 0 };
    let mut connection = Connection::open(config.target, &config.token).await?;
    for Planned { key, body, retry, cancel } in placements {
        let again = retry.then(|| body.clone());
        let (status, response, replayed) =
            timed(&mut connection, &mut tally, "/v1/orders", &key, body).await?;
        progress.inc(1);
        if status != StatusCode::CREATED || config.hello {
            continue;
        }
        if replayed {
            tally.replayed += 1;
            continue;
        }
        tally.placed += 1;
        if let Some(body) = again {
            let (status, replay, _) =
                timed(&mut connection, &mut tally, "/v1/orders", &key, body).await?;
            // An error answer (a broken connection, an overloaded server) is counted as such;
            // a success that differs from the first answer breaks idempotency.
            if status == StatusCode::CREATED && replay != response {
                bail!("retrying {key} answered another order than the first response");
            }
        }
        if cancel {
            let order: serde_json::Value = serde_json::from_slice(&response)?;
            let id = order["order_id"].as_str().context("a placed order has an id")?;
            let path = format!("/v1/orders/{id}/cancel");
            timed(&mut connection, &mut tally, &path, &format!("{key}-cancel"), String::new())
                .await?;
        }
    }
    Ok(tally)
}

/// Sends one request, recording its latency and status; reconnects after a broken
/// connection (status 0). Gives the status, the body and whether the server answered it as a
/// replay of an earlier request with the same key.
async fn timed(
    connection: &mut Connection,
    tally: &mut Tally,
    path: &str,
    key: &str,
    body: String,
) -> anyhow::Result<(StatusCode, Bytes, bool)> {
    let started = Instant::now();
    let answer = connection.post(path, Some(key), body).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tally.latency.record(micros.max(1))?;
    match answer {
        Ok(answer) => {
            *tally.statuses.entry(answer.status.as_u16()).or_default() += 1;
            Ok((answer.status, answer.body, answer.replayed))
        }
        Err(e) => {
            *tally.statuses.entry(0).or_default() += 1;
            tracing::warn!("request failed: {e:#}; reconnecting");
            tokio::time::sleep(Duration::from_millis(50)).await;
            connection.reconnect().await?;
            let failed = StatusCode::from_u16(599).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok((failed, Bytes::new(), false))
        }
    }
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    body: Bytes,
    /// The server answered from an earlier request with the same idempotency key.
    replayed: bool,
}

/// 1 to 5 distinct SKUs: now and then a flash-sale SKU, otherwise popular ones more often
/// (the square of a uniform draw leans low).
fn order_body(rng: &mut StdRng) -> String {
    let lines = rng.random_range(1..=5);
    let mut skus: Vec<usize> = Vec::with_capacity(lines);
    while skus.len() < lines {
        let sku = if rng.random_range(0..100) < FLASH_PERCENT {
            rng.random_range(0..FLASH_SKUS)
        } else {
            let u: f64 = rng.random();
            #[expect(clippy::cast_precision_loss, reason = "a few hundred SKUs")]
            let regular = (CATALOG - FLASH_SKUS) as f64;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "in 0..CATALOG - FLASH_SKUS"
            )]
            let skewed = ((u * u) * regular) as usize;
            FLASH_SKUS + skewed
        };
        if !skus.contains(&sku) {
            skus.push(sku);
        }
    }
    let lines: Vec<_> = skus
        .iter()
        .map(|sku| {
            json!({
                "sku": sku_name(*sku),
                "quantity": rng.random_range(1..=3),
                "unit_price": rng.random_range(199..=19_999),
            })
        })
        .collect();
    let customer = format!("c-{}", rng.random_range(0..200_000));
    json!({ "customer_id": customer, "currency": "EUR", "lines": lines }).to_string()
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    target: SocketAddr,
    authorization: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(target: SocketAddr, token: &str) -> anyhow::Result<Connection> {
        let sender = handshake(target).await?;
        Ok(Connection { target, authorization: format!("Bearer {token}"), sender })
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.sender = handshake(self.target).await?;
        Ok(())
    }

    async fn post(
        &mut self,
        path: &str,
        key: Option<&str>,
        body: String,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, self.target.to_string())
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body, replayed })
    }
}

async fn handshake(target: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream =
        TcpStream::connect(target).await.with_context(|| format!("cannot connect to {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    Ok(sender)
}

/// A hello-world server: reads any request's body and answers `201` with a small JSON, doing
/// nothing else. What `orderly load --hello` is measured against.
pub async fn hello_server(listen: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        (StatusCode::CREATED, axum::Json(json!({ "hello": "world", "bytes": body.len() })))
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("hello server listening on http://{}", listener.local_addr()?);
    // Served as `orderly serve` serves: the baseline is the same HTTP stack doing nothing.
    let idle = crate::app::DEFAULT_IDLE_TIMEOUT;
    crate::connections::serve(listener, app, idle, std::future::pending()).await;
    Ok(())
}
