//! The audit commands on real logs in temporary folders: verify, digest, replay at a position
//! and at a time (for all tenants or one), trace and reconcile on a log the engine wrote, and
//! findings on logs forged with valid checksums. `corruption.rs` damages real logs in every
//! way the issue names; `live.rs` audits a log a running engine holds.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orderly_core::audit::{self, AuditError, ReplayPoint};
use orderly_core::codec;
use orderly_core::domain::{
    CancelReason, Command, Currency, Envelope, Event, GatewayId, InventoryEvent, Money,
    OrderCommand, OrderId, PaymentCommand, PaymentEvent, PaymentId, Quantity, Sku, Timestamp,
};
use orderly_core::engine::{Config, Engine, ManualClock};
use orderly_store::{Expected, Log, LogConfig, NewRecord};

mod corruption;
mod live;

// The engine tests' envelopes and start time: the audit reads logs of the same commands.
use crate::engine::{START, place, receive, tenant};

fn order(o: &str) -> OrderId {
    OrderId::new(o).unwrap()
}

fn eur(minor: u64) -> Money {
    Money::new(minor, Currency::new("EUR").unwrap())
}

fn config(clock: &ManualClock, segment_size: u64) -> Config {
    Config {
        log: LogConfig { segment_size, ..LogConfig::default() },
        clock: Arc::new(clock.clone()),
        ..Config::default()
    }
}

fn on_order(t: &str, o: &str, command: OrderCommand) -> Envelope {
    Envelope::new(tenant(t), Command::Order { order: order(o), command })
}

fn authorize(t: &str, o: &str, payment: &str, amount: u64) -> Envelope {
    let command = PaymentCommand::Authorize {
        reference: None,
        order: order(o),
        amount: eur(amount),
        gateway: GatewayId::new("g-1").unwrap(),
    };
    Envelope::new(
        tenant(t),
        Command::Payment { payment: PaymentId::new(payment).unwrap(), command },
    )
}

/// Heads and times at the steps of [`story`] that tests replay to.
struct Story {
    /// The head right after acme's o-1 was placed, and the time then.
    placed_o1: (u64, u64),
    /// The head once every command is recorded.
    head: u64,
}

/// Two tenants, one order shipped and partly refunded, one cancelled, one waiting for payment,
/// and the same order id in both tenants; the clock moves a second per command.
fn story(dir: &Path, segment_size: u64) -> Story {
    let clock = ManualClock::at(START);
    let engine = Engine::open(dir, config(&clock, segment_size)).unwrap();
    let run = |envelope: Envelope| {
        engine.execute_blocking(envelope).unwrap();
        clock.advance(1_000);
    };
    run(receive("acme", "sku-1", 10));
    run(receive("acme", "sku-2", 5));
    run(receive("globex", "sku-1", 4));
    run(place("acme", "o-1", &[("sku-1", 3), ("sku-2", 1)]));
    let placed_o1 = (engine.head().0, START.0 + 3_000);
    run(authorize("acme", "o-1", "p-1", 4_000));
    run(on_order("acme", "o-1", OrderCommand::Ship));
    run(on_order("acme", "o-1", OrderCommand::Refund { amount: eur(1_000) }));
    run(place("acme", "o-2", &[("sku-1", 2)]));
    run(on_order("acme", "o-2", OrderCommand::Cancel { reason: CancelReason::Requested }));
    run(place("globex", "o-1", &[("sku-1", 1)]));
    run(place("acme", "o-3", &[("sku-2", 1)]));
    let head = engine.head().0;
    engine.shutdown();
    Story { placed_o1, head }
}

fn no_progress() -> impl FnMut(audit::Progress) {
    audit::no_progress
}

