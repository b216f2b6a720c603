//! The engine end to end on a real log in a temporary folder: commands are answered only once
//! durable, with positions; retries with an idempotency key return the first outcome, also
//! after a restart; concurrent callers never oversell (here, and as a property in
//! `oversell.rs`); holds expire on time, also after a restart; tenants never see each other's
//! data. `kill.rs` SIGKILLs a child engine; `payments.rs` runs the payments process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orderly_core::domain::{
    CancelReason, Command, Currency, CustomerId, Envelope, Event, IdempotencyKey, InventoryEvent,
    OrderCommand, OrderEvent, OrderId, OrderLine, Quantity, Sku, TenantId, Timestamp,
};
use orderly_core::engine::{
    Ack, Config, Engine, EngineError, ExecuteError, ManualClock, OpenEngineError, Outcome, Pipe,
    PipedAck, SNAPSHOT_FILE,
};
use orderly_core::{Position, domain::Rejection};
use orderly_store::LogConfig;

mod kill;
mod oversell;
mod payments;
mod snapshot;

pub(crate) const START: Timestamp = Timestamp(1_764_115_200_000);
const TTL: u64 = 60_000;

pub(crate) fn tenant(t: &str) -> TenantId {
    TenantId::new(t).unwrap()
}

fn config(clock: &ManualClock) -> Config {
    Config {
        hold_ttl_ms: TTL,
        log: LogConfig { segment_size: 1 << 20, ..LogConfig::default() },
        clock: Arc::new(clock.clone()),
        ..Config::default()
    }
}

pub(crate) fn receive(t: &str, sku: &str, units: u64) -> Envelope {
    let command = Command::ReceiveStock {
        sku: Sku::new(sku).unwrap(),
        quantity: Quantity::new(units).unwrap(),
    };
    Envelope::new(tenant(t), command)
}

pub(crate) fn place(t: &str, order: &str, lines: &[(&str, u64)]) -> Envelope {
    let lines = lines
        .iter()
        .map(|(sku, units)| OrderLine {
            sku: Sku::new(sku).unwrap(),
            quantity: Quantity::new(*units).unwrap(),
            unit_price: 1_000,
        })
        .collect();
    let command = OrderCommand::Place {
        customer: CustomerId::new("c-1").unwrap(),
        currency: Currency::new("EUR").unwrap(),
        lines,
    };
    Envelope::new(tenant(t), Command::Order { order: OrderId::new(order).unwrap(), command })
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

/// The stock of `sku` as (on hand, reserved), read through a probe order that asks for more
/// than any test stocks: the rejection names what is available.
fn available(engine: &Engine, t: &str, sku: &str) -> u64 {
    match engine.execute_blocking(place(t, "probe", &[(sku, 999_999)])) {
        Err(ExecuteError::Rejected(Rejection::Order { rejection, .. })) => match rejection {
            orderly_core::domain::OrderRejection::InsufficientStock { shortages } => {
                shortages[0].available
            }
            other => panic!("probe rejected with {other}"),
        },
        other => panic!("probe must be rejected, got {other:?}"),
    }
}

fn positions(outcome: &Outcome) -> Vec<u64> {
    outcome.events.iter().map(|e| e.position.0).collect()
}

#[test]
fn a_command_is_answered_with_its_durable_events_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    let received = engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    assert_eq!(positions(&received), [0]);
    assert_eq!(received.events[0].recorded_at, START);
    let placed = engine.execute_blocking(place("acme", "o-1", &[("sku-1", 3)])).unwrap();
    assert_eq!(positions(&placed), [1, 1], "the order and its hold, in one decision record");
    assert!(matches!(
        placed.events[0].event,
        Event::Order { event: OrderEvent::OrderPlaced { .. }, .. }
    ));
    assert!(matches!(
        placed.events[1].event,
        Event::Inventory { event: InventoryEvent::StockHeld { .. }, .. }
    ));
    assert!(engine.head() >= Position(2), "acknowledged means durable in the log");
    assert_eq!(available(&engine, "acme", "sku-1"), 7);

    let mut events = engine.subscribe(Position(0));
    let seen: Vec<u64> = (0..3)
        .map(|_| events.next_timeout(Duration::from_secs(5)).unwrap().unwrap().position.0)
        .collect();
    assert_eq!(seen, [0, 1, 1], "the subscription hands out a record's events one by one");
}

#[test]
fn a_rejection_records_nothing_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 2)).unwrap();
    let err =
        engine.execute_blocking(place("acme", "o-1", &[("sku-1", 3), ("nope", 1)])).unwrap_err();
    assert_eq!(err.code(), "unknown_sku");
    let err = engine.execute_blocking(place("acme", "o-1", &[("sku-1", 3)])).unwrap_err();
    assert_eq!(err.code(), "insufficient_stock");
    assert_eq!(engine.head(), Position(1));
    // Nor is its key kept: the same key decides again, here once the stock is there.
    let keyed = || place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1"));
    assert_eq!(engine.execute_blocking(keyed()).unwrap_err().code(), "insufficient_stock");
    engine.execute_blocking(receive("acme", "sku-1", 1)).unwrap();
    let placed = engine.execute_blocking(keyed()).unwrap();
    assert!(!placed.replayed, "decided, not replayed");
    assert_eq!(positions(&placed), [2, 2]);
}

