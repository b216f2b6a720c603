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
//!
//! What it counts, as a client would: a request the server sheds (`429`, or `503`/`504` with
//! nothing lost: see the README's error table) is sent again with the same key after its
//! `Retry-After`, and a broken connection is opened again, until the request is answered or
//! [`LoadConfig::give_up_after`] passes (then it counts as failed, and `orderly load` exits
//! non-zero after its report; a connection the server stopped answering sends nothing more, and
//! its placements count as failed too, so that a dead server ends the run in that time). Latency runs from when a request was meant to go to its
//! answer, retries and waits included, and only answered requests count in it and in the
//! rates. Without a rate the workers send back to back (closed loop: the latency is the
//! server's service time, and a server that stalls also holds back the requests it would have
//! been sent); with [`LoadConfig::rate`] placements are due on a fixed schedule (open loop),
//! and one sent late because the server was slow counts from when it was due.

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
    /// Placements due per second, across all workers (open loop); `None`: back to back.
    pub rate: Option<u32>,
    /// How long a request is retried (shed, or its connection broken) before it counts as
    /// failed.
    pub give_up_after: Duration,
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
    /// Placements due per second (open loop), or none (closed loop).
    pub rate: Option<u32>,
    /// Placements answered 201.
    pub orders_placed: u64,
    /// Every request of the timed phase, retries included: the sum of `statuses`.
    pub requests: u64,
    /// Requests answered (a success or a refusal such as a sold-out `422`), each counted
    /// once however often it was sent.
    pub answered: u64,
    /// Answers that shed a request (`429`, `503`, `504`): it was sent again.
    pub shed: u64,
    /// Requests given up: not answered within the give-up time, or answered with another
    /// server error; and a connection's placements not sent once the server stopped
    /// answering it.
    pub failed: u64,
    /// Length of the timed phase.
    pub seconds: f64,
    /// Requests answered per second.
    pub requests_per_sec: f64,
    /// Placements answered 201 per second.
    pub orders_per_sec: f64,
    /// Median latency of the answered requests, from when each was due.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Answers by status code (`0` for a request whose connection broke).
    pub statuses: BTreeMap<u16, u64>,
    /// Answers that were not a success, by status; a 422 is usually a flash-sale SKU sold out.
    pub errors: BTreeMap<u16, u64>,
    /// First sends of a placement the server answered as a replay of an earlier request with
    /// the same key (`Idempotent-Replayed`): not counted as placed. None unless keys repeat.
    pub replayed_first_sends: u64,
}

/// One worker's tally.
struct Tally {
    /// Of answered requests, from when each was due.
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    placed: u64,
    replayed: u64,
    shed: u64,
    failed: u64,
}

