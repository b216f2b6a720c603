//! A child process running the engine, with four threads placing orders against a scarce SKU,
//! is SIGKILLed at random moments; after each kill the engine reopens on the same folder and
//! every acknowledged command is in the log at the positions it was answered with, every
//! acknowledged idempotency key is recognized (a retry is a replay of those same events, a
//! different command with it is refused), every rejection recorded nothing, every batch is
//! whole, and the stock was never oversold: at no point of the log did the holds on a SKU exceed
//! what it had on hand, and the reopened engine's stock equals the log's once its rebuilt expiry
//! timers have run.
//!
//! The child is this test binary itself, run with `ORDERLY_ENGINE_KILL_DIR` (the data folder)
//! and `ORDERLY_ENGINE_KILL_RUN` (the kill's index, so that order ids differ between children)
//! set. Holds expire after 250 ms in the child, so the scarce SKU is sold out, released by
//! expiry and sold again throughout, also across crashes. The number of kills is 20 by default
//! and `ORDERLY_KILLS` when set.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orderly_core::Position;
use orderly_core::codec::{self, Decoded};
use orderly_core::domain::{Event, InventoryEvent, OrderEvent, OrderId, Sku, Timestamp};
use orderly_core::engine::{Config, Engine, ExecuteError, ManualClock, Outcome};
use orderly_store::LogConfig;

use super::{available, key, place, positions, receive, tenant};

const DIR_ENV: &str = "ORDERLY_ENGINE_KILL_DIR";
const RUN_ENV: &str = "ORDERLY_ENGINE_KILL_RUN";
const TENANT: &str = "acme";
/// The SKUs and the units each is stocked with, once: "hot" sells out, the others do not.
const STOCK: [(&str, u64); 3] = [("hot", 300), ("cold", 100_000), ("warm", 100_000)];
const THREADS: u64 = 4;
/// How long the child's orders hold their stock: short, so that "hot" keeps being released.
const CHILD_HOLD_TTL_MS: u64 = 250;
/// Acknowledged orders retried per kill to see that their keys are recognized.
const REPLAYS_PER_KILL: usize = 20;

/// Small segments (about 2,300 of these records each), so that the log rolls many times.
fn log_config() -> LogConfig {
    LogConfig { segment_size: 1 << 18, ..LogConfig::default() }
}

fn stock_key(sku: &str) -> String {
    format!("stock-{sku}")
}

/// The lines of `order`: one to three distinct SKUs, one to three units each, derived from the
/// id so that the parent can send the very same command again.
fn lines_of(order: &str) -> Vec<(&'static str, u64)> {
    // FNV-1a, then a splitmix64 finaliser.
    let mut h = order
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    let count = 1 + h % 3;
    let first = (h >> 8) % 3;
    (0..count)
        .map(|n| {
            let sku = STOCK[usize::try_from((first + n) % 3).unwrap()].0;
            (sku, 1 + (h >> (16 + 4 * n)) % 3)
        })
        .collect()
}

/// In the child: stock the SKUs (keyed, so that only the first child's receipts count), then
/// place orders forever from several threads, printing every acknowledged answer.
///
/// Lines: `ready`; `ack <key> <order or SKU> <replayed 0|1> <p1,p2,..> end`; `rejected <key>
/// end`. Each is printed only after the answer came, that is after its events were durable.
#[test]
fn child_places_orders() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let run: u64 = std::env::var(RUN_ENV).expect("the run number is set").parse().unwrap();
    let config = Config { hold_ttl_ms: CHILD_HOLD_TTL_MS, log: log_config(), ..Config::default() };
    let engine = Engine::open(Path::new(&dir), config).expect("child opens the engine");
    for (sku, units) in STOCK {
        let k = stock_key(sku);
        let outcome = engine.execute_blocking(receive(TENANT, sku, units).with_key(key(&k)));
        print_ack(&k, sku, &outcome.expect("stocking is accepted or replayed"));
    }
    println!("ready");
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let order = format!("o-{run}-{t}-{i}");
                    let k = format!("k-{run}-{t}-{i}");
                    let envelope = place(TENANT, &order, &lines_of(&order)).with_key(key(&k));
                    match engine.execute_blocking(envelope) {
                        Ok(outcome) => print_ack(&k, &order, &outcome),
                        Err(e) if e.code() == "insufficient_stock" => println!("rejected {k} end"),
                        Err(e) => panic!("order {order}: unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn print_ack(k: &str, subject: &str, outcome: &Outcome) {
    let at: Vec<String> = positions(outcome).iter().map(u64::to_string).collect();
    println!("ack {k} {subject} {} {} end", u8::from(outcome.replayed), at.join(","));
}

/// An acknowledged command as the child printed it.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    /// The order id, or the SKU for a receipt.
    subject: String,
    replayed: bool,
    positions: Vec<u64>,
}