#[test]
fn a_retried_key_returns_the_first_outcome_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let first = {
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
        let first = engine
            .execute_blocking(place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1")))
            .unwrap();
        assert!(!first.replayed);
        let again = engine
            .execute_blocking(place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1")))
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.events, first.events, "same events at the same positions");
        let other =
            engine.execute_blocking(place("acme", "o-2", &[("sku-1", 1)]).with_key(key("k-1")));
        assert_eq!(other.unwrap_err().code(), "idempotency_key_reused");
        engine.shutdown();
        first
    };
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    let after = engine
        .execute_blocking(place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1")))
        .unwrap();
    assert!(after.replayed, "keys are rebuilt from the log");
    assert_eq!(after.events, first.events);
    assert_eq!(available(&engine, "acme", "sku-1"), 7, "the retry held nothing more");
    // The same key in another tenant is another key.
    engine.execute_blocking(receive("globex", "sku-1", 5)).unwrap();
    let theirs = engine
        .execute_blocking(place("globex", "o-1", &[("sku-1", 1)]).with_key(key("k-1")))
        .unwrap();
    assert!(!theirs.replayed);
}

/// Records of schema versions 1 and 2 hold fingerprints made by blake3 (version 3's are
/// xxh3's): a retry of a command recorded then (in a key record of schema 1, or in a decision
/// of schema 2, a place under a fresh order id among them) is still answered with its first
/// outcome, after an open that replays the log and after one that restores a snapshot, and
/// another command under its key is still refused.
#[test]
fn a_key_recorded_with_a_blake3_fingerprint_still_knows_its_command() {
    use orderly_core::codec::{self, FingerprintHash};
    let blake3 = |envelope: &Envelope| codec::fingerprint_by(FingerprintHash::Blake3, envelope);
    let (s1, o1, expires) = (Sku::new("s1").unwrap(), OrderId::new("o-1").unwrap(), START.0 + TTL);
    let received = Event::Inventory {
        sku: s1.clone(),
        event: InventoryEvent::StockReceived { quantity: Quantity::new(5).unwrap() },
    };
    let placed = vec![
        Event::Order {
            order: o1.clone(),
            event: OrderEvent::OrderPlaced {
                customer: CustomerId::new("c-1").unwrap(),
                currency: Currency::new("EUR").unwrap(),
                lines: vec![OrderLine {
                    sku: s1.clone(),
                    quantity: Quantity::new(2).unwrap(),
                    unit_price: 1_000,
                }],
                total: 2_000,
                hold_expires_at: Timestamp(expires),
            },
        },
        Event::Inventory {
            sku: s1,
            event: InventoryEvent::StockHeld {
                order: o1,
                quantity: Quantity::new(2).unwrap(),
                expires_at: Timestamp(expires),
            },
        },
    ];
    let receipt = receive("acme", "s1", 5).with_key(key("k-1"));
    let placement = place("acme", "o-1", &[("s1", 2)]).with_fresh_order_id().with_key(key("k-2"));
    // Key k-1 as the first engines recorded it: a key record, then its event, at schema 1.
    let mut accepted =
        codec::encode_command_accepted(&tenant("acme"), &key("k-1"), blake3(&receipt), 1);
    let mut event = codec::encode_event(&tenant("acme"), &received);
    (accepted.schema_version, event.schema_version) = (1, 1);
    // Key k-2 in a decision, as the release before schema 3 wrote it.
    let fresh = (&key("k-2"), blake3(&placement));
    let decision = codec::encode_decision(&tenant("acme"), Some(fresh), &placed);
    assert_eq!(decision.schema_version, 2, "as an orderly before schema 3 wrote it");
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = orderly_store::Log::open(dir.path(), LogConfig::default()).unwrap();
    for record in [accepted, event, decision] {
        log.append(vec![record.into_record(START)]).unwrap();
    }
    drop(log);
    let clock = ManualClock::at(START);
    for open in ["replaying the log", "restoring the snapshot"] {
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        assert_eq!(engine.restored_from().is_some(), open == "restoring the snapshot");
        let again = engine.execute_blocking(receipt.clone()).unwrap();
        assert!(again.replayed, "{open}: the receipt is the command recorded");
        assert_eq!(positions(&again), [1], "{open}");
        // A retry of a place under a fresh order id gets another id, and the first order.
        let retry = place("acme", "o-2", &[("s1", 2)]).with_fresh_order_id().with_key(key("k-2"));
        let again = engine.execute_blocking(retry).unwrap();
        assert!(again.replayed, "{open}: the placement is the command recorded");
        assert_eq!(positions(&again), [2, 2], "{open}");
        for (other, under) in [
            (receive("acme", "s1", 4), "k-1"),
            (place("acme", "o-1", &[("s1", 3)]).with_fresh_order_id(), "k-2"),
        ] {
            let refused = engine.execute_blocking(other.with_key(key(under)));
            assert_eq!(refused.unwrap_err().code(), "idempotency_key_reused", "{open}: {under}");
        }
        assert_eq!(available(&engine, "acme", "s1"), 3, "{open}: the retries held nothing more");
        engine.shutdown();
    }
}

#[test]
fn concurrent_callers_never_oversell() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "hot", 100)).unwrap();
    engine.execute_blocking(receive("acme", "cold", 1_000)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                (0..50)
                    .filter(|i| {
                        let order = format!("o-{t}-{i}");
                        let result = engine.execute_blocking(place(
                            "acme",
                            &order,
                            &[("cold", 1), ("hot", 1)],
                        ));
                        match result {
                            Ok(_) => true,
                            Err(e) if e.code() == "insufficient_stock" => false,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    })
                    .count()
            })
        })
        .collect();
    let placed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(placed, 100, "exactly the hot SKU's stock was sold, to 400 attempts");
    assert_eq!(available(&engine, "acme", "hot"), 0);
    assert_eq!(available(&engine, "acme", "cold"), 900, "rejected orders held nothing");
}

