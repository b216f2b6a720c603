//! The engine's throughput, against the disk's own limit, in one run.
//!
//! 1. **raw**: fdatasync'd sequential writes with plain `File` calls (1 MiB chunks): the disk's
//!    limit, `raw_mb_per_sec`.
//! 2. **decide**: the decision thread's work alone, in memory: decide, apply and encode
//!    (`Tenant::decide`, `Tenant::evolve`, `codec::encode_decision`) for whole order lives (place
//!    with 1–5 lines, authorize, ship) over 50 tenants with skewed SKU popularity:
//!    `decide_commands_per_sec`.
//! 3. **lifecycle**: full order lives through the durable engine from many concurrent callers:
//!    place (1–5 lines), authorize through two simulated gateways with zero latency (the
//!    authorization confirms the order), ship (commits the stock, captures the payment). Each
//!    command is acknowledged only after fdatasync. Twice, on one engine:
//!    - the callers as `ORDERLY_BENCH_CALLERS` tokio tasks, each awaiting `Engine::execute` for
//!      one command at a time: `async_orders_per_sec`, `async_ack_p99_ms`;
//!    - then as many order lives in flight through one `Pipe` (a program with thousands of
//!      orders in flight, each life's next command sent when the last is acknowledged):
//!      `orders_per_sec`, `commands_per_sec`, `ack_p50_ms`/`ack_p99_ms` per command and
//!      `log_mb_per_sec`.
//!
//! 4. **growth**: one tenant placing `ORDERLY_BENCH_GROWTH` orders in memory, each decision
//!    timed alone: `longest_decision_ms` is the longest pause its state's growth caused (a map
//!    that doubled all at once stalled the decision thread for 0.7 s at 1.8M orders).
//!
//! Run with `cargo bench --bench engine`. Overrides: `ORDERLY_BENCH_ORDERS` [200000],
//! `ORDERLY_BENCH_CALLERS` [4096], `ORDERLY_BENCH_DECIDE` [1000000], `ORDERLY_BENCH_GROWTH`
//! [2000000]. The last stdout line is one JSON object. Data lives under `target/bench-engine`
//! and is removed at the end.

/// The allocator orderly's binaries use (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orderly::codec;
use orderly::domain::{
    Command, Context, Currency, Decider, Envelope, GatewayId, GatewayReference, OrderCommand,
    OrderId, OrderLine, PaymentCommand, Tenant, TenantId, TenantState, Timestamp,
};
use orderly::engine::{Config, Engine, Pipe};
use orderly::payments::{
    Authorization, AuthorizeRequest, Route, Router, RouterConfig, SimulatedGateway,
    SimulatedGatewayConfig,
};
use orderly::process::payment_id_for;

#[path = "support/mod.rs"]
mod support;
use support::{Mix, TENANTS, env, per_sec, percentile, place, stock_commands, tenant};

fn raw_mb_per_sec(dir: &Path) -> f64 {
    let path = dir.join("raw");
    let mut file = File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 1 << 20];
    let total = 256u64;
    let started = Instant::now();
    for _ in 0..total {
        file.write_all(&chunk).unwrap();
        file.sync_data().unwrap();
    }
    let elapsed = started.elapsed();
    std::fs::remove_file(path).unwrap();
    per_sec(total << 20, elapsed) / 1e6
}