/// Every record of the log in `dir`: (segment, offset, length, position).
fn records(dir: &Path) -> Vec<(PathBuf, u64, u64, u64)> {
    let mut all = Vec::new();
    orderly_store::scan(
        dir,
        |_| {},
        |r| {
            all.push((r.segment.to_path_buf(), r.offset, r.len, r.position.0));
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    all
}

/// Writes `events` of `tenant` to a new log in `dir` directly through the store, one batch
/// each: a log with valid checksums and chain that the engine might never have written.
pub(crate) fn forge(dir: &Path, events: &[(&str, Event)]) {
    let (log, _) = Log::open(dir, LogConfig::default()).unwrap();
    for (i, (t, event)) in events.iter().enumerate() {
        let at = Timestamp(START.0 + i as u64);
        log.append(vec![codec::encode_event(&tenant(t), event).into_record(at)]).unwrap();
    }
}

fn stock(sku: &str, event: InventoryEvent) -> Event {
    Event::Inventory { sku: Sku::new(sku).unwrap(), event }
}

fn payment(id: &str, event: PaymentEvent) -> Event {
    Event::Payment { payment: PaymentId::new(id).unwrap(), event }
}

#[test]
fn an_intact_log_verifies_and_its_digest_is_the_head_and_last_hash() {
    let dir = tempfile::tempdir().unwrap();
    let story = story(dir.path(), 64 << 10);
    let mut reports = 0;
    let report = audit::verify(dir.path(), None, &mut |p| {
        reports += 1;
        assert!(p.bytes_done <= p.bytes_total, "progress never passes the total");
    })
    .unwrap();
    assert!(reports >= 1, "progress is reported");
    assert_eq!(report.records, story.head);
    assert_eq!(report.digest.head, story.head);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.first_timestamp, Some(START.0));
    let digest = audit::digest(dir.path(), &mut no_progress()).unwrap();
    assert_eq!(digest, report.digest);
    assert_eq!(digest.to_string().parse::<audit::Digest>().unwrap(), digest);
    assert!("12:abc".parse::<audit::Digest>().is_err());
    // Only digits and hex digits: Rust's integer parsing would also take a `+` before each.
    let text = digest.to_string();
    let (head, hash) = text.split_once(':').unwrap();
    for malformed in [
        format!("+{head}:{hash}"),
        format!("{head}:+{}", &hash[1..]),
        format!("{head}:{}", hash.replacen(&hash[..2], &format!("+{}", &hash[1..2]), 1)),
    ] {
        assert!(malformed.parse::<audit::Digest>().is_err(), "{malformed}");
    }

    // The log extends its own digest and every earlier one taken on the way.
    let checked = audit::verify(dir.path(), Some(digest), &mut no_progress()).unwrap();
    assert_eq!(checked.extends, Some(digest));
    let earlier = audit::replay(dir.path(), ReplayPoint::Position(5), None, &mut no_progress())
        .unwrap()
        .digest;
    assert!(earlier.head <= 5);
    audit::verify(dir.path(), Some(earlier), &mut no_progress()).unwrap();
    // A digest past the head is not extended.
    let beyond = audit::Digest { head: story.head + 1, hash: digest.hash };
    let err = audit::verify(dir.path(), Some(beyond), &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "digest_mismatch");
}

#[test]
fn replay_at_the_head_gives_stock_and_order_counts_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let story = story(dir.path(), 1 << 20);
    let state = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress()).unwrap();
    assert_eq!(state.digest.head, story.head);
    let acme = &state.tenants[0];
    assert_eq!(acme.tenant, "acme");
    let levels: Vec<_> =
        acme.skus.iter().map(|s| (s.sku.as_str(), s.on_hand, s.reserved, s.available)).collect();
    assert_eq!(levels, [("sku-1", 7, 0, 7), ("sku-2", 4, 1, 3)]);
    let o = &acme.orders;
    assert_eq!((o.placed, o.confirmed, o.shipped, o.cancelled), (1, 0, 1, 1));
    let globex = &state.tenants[1];
    assert_eq!((globex.skus[0].on_hand, globex.skus[0].reserved), (4, 1));
    assert_eq!(globex.orders.placed, 1);

    let only =
        audit::replay(dir.path(), ReplayPoint::Head, Some(&tenant("globex")), &mut no_progress())
            .unwrap();
    assert_eq!(only.tenants, std::slice::from_ref(globex));
}