#[test]
fn tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 1)])).unwrap();
    let err = engine.execute_blocking(place("globex", "o-2", &[("sku-1", 1)])).unwrap_err();
    assert_eq!(err.code(), "unknown_sku", "acme's SKU does not exist for globex");
    let ship = Envelope::new(
        tenant("globex"),
        Command::Order { order: OrderId::new("o-1").unwrap(), command: OrderCommand::Ship },
    );
    assert_eq!(engine.execute_blocking(ship).unwrap_err().code(), "unknown_order");
}

/// Waits until `check` holds, polling; the engine expires holds on its own thread.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not happen within 4 s");
}

fn order_cancelled_by_expiry(engine: &Engine, from: Position) -> bool {
    let mut events = engine.subscribe(from);
    while let Some(event) = events.next_timeout(Duration::from_millis(10)) {
        if let Event::Order {
            event: OrderEvent::OrderCancelled { reason: CancelReason::HoldExpired },
            ..
        } = event.unwrap().event
        {
            return true;
        }
    }
    false
}

#[test]
fn an_unpaid_order_expires_and_releases_its_stock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 4)])).unwrap();
    clock.advance(TTL - 1);
    std::thread::sleep(Duration::from_millis(250));
    assert!(!order_cancelled_by_expiry(&engine, Position(0)), "not before the hold runs out");
    clock.advance(1);
    eventually("expiry", || order_cancelled_by_expiry(&engine, Position(0)));
    assert_eq!(available(&engine, "acme", "sku-1"), 10);
}

/// Timers come back from the snapshot a clean shutdown leaves, and from the log alone.
#[test]
fn expiry_timers_survive_a_restart() {
    for from_snapshot in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START);
        {
            let engine = Engine::open(dir.path(), config(&clock)).unwrap();
            engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
            engine.execute_blocking(place("acme", "o-1", &[("sku-1", 4)])).unwrap();
            engine.execute_blocking(place("acme", "o-2", &[("sku-1", 1)])).unwrap();
            clock.advance(TTL / 2);
            engine.execute_blocking(place("acme", "o-3", &[("sku-1", 2)])).unwrap();
            engine.shutdown();
        }
        if !from_snapshot {
            std::fs::remove_file(dir.path().join(SNAPSHOT_FILE)).unwrap();
        }
        clock.advance(TTL / 2 + 1_000);
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        assert_eq!(engine.restored_from().is_some(), from_snapshot);
        eventually("expiry after restart", || order_cancelled_by_expiry(&engine, Position(0)));
        eventually("o-1 and o-2 released", || available(&engine, "acme", "sku-1") == 8);
        clock.advance(TTL / 2);
        eventually("o-3 released", || available(&engine, "acme", "sku-1") == 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_is_async_and_answers_many_callers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute(receive("acme", "sku-1", 1_000)).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine.execute(place("acme", &format!("o-{i}"), &[("sku-1", 2)])).await
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        let record = positions(&outcome);
        assert_eq!(record.len(), 2, "the order and its hold");
        assert!(record.iter().all(|p| *p == record[0]), "one decision record");
        all.push(record[0]);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 200, "every command got its own record");
}