fn decide_commands_per_sec(commands: u64) -> f64 {
    let mut tenants: Vec<TenantState> = (0..TENANTS).map(|_| TenantState::default()).collect();
    let ids: Vec<TenantId> = (0..TENANTS).map(tenant).collect();
    let ctx = Context::at(Timestamp(1_764_115_200_000));
    for (t, command) in stock_commands() {
        let i = ids.iter().position(|id| *id == t).unwrap();
        for event in Tenant::decide(&tenants[i], &command, &ctx).unwrap() {
            Tenant::evolve(&mut tenants[i], &event);
        }
    }
    // Whole order lives, interleaved as concurrent callers would send them: order n is placed
    // while order n-256 is authorized and order n-512 ships, so holds open and close as they
    // do on a real day instead of piling up.
    let orders = commands / 3;
    let mut mix = Mix(1);
    let lives: Vec<(usize, OrderId, Vec<OrderLine>)> = (0..orders)
        .map(|n| {
            let t = usize::try_from(mix.below(TENANTS)).unwrap();
            (t, OrderId::new(&format!("o-{n}")).unwrap(), mix.basket())
        })
        .collect();
    const LAG: usize = 256;
    let gateway = GatewayId::new("pay-a").unwrap();
    let mut work: Vec<(usize, Command)> = Vec::with_capacity(lives.len() * 3);
    for i in 0..lives.len() + 2 * LAG {
        if let Some((t, order, lines)) = lives.get(i) {
            work.push((*t, place(order, lines.clone())));
        }
        if let Some((t, order, lines)) = i.checked_sub(LAG).and_then(|j| lives.get(j)) {
            let total = lines.iter().map(OrderLine::amount).sum();
            let amount = orderly::domain::Money::new(total, Currency::new("EUR").unwrap());
            let command = PaymentCommand::Authorize {
                order: order.clone(),
                amount,
                gateway: gateway.clone(),
                reference: Some(GatewayReference::new(&format!("auth-{order}")).unwrap()),
            };
            work.push((*t, Command::Payment { payment: payment_id_for(order), command }));
        }
        if let Some((t, order, _)) = i.checked_sub(2 * LAG).and_then(|j| lives.get(j)) {
            work.push((*t, Command::Order { order: order.clone(), command: OrderCommand::Ship }));
        }
    }
    // One record's buffers, reused as the decision thread reuses its batch's.
    let mut record = orderly::store::NewRecord {
        stream: Vec::new(),
        expected: orderly::store::Expected::Any,
        event_type: 0,
        schema_version: 0,
        timestamp: 0,
        payload: Vec::new(),
    };
    let mut encoded = 0usize;
    let started = Instant::now();
    for (t, command) in &work {
        let events = Tenant::decide(&tenants[*t], command, &ctx).unwrap();
        codec::encode_decision_into(&ids[*t], None, &events, ctx.now, &mut record);
        encoded += record.payload.len();
        for event in &events {
            Tenant::evolve(&mut tenants[*t], event);
        }
    }
    let elapsed = started.elapsed();
    assert!(encoded > 0);
    per_sec(work.len() as u64, elapsed)
}

/// The longest single decision, in milliseconds, while one tenant places `orders` orders of one
/// line each, and how many orders it had placed by then.
fn longest_decision_ms(orders: u64) -> (f64, u64) {
    let mut state = TenantState::default();
    let ctx = Context::at(Timestamp(1_764_115_200_000));
    let skus: Vec<_> = stock_commands().into_iter().filter(|(t, _)| *t == tenant(0)).collect();
    for (_, command) in &skus {
        for event in Tenant::decide(&state, command, &ctx).unwrap() {
            Tenant::evolve(&mut state, &event);
        }
    }
    let mut mix = Mix(7);
    let (mut longest, mut at) = (Duration::ZERO, 0);
    for n in 0..orders {
        let mut lines = mix.basket();
        lines.truncate(1);
        let command = place(&OrderId::new(&format!("o-{n}")).unwrap(), lines);
        let started = Instant::now();
        for event in Tenant::decide(&state, &command, &ctx).unwrap() {
            Tenant::evolve(&mut state, &event);
        }
        let took = started.elapsed();
        if took > longest {
            (longest, at) = (took, n);
        }
    }
    (longest.as_secs_f64() * 1e3, at)
}

/// The command recording `order`'s authorization, once the router's gateways approved it.
async fn authorized(
    router: &Router,
    tenant: &TenantId,
    order: &OrderId,
    amount: orderly::domain::Money,
) -> Command {
    let request = AuthorizeRequest {
        idempotency_key: format!("{tenant}:{order}:auth"),
        tenant: tenant.clone(),
        order: order.clone(),
        amount,
    };
    let (gateway, answer) = router.authorize(&request, Instant::now()).await.answer.unwrap();
    let Authorization::Approved { reference } = answer else {
        panic!("the simulated gateways approve every payment here")
    };
    let reference = Some(GatewayReference::new(&reference).unwrap());
    let command = PaymentCommand::Authorize { order: order.clone(), amount, gateway, reference };
    Command::Payment { payment: payment_id_for(order), command }
}

/// The command an order life has in flight.
enum Stage {
    Place,
    Authorize,
    Ship,
}