/// A turn of the engine is one batch of many commands, a decision record each: replay at a
/// command's `position` holds that command and none after it, inside a batch too, with the
/// log's digest there.
#[test]
fn replay_at_a_command_s_position_inside_a_batch_holds_it_and_none_after() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(&ManualClock::at(START), 1 << 20)).unwrap();
    engine.execute_blocking(receive("acme", "sku-1", 1)).unwrap();
    // Sent at once, so that the decision thread takes many in one turn.
    let (answers, answered) = crossbeam_channel::unbounded();
    for _ in 0..200 {
        let answers = answers.clone();
        engine.send_ack(receive("acme", "sku-1", 1), move |ack| {
            answers.send(ack.unwrap().next_position().0).unwrap();
        });
    }
    drop(answers);
    engine.shutdown();
    let mut positions: Vec<u64> = answered.iter().collect();
    positions.sort_unstable();
    let mut inside_a_batch = 0;
    orderly_store::scan(
        dir.path(),
        |_| {},
        |record| {
            inside_a_batch += u64::from(!record.ends_batch);
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert!(inside_a_batch > 0, "some batch holds more than one command");
    for (received, &position) in (2..).zip(&positions) {
        let point = ReplayPoint::Position(position);
        let state = audit::replay(dir.path(), point, None, &mut no_progress()).unwrap();
        assert_eq!(state.digest.head, position);
        assert_eq!(state.tenants[0].skus[0].on_hand, received, "at {position}");
        let verified = audit::verify(dir.path(), Some(state.digest), &mut no_progress());
        assert!(verified.is_ok(), "the log extends the digest at {position}: {verified:?}");
    }
}

#[test]
fn replay_at_a_position_or_a_time_shows_the_state_then() {
    let dir = tempfile::tempdir().unwrap();
    let story = story(dir.path(), 1 << 20);
    let (head, time) = story.placed_o1;
    for point in [ReplayPoint::Position(head), ReplayPoint::Time(time)] {
        let state =
            audit::replay(dir.path(), point, Some(&tenant("acme")), &mut no_progress()).unwrap();
        assert_eq!(state.digest.head, head, "{point:?}");
        assert_eq!(state.last_timestamp, Some(time), "{point:?}");
        let acme = &state.tenants[0];
        let sku1 = &acme.skus[0];
        assert_eq!((sku1.on_hand, sku1.reserved, sku1.available), (10, 3, 7), "{point:?}");
        assert_eq!(acme.orders.placed, 1, "{point:?}");
    }
    // At the order's decision record (its placement and its holds), replay stops before it.
    let inside =
        audit::replay(dir.path(), ReplayPoint::Position(head - 1), None, &mut no_progress())
            .unwrap();
    assert_eq!(inside.digest.head, head - 1, "the order and its two holds are one record");
    let before =
        audit::replay(dir.path(), ReplayPoint::Time(START.0 - 1), None, &mut no_progress())
            .unwrap();
    assert_eq!((before.digest.head, before.tenants.len()), (0, 0));
    // The whole log is records 0..head; one past it is not a point of this log.
    let whole = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress()).unwrap();
    let at_head = ReplayPoint::Position(whole.digest.head);
    assert_eq!(audit::replay(dir.path(), at_head, None, &mut no_progress()).unwrap(), whole);
    let past = ReplayPoint::Position(whole.digest.head + 1);
    match audit::replay(dir.path(), past, None, &mut no_progress()) {
        Err(AuditError::BeyondHead { asked, head }) => {
            assert_eq!((asked, head), (whole.digest.head + 1, whole.digest.head));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn trace_follows_an_order_its_payment_and_its_holds_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    story(dir.path(), 1 << 20);
    let trace =
        audit::trace(dir.path(), Some(&tenant("acme")), &order("o-1"), &mut no_progress()).unwrap();
    let mut kinds: Vec<&str> = trace.entries.iter().map(|e| e.event_type).collect();
    let positions: Vec<u64> = trace.entries.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "in log order: {positions:?}");
    assert!(trace.entries.iter().all(|e| e.tenant == "acme"));
    assert!(trace.entries.iter().all(|e| e.timestamp >= START.0));
    kinds.sort_unstable();
    let mut expected = vec![
        "order_placed",
        "stock_held",
        "stock_held",
        "payment_authorized",
        "order_confirmed",
        "order_shipped",
        "stock_committed",
        "stock_committed",
        "payment_captured",
        "order_refunded",
        "payment_refunded",
    ];
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    assert!(trace.entries.iter().any(|e| e.stream == "acme/p/p-1"));
    assert!(trace.entries.iter().any(|e| e.stream == "acme/i/sku-2"));

    let everywhere = audit::trace(dir.path(), None, &order("o-1"), &mut no_progress()).unwrap();
    let globex: Vec<_> = everywhere.entries.iter().filter(|e| e.tenant == "globex").collect();
    assert_eq!(globex.len(), 2, "globex's o-1: placed and held");
    let none = audit::trace(dir.path(), None, &order("o-404"), &mut no_progress()).unwrap();
    assert!(none.entries.is_empty());
}

#[test]
fn reconcile_balances_an_engine_written_log() {
    let dir = tempfile::tempdir().unwrap();
    let story = story(dir.path(), 1 << 20);
    let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
    assert_eq!(books.discrepancies, [], "an engine-written log balances");
    assert_eq!(books.digest.head, story.head);
    let eur = &books.money[0];
    assert_eq!(eur.currency, "EUR");
    assert_eq!((eur.authorized, eur.captured, eur.refunded, eur.voided), (4_000, 4_000, 1_000, 0));
    let sku1 = &books.stock[0];
    assert_eq!((sku1.tenant.as_str(), sku1.sku.as_str()), ("acme", "sku-1"));
    assert_eq!((sku1.received, sku1.shipped, sku1.released, sku1.on_hand), (10, 3, 2, 7));
    let sku2 = &books.stock[1];
    assert_eq!((sku2.reserved, sku2.open_holds), (1, 1));
}

#[test]
fn reconcile_names_each_broken_rule_of_a_forged_log() {
    let dir = tempfile::tempdir().unwrap();
    let q = |n| Quantity::new(n).unwrap();
    forge(
        dir.path(),
        &[
            ("acme", stock("sku-1", InventoryEvent::StockReceived { quantity: q(5) })),
            // Ships two units that were never held.
            (
                "acme",
                stock(
                    "sku-1",
                    InventoryEvent::StockCommitted { order: order("o-9"), quantity: q(2) },
                ),
            ),
            (
                "beta",
                payment(
                    "p-1",
                    PaymentEvent::PaymentAuthorized {
                        reference: None,
                        order: order("o-1"),
                        amount: eur(100),
                        gateway: GatewayId::new("g").unwrap(),
                    },
                ),
            ),
            // Captures more than was authorized, then refunds more than that.
            ("beta", payment("p-1", PaymentEvent::PaymentCaptured { amount: 150 })),
            ("beta", payment("p-1", PaymentEvent::PaymentRefunded { amount: 200 })),
        ],
    );
    let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
    let found: Vec<(&str, Option<u64>)> =
        books.discrepancies.iter().map(|d| (d.code, d.position)).collect();
    assert!(found.contains(&("hold_not_open", Some(1))), "{found:?}");
    assert!(found.contains(&("domain_rejects_event", Some(1))), "{found:?}");
    let rejected = books.discrepancies.iter().find(|d| d.code == "domain_rejects_event");
    let rejected = rejected.expect("found above");
    assert_eq!(rejected.subject, "sku-1", "named by its aggregate");
    assert!(!rejected.detail.contains('\n'), "one line: {}", rejected.detail);
    assert!(found.contains(&("capture_exceeds_authorized", Some(3))), "{found:?}");
    assert!(found.contains(&("refund_exceeds_captured", Some(4))), "{found:?}");
    assert!(found.contains(&("order_refunds_exceed_captures", Some(4))), "{found:?}");

    // Replay uses the domain, which cannot apply a commit with nothing held: reported, not a
    // panic.
    let err = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress()).unwrap_err();
    assert!(matches!(err, AuditError::Inconsistent { .. }), "{err}");
    assert_eq!(err.location().unwrap().position, Some(1));
    // The bytes themselves are intact.
    audit::verify(dir.path(), None, &mut no_progress()).unwrap();
}