#[test]
fn a_rejection_is_answered_only_once_what_it_rests_on_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    for race in 0..100 {
        let sku = format!("last-{race}");
        engine.execute_blocking(receive("acme", &sku, 1)).unwrap();
        let racers: Vec<_> = (0..2)
            .map(|r| {
                let (engine, sku) = (engine.clone(), sku.clone());
                std::thread::spawn(move || {
                    let result = engine.execute_blocking(place(
                        "acme",
                        &format!("o-{race}-{r}"),
                        &[(&sku, 1)],
                    ));
                    (result, engine.head())
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winner = results.iter().find_map(|(r, _)| r.as_ref().ok()).expect("one racer wins");
        let (_, head_at_rejection) = results.iter().find(|(r, _)| r.is_err()).expect("one loses");
        assert!(
            *head_at_rejection >= winner.next_position(),
            "race {race}: the loser heard 'insufficient stock' before the winner's hold was durable"
        );
    }
}

/// The placement with key k-1 that the `send` tests send twice.
fn keyed_place() -> Envelope {
    place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1"))
}

/// Opens an engine holding 10 units of sku-1 and sends it, through `send` (`Engine::send` or
/// a kin of it), a keyed placement, the same again, and a placement beyond the stock; returns
/// the engine and the three answers in that order.
fn send_keyed_retry_and_refusal<T: Send + 'static>(
    dir: &std::path::Path,
    clock: &ManualClock,
    send: impl Fn(&Engine, Envelope, Box<dyn FnOnce(Result<T, ExecuteError>) + Send>),
) -> (Engine, Vec<Result<T, ExecuteError>>) {
    let engine = Engine::open(dir, config(clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let (answers, answered) = crossbeam_channel::unbounded();
    let commands = [keyed_place(), keyed_place(), place("acme", "o-2", &[("sku-1", 99)])];
    for (n, envelope) in commands.into_iter().enumerate() {
        let answers = answers.clone();
        send(&engine, envelope, Box::new(move |answer| answers.send((n, answer)).unwrap()));
    }
    let mut got: Vec<(usize, Result<T, ExecuteError>)> =
        (0..3).map(|_| answered.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
    got.sort_by_key(|(n, _)| *n);
    (engine, got.into_iter().map(|(_, answer)| answer).collect())
}

/// What `send` (`Engine::send` or a kin of it) answers on an engine already shut down, which
/// must be before it returns.
fn answer_after_shutdown<T: Send + 'static>(
    engine: &Engine,
    send: impl Fn(&Engine, Envelope, Box<dyn FnOnce(Result<T, ExecuteError>) + Send>),
) -> Result<T, ExecuteError> {
    let (answers, answered) = crossbeam_channel::bounded(1);
    send(
        engine,
        receive("acme", "sku-1", 1),
        Box::new(move |answer| answers.send(answer).unwrap()),
    );
    answered.try_recv().expect("answered before it returned")
}

/// `send` answers what `execute` would, through a callback: accepted with the durable events,
/// replayed for a key seen before (read back off the decision thread), refused with the
/// domain's code; and once the engine is shut down, answered so before `send` returns.
#[test]
fn send_answers_through_a_callback_what_execute_would() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let (engine, got): (_, Vec<Result<Outcome, _>>) =
        send_keyed_retry_and_refusal(dir.path(), &clock, |engine, envelope, on_answer| {
            engine.send(envelope, on_answer);
        });
    let first = got[0].as_ref().unwrap();
    assert!(!first.replayed);
    assert_eq!(positions(first), [1, 1], "the order and its hold");
    let again = got[1].as_ref().unwrap();
    assert!(again.replayed, "the key was seen");
    assert_eq!(again.events, first.events, "the first outcome, read back from the log");
    assert_eq!(got[2].as_ref().unwrap_err().code(), "insufficient_stock");
    assert!(engine.head() >= Position(2), "answered means durable");

    engine.shutdown();
    let refused = answer_after_shutdown(&engine, |engine, envelope, on_answer| {
        engine.send(envelope, on_answer);
    });
    assert!(matches!(refused, Err(ExecuteError::Engine(EngineError::ShuttingDown))));
}

/// `send_ack` answers what `send` would, without the events: the position of the decision
/// record, the same position again for a key seen before (once that record is durable), the
/// domain's refusal, and after shutdown a refusal before it returns. Closing with acks in
/// flight answers each once.
#[test]
fn send_ack_answers_where_the_events_are_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let (engine, got): (_, Vec<Result<Ack, _>>) =
        send_keyed_retry_and_refusal(dir.path(), &clock, |engine, envelope, on_ack| {
            engine.send_ack(envelope, on_ack);
        });
    let first = got[0].as_ref().unwrap();
    assert_eq!(*first, Ack { first: Position(1), records: 1, replayed: false });
    assert_eq!(first.next_position(), Position(2));
    let again = got[1].as_ref().unwrap();
    assert_eq!(*again, Ack { replayed: true, ..*first }, "where the first execution is");
    assert_eq!(got[2].as_ref().unwrap_err().code(), "insufficient_stock");
    assert!(engine.head() >= first.next_position(), "acknowledged means durable");
    // The same command through `execute` agrees on where its events are.
    let outcome = engine.execute_blocking(keyed_place()).unwrap();
    assert!(outcome.replayed && outcome.next_position() == first.next_position());

    let (answers, answered) = crossbeam_channel::unbounded();
    for _ in 0..500 {
        let answers = answers.clone();
        engine.send_ack(receive("acme", "sku-1", 1), move |ack| answers.send(ack).unwrap());
    }
    engine.shutdown();
    let closing: Vec<_> =
        (0..500).map(|_| answered.recv_timeout(Duration::from_secs(10))).collect();
    assert!(closing.iter().all(Result::is_ok), "each in-flight ack answered");
    let refused = answer_after_shutdown(&engine, |engine, envelope, on_ack| {
        engine.send_ack(envelope, on_ack);
    });
    assert!(matches!(refused, Err(ExecuteError::Engine(EngineError::ShuttingDown))));
}

/// Every answer waiting in `pipe` until `count` have come, by tag: each tag answered once.
fn recv_all(pipe: &Pipe, count: usize) -> BTreeMap<u64, PipedAck> {
    let mut got = BTreeMap::new();
    while got.len() < count {
        let answered = pipe.recv(Duration::from_secs(10));
        assert!(!answered.is_empty(), "{} of {count} answered", got.len());
        for ack in answered {
            let tag = ack.tag;
            assert!(got.insert(tag, ack).is_none(), "tag {tag} answered twice");
        }
    }
    got
}

/// A pipe answers what `send_ack` would, each answer with its command's tag: the position of
/// the decision record, the same again for a key seen before, the domain's refusal. Closing
/// with commands in flight answers each once; after shutdown, a command is refused before
/// `send` returns.
#[test]
fn a_pipe_answers_what_send_ack_would_under_each_command_s_tag() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    let pipe = engine.pipe();
    assert!(pipe.recv(Duration::from_millis(10)).is_empty(), "nothing sent, nothing to take");
    let commands = [keyed_place(), keyed_place(), place("acme", "o-2", &[("sku-1", 99)])];
    for (tag, envelope) in (70..).zip(commands) {
        pipe.send(envelope, tag);
    }
    let got = recv_all(&pipe, 3);
    let first = got[&70].answer.as_ref().unwrap();
    assert_eq!(*first, Ack { first: Position(1), records: 1, replayed: false });
    let again = got[&71].answer.as_ref().unwrap();
    assert_eq!(*again, Ack { replayed: true, ..*first }, "where the first execution is");
    assert_eq!(got[&72].answer.as_ref().unwrap_err().code(), "insufficient_stock");
    assert!(engine.head() >= first.next_position(), "acknowledged means durable");

    for tag in 0..500 {
        pipe.send(receive("acme", "sku-1", 1), 1_000 + tag);
    }
    engine.shutdown();
    let closing = recv_all(&pipe, 500);
    assert_eq!(closing.keys().copied().collect::<Vec<_>>(), (1_000..1_500).collect::<Vec<_>>());
    assert!(closing.values().all(|ack| ack.answer.is_ok()), "admitted before the shutdown");
    pipe.send(receive("acme", "sku-1", 1), 7);
    let refused = pipe.recv(Duration::ZERO);
    assert_eq!(refused.len(), 1, "answered before `send` returned");
    assert_eq!(refused[0].tag, 7);
    assert!(matches!(refused[0].answer, Err(ExecuteError::Engine(EngineError::ShuttingDown))));
}

/// When the log fails, every command in flight through a pipe is answered once, with why:
/// none is left waiting, none is acknowledged.
#[test]
fn a_failed_log_answers_every_piped_command_that_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let faults = orderly_store::faults::Faults::new();
    let mut config = config(&clock);
    config.log.faults = Some(orderly_store::FaultsHandle(faults.clone()));
    let engine = Engine::open(dir.path(), config).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 1)).unwrap();
    faults.fail_sync_after(0);
    let pipe = engine.pipe();
    for tag in 0..300 {
        pipe.send(receive("acme", "sku-1", 1), tag);
    }
    let got = recv_all(&pipe, 300);
    for (tag, ack) in &got {
        let stopped = matches!(ack.answer, Err(ExecuteError::Engine(EngineError::Stopped { .. })));
        assert!(stopped, "tag {tag}: {:?}", ack.answer);
    }
    assert_eq!(engine.head(), Position(1), "nothing after the failed sync is durable");
}

