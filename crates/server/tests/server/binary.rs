//! The real binary: `orderly serve` on a temporary data folder is SIGKILLed while orders are
//! in flight, restarted on the same folder, and every order it acknowledged (201) is there and
//! every idempotency key it acknowledged replays to the same order. SIGTERM stops it cleanly
//! (exit status 0), even with event streams open, leaving the engine's snapshot, with what it
//! acknowledged intact; a second SIGTERM exits at once. `orderly tenant add`
//! prints a token a running server accepts, and the first start leaves the demo tenant's token
//! alone in `<data>/demo.token`, readable by its owner only. A second server on a folder in use
//! is refused before it announces anything, as is a served folder whose tenants file was lost.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::support::{self, BINARY, Running, demo_token};

/// What a placing task saw acknowledged: key → (order id, position).
type Acknowledged = Arc<Mutex<HashMap<String, (String, u64)>>>;

const PLACERS: usize = 6;
/// Acknowledged orders before the kill; the placers keep going until it.
const ACKS_BEFORE_KILL: usize = 120;

fn order_body(key: &str) -> Value {
    support::order(None, &format!("c-{}", &key[..3]), &[("mug", 1), ("tea", 2)])
}

/// Placing the order of `key`, with `key` as its idempotency key.
fn place_keyed(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    client.post(url).bearer_auth(token).header("idempotency-key", key).json(&order_body(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_and_key_survives_sigkill() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = Running::start(data.path()).await;
    let token = demo_token(data.path());
    let client = reqwest::Client::new();
    for sku in ["mug", "tea"] {
        let reply = client
            .post(server.url(&format!("/v1/inventory/{sku}/receive")))
            .bearer_auth(&token)
            .json(&json!({ "quantity": 1_000_000 }))
            .send()
            .await
            .expect("an answer");
        assert_eq!(reply.status(), StatusCode::OK);
    }

    let acknowledged: Acknowledged = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let placers: Vec<_> = (0..PLACERS)
        .map(|placer| {
            let (client, token, acknowledged, killed) =
                (client.clone(), token.clone(), acknowledged.clone(), killed.clone());
            let url = server.url("/v1/orders");
            tokio::spawn(async move {
                let mut failures = 0;
                for n in 0_u64.. {
                    let key = format!("p{placer}-{n}");
                    let sent = place_keyed(&client, &url, &token, &key).send().await;
                    let answer = match sent {
                        Ok(reply) => match reply.status() {
                            StatusCode::CREATED => reply.json::<Value>().await.ok(),
                            status => panic!("order {key}: {status}"),
                        },
                        Err(_) => None,
                    };
                    match answer {
                        Some(body) => {
                            let id = body["order_id"].as_str().expect("an id").to_owned();
                            let position = support::position(&body);
                            acknowledged.lock().expect("not poisoned").insert(key, (id, position));
                        }
                        // Cut off by the kill: not acknowledged, so nothing is promised.
                        None if killed.load(Ordering::SeqCst) => return (failures, key),
                        None => failures += 1,
                    }
                }
                unreachable!("a placer places until the server is gone")
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().expect("not poisoned").len() < ACKS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "too few orders acknowledged before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.store(true, Ordering::SeqCst);
    server.kill();
    let mut cut_off = Vec::new();
    for placer in placers {
        let (failures, key) = placer.await.expect("a placer ends");
        assert_eq!(failures, 0, "requests failed before the kill");
        cut_off.push(key);
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("not poisoned"));
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL);

    let server = Running::start(data.path()).await;
    for (key, (id, position)) in &acknowledged {
        // A position beyond the restarted log's head would be refused with 422: lost writes.
        let uri = format!("/v1/orders/{id}?min_position={position}");
        let reply =
            client.get(server.url(&uri)).bearer_auth(&token).send().await.expect("an answer");
        assert_eq!(reply.status(), StatusCode::OK, "order {id} of key {key} is lost");
        let order: Value = reply.json().await.expect("JSON");
        assert_eq!(order["customer_id"], order_body(key)["customer_id"]);
        assert!(
            order["event_positions"][0].as_u64().is_some_and(|p| p < *position),
            "order {id} was placed below its acknowledged position {position}: {order}"
        );

        let replay = place_keyed(&client, &server.url("/v1/orders"), &token, key)
            .send()
            .await
            .expect("an answer");
        assert_eq!(replay.status(), StatusCode::CREATED, "key {key}");
        assert_eq!(
            replay.headers().get("idempotent-replayed").map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        let replay: Value = replay.json().await.expect("JSON");
        assert_eq!(replay["order_id"], id.as_str(), "key {key}");
        assert_eq!(support::position(&replay), *position, "key {key}");
    }

    // A request cut off by the kill may or may not have been recorded; retried with its key,
    // it is placed exactly once either way.
    for key in &cut_off {
        let mut first = None;
        for _ in 0..2 {
            let reply = place_keyed(&client, &server.url("/v1/orders"), &token, key)
                .send()
                .await
                .expect("an answer");
            assert_eq!(reply.status(), StatusCode::CREATED, "key {key}");
            let body: Value = reply.json().await.expect("JSON");
            let first = first.get_or_insert_with(|| body.clone());
            assert_eq!(body, *first, "key {key} placed twice");
        }
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let mut server = Running::start(data.path()).await;
    let token = demo_token(data.path());
    let client = reqwest::Client::new();
    let receive = client
        .post(server.url("/v1/inventory/mug/receive"))
        .bearer_auth(&token)
        .header("idempotency-key", "r-1")
        .json(&json!({ "quantity": 3 }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(receive.status(), StatusCode::OK);
    let received: Value = receive.json().await.expect("JSON");
    // Endless streams must not hold a graceful shutdown open.
    let events = client
        .get(server.url("/v1/events?from=0"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the event stream opens");
    let kpis =
        client.get(server.url("/v1/kpi/stream")).bearer_auth(&token).send().await.expect("opens");
    assert_eq!((events.status(), kpis.status()), (StatusCode::OK, StatusCode::OK));

    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("the child's status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop((events, kpis));
    let snapshot = data.path().join("log").join(orderly_core::engine::SNAPSHOT_FILE);
    assert!(snapshot.exists(), "a clean stop leaves the engine's snapshot for the next start");

    let server = Running::start(data.path()).await;
    let at = support::position(&received);
    let level = client
        .get(server.url(&format!("/v1/inventory/mug?min_position={at}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(level.status(), StatusCode::OK);
    assert_eq!(level.json::<Value>().await.expect("JSON")["on_hand"], 3);
}

/// A request that never finishes holds a graceful shutdown for its grace period (5 s); a
/// second SIGTERM exits at once (status 143, as if killed by it), and what was acknowledged is
/// there after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    use std::io::Write;
    let data = tempfile::tempdir().expect("a temporary folder");
    let mut server = Running::start(data.path()).await;
    let token = demo_token(data.path());
    let client = reqwest::Client::new();
    let receive = client
        .post(server.url("/v1/inventory/mug/receive"))
        .bearer_auth(&token)
        .json(&json!({ "quantity": 3 }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(receive.status(), StatusCode::OK);
    // A body announced and never sent: the request stays in flight.
    let mut stuck = std::net::TcpStream::connect(server.address).expect("connects");
    let head = format!(
        "POST /v1/inventory/mug/receive HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stuck.write_all(head.as_bytes()).expect("sent");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = server.child.id().to_string();
    let terminate = || Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(terminate().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.child.try_wait().expect("a status").is_none(), "still in its grace period");
    assert!(terminate().success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("the child's status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the second SIGTERM did not end the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(143), "128 + SIGTERM: {status:?}");
    drop(stuck);

    let server = Running::start(data.path()).await;
    let level = client
        .get(server.url("/v1/inventory/mug?min_position=1"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(level.json::<Value>().await.expect("JSON")["on_hand"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_add_prints_a_token_a_running_server_accepts() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = Running::start(data.path()).await;

    // The demo tenant's token, alone and private.
    let token_file = data.path().join("demo.token");
    let mode = std::fs::metadata(&token_file).expect("demo.token").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "demo.token mode {mode:o}");
    let demo = demo_token(data.path());
    assert!(demo.starts_with("orderly_") && demo.len() > 40, "{demo:?}");
    assert!(demo.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{demo:?}");
    // The tenants file holds hashes, never tokens.
    let tenants = std::fs::read_to_string(data.path().join("tenants")).expect("tenants");
    assert!(!tenants.contains(&demo), "a token stored in the clear");

    let added = Command::new(BINARY)
        .args(["tenant", "add", "globex", "--data"])
        .arg(data.path())
        .output()
        .expect("tenant add runs");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let token = String::from_utf8(added.stdout).expect("UTF-8");
    let token = token.trim();
    assert!(token.starts_with("orderly_") && token != demo, "{token:?}");

    let client = reqwest::Client::new();
    let receive = |token: &str| {
        client
            .post(server.url("/v1/inventory/mug/receive"))
            .bearer_auth(token)
            .json(&json!({ "quantity": 1 }))
            .send()
    };
    assert_eq!(receive(token).await.expect("an answer").status(), StatusCode::OK);
    assert_eq!(receive(&demo).await.expect("an answer").status(), StatusCode::OK);
    let wrong = receive("orderly_nope").await.expect("an answer");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // A name is taken once.
    let again = Command::new(BINARY)
        .args(["tenant", "add", "globex", "--data"])
        .arg(data.path())
        .output()
        .expect("tenant add runs");
    assert!(!again.status.success(), "globex added twice");
    assert!(again.stdout.is_empty());
    drop(server);
}

/// Runs `orderly serve` on `data` until it exits (a start that is refused), with its log at
/// `info`.
fn serve_to_the_end(listen: &str, data: &std::path::Path) -> std::process::Output {
    Command::new(BINARY)
        .args(["serve", "--listen", listen, "--data"])
        .arg(data)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_held_folder_is_refused_before_it_listens() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let first = Running::start(data.path()).await;
    let second = serve_to_the_end("127.0.0.1:0", data.path());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    // Nothing announced: no address, no dashboard link with a token in it.
    assert!(!stderr.contains("listening on") && !stderr.contains("#token="), "{stderr}");
    // The first server is untouched.
    let ready = reqwest::get(first.url("/readyz")).await.expect("an answer");
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_listen_writes_nothing_in_a_new_folder() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("its address").to_string();
    let parent = tempfile::tempdir().expect("a temporary folder");
    let data = parent.path().join("new");
    let refused = serve_to_the_end(&address, &data);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!data.exists(), "no folder, tenant or token was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_cut_short_after_the_token_file_is_made_again_whole() {
    // What a crash between the first start's two writes leaves: the token's file, and a
    // tenants file with the demo's line unfinished (or not begun).
    let data = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(data.path().join("demo.token"), "orderly_left_by_a_crash").expect("written");
    std::fs::write(data.path().join("tenants"), "tenant demo 5f3a").expect("written");

    let server = Running::start(data.path()).await;
    let token = demo_token(data.path());
    assert_ne!(token, "orderly_left_by_a_crash", "the file is written again");
    let level = reqwest::Client::new()
        .get(server.url("/v1/inventory/mug"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");
    assert_ne!(level.status(), StatusCode::UNAUTHORIZED, "the demo token in the file works");
    let mode =
        std::fs::metadata(data.path().join("demo.token")).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "demo.token mode {mode:o}");
    assert!(!data.path().join("demo.token.new").exists(), "nothing left beside it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_folder_that_lost_its_tenants_file_is_refused_and_its_token_kept() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = Running::start(data.path()).await;
    let token = demo_token(data.path());
    drop(server);
    let tenants = data.path().join("tenants");
    std::fs::remove_file(&tenants).expect("removed");
    let refused = || {
        let refused = serve_to_the_end("127.0.0.1:0", data.path());
        let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert_eq!(refused.status.code(), Some(1), "{stderr}");
        let said =
            "is missing or gives no tenant a token, though this data folder was served before";
        assert!(stderr.contains(said), "{stderr}");
    };
    refused();
    assert_eq!(demo_token(data.path()), token, "the demo's token is not made again");
    assert!(!tenants.exists(), "no tenant was made");
    // Also without the demo's token (kept elsewhere), and with an empty tenants file.
    std::fs::remove_file(data.path().join("demo.token")).expect("removed");
    std::fs::write(&tenants, "").expect("written");
    refused();
    assert!(!data.path().join("demo.token").exists(), "no demo tenant was made");
}

#[test]
fn sizes_out_of_range_are_refused_before_anything_starts() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let new = data.path().join("new");
    let bench = [
        ("--orders", "0"),
        ("--orders", "10336251"),
        ("--tenants", "0"),
        ("--tenants", "10001"),
        ("--in-flight", "0"),
    ];
    // A tokio semaphore holds at most 2^61 - 1 permits (it panicked, after the first start's files).
    let serve = [
        ("--max-concurrent", "0"),
        ("--max-concurrent", "2305843009213693952"),
        ("--requests-per-tenant", "0"),
        // Every body would be refused as too large.
        ("--body-limit", "0"),
        ("--body-limit", "1023"),
        ("--request-timeout", "0"),
        ("--idle-timeout", "0"),
        // hyper adds it to the clock: near 2^64 seconds overflowed in every connection.
        ("--idle-timeout", "18446744073709551615"),
    ];
    let runs = bench.iter().map(|f| ("bench", f)).chain(serve.iter().map(|f| ("serve", f)));
    for (command, &(flag, value)) in runs {
        let out = Command::new(BINARY)
            .args([command, flag, value, "--data"])
            .arg(&new)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(&format!("invalid value '{value}' for '{flag}")), "{stderr}");
        assert!(!new.exists(), "{command} {flag} {value} wrote {}", new.display());
    }
}

#[test]
fn a_log_s_own_folder_given_as_the_data_folder_is_refused() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let log = data.path().join("log");
    drop(
        orderly_core::store::Log::open(&log, orderly_core::store::LogConfig::default())
            .expect("a log"),
    );
    let before: Vec<_> =
        std::fs::read_dir(&log).expect("listed").map(|e| e.expect("entry").file_name()).collect();
    for args in [&["serve", "--listen", "127.0.0.1:0"][..], &["bench", "--orders", "10"]] {
        let mut child = Command::new(BINARY)
            .args(args)
            .arg("--data")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        // Refused at once; a server that took the folder would run until killed.
        let started = std::time::Instant::now();
        while child.try_wait().expect("a status").is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().expect("killed");
                panic!("{args:?} took the log's folder and ran");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("its output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is a log's folder, not a data folder"), "{args:?}: {stderr}");
        let after: Vec<_> = std::fs::read_dir(&log)
            .expect("listed")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(after, before, "{args:?} wrote into the log's folder");
    }
}

#[test]
fn a_tenant_whose_token_cannot_be_shown_is_not_added() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let add = |stdout: Stdio| {
        Command::new(BINARY)
            .args(["tenant", "add", "acme", "--data"])
            .arg(data.path())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .expect("runs")
    };
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let refused = add(Stdio::from(full));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot show the new token, so the tenant was not added"), "{stderr}");
    let added = add(Stdio::piped());
    assert!(
        added.status.success(),
        "the name is still free: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(String::from_utf8_lossy(&added.stdout).starts_with("orderly_"));
}

#[test]
fn a_file_given_for_a_folder_is_named_before_anything_runs() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("file");
    std::fs::write(&file, "not a folder").expect("written");
    let run = |args: &[&str], then: &[&std::ffi::OsStr]| {
        let out = Command::new(BINARY).args(args).args(then).output().expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&["audit", "verify", "--data"], &[file.as_os_str()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is a file, not a data folder"), "{stderr}");
    let data = dir.path().join("data");
    let (code, stderr) = run(
        &["bench", "--orders", "10", "--report"],
        &[file.as_os_str(), "--data".as_ref(), data.as_os_str()],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--report: cannot write in the folder"), "{stderr}");
    assert!(!data.exists(), "the day did not run");
}

/// `bench --data` takes an empty (or new) folder only: the day's log would land among files
/// it knows nothing of (another program's, or a folder of the server's own), and its report's
/// folder is not made for a day that does not run.
#[test]
fn bench_refuses_a_data_folder_that_is_not_empty() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("made");
    std::fs::write(data.join("notes.txt"), "someone's").expect("written");
    let report = dir.path().join("report");
    let out = Command::new(BINARY)
        .args(["bench", "--orders", "10", "--data"])
        .arg(&data)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not empty: the day needs an empty data folder"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&data).expect("listed").collect();
    assert_eq!(left.len(), 1, "nothing written beside the file");
    assert!(!report.exists(), "no report folder for a day that did not run");
}

#[test]
fn hello_server_on_a_taken_port_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("its address").to_string();
    let out =
        Command::new(BINARY).args(["hello-server", "--listen", &address]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
}
