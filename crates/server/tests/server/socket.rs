//! Through a real socket: a client places and reads an order over HTTP/1.1, and a body of
//! 16 MiB — declared with `Content-Length` or sent in chunks without one — is answered
//! `413 payload_too_large` while the client is still sending it, without the server waiting
//! for the rest; a connection idle, or with a request's headers unfinished, is closed after the
//! idle timeout, while a response under way (an event stream) is not cut.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::support::{self, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_places_and_reads_an_order_over_http() {
    let server = Server::start();
    let address = support::serve(&server.app).await;
    let client = reqwest::Client::new();
    let base = format!("http://{address}");

    let received = client
        .post(format!("{base}/v1/inventory/mug/receive"))
        .bearer_auth(&server.token)
        .json(&json!({ "quantity": 5 }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(received.status(), StatusCode::OK);
    let placed = client
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&server.token)
        .header("idempotency-key", "k-1")
        .json(&support::order(Some("o-1"), "c-1", &[("mug", 2)]))
        .send()
        .await
        .expect("an answer");
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.expect("JSON");
    let order = client
        .get(format!("{base}/v1/orders/o-1?min_position={}", support::position(&placed)))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(order.status(), StatusCode::OK);
    let order: Value = order.json().await.expect("JSON");
    assert_eq!((&order["order_id"], &order["status"]), (&json!("o-1"), &json!("placed")));

    let unauthorized = client.get(format!("{base}/v1/orders/o-1")).send().await.expect("an answer");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let body: Value = unauthorized.json().await.expect("JSON");
    assert_eq!(support::error_code(&body), "unauthorized");
}

const SIXTEEN_MIB: usize = 16 << 20;
/// Sent before the client waits for the answer: more than the limit, far less than the body.
const SENT_BEFORE_ANSWER: usize = 2 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_with_content_length_is_413_before_it_is_read() {
    let server = Server::start();
    let address = support::serve(&server.app).await;
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {SIXTEEN_MIB}\r\n\r\n",
        server.token
    );
    let answer = tokio::task::spawn_blocking(move || send_large(address, &head, false))
        .await
        .expect("the client ends");
    check_413(&answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_chunked_is_413_before_it_is_read() {
    let server = Server::start();
    let address = support::serve(&server.app).await;
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.token
    );
    let answer = tokio::task::spawn_blocking(move || send_large(address, &head, true))
        .await
        .expect("the client ends");
    check_413(&answer);
}

/// Sends `head`, then a 16 MiB body of spaces in 64 KiB pieces (HTTP chunks if `chunked`).
/// After [`SENT_BEFORE_ANSWER`] bytes the writer pauses until the answer has been read — so the
/// server cannot have waited for the whole body — then sends the rest, which the server may
/// refuse (a reset or broken pipe is fine). Returns the raw answer.
fn send_large(address: SocketAddr, head: &str, chunked: bool) -> String {
    let mut stream = TcpStream::connect(address).expect("connected");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    stream.write_all(head.as_bytes()).expect("the head is sent");
    let mut reader = stream.try_clone().expect("a second handle");
    let (answered_tx, answered_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let piece = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < SIXTEEN_MIB {
            if sent == SENT_BEFORE_ANSWER {
                // Bounded: the reader answers or times out within 10 s.
                let _ = answered_rx.recv_timeout(Duration::from_secs(15));
            }
            let written = if chunked {
                let framed =
                    [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
                stream.write_all(&framed)
            } else {
                stream.write_all(&piece)
            };
            if written.is_err() {
                // The server answered and closed the connection: the rest is not wanted.
                return;
            }
            sent += piece.len();
        }
        if chunked {
            let _ = stream.write_all(b"0\r\n\r\n");
        }
    });
    let answer = read_answer(&mut reader);
    drop(answered_tx);
    // The writer may have been cut off early: the server answers and closes the connection
    // without reading the rest, which is what is wanted.
    writer.join().expect("the writer ends");
    answer
}