/// A `send` callback runs on the engine's own threads: one that panics loses its own answer,
/// and the engine goes on answering everyone else.
#[test]
fn a_panicking_send_callback_does_not_stop_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    engine.send(receive("acme", "sku-1", 10), |_| panic!("a caller's bug"));
    let (answers, answered) = crossbeam_channel::bounded(1);
    engine.send(receive("acme", "sku-1", 5), move |outcome| answers.send(outcome).unwrap());
    let later = answered.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(positions(&later), [1], "the panicking command was recorded before it");
    let placed = engine.execute_blocking(place("acme", "o-1", &[("sku-1", 15)])).unwrap();
    assert_eq!(positions(&placed), [2, 2], "both receipts count: 15 units held");
    engine.shutdown();
}

/// A program that sends commands and closes the engine without waiting for their answers:
/// every command is still answered once, closing ends cleanly, and the folder opens again at
/// once with every acknowledged command in it.
#[test]
fn closing_with_sends_in_flight_answers_them_all_and_frees_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    for round in 0..3u64 {
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        let before = engine.head().0;
        let (answers, answered) = crossbeam_channel::unbounded();
        for _ in 0..2_000 {
            let answers = answers.clone();
            engine.send(receive("acme", "sku-1", 1), move |outcome| {
                answers.send(outcome.is_ok()).unwrap();
            });
        }
        drop(answers);
        engine.shutdown();
        drop(engine);
        // Ends once every callback has run and been dropped.
        let all: Vec<bool> = answered.iter().collect();
        assert_eq!(all.len(), 2_000, "round {round}: each command answered once");
        let oks = all.iter().filter(|ok| **ok).count() as u64;
        let reopened = Engine::open(dir.path(), config(&clock)).unwrap();
        assert_eq!(reopened.head().0 - before, oks, "round {round}: every acknowledged one");
        reopened.shutdown();
    }
}

