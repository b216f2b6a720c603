//! The audit commands of the real binary on a data folder a server wrote: `audit verify` (also
//! `--json` and `--digest`), `audit digest`, a digest that still verifies after more orders,
//! a bit flipped in a closed segment named by file, byte offset and position, `replay` at a
//! position and at a time, `audit trace`, `audit reconcile`, `audit verify` beside a running
//! server, `rebuild` (refused beside a running server; otherwise read models equal to the ones
//! replaced), and bad input answered with a message and an exit status, never a panic.

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use orderly_core::domain::{Currency, Event, GatewayId, InventoryEvent, PaymentEvent};
use orderly_core::engine::CommittedEvent;
use orderly_core::payments::{
    Fee, Route, Router, RouterConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use serde_json::{Value, json};

use orderly_server::app::ServerConfig;

use super::support::{self, BINARY, Server};

/// What a run of the binary did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit status `code` and returns stdout.
    #[track_caller]
    fn exits(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts exit status `code` and returns stdout as JSON.
    #[track_caller]
    fn json(&self, code: i32) -> Value {
        let out = self.exits(code);
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `orderly` with `args`; it never panics.
fn orderly<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let output = Command::new(BINARY)
        .args(args)
        .env_remove("ORDERLY_DATA")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8"),
    };
    assert!(!run.stderr.contains("panicked"), "a panic: {}", run.stderr);
    run
}

/// `orderly <command…> --data <data> [--json]`.
fn audit(command: &[&str], data: &Path, json: bool) -> Run {
    let mut args: Vec<&OsStr> = command.iter().map(OsStr::new).collect();
    args.extend([OsStr::new("--data"), data.as_os_str()]);
    if json {
        args.push(OsStr::new("--json"));
    }
    orderly(args)
}

/// One simulated gateway that authorizes everything.
fn approving() -> Arc<Router> {
    let id = GatewayId::new("sim-ok").expect("a valid id");
    let gateway = SimulatedGateway::new(SimulatedGatewayConfig::new(id));
    let currency = Currency::new("EUR").expect("a currency");
    let fees = vec![Fee { currency, fixed_minor: 0, basis_points: 100 }];
    Arc::new(Router::new(
        vec![Route { gateway: Arc::new(gateway), fees, currencies: None }],
        RouterConfig::default(),
    ))
}

/// SKUs of the large orders that fill the first segment.
const BULK_SKUS: usize = 50;
const BULK_ORDERS: usize = 30;

fn ms(time: SystemTime) -> u64 {
    u64::try_from(time.duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("ms fit")
}

/// What the story below left in the log, as the test knows it.
struct Story {
    server: Server,
    /// Position after the stock was received, before any order.
    received_at: u64,
    /// A time after the stock was received and before any order was admitted.
    received_time: SystemTime,
    /// The log head when the server closed, and every event of the tenant.
    head: u64,
    events: Vec<CommittedEvent>,
}

/// Stock received; ten 50-line orders (so the first segment closes); o-1 shipped, o-2
/// cancelled, o-3 left confirmed; then the server is shut down.
async fn story() -> Story {
    let server = Server::configured(|config| {
        config.node.engine.log.segment_size = 64 << 10;
        config.node.payments = Some(approving());
    });
    let skus: Vec<String> = (0..BULK_SKUS).map(|n| format!("sku-{n}")).collect();
    for sku in &skus {
        server.receive(sku, 1_000).await;
    }
    server.receive("mug", 10).await;
    let received_at = server.receive("tea", 10).await;
    let received_time = SystemTime::now();
    // The orders are admitted at a later millisecond than `received_time`.
    let deadline = Instant::now() + Duration::from_secs(1);
    while ms(SystemTime::now()) <= ms(received_time) {
        assert!(Instant::now() < deadline, "the clock stands still");
        std::thread::yield_now();
    }
    let lines: Vec<(&str, u64)> = skus.iter().map(|sku| (sku.as_str(), 1)).collect();
    for n in 0..BULK_ORDERS {
        server.place(&format!("b-{n}"), "c-bulk", &lines).await;
    }
    server.place("o-1", "c-1", &[("mug", 2)]).await;
    server.place("o-2", "c-2", &[("tea", 1)]).await;
    server.place("o-3", "c-3", &[("mug", 1), ("tea", 1)]).await;
    for n in 0..BULK_ORDERS {
        server.wait_for_status(&format!("b-{n}"), "confirmed").await;
    }
    for id in ["o-1", "o-2", "o-3"] {
        server.wait_for_status(id, "confirmed").await;
    }
    server.post("/v1/orders/o-1/ship", &json!(null)).await.ok(StatusCode::OK);
    server.post("/v1/orders/o-2/cancel", &json!(null)).await.ok(StatusCode::OK);
    let events = support::log_events(&server.app, support::TENANT);
    let head = server.app.node().expect("open").engine().head().0;
    server.app.shutdown().expect("closes cleanly");
    Story { server, received_at, received_time, head, events }
}

/// The segment files of `data`, in order.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("a log folder")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// A tenant's snapshot in a `replay --json` report.
fn snapshot<'a>(report: &'a Value, tenant: &str) -> &'a Value {
    let tenants = report["tenants"].as_array().expect("tenants");
    tenants.iter().find(|t| t["tenant"] == tenant).unwrap_or_else(|| panic!("{report}"))
}