/// A capture smaller than its authorization (a rewritten ship record) leaves the rest neither
/// captured nor voided: the engine never records one (a ship captures the order's total).
#[test]
fn a_capture_short_of_its_authorization_is_a_discrepancy() {
    let dir = tempfile::tempdir().unwrap();
    let authorized = PaymentEvent::PaymentAuthorized {
        reference: None,
        order: order("o-1"),
        amount: eur(4_500),
        gateway: GatewayId::new("g").unwrap(),
    };
    forge(
        dir.path(),
        &[
            ("acme", payment("p-1", authorized)),
            ("acme", payment("p-1", PaymentEvent::PaymentCaptured { amount: 4_400 })),
        ],
    );
    let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
    let short = books.discrepancies.iter().find(|d| d.code == "capture_short_of_authorized");
    let short = short.unwrap_or_else(|| panic!("not found in {:?}", books.discrepancies));
    assert_eq!((short.position, short.subject.as_str()), (Some(1), "p-1"));
    assert!(short.detail.contains("captured 4400 of 4500"), "{}", short.detail);
}

/// Reconcile books each hold under its order and SKU: one order holding two SKUs closes each
/// apart; a hold opened twice, and a close of another quantity than held, are named where
/// they happen, and the ledger's reserved units and open holds follow the events.
#[test]
fn reconcile_books_each_hold_by_order_and_sku() {
    let dir = tempfile::tempdir().unwrap();
    let q = |n| Quantity::new(n).unwrap();
    let held = |o: &str, n| InventoryEvent::StockHeld {
        order: order(o),
        quantity: q(n),
        expires_at: Timestamp(START.0 + 900_000),
    };
    forge(
        dir.path(),
        &[
            ("acme", stock("sku-1", InventoryEvent::StockReceived { quantity: q(9) })),
            ("acme", stock("sku-2", InventoryEvent::StockReceived { quantity: q(9) })),
            ("acme", stock("sku-1", held("o-1", 3))),
            ("acme", stock("sku-2", held("o-1", 1))),
            // Opened again: the second quantity stands.
            ("acme", stock("sku-1", held("o-1", 2))),
            // Closed with more than held.
            (
                "acme",
                stock(
                    "sku-1",
                    InventoryEvent::StockCommitted { order: order("o-1"), quantity: q(5) },
                ),
            ),
        ],
    );
    let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
    let found: Vec<(&str, &str, Option<u64>)> =
        books.discrepancies.iter().map(|d| (d.code, d.subject.as_str(), d.position)).collect();
    assert!(found.contains(&("hold_opened_twice", "sku-1", Some(4))), "{found:?}");
    assert!(found.contains(&("hold_quantity_mismatch", "sku-1", Some(5))), "{found:?}");
    assert!(!found.iter().any(|(code, ..)| *code == "hold_not_open"), "{found:?}");
    let ledger = |sku: &str| books.stock.iter().find(|l| l.sku == sku).unwrap();
    assert_eq!((ledger("sku-1").reserved, ledger("sku-1").open_holds), (0, 0));
    assert_eq!(ledger("sku-1").shipped, 5);
    assert_eq!((ledger("sku-2").reserved, ledger("sku-2").open_holds), (1, 1));
}