/// `shutdown` returns once every admitted command's callback has run: a program that then
/// reads its answers (or exits) misses none of the commands made durable.
#[test]
fn shutdown_returns_once_every_callback_has_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..5_000 {
        let answered = answered.clone();
        engine.send_ack(receive("acme", "sku-1", 1), move |ack| {
            assert!(ack.is_ok());
            // A callback that takes a moment, as one handing the answer on would.
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_micros(20) {}
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    engine.shutdown();
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 5_000);
}

/// An open whose clock is behind the log's last admission time says so, with the gap: every
/// admission is stamped with that time until the clock catches up, and holds expire late.
#[test]
fn an_open_on_a_clock_behind_the_log_warns_by_how_much() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 1)).unwrap();
    engine.shutdown();
    drop(engine);
    let warnings = |clock: ManualClock| {
        let logged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let logged = logged.clone();
            move || Logged(logged.clone())
        };
        let subscriber = tracing_subscriber::fmt().with_writer(writer).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            Engine::open(dir.path(), config(&clock)).unwrap().shutdown();
        });
        let text = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
        text.lines().filter(|l| l.contains("WARN")).map(str::to_owned).collect::<Vec<_>>()
    };
    let behind = warnings(ManualClock::at(Timestamp(START.0 - 7_200_000)));
    assert_eq!(behind.len(), 1, "{behind:?}");
    assert!(behind[0].contains("clock is behind") && behind[0].contains("behind_ms=7200000"));
    assert!(warnings(ManualClock::at(START)).is_empty(), "a clock in step says nothing");
}

/// Collects what a test's subscriber writes.
struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_restart_replays_records_beyond_many_batches_and_stops_at_one_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    // More records than the replay hands over in one batch (1,024), so that several cross.
    let receipts = 1_500_u64;
    {
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        for n in 0..receipts {
            engine.execute_blocking(receive("acme", &format!("sku-{}", n % 7), 1)).unwrap();
        }
        engine.shutdown();
    }
    {
        std::fs::remove_file(dir.path().join(SNAPSHOT_FILE)).unwrap();
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        assert_eq!(engine.restored_from(), None, "the whole log replayed");
        let stocked: u64 = (0..7).map(|n| available(&engine, "acme", &format!("sku-{n}"))).sum();
        assert_eq!(stocked, receipts, "every receipt replayed");
        engine.shutdown();
    }
    {
        // A record no release of orderly wrote: an event type it does not know.
        let (log, _) = orderly_store::Log::open(dir.path(), LogConfig::default()).unwrap();
        let bad = log.head().0;
        let record = orderly_store::NewRecord {
            stream: b"acme/i/sku-0".to_vec(),
            expected: orderly_store::Expected::Any,
            event_type: 65_000,
            schema_version: 1,
            timestamp: START.0,
            payload: vec![1, 2, 3],
        };
        log.append(vec![record]).unwrap();
        drop(log);
        match Engine::open(dir.path(), config(&clock)) {
            Err(OpenEngineError::Decode { position, .. }) => assert_eq!(position, bad),
            Err(other) => panic!("expected a decode error at {bad}, got {other}"),
            Ok(_) => panic!("expected a decode error at {bad}, the engine opened"),
        }
    }
}