/// An order life of the pipe's lifecycle.
struct Life {
    tenant: TenantId,
    order: OrderId,
    total: orderly::domain::Money,
    stage: Stage,
    /// When its command in flight was sent.
    sent: Instant,
}

impl Life {
    /// Places order `n` through `pipe`, under tag `slot`.
    fn place(pipe: &Pipe, slot: u64, n: u64, mix: &mut Mix) -> Life {
        let tenant = tenant(mix.below(TENANTS));
        let order = OrderId::new(&format!("p-{n}")).unwrap();
        let lines = mix.basket();
        let total = lines.iter().map(OrderLine::amount).sum();
        let total = orderly::domain::Money::new(total, Currency::new("EUR").unwrap());
        let sent = Instant::now();
        pipe.send(Envelope::new(tenant.clone(), place(&order, lines)), slot);
        Life { tenant, order, total, stage: Stage::Place, sent }
    }

    /// Sends the life's next command through `pipe` once its last one is acknowledged, or
    /// returns false when it has shipped.
    async fn next(&mut self, pipe: &Pipe, slot: u64, router: &Router) -> bool {
        let (command, stage) = match self.stage {
            Stage::Place => {
                let authorize = authorized(router, &self.tenant, &self.order, self.total).await;
                (authorize, Stage::Authorize)
            }
            Stage::Authorize => {
                let ship = OrderCommand::Ship;
                (Command::Order { order: self.order.clone(), command: ship }, Stage::Ship)
            }
            Stage::Ship => return false,
        };
        self.stage = stage;
        self.sent = Instant::now();
        pipe.send(Envelope::new(self.tenant.clone(), command), slot);
        true
    }
}

/// Runs `orders` order lives, `in_flight` at a time, through one pipe: each acknowledgement
/// sends its life's next command (a shipped life makes room for a new order). Returns each
/// command's latency in microseconds, from its send until this caller took its answer (as the
/// tasks' latency runs until the task resumes), not only until the engine gave it.
async fn lifecycle_through_a_pipe(
    engine: &Engine,
    router: &Router,
    orders: u64,
    in_flight: u64,
) -> Vec<u64> {
    let pipe = engine.pipe();
    let mut mix = Mix(1);
    let mut lives: Vec<Life> =
        (0..in_flight.min(orders)).map(|n| Life::place(&pipe, n, n, &mut mix)).collect();
    let mut placed = lives.len() as u64;
    let mut live = lives.len();
    let mut latencies = Vec::with_capacity(usize::try_from(orders * 3).unwrap());
    while live > 0 {
        let acks = pipe.recv(Duration::from_secs(60));
        let taken = Instant::now();
        assert!(!acks.is_empty(), "no acknowledgement for a minute");
        for ack in acks {
            let life = &mut lives[usize::try_from(ack.tag).unwrap()];
            if let Err(e) = ack.answer {
                panic!("order {} refused at {:?}: {e}", life.order, ack.at);
            }
            let latency = taken.saturating_duration_since(life.sent);
            latencies.push(u64::try_from(latency.as_micros()).unwrap());
            if life.next(&pipe, ack.tag, router).await {
                continue;
            }
            if placed < orders {
                *life = Life::place(&pipe, ack.tag, placed, &mut mix);
                placed += 1;
            } else {
                live -= 1;
            }
        }
    }
    latencies
}