/// A SKU keeps the sum and count of its holds, not which order holds what (the order does).
/// So a forged close by an order that holds nothing passes replay when other holds cover its
/// units, and fails it when the counts show it; reconcile, which books each order's holds from
/// the events, names it either way.
#[test]
fn a_close_by_an_order_that_holds_nothing_is_named_by_reconcile_even_when_other_holds_cover_it() {
    let q = |n| Quantity::new(n).unwrap();
    let held = |o: &str, n| InventoryEvent::StockHeld {
        order: order(o),
        quantity: q(n),
        expires_at: Timestamp(START.0 + 900_000),
    };
    let forged_commit = InventoryEvent::StockCommitted { order: order("o-9"), quantity: q(2) };
    for (holds, replay_accepts) in
        [(vec![held("o-1", 3), held("o-2", 2)], true), (vec![held("o-1", 3)], false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut events =
            vec![("acme", stock("sku-1", InventoryEvent::StockReceived { quantity: q(9) }))];
        events.extend(holds.into_iter().map(|h| ("acme", stock("sku-1", h))));
        let forged_at = events.len() as u64;
        events.push(("acme", stock("sku-1", forged_commit.clone())));
        forge(dir.path(), &events);
        let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
        let found: Vec<(&str, Option<u64>)> =
            books.discrepancies.iter().map(|d| (d.code, d.position)).collect();
        assert!(found.contains(&("hold_not_open", Some(forged_at))), "{found:?}");
        let replayed = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress());
        match replayed {
            Ok(_) => assert!(replay_accepts, "the counts show a close with nothing held"),
            Err(err) => {
                assert!(!replay_accepts, "other holds cover the units: {err}");
                assert!(matches!(err, AuditError::Inconsistent { .. }), "{err}");
                assert_eq!(err.location().unwrap().position, Some(forged_at));
            }
        }
    }
}