/// A log whose checksums hold but whose events break the domain's rules (rewritten, or
/// written by a bug) is refused at open, naming the record: no panic, no engine deciding on a
/// state that is not the log's.
#[test]
fn a_forged_log_that_breaks_the_domain_s_rules_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let sku = Sku::new("sku-1").unwrap();
    let received = InventoryEvent::StockReceived { quantity: Quantity::new(5).unwrap() };
    // Commits two units no order ever held.
    let committed = InventoryEvent::StockCommitted {
        order: OrderId::new("o-9").unwrap(),
        quantity: Quantity::new(2).unwrap(),
    };
    crate::audit::forge(
        dir.path(),
        &[
            ("acme", Event::Inventory { sku: sku.clone(), event: received }),
            ("acme", Event::Inventory { sku, event: committed }),
        ],
    );
    match Engine::open(dir.path(), config(&ManualClock::at(START))) {
        Err(error @ OpenEngineError::Inconsistent { position: 1, .. }) => {
            assert!(error.to_string().contains("position 1"), "{error}");
        }
        Err(other) => panic!("expected the record at 1 to be refused, got {other}"),
        Ok(_) => panic!("expected the record at 1 to be refused, the engine opened"),
    }
}

/// A state that breaks what the domain assumes of it, which the open's checks let through (here
/// an order placed without its holds), makes deciding a command on it panic: that command is
/// refused, naming what was found, and the engine goes on with every other command (it stopped
/// for every tenant, on every start).
#[test]
fn a_command_on_an_inconsistent_state_is_refused_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (sku, order) = (Sku::new("s1").unwrap(), OrderId::new("o1").unwrap());
    let received = InventoryEvent::StockReceived { quantity: Quantity::new(5).unwrap() };
    crate::audit::forge(
        dir.path(),
        &[
            ("acme", Event::Inventory { sku: sku.clone(), event: received }),
            ("acme", Event::Order { order: order.clone(), event: placed_for_100(&sku) }),
        ],
    );
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START))).unwrap();
    let key = IdempotencyKey::new("k-1").unwrap();
    let cancel = OrderCommand::Cancel { reason: CancelReason::Requested };
    let cancel = Envelope::new(tenant("acme"), Command::Order { order, command: cancel });
    match engine.execute_blocking(cancel.with_key(key.clone())) {
        Err(error @ ExecuteError::Engine(EngineError::Inconsistent { .. })) => {
            assert_eq!(error.code(), "state_inconsistent");
            assert!(error.to_string().contains("out of step"), "{error}");
        }
        other => panic!("expected the cancel to be refused as inconsistent, got {other:?}"),
    }
    // The key was given back, the tenant and every other go on.
    engine.execute_blocking(receive("acme", "s2", 3).with_key(key)).expect("acme goes on");
    engine.execute_blocking(receive("globex", "s1", 3)).expect("globex goes on");
    engine.shutdown();
}

/// An `OrderPlaced` of one unit of `sku` at 100 EUR.
fn placed_for_100(sku: &Sku) -> OrderEvent {
    let line = OrderLine { sku: sku.clone(), quantity: Quantity::new(1).unwrap(), unit_price: 100 };
    OrderEvent::OrderPlaced {
        customer: CustomerId::new("c-1").unwrap(),
        currency: Currency::new("EUR").unwrap(),
        lines: vec![line],
        total: 100,
        hold_expires_at: Timestamp(START.0 + 3_600_000),
    }
}

/// Links between aggregates that only the engine's decisions keep, broken by a forged log, are
/// refused at open, naming the record: an order whose total is not what its lines cost, an
/// authorization of an order never placed (which
/// stopped every tenant's read models), a confirmation by a payment that never authorized it
/// (which panicked the order's shipment).
#[test]
fn a_log_that_breaks_a_link_between_aggregates_is_refused_at_open() {
    let (sku, order) = (Sku::new("s1").unwrap(), OrderId::new("o1").unwrap());
    let payment = orderly_core::domain::PaymentId::new("p1").unwrap();
    let eur = |minor| orderly_core::domain::Money::new(minor, Currency::new("EUR").unwrap());
    let authorized = |order: &str, amount| Event::Payment {
        payment: payment.clone(),
        event: orderly_core::domain::PaymentEvent::PaymentAuthorized {
            reference: None,
            order: OrderId::new(order).unwrap(),
            amount,
            gateway: orderly_core::domain::GatewayId::new("pay-a").unwrap(),
        },
    };
    let placed = Event::Order { order: order.clone(), event: placed_for_100(&sku) };
    let confirmed = |by: &str| Event::Order {
        order: order.clone(),
        event: OrderEvent::OrderConfirmed {
            payment: orderly_core::domain::PaymentId::new(by).unwrap(),
        },
    };
    let mut cheap = placed_for_100(&sku);
    if let OrderEvent::OrderPlaced { total, .. } = &mut cheap {
        *total = 1;
    }
    let cheap = Event::Order { order: order.clone(), event: cheap };
    let cases = [
        ("a total that is not the lines'", vec![cheap], 0, "not what its lines cost"),
        ("an order never placed", vec![authorized("nope", eur(100))], 0, "which was not placed"),
        (
            "another total",
            vec![placed.clone(), authorized("o1", eur(99))],
            1,
            "which was not placed for",
        ),
        (
            "a payment never authorized",
            vec![placed, confirmed("p-none")],
            1,
            "did not authorize it",
        ),
    ];
    for (case, events, position, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<_> = events.into_iter().map(|e| ("acme", e)).collect();
        crate::audit::forge(dir.path(), &events);
        match Engine::open(dir.path(), config(&ManualClock::at(START))) {
            Err(OpenEngineError::Inconsistent { position: at, invariant }) => {
                assert_eq!(at, position, "{case}: {invariant}");
                assert!(invariant.contains(says), "{case}: {invariant}");
            }
            Err(other) => panic!("{case}: expected the log to be refused, got {other}"),
            Ok(_) => panic!("{case}: expected the log to be refused, the engine opened"),
        }
        let books =
            orderly_core::audit::reconcile(dir.path(), &mut orderly_core::audit::no_progress)
                .expect("reconcile runs");
        assert!(
            books
                .discrepancies
                .iter()
                .any(|d| d.code == "domain_rejects_event" && d.detail.contains(says)),
            "{case}: {:?}",
            books.discrepancies
        );
    }
}