/// Reads one HTTP answer: the head, then as many body bytes as its Content-Length says (or
/// until the server closes the connection).
fn read_answer(reader: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok());
            if length.is_some_and(|length| bytes.len() >= end + 4 + length) {
                break;
            }
        }
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset after the answer was read is the server refusing the rest.
            Err(e) if !bytes.is_empty() && e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no answer while sending 16 MiB: {e} (read {:?})",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn check_413(answer: &str) {
    let status_line = answer.lines().next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 413"), "answer: {answer:?}");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert_eq!(support::error_code(&body), "payload_too_large");
}

/// `orderly load` against a server: every placement is counted by its answer, and a second run
/// with the same seed places new orders (its keys carry the run's nonce) instead of being
/// answered from the first run's replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_places_orders_and_a_second_run_places_new_ones() {
    use orderly_server::load;

    let server = Server::start();
    let target = support::serve(&server.app).await;
    let config = load_config(target, &server.token, 200, 4);
    let placed_so_far = |server: &Server| {
        let node = server.app.node().expect("open");
        node.engine().head().0
    };
    let first = load::run(config.clone()).await.expect("the first run");
    let after_first = placed_so_far(&server);
    let second = load::run(config).await.expect("the second run");
    for report in [&first, &second] {
        assert_eq!(report.replayed_first_sends, 0, "{report:?}");
        let sent: u64 = report.statuses.values().sum();
        assert_eq!(sent, report.requests, "{report:?}");
        assert_eq!((report.failed, report.answered + report.shed), (0, sent), "{report:?}");
        let created = report.statuses.get(&201).copied().unwrap_or_default();
        assert!(report.orders_placed > 150 && report.orders_placed <= created, "{report:?}");
    }
    assert!(
        placed_so_far(&server) >= after_first + second.orders_placed,
        "the second run's orders were recorded, not replayed"
    );
}

/// A config of `orderly load` for `target`: `orders` placements on `concurrency` connections.
fn load_config(
    target: SocketAddr,
    token: &str,
    orders: u64,
    concurrency: usize,
) -> orderly_server::load::LoadConfig {
    orderly_server::load::LoadConfig {
        target,
        token: token.to_owned(),
        orders,
        concurrency,
        seed: 1,
        hello: false,
        rate: None,
        give_up_after: Duration::from_secs(30),
        progress: false,
    }
}

/// Requests a server sheds (`429`: the tenant has its most requests in progress) are sent
/// again after `Retry-After`, as a client would: every order is placed, the shed answers are
/// counted apart, and the latency of a request counts its waits (not only its last send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_sends_shed_requests_again_and_counts_their_wait() {
    let server = Server::configured(|config| config.requests_per_tenant = 1);
    let target = support::serve(&server.app).await;
    let report =
        orderly_server::load::run(load_config(target, &server.token, 12, 4)).await.expect("a run");
    assert_eq!((report.orders_placed, report.failed), (12, 0), "{report:?}");
    assert!(report.shed > 0, "four connections, one request at a time: {report:?}");
    assert_eq!(report.statuses.get(&429).copied(), Some(report.shed), "{report:?}");
    assert!(report.max_ms >= 1_000.0, "a shed request waited its Retry-After: {report:?}");
}

/// `orderly load` sending to `target`, where no orderly server answers: straight placements
/// (no setup), given up after a second.
fn unanswered_config(
    target: SocketAddr,
    orders: u64,
    concurrency: usize,
) -> orderly_server::load::LoadConfig {
    let mut config = load_config(target, "no-token", orders, concurrency);
    config.hello = true;
    config.give_up_after = Duration::from_secs(1);
    config
}

/// A server that is gone makes every request fail once the give-up time passes, and ends the
/// run within about that time, not once per placement left (each connection gives its other
/// placements up with it): the run still ends with its report, which counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_reports_requests_no_server_answered_and_ends_soon() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let target = closed.local_addr().expect("an address");
    drop(closed);
    let report = orderly_server::load::run(unanswered_config(target, 40, 2)).await;
    let report = report.expect("a report, not an error");
    assert_eq!((report.failed, report.answered, report.orders_placed), (40, 0, 0), "{report:?}");
    assert!(report.statuses.get(&0).is_some_and(|&n| n >= 2), "{report:?}");
    assert!(report.seconds < 10.0, "not a second per placement: {report:?}");
}