#[test]
fn check_finds_in_one_pass_what_verify_reconcile_and_replay_find() {
    let dir = tempfile::tempdir().unwrap();
    story(dir.path(), 1 << 20);
    let checked = audit::check(dir.path(), &mut no_progress()).unwrap();
    assert_eq!(checked.verify, audit::verify(dir.path(), None, &mut no_progress()).unwrap());
    assert_eq!(checked.reconciliation, audit::reconcile(dir.path(), &mut no_progress()).unwrap());
    let replayed = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress()).unwrap();
    assert_eq!(checked.state, replayed);
    assert_eq!(checked.state.tenants.len(), 2);
}

#[test]
fn a_record_of_several_events_is_booked_then_applied_to_the_domain() {
    let dir = tempfile::tempdir().unwrap();
    let q = |n| Quantity::new(n).unwrap();
    forge(
        dir.path(),
        &[("acme", stock("sku-1", InventoryEvent::StockReceived { quantity: q(5) }))],
    );
    // One decision record: a commit without a hold (which the domain cannot apply), then a
    // capture of a payment never authorized.
    let events = [
        stock("sku-1", InventoryEvent::StockCommitted { order: order("o-9"), quantity: q(2) }),
        payment("p-1", PaymentEvent::PaymentCaptured { amount: 150 }),
    ];
    let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
    let record = codec::encode_decision(&tenant("acme"), None, &events).into_record(START);
    log.append(vec![record]).unwrap();
    drop(log);

    let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
    let found: Vec<(&str, Option<u64>)> =
        books.discrepancies.iter().map(|d| (d.code, d.position)).collect();
    assert_eq!(
        found[..3],
        [
            ("hold_not_open", Some(1)),
            ("payment_not_authorized", Some(1)),
            ("domain_rejects_event", Some(1)),
        ],
        "{found:?}"
    );
    let checked = audit::check(dir.path(), &mut no_progress()).unwrap();
    assert_eq!(checked.reconciliation, books);
    assert_eq!(checked.state.tenants, []);
}