fn main() {
    // As `orderly` runs.
    orderly::engine::use_small_pages();
    let orders = env("ORDERLY_BENCH_ORDERS", 200_000);
    let callers = env("ORDERLY_BENCH_CALLERS", 4096);
    let decide = env("ORDERLY_BENCH_DECIDE", 1_000_000);
    let growth = env("ORDERLY_BENCH_GROWTH", 2_000_000);
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-engine");
    std::fs::create_dir_all(&base).unwrap();
    let scratch = tempfile::tempdir_in(&base).unwrap();

    let raw = raw_mb_per_sec(scratch.path());
    eprintln!("raw fdatasync'd writes: {raw:.0} MB/s");
    let decided = decide_commands_per_sec(decide);
    eprintln!("decision thread alone: {decided:.0} commands/s");

    let engine = Engine::open(&scratch.path().join("data"), Config::default()).unwrap();
    for (t, command) in stock_commands() {
        engine.execute_blocking(Envelope::new(t, command)).unwrap();
    }
    let gateways = ["pay-a", "pay-b"].map(|id| Route {
        gateway: Arc::new(SimulatedGateway::new(SimulatedGatewayConfig::new(
            GatewayId::new(id).unwrap(),
        ))),
        fees: vec![],
        currencies: None,
    });
    let router = Arc::new(Router::new(gateways.into(), RouterConfig::default()));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let next_order = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let async_latencies: Vec<u64> = runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (engine, router, next_order) =
                    (engine.clone(), router.clone(), next_order.clone());
                tokio::spawn(async move {
                    let mut mix = Mix(1_000 + c);
                    let mut latencies = Vec::new();
                    let mut timed = async |envelope: Envelope| {
                        let sent = Instant::now();
                        let outcome = engine.execute(envelope).await;
                        latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap());
                        outcome
                    };
                    loop {
                        let n = next_order.fetch_add(1, Ordering::Relaxed);
                        if n >= orders {
                            break;
                        }
                        let t = tenant(mix.below(TENANTS));
                        let order = OrderId::new(&format!("o-{n}")).unwrap();
                        let placed = timed(Envelope::new(t.clone(), place(&order, mix.basket())))
                            .await
                            .unwrap();
                        let Some(total) =
                            placed.events.iter().find_map(|e| match &e.event {
                                orderly::domain::Event::Order {
                                    event:
                                        orderly::domain::OrderEvent::OrderPlaced {
                                            total, currency, ..
                                        },
                                    ..
                                } => Some(orderly::domain::Money::new(*total, *currency)),
                                _ => None,
                            })
                        else {
                            unreachable!("a placed order records OrderPlaced")
                        };
                        let authorize = authorized(&router, &t, &order, total).await;
                        timed(Envelope::new(t.clone(), authorize)).await.unwrap();
                        timed(Envelope::new(
                            t,
                            Command::Order { order, command: OrderCommand::Ship },
                        ))
                        .await
                        .unwrap();
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let async_elapsed = started.elapsed();
    let mut async_sorted = async_latencies;
    async_sorted.sort_unstable();
    let async_orders_per_sec = per_sec(orders, async_elapsed);
    eprintln!(
        "lifecycle, {callers} tasks awaiting `execute`: {orders} orders in {:.2} s: {async_orders_per_sec:.0} orders/s",
        async_elapsed.as_secs_f64()
    );

    let head_before = engine.head();
    let started = Instant::now();
    let latencies = runtime.block_on(lifecycle_through_a_pipe(&engine, &router, orders, callers));
    let elapsed = started.elapsed();
    let records = engine.head().0 - head_before.0;
    // The bytes the lifecycle's records take in the log: header, stream id and payload.
    let log_bytes: u64 = engine
        .log()
        .read_from(head_before)
        .map(|r| r.map(|r| r.encoded_len() as u64).unwrap())
        .sum();
    engine.shutdown();
    let mut sorted = latencies;
    sorted.sort_unstable();
    let orders_per_sec = per_sec(orders, elapsed);
    let commands_per_sec = per_sec(sorted.len() as u64, elapsed);
    let log_mb_per_sec = per_sec(log_bytes, elapsed) / 1e6;
    eprintln!(
        "lifecycle, {callers} order lives through a pipe: {orders} orders in {:.2} s: {orders_per_sec:.0} orders/s, {commands_per_sec:.0} commands/s, {records} records",
        elapsed.as_secs_f64()
    );
    let (longest_ms, longest_at) = longest_decision_ms(growth);
    eprintln!(
        "growth: the longest decision of {growth} places into one tenant took {longest_ms:.2} ms, at order {longest_at}"
    );
    println!(
        "{{\"orders\":{orders},\"seconds\":{:.3},\"orders_per_sec\":{orders_per_sec:.0},\"commands_per_sec\":{commands_per_sec:.0},\"decide_commands_per_sec\":{decided:.0},\"ack_p50_ms\":{:.3},\"ack_p99_ms\":{:.3},\"async_orders_per_sec\":{async_orders_per_sec:.0},\"async_ack_p99_ms\":{:.3},\"records\":{records},\"log_mb_per_sec\":{log_mb_per_sec:.1},\"raw_mb_per_sec\":{raw:.1},\"callers\":{callers},\"longest_decision_ms\":{longest_ms:.2}}}",
        elapsed.as_secs_f64(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&async_sorted, 0.99),
    );
}