/// A log of the format before decision records: a key record names how many event records
/// follow it, which a retry of its key is answered with. Records that are not there, or are
/// another tenant's, are refused at open (a retry was answered with another tenant's event).
#[test]
fn a_key_record_whose_events_do_not_follow_it_is_refused_at_open() {
    use orderly_core::codec;
    let received = |units| Event::Inventory {
        sku: Sku::new("secret").unwrap(),
        event: InventoryEvent::StockReceived { quantity: Quantity::new(units).unwrap() },
    };
    let command = receive("acme", "s1", 3).command;
    let fingerprint = codec::fingerprint(&command);
    let key = IdempotencyKey::new("k-1").unwrap();
    let accepted =
        |events| codec::encode_command_accepted(&tenant("acme"), &key, fingerprint, events);
    let cases = [
        (
            "another tenant's event",
            vec![accepted(1), codec::encode_event(&tenant("globex"), &received(7))],
            0,
        ),
        (
            "fewer events than named",
            vec![accepted(3), codec::encode_event(&tenant("acme"), &received(7))],
            2,
        ),
    ];
    for (case, records, position) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = orderly_store::Log::open(dir.path(), LogConfig::default()).unwrap();
        for record in records {
            log.append(vec![record.into_record(START)]).unwrap();
        }
        drop(log);
        match Engine::open(dir.path(), config(&ManualClock::at(START))) {
            Err(OpenEngineError::Inconsistent { position: at, invariant }) => {
                assert!(at == position + 1 || at == position, "{case}: at {at}: {invariant}");
                assert!(invariant.contains("key record of tenant acme"), "{case}: {invariant}");
            }
            Err(other) => panic!("{case}: expected the log to be refused, got {other}"),
            Ok(_) => panic!("{case}: expected the log to be refused, the engine opened"),
        }
    }
}

/// The default clock steadies the wall clock: a moment's jump a day ahead (a virtual machine
/// restored or migrated) expires no hold, and once the clock is set right admission times go
/// on from there (they stood still for the day the jump was).
#[test]
fn a_moment_s_jump_of_the_wall_clock_expires_no_hold_and_freezes_no_time() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::at(START);
    let steady = orderly_core::engine::SteadyClock::new(wall.clone());
    let config = Config { clock: Arc::new(steady), ..config(&wall) };
    let engine = Engine::open(dir.path(), config).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 4)])).unwrap();
    wall.set(Timestamp(START.0 + 86_400_000));
    std::thread::sleep(Duration::from_millis(300));
    wall.set(Timestamp(START.0 + 1_000));
    assert!(!order_cancelled_by_expiry(&engine, Position(0)), "o-1 expired on the jump");
    let o2 = engine.execute_blocking(place("acme", "o-2", &[("sku-1", 1)])).unwrap();
    assert_eq!(o2.events[0].recorded_at, Timestamp(START.0 + 1_000), "stamped by the wall clock");
    engine.shutdown();
}

/// A path that names no folder is refused with what is wrong with it, and leaves no file
/// behind (an empty path joined with the lock's name would name one in the working folder).
#[test]
fn an_open_on_a_path_that_is_no_folder_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let error = Engine::open(&file, Config::default()).map(drop).unwrap_err().to_string();
    assert!(error.contains("a-file") && error.contains("Not a directory"), "{error}");
    let error = Engine::open(std::path::Path::new(""), Config::default()).map(drop).unwrap_err();
    assert!(error.to_string().contains("the path is empty"), "{error}");
    let log = orderly_store::Log::open(std::path::Path::new(""), LogConfig::default());
    assert!(log.map(drop).unwrap_err().to_string().contains("the path is empty"));
    assert!(!std::path::Path::new("LOCK").exists(), "no lock in the working folder");
}