#[test]
fn check_leaves_out_the_state_of_a_tenant_the_domain_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let q = |n| Quantity::new(n).unwrap();
    forge(
        dir.path(),
        &[
            ("acme", stock("sku-1", InventoryEvent::StockReceived { quantity: q(5) })),
            ("beta", stock("sku-1", InventoryEvent::StockReceived { quantity: q(3) })),
            // A commit without a hold: the domain cannot apply it.
            (
                "acme",
                stock(
                    "sku-1",
                    InventoryEvent::StockCommitted { order: order("o-9"), quantity: q(2) },
                ),
            ),
        ],
    );
    let checked = audit::check(dir.path(), &mut no_progress()).unwrap();
    let rejected: Vec<&str> = checked
        .reconciliation
        .discrepancies
        .iter()
        .filter(|d| d.code == "domain_rejects_event")
        .map(|d| d.tenant.as_str())
        .collect();
    assert_eq!(rejected, ["acme"]);
    let tenants: Vec<&str> = checked.state.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(tenants, ["beta"]);
    assert_eq!(checked.state.tenants[0].skus[0].on_hand, 3);
    assert_eq!(checked.verify.records, 3);
}

#[test]
fn a_record_that_does_not_decode_is_named_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    forge(
        dir.path(),
        &[(
            "acme",
            stock("sku-1", InventoryEvent::StockReceived { quantity: Quantity::new(1).unwrap() }),
        )],
    );
    let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
    let record = |event_type, payload: &[u8]| NewRecord {
        stream: b"acme/i/sku-1".to_vec(),
        expected: Expected::Any,
        event_type,
        schema_version: 1,
        timestamp: START.0,
        payload: payload.to_vec(),
    };
    log.append(vec![record(999, b"")]).unwrap();
    drop(log);
    let err = audit::verify(dir.path(), None, &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "undecodable");
    let at = err.location().unwrap();
    assert_eq!((at.position, at.offset), (Some(1), records(dir.path())[1].1));

    let garbage = tempfile::tempdir().unwrap();
    forge(garbage.path(), &[]);
    let (log, _) = Log::open(garbage.path(), LogConfig::default()).unwrap();
    log.append(vec![record(1, b"\xff\xff\xff")]).unwrap();
    drop(log);
    let err = audit::verify(garbage.path(), None, &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "undecodable", "{err}");
}

/// Admission times that go back, which the engine never writes, are a discrepancy: `replay
/// --at` would stop at the first record admitted after its time.
#[test]
fn reconcile_flags_an_admission_time_that_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
    let received = |units| {
        stock("sku-1", InventoryEvent::StockReceived { quantity: Quantity::new(units).unwrap() })
    };
    for (units, at) in [(1, 1_000), (2, 3_000), (3, 2_000)] {
        let record = codec::encode_event(&tenant("acme"), &received(units));
        log.append(vec![record.into_record(Timestamp(START.0 + at))]).unwrap();
    }
    drop(log);
    let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
    let codes: Vec<(&str, Option<u64>)> =
        books.discrepancies.iter().map(|d| (d.code, d.position)).collect();
    assert_eq!(codes, [("time_goes_back", Some(2))], "{:?}", books.discrepancies);
}

/// A hold may expire at its time or later, never before (the engine's never do).
#[test]
fn reconcile_flags_a_hold_expired_before_its_time() {
    let order = OrderId::new("o-1").unwrap();
    let one = Quantity::new(1).unwrap();
    for (expired_at, early) in [(59_999, true), (60_000, false)] {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        let held = InventoryEvent::StockHeld {
            order: order.clone(),
            quantity: one,
            expires_at: Timestamp(START.0 + 60_000),
        };
        let expired = InventoryEvent::HoldExpired { order: order.clone(), quantity: one };
        let received = InventoryEvent::StockReceived { quantity: Quantity::new(5).unwrap() };
        for (event, at) in [(received, 0), (held, 1), (expired, expired_at)] {
            let record = codec::encode_event(&tenant("acme"), &stock("sku-1", event));
            log.append(vec![record.into_record(Timestamp(START.0 + at))]).unwrap();
        }
        drop(log);
        let books = audit::reconcile(dir.path(), &mut no_progress()).unwrap();
        let flagged = books.discrepancies.iter().any(|d| d.code == "hold_expired_early");
        assert_eq!(flagged, early, "expired at +{expired_at} ms: {:?}", books.discrepancies);
    }
}