/// What one child printed.
#[derive(Debug, Default)]
struct Printed {
    acks: Vec<Ack>,
    rejected: Vec<String>,
}

fn parse(line: &str, printed: &mut Printed) {
    let parts: Vec<&str> = line.split_whitespace().collect();
    // A line is taken only whole (it ends with "end"); the test harness prints others.
    match parts.as_slice() {
        ["ack", k, subject, replayed, at, "end"] => printed.acks.push(Ack {
            key: (*k).to_owned(),
            subject: (*subject).to_owned(),
            replayed: *replayed == "1",
            positions: at.split(',').map(|p| p.parse().unwrap()).collect(),
        }),
        ["rejected", k, "end"] => printed.rejected.push((*k).to_owned()),
        _ => {}
    }
}

fn index(position: u64) -> usize {
    usize::try_from(position).unwrap()
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn acknowledged_commands_keys_and_stock_survive_sigkill() {
    let kills: u64 = std::env::var("ORDERLY_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(20);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut book = Book::default();
    let mut totals = Totals::default();
    for kill in 0..kills {
        let r = xorshift(&mut seed);
        let mut child = Process::new(&exe)
            .args(["--exact", "engine::kill::child_places_orders", "--nocapture"])
            .args(["--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .env(RUN_ENV, kill.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (ready_tx, ready) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut printed = Printed::default();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                }
                parse(&line, &mut printed);
            }
            printed
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        // One kill in four lands at any moment of the child's start (opening the log, replaying
        // it, stocking); the others while the orders flow.
        let delay = Duration::from_millis((r >> 8) % 60);
        if r.is_multiple_of(4) {
            std::thread::sleep(delay);
        } else {
            if ready.recv_timeout(Duration::from_secs(20)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kill {kill}: the child never got ready: {}", errors.join().unwrap());
            }
            std::thread::sleep(delay);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "kill {kill}: the child exited by itself ({status}): {}",
                errors.join().unwrap()
            );
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "kill {kill}: the child died of the SIGKILL");
        let printed = reader.join().unwrap();
        errors.join().unwrap();
        totals.acks += printed.acks.iter().filter(|a| !a.replayed).count();
        totals.rejected += printed.rejected.len();
        book.learn(kill, printed);
        let checked = verify(dir.path(), &book, kill, &mut seed);
        totals.records = checked.records;
        totals.max_hot_reserved = totals.max_hot_reserved.max(checked.max_hot_reserved);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "engine kill test: {kills} kills, {} commands acknowledged and {} rejected by the \
         children, {} records in the log, at most {} hot units held at once, {elapsed:?}",
        totals.acks, totals.rejected, totals.records, totals.max_hot_reserved
    );
    assert!(totals.acks > 0, "the children acknowledged something");
}

#[derive(Debug, Default)]
struct Totals {
    acks: usize,
    rejected: usize,
    records: usize,
    max_hot_reserved: u64,
}

/// Everything every child acknowledged so far: each later reopen checks all of it again.
#[derive(Debug, Default)]
struct Book {
    /// By key; a receipt's key is acknowledged by every child that got that far.
    acks: HashMap<String, Ack>,
    rejected: Vec<String>,
}

impl Book {
    fn learn(&mut self, kill: u64, printed: Printed) {
        for ack in printed.acks {
            assert!(!ack.positions.is_empty(), "kill {kill}: {} recorded events", ack.key);
            match self.acks.get(&ack.key) {
                Some(before) => {
                    assert!(ack.replayed, "kill {kill}: {} was decided twice", ack.key);
                    assert_eq!(
                        ack.positions, before.positions,
                        "kill {kill}: the replay of {} answers the first positions",
                        ack.key
                    );
                }
                None => {
                    // A first answer in this child may still be a replay: the previous child
                    // committed the receipt but was killed before printing it.
                    self.acks.insert(ack.key.clone(), ack);
                }
            }
        }
        self.rejected.extend(printed.rejected);
    }
}

/// What one reopen found.
struct Checked {
    records: usize,
    max_hot_reserved: u64,
}

/// One SKU's stock as the log tells it.
#[derive(Debug, Default)]
struct Stock {
    receipts: usize,
    on_hand: u64,
    reserved: u64,
    max_reserved: u64,
    /// Open holds by order: units and when the hold may expire.
    holds: HashMap<OrderId, (u64, Timestamp)>,
}

/// Reopens the engine on `dir` and checks it against the log and against everything the
/// children acknowledged; shuts it down again.
fn verify(dir: &Path, book: &Book, kill: u64, seed: &mut u64) -> Checked {
    // A clock standing still before any record: until it is set below, admission times stay
    // at the log's last one, so the reopened engine expires only the holds due by then.
    let clock = ManualClock::at(Timestamp(0));
    let config = Config { log: log_config(), clock: Arc::new(clock.clone()), ..Config::default() };
    let engine = Engine::open(dir, config)
        .unwrap_or_else(|e| panic!("kill {kill}: the engine reopens: {e}"));
    let acme = tenant(TENANT);

    // The whole log, decoded. The reopened engine may already append expiries at its end.
    let mut log = Vec::new();
    let mut recorded_at = Vec::new();
    let mut last_recorded = Timestamp(0);
    for record in engine.log().read_from(Position(0)) {
        let record = record.unwrap_or_else(|e| panic!("kill {kill}: the log reads: {e}"));
        assert_eq!(record.position.0, log.len() as u64);
        let decoded = codec::decode(
            &record.stream,
            record.event_type,
            record.schema_version,
            &record.payload,
        )
        .unwrap_or_else(|e| panic!("kill {kill}: record {} decodes: {e}", record.position.0));
        last_recorded = last_recorded.max(Timestamp(record.timestamp));
        recorded_at.push(Timestamp(record.timestamp));
        log.push(decoded);
    }
    // Then half a hold's time later, so that the rebuilt timers expire some of the open holds
    // (those due by then) and not the others; the clock stands still there.
    let frozen_at = Timestamp(last_recorded.0 + CHILD_HOLD_TTL_MS / 2);
    clock.set(frozen_at);

    // Decisions are whole, keys unique, and the stock never oversold at any point of the log.
    let mut keys: HashMap<String, u64> = HashMap::new();
    let mut stock: HashMap<Sku, Stock> = HashMap::new();
    let mut placed: HashSet<OrderId> = HashSet::new();
    for (p, decoded) in log.iter().enumerate() {
        let p = p as u64;
        let Decoded::Decision { tenant, key, events } = decoded else {
            panic!("kill {kill}: record {p} is a decision record: {decoded:?}");
        };
        assert_eq!(tenant, &acme);
        if let Some((key, _)) = key {
            let previous = keys.insert(key.to_string(), p);
            assert!(previous.is_none(), "kill {kill}: key {key} accepted twice");
        }
        for (n, event) in events.iter().enumerate() {
            match event {
                Event::Inventory { sku, event } => {
                    let s = stock.entry(sku.clone()).or_default();
                    match event {
                        InventoryEvent::StockReceived { quantity } => {
                            s.receipts += 1;
                            s.on_hand += quantity.get();
                        }
                        InventoryEvent::StockHeld { order, quantity, expires_at } => {
                            let before =
                                s.holds.insert(order.clone(), (quantity.get(), *expires_at));
                            assert!(before.is_none(), "kill {kill}: {order} held {sku} twice");
                            s.reserved += quantity.get();
                            s.max_reserved = s.max_reserved.max(s.reserved);
                        }
                        InventoryEvent::StockCommitted { order, quantity }
                        | InventoryEvent::StockReleased { order, quantity }
                        | InventoryEvent::HoldExpired { order, quantity } => {
                            let hold = s.holds.remove(order);
                            assert_eq!(
                                hold.map(|h| h.0),
                                Some(quantity.get()),
                                "kill {kill}: at {p} {order} gives back what it held of {sku}"
                            );
                            if let InventoryEvent::HoldExpired { .. } = event {
                                let expires_at = hold.unwrap().1;
                                assert!(
                                    expires_at <= recorded_at[index(p)],
                                    "kill {kill}: at {p} the hold of {order} expired early"
                                );
                            }
                            s.reserved -= quantity.get();
                            if let InventoryEvent::StockCommitted { .. } = event {
                                s.on_hand -= quantity.get();
                            }
                        }
                        InventoryEvent::StockAdjusted { .. } => {
                            panic!("kill {kill}: nobody adjusts")
                        }
                    }
                    assert!(
                        s.reserved <= s.on_hand,
                        "kill {kill}: at {p} {sku} is oversold: {} reserved of {} on hand",
                        s.reserved,
                        s.on_hand
                    );
                }
                Event::Order {
                    order,
                    event: OrderEvent::OrderPlaced { lines, hold_expires_at, .. },
                } => {
                    assert!(placed.insert(order.clone()), "kill {kill}: {order} placed twice");
                    assert_eq!(n, 0, "kill {kill}: {order} at {p} opens its decision");
                    assert!(key.is_some(), "kill {kill}: {order} at {p} was placed with its key");
                    let expected = lines_of(order.as_str());
                    assert_eq!(lines.len(), expected.len());
                    assert_eq!(
                        events.len(),
                        lines.len() + 1,
                        "kill {kill}: {order} at {p}: one hold per line in the same record"
                    );
                    for (n, line) in lines.iter().enumerate() {
                        assert_eq!((line.sku.as_str(), line.quantity.get()), expected[n]);
                        let held = &events[1 + n];
                        let Event::Inventory {
                            sku,
                            event: InventoryEvent::StockHeld { order: o, quantity, expires_at },
                        } = held
                        else {
                            panic!(
                                "kill {kill}: line {n} of {order} at {p} is held next: {held:?}"
                            );
                        };
                        assert_eq!(
                            (sku, o, *quantity, expires_at),
                            (&line.sku, order, line.quantity, hold_expires_at)
                        );
                    }
                }
                Event::Order { .. } => {}
                Event::Payment { .. } => panic!("kill {kill}: nobody pays"),
            }
        }
    }
    for (sku, units) in STOCK {
        let s = stock.get(&Sku::new(sku).unwrap());
        let receipts = s.map_or(0, |s| s.receipts);
        assert!(receipts <= 1, "kill {kill}: {sku} was stocked {receipts} times");
        if let Some(s) = s.filter(|s| s.receipts == 1) {
            assert_eq!(s.on_hand, units);
        }
    }

    // (1) Every acknowledged command is where it was answered: one record, with its key.
    for ack in book.acks.values() {
        let first = ack.positions[0];
        let one_record = ack.positions.iter().all(|p| *p == first);
        assert!(one_record, "kill {kill}: {} answered one record's position", ack.key);
        assert_eq!(
            keys.get(&ack.key),
            Some(&first),
            "kill {kill}: acknowledged key {} is recorded with its events at {first}",
            ack.key
        );
        match log.get(index(first)).map(Decoded::events).and_then(|events| events.first()) {
            Some(Event::Order { order, event }) => {
                assert!(matches!(event, OrderEvent::OrderPlaced { .. }));
                assert_eq!(
                    order.as_str(),
                    ack.subject,
                    "kill {kill}: {} placed its order",
                    ack.key
                );
                // The order's events were checked against its lines above.
                assert_eq!(ack.positions.len(), lines_of(&ack.subject).len() + 1);
            }
            Some(Event::Inventory { sku, event: InventoryEvent::StockReceived { .. } }) => {
                assert_eq!(sku.as_str(), ack.subject);
                assert_eq!(ack.positions.len(), 1);
            }
            other => {
                panic!("kill {kill}: acknowledged {} at {first} is missing: {other:?}", ack.key)
            }
        }
    }
    // A rejection recorded nothing: neither its key nor its order.
    for k in &book.rejected {
        assert!(!keys.contains_key(k), "kill {kill}: rejected key {k} was recorded");
        let order = OrderId::new(&k.replacen("k-", "o-", 1)).unwrap();
        assert!(!placed.contains(&order), "kill {kill}: rejected order {order} was recorded");
    }

    // (2) Retrying acknowledged commands with their keys replays the same events; a different
    // command with one of them is refused.
    let mut sample: Vec<&Ack> =
        book.acks.values().filter(|a| a.subject.starts_with("o-")).collect();
    sample.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut retried = Vec::new();
    for _ in 0..REPLAYS_PER_KILL.min(sample.len()) {
        let n = usize::try_from(xorshift(seed) % sample.len() as u64).unwrap();
        retried.push(sample.swap_remove(n));
    }
    retried.extend(book.acks.values().filter(|a| !a.subject.starts_with("o-")));
    for ack in &retried {
        let envelope = if ack.subject.starts_with("o-") {
            place(TENANT, &ack.subject, &lines_of(&ack.subject))
        } else {
            let units = STOCK.iter().find(|(s, _)| *s == ack.subject).unwrap().1;
            receive(TENANT, &ack.subject, units)
        };
        let outcome = engine
            .execute_blocking(envelope.with_key(key(&ack.key)))
            .unwrap_or_else(|e| panic!("kill {kill}: retry of {}: {e}", ack.key));
        assert!(outcome.replayed, "kill {kill}: key {} is recognized", ack.key);
        assert_eq!(positions(&outcome), ack.positions, "kill {kill}: {} replays", ack.key);
        let replayed: Vec<&Event> = outcome.events.iter().map(|e| &e.event).collect();
        let logged: Vec<&Event> = log
            .get(index(first_position(&outcome)))
            .map_or(Vec::new(), |d| d.events().iter().collect());
        assert_eq!(replayed, logged, "kill {kill}: {} replays the events of its record", ack.key);
    }
    if let Some(ack) = retried.iter().find(|a| a.subject.starts_with("o-")) {
        let other =
            place(TENANT, &ack.subject, &[("cold", 7), ("warm", 7)]).with_key(key(&ack.key));
        assert!(
            matches!(
                engine.execute_blocking(other),
                Err(ExecuteError::IdempotencyKeyReused { .. })
            ),
            "kill {kill}: key {} names its first command only",
            ack.key
        );
    }

    // (3) The reopened engine's stock is the log's, once the holds due by `frozen_at` have
    // expired (every turn of the decision thread expires the due holds before deciding).
    for (sku, _) in STOCK {
        let Some(s) = stock.get(&Sku::new(sku).unwrap()).filter(|s| s.receipts == 1) else {
            continue;
        };
        let still_held: u64 =
            s.holds.values().filter(|(_, at)| *at > frozen_at).map(|(units, _)| units).sum();
        assert_eq!(
            available(&engine, TENANT, sku),
            s.on_hand - still_held,
            "kill {kill}: the reopened engine's {sku} matches the log"
        );
    }

    engine.shutdown();
    drop(engine);
    let hot = stock.get(&Sku::new("hot").unwrap());
    Checked { records: log.len(), max_hot_reserved: hot.map_or(0, |s| s.max_reserved) }
}

fn first_position(outcome: &orderly_core::engine::Outcome) -> u64 {
    outcome.events.first().map_or(u64::MAX, |e| e.position.0)
}