/// The level of `sku` in a tenant snapshot: (on hand, reserved, available).
fn level(snapshot: &Value, sku: &str) -> (u64, u64, u64) {
    let skus = snapshot["skus"].as_array().expect("skus");
    let level = skus.iter().find(|s| s["sku"] == sku).unwrap_or_else(|| panic!("{snapshot}"));
    let n = |field: &str| level[field].as_u64().expect("a count");
    (n("on_hand"), n("reserved"), n("available"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_on_a_folder_a_server_wrote() {
    let mut story = story().await;
    let data = story.server.dir().to_path_buf();
    assert!(segments(&data).len() >= 2, "the first segment is closed");

    // verify, digest, verify --digest.
    let text = audit(&["audit", "verify"], &data, false);
    assert!(text.exits(0).starts_with("intact:"), "{}", text.stdout);
    let report = audit(&["audit", "verify"], &data, true).json(0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["report"]["records"], story.head, "{report}");
    let digest = audit(&["audit", "digest"], &data, false).exits(0).trim().to_owned();
    let (position, hash) = digest.split_once(':').expect("POS:HASH");
    assert_eq!(position.parse::<u64>().ok(), Some(story.head));
    assert!(hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    let extends = audit(&["audit", "verify", "--digest", &digest], &data, false);
    assert!(extends.exits(0).contains("extends the digest"), "{}", extends.stdout);

    // replay at the position after the stock was received: no orders yet.
    let at = story.received_at.to_string();
    let before = audit(&["replay", "--at", &at], &data, true).json(0);
    assert_eq!(before["ok"], true, "{before}");
    let applied = before["digest"].as_str().and_then(|d| d.split_once(':')).map(|(pos, _)| pos);
    assert_eq!(applied, Some(at.as_str()), "{before}");
    let acme = snapshot(&before, support::TENANT);
    assert_eq!(level(acme, "mug"), (10, 0, 10));
    assert_eq!(level(acme, "sku-7"), (1_000, 0, 1_000));
    let no_orders =
        json!({ "placed": 0, "confirmed": 0, "shipped": 0, "delivered": 0, "cancelled": 0 });
    assert_eq!(acme["orders"], no_orders);
    // … and at a time between the stock and the first order: the same state.
    // (RFC 3339 with any offset: here one hour east of UTC.)
    let received = jiff::Timestamp::try_from(story.received_time).expect("a time");
    let time = received.display_with_offset(jiff::tz::offset(1)).to_string();
    assert!(time.ends_with("+01:00"), "{time}");
    let then = audit(&["replay", "--at", &time], &data, true).json(0);
    assert_eq!(then["tenants"], before["tenants"], "at {time}");
    // The same instant written without an offset is read as UTC.
    let naive = received.to_string().trim_end_matches('Z').to_owned();
    let then = audit(&["replay", "--at", &naive], &data, true).json(0);
    assert_eq!(then["tenants"], before["tenants"], "at {naive}");
    // At the head and at a time after everything: every order where it ended.
    let head = audit(&["replay", "--at", &story.head.to_string()], &data, true).json(0);
    let acme = snapshot(&head, support::TENANT);
    let counts = json!({ "placed": 0, "confirmed": BULK_ORDERS + 1, "shipped": 1, "delivered": 0, "cancelled": 1 });
    assert_eq!(acme["orders"], counts);
    assert_eq!(level(acme, "mug"), (8, 1, 7), "2 shipped, 1 held for o-3");
    assert_eq!(level(acme, "tea"), (10, 1, 9), "o-2's unit released, 1 held for o-3");
    assert_eq!(level(acme, "sku-7"), (1_000, BULK_ORDERS as u64, 1_000 - BULK_ORDERS as u64));
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)).to_string();
    let now = audit(&["replay", "--at", &later], &data, true).json(0);
    assert_eq!(now["tenants"], head["tenants"]);
    let human = audit(&["replay", "--at", &at], &data, false);
    assert!(human.exits(0).contains("tenant acme"), "{}", human.stdout);
    // A tenant with no events is a "no", a position past the head a question the log cannot
    // answer.
    let nobody = audit(&["replay", "--at", &at, "--tenant", "nobody"], &data, false);
    nobody.exits(1);
    assert!(nobody.stderr.contains("tenant nobody has no events"), "{}", nobody.stderr);
    let nobody = audit(&["replay", "--at", &at, "--tenant", "nobody"], &data, true).json(1);
    assert_eq!((&nobody["ok"], &nobody["tenants"]), (&json!(false), &json!([])), "{nobody}");
    let past = (story.head + 1).to_string();
    let beyond = audit(&["replay", "--at", &past], &data, false);
    beyond.exits(2);
    assert!(beyond.stderr.contains("beyond the log's head"), "{}", beyond.stderr);

    // trace: o-2's events, its payment's and its hold's, with their positions.
    let trace = audit(&["audit", "trace", "o-2"], &data, true).json(0);
    assert_eq!(trace["ok"], true);
    let entries = trace["entries"].as_array().expect("entries");
    let traced: Vec<(u64, &str)> = entries
        .iter()
        .map(|e| (e["position"].as_u64().expect("a position"), e["type"].as_str().expect("a type")))
        .collect();
    let expected = story_of(&story.events, "o-2");
    assert_eq!(traced, expected);
    let types: Vec<&str> = traced.iter().map(|(_, t)| *t).collect();
    for wanted in
        ["stock_held", "order_placed", "payment_authorized", "order_cancelled", "stock_released"]
    {
        assert!(types.contains(&wanted), "no {wanted} in {types:?}");
    }
    // Each event as the HTTP API shows it: its fields as JSON, not a debug string.
    let placed = entries.iter().find(|e| e["type"] == "order_placed").expect("o-2 placed");
    assert_eq!(placed["order_id"], "o-2", "{placed}");
    assert_eq!(placed["tenant"], support::TENANT, "{placed}");
    assert!(placed["data"]["lines"].is_array(), "{placed}");
    let human = audit(&["audit", "trace", "o-2"], &data, false);
    let line = human.exits(0).lines().find(|l| l.contains("order_placed")).expect("a line");
    assert!(line.contains(r#""lines":[{"#) && !line.contains("OrderPlaced {"), "{line}");
    audit(&["audit", "trace", "o-404"], &data, false).exits(1);
    let unknown = audit(&["audit", "trace", "o-404"], &data, true).json(1);
    assert_eq!((&unknown["ok"], &unknown["entries"]), (&json!(false), &json!([])), "{unknown}");

    // reconcile: a clean log.
    assert!(audit(&["audit", "reconcile"], &data, false).exits(0).contains("no discrepancies"));
    let books = audit(&["audit", "reconcile"], &data, true).json(0);
    assert_eq!(
        (&books["ok"], &books["reconciliation"]["discrepancies"]),
        (&json!(true), &json!([]))
    );

    // More orders: the published digest still verifies, and the head moved on.
    story.server.restart();
    story.server.place("o-4", "c-4", &[("mug", 1)]).await;
    story.server.app.shutdown().expect("closes cleanly");
    let extends = audit(&["audit", "verify", "--digest", &digest], &data, true).json(0);
    assert_eq!(extends["report"]["extends"], digest.as_str(), "{extends}");
    let newer = audit(&["audit", "digest"], &data, false).exits(0).trim().to_owned();
    assert_ne!(newer, digest);

    // A bit flipped in an early record of the closed first segment.
    let first = segments(&data).remove(0);
    let flipped = 4_096;
    flip_bit(&first, flipped);
    let broken = audit(&["audit", "verify"], &data, false);
    broken.exits(1);
    assert!(broken.stderr.contains("NOT INTACT"), "{}", broken.stderr);
    let report = audit(&["audit", "verify"], &data, true).json(1);
    let error = &report["error"];
    assert_eq!(report["ok"], false);
    let segment = error["segment"].as_str().expect("a segment");
    assert!(
        segment.ends_with(first.file_name().and_then(OsStr::to_str).expect("a name")),
        "{report}"
    );
    let offset = error["offset"].as_u64().expect("an offset");
    assert!(offset <= flipped && flipped - offset < 2_048, "the damaged record: {report}");
    let position = error["position"].as_u64().expect("a position");
    assert!(position > 0 && position < story.head, "{report}");
    audit(&["audit", "verify", "--digest", &digest], &data, true).json(1);
    audit(&["audit", "reconcile"], &data, false).exits(1);
    // Rebuilding on it names the damage, not a server that is not there.
    let rebuild = orderly([OsStr::new("rebuild"), OsStr::new("--data"), data.as_os_str()]);
    rebuild.exits(1);
    assert!(rebuild.stderr.contains("cannot open"), "{}", rebuild.stderr);
    assert!(!rebuild.stderr.contains("server running"), "{}", rebuild.stderr);
    let replay = audit(&["replay", "--at", &story.head.to_string()], &data, true).json(1);
    assert_eq!(replay["error"]["position"], position);
}

/// Position and type of every event of `order`, of its payments and of its holds.
fn story_of<'a>(events: &'a [CommittedEvent], order: &str) -> Vec<(u64, &'a str)> {
    let mut payments = Vec::new();
    let mut story = Vec::new();
    for event in events {
        let ours = match &event.event {
            Event::Order { order: of, .. } => of.as_str() == order,
            Event::Payment { payment, event } => {
                let names = match event {
                    PaymentEvent::PaymentAuthorized { order: of, .. }
                    | PaymentEvent::PaymentDeclined { order: of, .. } => of.as_str() == order,
                    _ => false,
                };
                if names {
                    payments.push(payment.clone());
                }
                payments.contains(payment)
            }
            Event::Inventory { event, .. } => match event {
                InventoryEvent::StockHeld { order: of, .. }
                | InventoryEvent::StockCommitted { order: of, .. }
                | InventoryEvent::StockReleased { order: of, .. }
                | InventoryEvent::HoldExpired { order: of, .. } => of.as_str() == order,
                InventoryEvent::StockReceived { .. } | InventoryEvent::StockAdjusted { .. } => {
                    false
                }
            },
        };
        if ours {
            story.push((event.position.0, orderly_core::codec::EventType::of(&event.event).name()));
        }
    }
    story
}

/// Flips the lowest bit of the byte at `offset` of `file`.
fn flip_bit(file: &Path, offset: u64) {
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(file).expect("opened");
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("a byte");
    byte[0] ^= 1;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("written");
    file.sync_all().expect("synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_works_beside_a_running_server() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = support::Running::start(data.path()).await;
    let address = server.address;
    let client = reqwest::Client::new();
    let token = std::fs::read_to_string(data.path().join("demo.token")).expect("demo.token");
    let received = client
        .post(format!("http://{address}/v1/inventory/mug/receive"))
        .bearer_auth(token.trim())
        .json(&json!({ "quantity": 3 }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(received.status(), StatusCode::OK);
    let position = support::position(&received.json().await.expect("JSON"));

    let verified = audit(&["audit", "verify"], data.path(), true);
    let report = verified.json(0);
    assert!(report["report"]["records"].as_u64().is_some_and(|n| n >= position), "{report}");
    assert!(!verified.stderr.to_lowercase().contains("lock"), "{}", verified.stderr);
    // Rebuilding needs the folder to itself: refused, clearly, while the server holds it.
    let refused = orderly([OsStr::new("rebuild"), OsStr::new("--data"), data.path().as_os_str()]);
    refused.exits(1);
    assert!(refused.stderr.contains("is a server running on it?"), "{}", refused.stderr);
    // The server still works, and still holds its folder.
    let level = client
        .get(format!("http://{address}/v1/inventory/mug?min_position={position}"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("an answer");
    assert_eq!(level.status(), StatusCode::OK);
    server.kill();
}

/// Every audit command, each reading the whole log (the replay to a time after any log here).
const EVERY_AUDIT: [&[&str]; 5] = [
    &["audit", "verify"],
    &["audit", "digest"],
    &["audit", "reconcile"],
    &["audit", "trace", "o-1"],
    &["replay", "--at", "2099-01-01T00:00:00Z"],
];

#[test]
fn bad_input_is_a_message_and_an_exit_status() {
    let every_audit = EVERY_AUDIT;
    let missing = Path::new("/nonexistent/orderly-data");
    for command in every_audit {
        let run = audit(command, missing, false);
        assert_eq!(run.code, Some(2), "{command:?}");
        assert!(
            run.stderr.contains("no data folder at /nonexistent/orderly-data"),
            "{command:?}: {}",
            run.stderr
        );
    }
    // A folder with no log in it (a mistyped --data) is not vouched for as an empty log.
    let data = tempfile::tempdir().expect("a temporary folder");
    for command in every_audit {
        let run = audit(command, data.path(), false);
        assert_eq!(run.code, Some(2), "{command:?}");
        assert!(run.stderr.contains("cannot audit (no_log)"), "{command:?}: {}", run.stderr);
    }
    // `rebuild` would write: it refuses such a folder and leaves it as it was.
    let rebuild = audit(&["rebuild"], data.path(), false);
    rebuild.exits(1);
    assert!(rebuild.stderr.contains("is not a data folder"), "{}", rebuild.stderr);
    assert_eq!(std::fs::read_dir(data.path()).expect("listed").count(), 0, "nothing written");
    // Bad arguments exit 2 too (1 is kept for "the log is not intact").
    for (command, says) in [
        (&["audit", "verify", "--digest", "not-a-digest"][..], "--digest"),
        (&["replay", "--at", "yesterday-ish"], "neither a position nor an RFC 3339 time"),
        (&["audit", "trace", "bad order id!"], "ORDER_ID"),
        (&["replay", "--at", "0", "--tenant", "bad tenant!"], "--tenant"),
        // Refused by the argument parser itself, before any audit code runs.
        (&["replay"], "--at <AT>"),
        (&["audit", "verify", "--bogus"], "--bogus"),
    ] {
        let run = audit(command, data.path(), false);
        assert_eq!(run.code, Some(2), "{command:?}");
        assert!(run.stderr.contains(says), "{command:?}: {}", run.stderr);
        // Asked for JSON, a program reads why on stdout, in the shape of a failed audit.
        let run = audit(command, data.path(), true);
        let body = run.json(2);
        assert_eq!(body["ok"], false, "{command:?}: {body}");
        assert_eq!(body["error"]["code"], "cannot_run", "{command:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{command:?}: {body}");
    }
    for command in every_audit {
        let body = audit(command, missing, true).json(2);
        assert_eq!(body["error"]["code"], "cannot_run", "{command:?}: {body}");
    }
}

/// A log rewritten with recomputed checksums may hold an event the domain's state cannot
/// take (two units shipped that were never held): reconcile and replay name it, and print no
/// panic as if they had crashed (`orderly` asserts none in any run).
#[test]
fn an_event_the_domain_refuses_is_named_without_a_panic_printed() {
    use orderly_core::domain::{Quantity, Sku, TenantId, Timestamp};
    let data = tempfile::tempdir().expect("a temporary folder");
    let config = orderly_core::store::LogConfig::default();
    let (log, _) = orderly_core::store::Log::open(&data.path().join("log"), config).expect("a log");
    let sku = Sku::new("mug").expect("an id");
    let quantity = Quantity::new(2).expect("a quantity");
    let order = orderly_core::domain::OrderId::new("o-9").expect("an id");
    let events = [
        InventoryEvent::StockReceived { quantity: Quantity::new(5).expect("a quantity") },
        InventoryEvent::StockCommitted { order, quantity },
    ];
    let tenant = TenantId::new("acme").expect("an id");
    for (at, event) in (1_800_000_000_000..).zip(events) {
        let event = Event::Inventory { sku: sku.clone(), event };
        let record = orderly_core::codec::encode_event(&tenant, &event).into_record(Timestamp(at));
        log.append(vec![record]).expect("appended");
    }
    drop(log);
    let reconcile = audit(&["audit", "reconcile"], data.path(), false);
    reconcile.exits(1);
    assert!(reconcile.stderr.contains("domain_rejects_event"), "{}", reconcile.stderr);
    // Where the domain refused it is kept, for a bug's sake.
    assert!(reconcile.stderr.contains("(at crates/core/src/domain/"), "{}", reconcile.stderr);
    let replay = audit(&["replay", "--at", "2"], data.path(), false);
    assert_eq!(replay.code, Some(1), "{}", replay.stderr);
}

/// Tenants choose their order ids: an id two tenants use is traced only with `--tenant`, not
/// as one order whose events mix both.
#[test]
fn an_order_id_of_two_tenants_is_traced_only_for_the_tenant_named() {
    use orderly_core::domain::{
        Command, CustomerId, Envelope, OrderCommand, OrderId, OrderLine, Quantity, Sku, TenantId,
    };
    let data = tempfile::tempdir().expect("a temporary folder");
    let log = data.path().join("log");
    let engine = orderly_core::engine::Engine::open(&log, Default::default()).expect("opens");
    let (sku, one) = (Sku::new("mug").expect("an id"), Quantity::new(1).expect("one"));
    for tenant in ["acme", "globex"] {
        let tenant = TenantId::new(tenant).expect("an id");
        let receive = Command::ReceiveStock { sku: sku.clone(), quantity: one };
        engine.execute_blocking(Envelope::new(tenant.clone(), receive)).expect("received");
        let place = OrderCommand::Place {
            customer: CustomerId::new("c-1").expect("an id"),
            currency: Currency::new("EUR").expect("a currency"),
            lines: vec![OrderLine { sku: sku.clone(), quantity: one, unit_price: 100 }],
        };
        let order = OrderId::new("o-1").expect("an id");
        let place = Command::Order { order, command: place };
        engine.execute_blocking(Envelope::new(tenant, place)).expect("placed");
    }
    engine.shutdown();
    drop(engine);
    let both = audit(&["audit", "trace", "o-1"], data.path(), false);
    assert_eq!(both.code, Some(2), "{}", both.stderr);
    assert!(both.stderr.contains("acme, globex: name one with --tenant"), "{}", both.stderr);
    assert_eq!(audit(&["audit", "trace", "o-1"], data.path(), true).json(2)["ok"], false);
    let acme = audit(&["audit", "trace", "o-1", "--tenant", "acme"], data.path(), true).json(0);
    let entries = acme["entries"].as_array().expect("entries");
    assert!(!entries.is_empty() && entries.iter().all(|e| e["tenant"] == "acme"), "{acme}");
    let nobody = audit(&["audit", "trace", "o-1", "--tenant", "nobody"], data.path(), false);
    assert_eq!(nobody.code, Some(1));
    assert!(nobody.stderr.contains("of tenant nobody"), "{}", nobody.stderr);
}

/// Bytes after the last complete batch (a write in progress, or cut short by a crash) are
/// left out by every command, and each says so on stderr, `digest` before a digest is
/// published of a log that may have lost its last records.
#[test]
fn bytes_after_the_last_batch_are_said_by_every_command() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let args = ["bench", "--orders", "100", "--tenants", "2", "--data"].map(OsStr::new);
    orderly(args.into_iter().chain([data.path().as_os_str()])).exits(0);
    let report = audit(&["audit", "verify"], data.path(), true).json(0);
    let end = report["report"]["bytes"].as_u64().expect("bytes");
    assert_eq!(segments(data.path()).len(), 1, "one segment: its committed bytes end at `end`");
    let segment = &segments(data.path())[0];
    let mut file = std::fs::OpenOptions::new().write(true).open(segment).expect("opens");
    file.seek(SeekFrom::Start(end)).expect("seeks");
    file.write_all(&[0xAB; 8]).expect("written");
    drop(file);
    for command in EVERY_AUDIT {
        let run = audit(command, data.path(), false);
        let said = format!("8 byte(s) after the last complete batch in {}", segment.display());
        assert!(run.stderr.contains(&said), "{command:?}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("at offset {end}")), "{command:?}: {}", run.stderr);
    }
    let digest = audit(&["audit", "digest"], data.path(), true).json(0);
    assert_eq!(digest["torn_tail"]["offset"], end, "{digest}");
}

/// A stdout that cannot take the answer (a full disk) is an error, exit 2, never a panic.
#[test]
fn an_answer_stdout_cannot_take_is_exit_2_not_a_panic() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let day = orderly(
        ["bench", "--orders", "200", "--tenants", "2", "--data"]
            .iter()
            .map(OsStr::new)
            .chain([data.path().as_os_str()]),
    );
    day.exits(0);
    for command in [
        &["audit", "verify"][..],
        &["audit", "digest"],
        &["audit", "reconcile"],
        &["replay", "--at", "5"],
    ] {
        for json in [false, true] {
            let full =
                std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
            let mut args: Vec<&OsStr> = command.iter().map(OsStr::new).collect();
            args.extend([OsStr::new("--data"), data.path().as_os_str()]);
            if json {
                args.push(OsStr::new("--json"));
            }
            let output = Command::new(BINARY)
                .args(args)
                .stdin(Stdio::null())
                .stdout(full)
                .output()
                .expect("the binary runs");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command:?} {json}: {stderr}");
            assert!(!stderr.contains("panicked"), "{command:?} {json}: {stderr}");
        }
    }
}

/// A folder a newer orderly wrote (opened by the release before it, after an upgrade): the
/// audit says it cannot judge it, naming why, rather than calling the log damaged.
#[test]
fn a_log_of_a_newer_orderly_is_not_called_damaged() {
    use orderly_core::store::{Expected, Log, LogConfig, NewRecord};
    let data = tempfile::tempdir().expect("a temporary folder");
    let (log, _) = Log::open(&data.path().join("log"), LogConfig::default()).expect("a log");
    let newer = NewRecord {
        stream: b"acme/i/sku-1".to_vec(),
        expected: Expected::Any,
        event_type: orderly_core::codec::EventType::StockReceived as u16,
        schema_version: orderly_core::codec::CURRENT_SCHEMA + 1,
        timestamp: 1_764_000_000_000,
        payload: vec![1, 2, 3, 4],
    };
    log.append(vec![newer.clone(), newer]).expect("appended");
    let digest = orderly_core::audit::Digest::of(&log.reader(), 2).expect("a digest").to_string();
    drop(log);
    let run = audit(&["audit", "verify"], data.path(), false);
    run.exits(2);
    assert!(run.stderr.contains("cannot audit (newer_schema)"), "{}", run.stderr);
    assert!(run.stderr.contains("written by a newer orderly"), "{}", run.stderr);
    let body = audit(&["audit", "verify"], data.path(), true).json(2);
    assert_eq!(body["error"]["code"], "newer_schema", "{body}");
    // Past that record, the log is still checked as the store's records: a digest it extends
    // leaves the answer to a newer orderly; one it no longer extends (a rewrite hiding behind
    // a newer version) is a rewrite.
    audit(&["audit", "verify", "--digest", &digest], data.path(), false).exits(2);
    let rewritten = format!("2:{}", "0".repeat(64));
    let run = audit(&["audit", "verify", "--digest", &rewritten], data.path(), true);
    assert_eq!(run.json(1)["error"]["code"], "digest_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replaces_read_models_with_equal_ones_built_from_the_log() {
    let story = story().await;
    let data = story.server.dir().to_path_buf();
    let read = |app: &orderly_server::app::Shared| {
        let node = app.node().expect("open");
        let db = node.read_models();
        let tenant = orderly_core::domain::TenantId::new(support::TENANT).expect("an id");
        let orders = orderly_core::projection::orders_of(db, &tenant).expect("orders");
        let levels = orderly_core::projection::inventory_levels(db, &tenant).expect("levels");
        (orders, levels)
    };
    let app = orderly_server::app::App::open(ServerConfig::new(data.clone())).expect("reopens");
    let head = app.node().expect("open").engine().head();
    for projection in app.node().expect("open").projections() {
        projection.wait_for(head, Duration::from_secs(10)).expect("caught up");
    }
    let before = read(&app);
    assert!(!before.0.is_empty() && !before.1.is_empty());
    app.shutdown().expect("closes cleanly");

    let all = audit(&["rebuild"], &data, false);
    let out = all.exits(0);
    for name in ["inventory", "orders", "orders_by_customer", "sales_kpis", "open_holds"] {
        assert!(out.contains(&format!("rebuilt {name} up to position {}", head.0)), "{out}");
    }
    let one = audit(&["rebuild", "--projection", "orders"], &data, false);
    assert!(one.exits(0).contains("generation 2 replaces 1"), "{}", one.stdout);
    // A name it does not know is a usage error, which lists the names it knows.
    let unknown = audit(&["rebuild", "--projection", "nope"], &data, false);
    unknown.exits(2);
    assert!(unknown.stderr.contains("open_holds"), "{}", unknown.stderr);

    let app = orderly_server::app::App::open(ServerConfig::new(data)).expect("reopens");
    assert_eq!(read(&app), before, "the rebuilt read models equal the ones they replaced");
    app.shutdown().expect("closes cleanly");
}