/// Runs the load and reports. Requests that failed for good are in the report
/// ([`LoadReport::failed`]), not an error.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    if config.concurrency == 0 {
        bail!("concurrency must be at least 1");
    }
    if config.rate == Some(0) {
        bail!("a rate must be at least 1 placement a second");
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
        .enumerate()
        // A worker with nothing to send opens no connection (more workers than orders).
        .filter(|(_, placements)| !placements.is_empty())
        .map(|(worker, placements)| {
            let (config, progress) = (config.clone(), progress.clone());
            let schedule = due_times(&config, started, worker);
            tokio::spawn(async move { work(&config, placements, schedule, &progress).await })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut statuses = BTreeMap::new();
    let (mut placed, mut replayed_first_sends, mut shed, mut failed) = (0, 0, 0, 0);
    for worker in workers {
        let tally = worker.await??;
        latency.add(&tally.latency)?;
        for (status, n) in tally.statuses {
            *statuses.entry(status).or_default() += n;
        }
        placed += tally.placed;
        replayed_first_sends += tally.replayed;
        shed += tally.shed;
        failed += tally.failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let answered = latency.len();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let errors = statuses
        .iter()
        .filter(|(status, _)| !(200..300).contains(*status))
        .map(|(status, n)| (*status, *n))
        .collect();
    Ok(LoadReport {
        mode: if config.hello { "hello" } else { "orders" },
        concurrency: config.concurrency,
        rate: config.rate,
        orders_placed: placed,
        requests: statuses.values().sum(),
        answered,
        shed,
        failed,
        seconds,
        requests_per_sec: answered as f64 / seconds,
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

/// The due time of each of `worker`'s placements in turn: its `n`th is the run's placement
/// `n × concurrency + worker`, due at `rate` placements a second from `started`; without a
/// rate, none (each is due when it is sent).
fn due_times(
    config: &LoadConfig,
    started: Instant,
    worker: usize,
) -> Option<impl Iterator<Item = Instant> + Send + 'static> {
    let rate = f64::from(config.rate?);
    let concurrency = config.concurrency;
    Some((0u64..).map(move |n| {
        #[expect(clippy::cast_precision_loss, reason = "far below 2^52 placements")]
        let index = (n * concurrency as u64 + worker as u64) as f64;
        started + Duration::from_secs_f64(index / rate)
    }))
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

/// Receives the catalog's stock, one request at a time, keyed for the run `run`; a request
/// shed is sent again after its `Retry-After`.
async fn stock_catalog(config: &LoadConfig, run: &str) -> anyhow::Result<()> {
    let mut connection = Connection::new(config.target, &config.token);
    let mut tally = Tally::new()?;
    for sku in 0..CATALOG {
        let quantity = if sku < FLASH_SKUS { FLASH_STOCK } else { PLENTY };
        let path = format!("/v1/inventory/{}/receive", sku_name(sku));
        let key = format!("load-{run}-stock-{sku}");
        let body = Bytes::from(json!({ "quantity": quantity }).to_string());
        let due = Instant::now();
        let call = Call { path: &path, key: &key, body, due };
        match send(&mut connection, &mut tally, config.give_up_after, call).await {
            Ok(answer) if answer.status.is_success() => {}
            Ok(answer) => {
                bail!("receiving stock of {} answered {}", sku_name(sku), answer.status)
            }
            Err(why) => bail!("receiving stock of {}: given up ({why:?})", sku_name(sku)),
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
    mut schedule: Option<impl Iterator<Item = Instant>>,
    progress: &ProgressBar,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut connection = Connection::new(config.target, &config.token);
    let patience = config.give_up_after;
    let mut placements = placements.into_iter();
    while let Some(Planned { key, body, retry, cancel }) = placements.next() {
        let due = match schedule.as_mut().and_then(Iterator::next) {
            Some(due) => {
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let body = Bytes::from(body);
        let placement = Call { path: "/v1/orders", key: &key, body: body.clone(), due };
        let answer = send(&mut connection, &mut tally, patience, placement).await;
        progress.inc(1);
        let answer = match answer {
            Ok(answer) if answer.status == StatusCode::CREATED => answer,
            Ok(_) | Err(GaveUp::Shed | GaveUp::ServerError) => continue,
            Err(GaveUp::Unanswered) => {
                // The server is gone or stuck: the rest is not sent, and fails with it.
                let unsent = placements.len() as u64;
                tally.failed += unsent;
                progress.inc(unsent);
                break;
            }
        };
        if config.hello {
            continue;
        }
        // A replay of a first send means another request used the key before; of a resend,
        // it is this run's own first send, which the server took before its answer was lost.
        if answer.replayed && !answer.resent {
            tally.replayed += 1;
            continue;
        }
        tally.placed += 1;
        if retry {
            let again = Call { path: "/v1/orders", key: &key, body, due: Instant::now() };
            let replay = send(&mut connection, &mut tally, patience, again).await;
            // A success that differs from the first answer breaks idempotency.
            if let Ok(replay) = replay
                && replay.status == StatusCode::CREATED
                && replay.body != answer.body
            {
                bail!("retrying {key} answered another order than the first response");
            }
        }
        if cancel {
            let order: serde_json::Value = serde_json::from_slice(&answer.body)?;
            let id = order["order_id"].as_str().context("a placed order has an id")?;
            let path = format!("/v1/orders/{id}/cancel");
            let key = format!("{key}-cancel");
            let call = Call { path: &path, key: &key, body: Bytes::new(), due: Instant::now() };
            let _ = send(&mut connection, &mut tally, patience, call).await;
        }
    }
    Ok(tally)
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency: Histogram::new(3)?,
            statuses: BTreeMap::new(),
            placed: 0,
            replayed: 0,
            shed: 0,
            failed: 0,
        })
    }
}

/// One request to send until answered, and when it was due.
struct Call<'a> {
    path: &'a str,
    key: &'a str,
    body: Bytes,
    due: Instant,
}

/// The longest wait between two sends of one request.
const MOST_WAIT: Duration = Duration::from_secs(5);

/// Sends `call` until the server answers it: after a shedding answer, again after its
/// `Retry-After`; after a broken connection, again on a new one, waiting longer each time. The
/// answer's latency, from when the request was due, goes in the tally. Gives up (counted as
/// failed) once `patience` has passed, a wait for an answer included, or on another server
/// error.
async fn send(
    connection: &mut Connection,
    tally: &mut Tally,
    patience: Duration,
    call: Call<'_>,
) -> Result<Answer, GaveUp> {
    let give_up = Instant::now() + patience;
    let mut backoff = Duration::from_millis(50);
    let mut sends = 0;
    let gave_up = loop {
        sends += 1;
        let post = connection.post(call.path, call.key, call.body.clone());
        let (wait, why) = match tokio::time::timeout_at(give_up.into(), post).await {
            Ok(Ok(mut answer)) => {
                *tally.statuses.entry(answer.status.as_u16()).or_default() += 1;
                if let Some(wait) = shed(&answer) {
                    tally.shed += 1;
                    (wait, GaveUp::Shed)
                } else if answer.status.is_server_error() {
                    break GaveUp::ServerError;
                } else {
                    let micros = u64::try_from(call.due.elapsed().as_micros());
                    // Within the histogram's range: `new(3)` grows to fit.
                    let _ = tally.latency.record(micros.unwrap_or(u64::MAX).max(1));
                    answer.resent = sends > 1;
                    return Ok(answer);
                }
            }
            Ok(Err(e)) => {
                *tally.statuses.entry(0).or_default() += 1;
                tracing::warn!("request failed: {e:#}; trying again on a new connection");
                backoff = (backoff * 2).min(MOST_WAIT);
                (backoff / 2, GaveUp::Unanswered)
            }
            Err(_elapsed) => {
                // The answer may still come on this connection: another request must not
                // take it for its own.
                connection.drop_connection();
                *tally.statuses.entry(0).or_default() += 1;
                break GaveUp::Unanswered;
            }
        };
        if Instant::now() + wait > give_up {
            break why;
        }
        tokio::time::sleep(wait).await;
    };
    tally.failed += 1;
    Err(gave_up)
}

/// Why [`send`] gave a request up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GaveUp {
    /// Shed until the give-up time passed.
    Shed,
    /// Answered with a server error that is no shedding (a `500`).
    ServerError,
    /// No answer: no connection, or none within the give-up time. The server is gone or
    /// stuck, so the worker sends nothing more (its other placements count as failed too).
    Unanswered,
}

/// How long to wait before sending again, if `answer` shed its request: `429`, or `503` and
/// `504`, after which the orderly server has done nothing or answers a retry with the same key
/// as the first request.
fn shed(answer: &Answer) -> Option<Duration> {
    let shedding = [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ];
    shedding
        .contains(&answer.status)
        .then(|| answer.retry_after.unwrap_or(Duration::from_secs(1)).min(MOST_WAIT))
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    body: Bytes,
    /// The server answered from an earlier request with the same idempotency key.
    replayed: bool,
    /// Its `Retry-After`, in seconds.
    retry_after: Option<Duration>,
    /// It answers a request sent more than once (after a shedding answer or a broken
    /// connection): a replay then answers this run's own earlier send.
    resent: bool,
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

/// One keep-alive HTTP/1.1 connection, opened when a request needs it.
struct Connection {
    target: SocketAddr,
    authorization: String,
    /// `None` before the first request and after the connection broke.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    fn new(target: SocketAddr, token: &str) -> Connection {
        Connection { target, authorization: format!("Bearer {token}"), sender: None }
    }

    /// Posts `body` to `path` with the idempotency key `key`. An error drops the connection:
    /// the next post opens another.
    /// Forgets the connection: the next post opens another.
    fn drop_connection(&mut self) {
        self.sender = None;
    }

    async fn post(&mut self, path: &str, key: &str, body: Bytes) -> anyhow::Result<Answer> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, self.target.to_string())
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Full::new(body))?;
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(handshake(self.target).await?),
        };
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let headers = response.headers();
            let replayed = headers.get("idempotent-replayed").is_some_and(|v| v == "true");
            let retry_after = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer { status, body, replayed, retry_after, resent: false })
        };
        let answer = answer.await;
        if answer.is_err() {
            self.sender = None;
        }
        answer
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