/// A server that takes connections and never answers: the wait for an answer counts in the
/// give-up time too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_gives_up_on_a_server_that_never_answers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let target = silent.local_addr().expect("an address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let run = orderly_server::load::run(unanswered_config(target, 2, 1));
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("given up, not waiting forever")
        .expect("a report");
    assert_eq!((report.failed, report.answered), (2, 0), "{report:?}");
}

/// A placement whose first send was shed (`504`: the server took it, the answer was lost) is
/// answered on its resend as a replay of that first send: it is this run's order, placed, and
/// not a key another request used before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_answer_to_a_resend_counts_as_placed() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, header};
    use axum::response::IntoResponse;

    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            if uri.path().ends_with("/receive") {
                return (StatusCode::CREATED, "{}").into_response();
            }
            let key = headers.get("idempotency-key").and_then(|k| k.to_str().ok());
            let key = key.unwrap_or_default().to_owned();
            if seen.lock().unwrap().insert(key.clone()) {
                let after = [(header::RETRY_AFTER, "1")];
                return (StatusCode::GATEWAY_TIMEOUT, after, "outcome_unknown").into_response();
            }
            let replayed = [("idempotent-replayed", "true")];
            let order = json!({ "order_id": format!("o-{}", key.len()) }).to_string();
            (StatusCode::CREATED, replayed, order).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let target = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let report = orderly_server::load::run(load_config(target, "a-token", 2, 2)).await;
    let report = report.expect("a run");
    assert_eq!((report.failed, report.replayed_first_sends), (0, 0), "{report:?}");
    assert_eq!(report.orders_placed, 2, "{report:?}");
    assert!(report.shed >= 2, "each first send was shed: {report:?}");
}

/// With a rate, placements are due on a schedule and none is sent before it: 20 placements at
/// 40 a second take at least the 19 intervals between the first and the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_keeps_to_its_rate() {
    let server = Server::start();
    let target = support::serve(&server.app).await;
    let mut config = load_config(target, &server.token, 20, 4);
    config.rate = Some(40);
    let report = orderly_server::load::run(config).await.expect("a run");
    assert_eq!((report.orders_placed, report.failed, report.rate), (20, 0, Some(40)));
    assert!(report.seconds >= 19.0 / 40.0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_or_unfinished_connection_is_closed_after_the_idle_timeout() {
    let server = Server::configured(|config| config.idle_timeout = Duration::from_secs(1));
    let address = support::serve(&server.app).await;
    let token = server.token.clone();
    let closed_after = |send: String| {
        tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(address).expect("connects");
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
            stream.write_all(send.as_bytes()).expect("sent");
            let started = std::time::Instant::now();
            let mut answer = Vec::new();
            // The server closes the connection: the read ends (a timeout would be an error).
            stream.read_to_end(&mut answer).expect("closed by the server, not timed out");
            (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        })
    };
    let sends = [
        ("nothing", String::new()),
        ("half a header", "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned()),
        ("idle after an answer", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()),
    ];
    for (what, send) in sends {
        let (after, answer) = closed_after(send).await.expect("the probe runs");
        assert!(after < Duration::from_secs(5), "{what}: open for {after:?}");
        assert_eq!(
            answer.starts_with("HTTP/1.1 200"),
            what == "idle after an answer",
            "{what}: {answer}"
        );
    }
    // An event stream with nothing to send is a response under way: not cut.
    let stream = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).expect("connects");
        let head =
            format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("sent");
        stream.set_read_timeout(Some(Duration::from_millis(2_500))).expect("a timeout");
        let mut answer = vec![0; 4096];
        let mut read = 0;
        loop {
            match stream.read(&mut answer[read..]) {
                Ok(0) => {
                    return Err(format!("closed: {}", String::from_utf8_lossy(&answer[..read])));
                }
                Ok(n) => read += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(String::from_utf8_lossy(&answer[..read]).into_owned());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let head = stream.await.expect("the probe runs").expect("the stream stays open");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
