//! The live event stream `GET /v1/events` over a real socket: from position 0 it sends the
//! tenant's events, and only the tenant's, in commit order with `id:` = position; a client
//! that reconnects with `Last-Event-ID` gets exactly the events it missed (no gap, no
//! duplicate); `types=` filters, and an empty one is no filter; bad parameters are
//! `422 validation_failed` naming them; a client that never reads holds up no command and is
//! cut off while a reading client gets everything; and the streams of a tenant are capped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use orderly_core::codec::EventType;
use orderly_core::engine::CommittedEvent;
use serde_json::json;
use tokio::net::TcpSocket;

use super::support::{self, EventStream, Message, Server};

/// Long enough for any event of these small tests to arrive.
const WITHIN: Duration = Duration::from_secs(10);

/// A client of a [`Server`] served on a real socket.
struct Client {
    http: reqwest::Client,
    base: String,
    address: SocketAddr,
}

impl Client {
    async fn of(server: &Server) -> Client {
        Client::to(support::serve(&server.app).await)
    }

    fn to(address: SocketAddr) -> Client {
        Client { http: reqwest::Client::new(), base: format!("http://{address}"), address }
    }

    /// `GET /v1/events{query}` with `token`.
    fn events(&self, token: &str, query: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}/v1/events{query}", self.base)).bearer_auth(token)
    }

    /// An event stream of `token`'s tenant from `query`.
    async fn stream(&self, token: &str, query: &str) -> EventStream {
        EventStream::open(self.events(token, query)).await
    }
}

/// Asserts `message` is `event` as the API shows it: the last event of its record carries the
/// record's position as its id, the others none.
#[track_caller]
fn assert_is(message: &Message, event: &CommittedEvent, last_of_record: bool) {
    let position = event.position.0;
    let id = last_of_record.then_some(position);
    assert_eq!(message.id, id, "{:?}", message.data);
    assert_eq!(message.data["position"], position, "{}", message.data);
    assert_eq!(message.data["type"], EventType::of(&event.event).name(), "{}", message.data);
    assert_eq!(message.data["recorded_at_ms"], event.recorded_at.0, "{}", message.data);
}

/// Reads as many events as `expected` holds (whole records) and asserts they are those, in
/// that order.
async fn assert_receives(stream: &mut EventStream, expected: &[CommittedEvent]) {
    for (n, event) in expected.iter().enumerate() {
        let last = expected.get(n + 1).is_none_or(|next| next.position != event.position);
        assert_is(&stream.expect(WITHIN).await, event, last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_zero_streams_the_tenants_events_in_commit_order_and_no_one_elses() {
    let server = Server::start();
    let globex = server.add_tenant("globex");
    let client = Client::of(&server).await;
    let as_globex =
        |uri: &str, body: serde_json::Value| server.call(support::post(uri, Some(&globex), &body));

    server.receive("mug", 10).await;
    as_globex("/v1/inventory/mug/receive", json!({ "quantity": 5 })).await.ok(StatusCode::OK);
    server.place("o-1", "c-1", &[("mug", 2)]).await;
    as_globex("/v1/orders", support::order(Some("o-1"), "c-1", &[("mug", 1)]))
        .await
        .ok(StatusCode::CREATED);
    server.post("/v1/orders/o-1/cancel", &json!(null)).await.ok(StatusCode::OK);

    let expected = support::log_events(&server.app, support::TENANT);
    // received, held, placed, released, cancelled: the test has something to tell apart.
    assert_eq!(expected.len(), 5, "{expected:?}");
    let mut stream = client.stream(&server.token, "?from=0").await;
    let first = stream.expect(WITHIN).await;
    assert_is(&first, &expected[0], true);
    assert_eq!(
        (&first.data["sku"], &first.data["data"]),
        (&json!("mug"), &json!({ "quantity": 10 }))
    );
    assert_receives(&mut stream, &expected[1..]).await;

    // The next event is acme's next one: globex's, committed in between, is not sent.
    as_globex("/v1/inventory/tea/receive", json!({ "quantity": 1 })).await.ok(StatusCode::OK);
    let next = server.receive("tea", 3).await;
    let message = stream.expect(WITHIN).await;
    assert_eq!(message.id, Some(next - 1), "{:?}", message.data);
    assert_eq!(message.data["sku"], "tea");

    // Globex's own stream has only globex's events.
    let theirs = support::log_events(&server.app, "globex");
    let mut stream = client.stream(&globex, "?from=0").await;
    assert_receives(&mut stream, &theirs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_nothing_to_send_names_where_it_stands_so_a_reconnect_misses_nothing() {
    let server = Server::start();
    let globex = server.add_tenant("globex");
    let client = Client::of(&server).await;
    let as_globex =
        |uri: &str, body: serde_json::Value| server.call(support::post(uri, Some(&globex), &body));
    let head = server.receive("mug", 10).await;

    // Globex follows new events only; only acme commits. Its stream names the position before
    // its start as it opens, then the records it read past, with no event.
    let mut stream = client.stream(&globex, "").await;
    stream.expect_named(head - 1, WITHIN).await;
    let head = server.receive("tea", 3).await;
    stream.expect_named(head - 1, WITHIN).await;
    let last_id = stream.last_id.expect("named");
    drop(stream);

    // While it is away, globex commits; the reconnect (as a browser makes it, with the last
    // id it was given) starts right after what it had read.
    as_globex("/v1/inventory/gap/receive", json!({ "quantity": 1 })).await.ok(StatusCode::OK);
    let resumed = client.events(&globex, "").header("last-event-id", last_id);
    let mut stream = EventStream::open(resumed).await;
    let missed = stream.expect(WITHIN).await;
    assert_eq!((&missed.data["sku"], missed.id), (&json!("gap"), Some(head)), "{:?}", missed.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_exactly_the_events_it_missed() {
    let server = Server::start();
    let client = Client::of(&server).await;
    server.receive("mug", 100).await;
    for n in 0..4 {
        server.place(&format!("o-{n}"), "c-1", &[("mug", 1)]).await;
    }
    // 1 + 4 × 2 events in 5 records, of which the client reads the first 3 records (5 events)
    // and misses 2 records (4 events) before it leaves.
    let mut stream = client.stream(&server.token, "?from=0").await;
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let message = stream.expect(WITHIN).await;
        seen.push(message.data["position"].as_u64().expect("a position"));
        ids.extend(message.id);
    }
    drop(stream);
    let last_seen = *ids.last().expect("records were read");
    assert_eq!(seen.len(), 5, "the first three records hold five events");

    // More is committed while it is away.
    server.post("/v1/orders/o-0/cancel", &json!(null)).await.ok(StatusCode::OK);
    server.place("o-9", "c-2", &[("mug", 5)]).await;
    server.receive("tea", 1).await;

    let all = support::log_events(&server.app, support::TENANT);
    let seen_events: Vec<u64> = all.iter().map(|e| e.position.0).take(seen.len()).collect();
    assert_eq!(seen, seen_events, "the first connection read the first events");
    let missed: Vec<CommittedEvent> =
        all.into_iter().filter(|e| e.position.0 > last_seen).collect();
    assert_eq!(missed.len(), 4 + 2 + 2 + 1, "{missed:?}");

    // `Last-Event-ID` resumes after the last event seen, and wins over `from`.
    let resumed = client.events(&server.token, "?from=0").header("last-event-id", last_seen);
    let mut stream = EventStream::open(resumed).await;
    assert_receives(&mut stream, &missed).await;
    // Nothing more was pending: the next event is the next commit.
    let next = server.receive("tea", 1).await;
    assert_eq!(stream.expect(WITHIN).await.id, Some(next - 1));

    // `?from=` resumes at a position, inclusive: the whole record there.
    let from = missed[4].position.0;
    let at = missed.iter().position(|e| e.position.0 == from).expect("the record's first event");
    let mut stream = client.stream(&server.token, &format!("?from={from}")).await;
    assert_receives(&mut stream, &missed[at..]).await;
    assert_eq!(stream.expect(WITHIN).await.id, Some(next - 1));

    // Without either, only new events come.
    let mut stream = client.stream(&server.token, "").await;
    let next = server.receive("tea", 1).await;
    assert_eq!(stream.expect(WITHIN).await.id, Some(next - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_filter_the_stream() {
    let server = Server::start();
    let client = Client::of(&server).await;
    server.receive("mug", 10).await;
    server.place("o-1", "c-1", &[("mug", 1)]).await;
    server.place("o-2", "c-1", &[("mug", 1)]).await;
    server.post("/v1/orders/o-1/cancel", &json!(null)).await.ok(StatusCode::OK);

    let all = support::log_events(&server.app, support::TENANT);
    let of = |names: &[&str]| -> Vec<CommittedEvent> {
        all.iter().filter(|e| names.contains(&EventType::of(&e.event).name())).cloned().collect()
    };
    let placed = of(&["order_placed"]);
    assert_eq!(placed.len(), 2);
    let mut stream = client.stream(&server.token, "?from=0&types=order_placed").await;
    assert_receives(&mut stream, &placed).await;

    let wanted = of(&["order_placed", "order_cancelled"]);
    assert_eq!(wanted.len(), 3);
    let query = "?from=0&types=order_cancelled,%20order_placed";
    let mut stream = client.stream(&server.token, query).await;
    assert_receives(&mut stream, &wanted).await;
    let cancelled = stream_next_type(&mut stream, &server, "o-2").await;
    assert_eq!(cancelled, "order_cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_types_is_no_filter() {
    let server = Server::start();
    let client = Client::of(&server).await;
    server.receive("mug", 10).await;
    server.place("o-1", "c-1", &[("mug", 1)]).await;
    let all = support::log_events(&server.app, support::TENANT);
    for query in ["?from=0&types=", "?from=0&types=,", "?from=0&types=%20,%20"] {
        let mut stream = client.stream(&server.token, query).await;
        assert_receives(&mut stream, &all).await;
    }
}

/// Cancels `order` and returns the type of the stream's next event.
async fn stream_next_type(stream: &mut EventStream, server: &Server, order: &str) -> String {
    server.post(&format!("/v1/orders/{order}/cancel"), &json!(null)).await.ok(StatusCode::OK);
    let message = stream.expect(WITHIN).await;
    message.data["type"].as_str().expect("a type").to_owned()
}

#[tokio::test]
async fn bad_parameters_are_validation_failures_naming_them() {
    let server = Server::start();
    let head = server.receive("mug", 1).await;

    let details = server.get("/v1/events?types=order_placed,order_teleported").await;
    let details = details.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "types");
    // The engine's own records are not an event type a client may ask for.
    for record_kind in ["command_accepted", "decision"] {
        let details = server.get(&format!("/v1/events?types={record_kind}")).await;
        let details = details.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(details["field"], "types");
    }

    let beyond = format!("/v1/events?from={}", head + 1);
    let details =
        server.get(&beyond).await.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "from");
    let details = server.get("/v1/events?from=minus-one").await;
    let details = details.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "from");

    let mut request = support::get("/v1/events", Some(&server.token));
    request.headers_mut().insert("last-event-id", "seven".parse().expect("a header value"));
    let details = server.call(request).await;
    let details = details.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "Last-Event-ID");

    // An id the log has not reached is named as the client sent it, not as the `from` it
    // stands for.
    let mut request = support::get("/v1/events", Some(&server.token));
    request.headers_mut().insert("last-event-id", head.into());
    let reply = server.call(request).await;
    let details = reply.error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(details["field"], "Last-Event-ID");
    let message = reply.json()["error"]["message"].as_str().expect("a message").to_owned();
    assert!(message.contains(&format!("Last-Event-ID {head} ")), "{message}");
    assert!(!message.contains(&(head + 1).to_string()), "{message}");

    server
        .call(support::get("/v1/events", None))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
}

/// Events committed while a client never reads: more than its buffer holds, with room to spare
/// for what the socket and the HTTP layer buffer on the way.
const ORDERS: usize = 240;
const LINES: usize = 50;
const _: () = assert!(ORDERS * (LINES + 1) > 2 * orderly_server::api::CLIENT_BUFFER);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_up_no_command_and_is_cut_off() {
    let server = Server::configured(|config| config.stream_patience = PATIENCE);
    let client = Client::to(serve_with_small_send_buffers(&server).await);
    let (skus, start) = stocked(&server).await;
    let slow = never_reading(client.address, &server.token, start).await;
    let mut reading = client.stream(&server.token, &format!("?from={start}")).await;

    // The reading client reads as events come, on its own task.
    let reader = tokio::spawn(async move {
        let mut positions = Vec::new();
        while let Some(message) = reading.next(Duration::from_secs(20)).await {
            positions.push(message.data["position"].as_u64().expect("a position"));
            if positions.len() == ORDERS * (LINES + 1) {
                break;
            }
        }
        positions
    });

    let lines: Vec<(&str, u64)> = skus.iter().map(|sku| (sku.as_str(), 1)).collect();
    let mut slowest = Duration::ZERO;
    let began = Instant::now();
    for n in 0..ORDERS {
        let sent = Instant::now();
        server.place(&format!("o-{n}"), "c-1", &lines).await;
        slowest = slowest.max(sent.elapsed());
    }
    let events = ORDERS * (LINES + 1);
    assert!(slowest < Duration::from_secs(2), "a command waited {slowest:?}");
    assert!(began.elapsed() < Duration::from_secs(20), "commits took {:?}", began.elapsed());

    let received = reader.await.expect("the reader ends");
    let committed = committed_since(&server, start);
    assert_eq!(committed.len(), events);
    assert_eq!(received, committed, "the reading client got every event, in order");

    // The slow client gets what was buffered for it, in order, then the end of the stream
    // (once it has taken nothing for the stream's patience).
    tokio::time::sleep(PATIENCE * 2).await;
    let got = read_to_end(slow).await;
    assert!(!got.is_empty(), "the slow client got nothing");
    assert_eq!(got, committed[..got.len()], "the slow client's events are a prefix");
    assert!(got.len() < events, "the slow client was never cut off ({} events)", got.len());
    assert!(got.len() >= orderly_server::api::CLIENT_BUFFER, "cut off after {} events", got.len());
}

/// A client that stopped reading is cut off by the server: its connection is closed once the
/// server's writes to it have waited the idle timeout, and the tenant's stream is free again
/// only then (the stream slot went with the reader thread, while the connection, and what was
/// buffered for it, stayed for as long as the client held on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_loses_its_connection_and_then_its_stream() {
    const IDLE: Duration = Duration::from_secs(5);
    let server = Server::configured(|config| {
        config.stream_patience = PATIENCE;
        config.idle_timeout = IDLE;
        config.streams_per_tenant = 1;
    });
    let address = serve_with_small_send_buffers(&server).await;
    let (skus, start) = stocked(&server).await;
    let lines: Vec<(&str, u64)> = skus.iter().map(|sku| (sku.as_str(), 1)).collect();
    for n in 0..ORDERS {
        server.place(&format!("o-{n}"), "c-1", &lines).await;
    }
    // The history fills the sockets at once, then the stream's buffer: the reader gives up
    // after its patience, the server's writes after the idle timeout.
    let opened = Instant::now();
    let slow = never_reading(address, &server.token, start).await;
    tokio::time::sleep(PATIENCE * 5 / 2).await;
    let second = status_of_a_stream(address, &server.token).await;
    assert!(opened.elapsed() < IDLE, "too slow to tell: {:?}", opened.elapsed());
    assert_eq!(second, "HTTP/1.1 429", "a second stream while the first's response is open");
    tokio::time::sleep((IDLE + PATIENCE * 2).saturating_sub(opened.elapsed())).await;
    assert_eq!(status_of_a_stream(address, &server.token).await, "HTTP/1.1 200");
    // What reached the client is what the sockets held, then the connection's end: the events
    // buffered for it in the server went with it, and the body was never finished.
    let bytes = tokio::task::spawn_blocking(move || {
        let mut slow = slow;
        slow.set_read_timeout(Some(WITHIN)).expect("a read timeout");
        let mut bytes = Vec::new();
        match slow.read_to_end(&mut bytes) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        bytes
    })
    .await
    .expect("the reader ends");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(200)]);
    assert!(!text.ends_with("\r\n0\r\n\r\n"), "the stream was ended, not cut");
    let events = text.matches("data:").count();
    assert!(events < orderly_server::api::CLIENT_BUFFER, "{events} events reached the client");
}

/// The status line of an answer to a new event stream request of `token`'s tenant.
async fn status_of_a_stream(address: SocketAddr, token: &str) -> String {
    let mut stream = never_reading(address, token, 0).await;
    tokio::task::spawn_blocking(move || {
        stream.set_read_timeout(Some(WITHIN)).expect("a read timeout");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("a status line");
        String::from_utf8_lossy(&head).into_owned()
    })
    .await
    .expect("the reader ends")
}

/// Stocks the [`LINES`] SKUs an order of these tests holds; gives them and the log's head
/// after them, where the tests' streams start.
async fn stocked(server: &Server) -> (Vec<String>, u64) {
    let skus: Vec<String> = (0..LINES).map(|n| format!("sku-{n}")).collect();
    for sku in &skus {
        server.receive(sku, 1_000_000).await;
    }
    (skus, server.app.node().expect("open").engine().head().0)
}

/// The positions of the tenant's events from `start` on, as the log holds them.
fn committed_since(server: &Server, start: u64) -> Vec<u64> {
    support::log_events(&server.app, support::TENANT)
        .iter()
        .map(|e| e.position.0)
        .filter(|p| *p >= start)
        .collect()
}

/// How long the streams of these tests wait for a client that takes nothing.
const PATIENCE: Duration = Duration::from_secs(1);

/// A client resuming far behind the head (several buffers of history) reads slower than the
/// server reads the log, but it reads: it gets every event, in order, and is not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_catching_up_on_a_long_history_gets_all_of_it() {
    let server = Server::configured(|config| config.stream_patience = PATIENCE);
    let client = Client::to(serve_with_small_send_buffers(&server).await);
    let (skus, start) = stocked(&server).await;
    let lines: Vec<(&str, u64)> = skus.iter().map(|sku| (sku.as_str(), 1)).collect();
    for n in 0..ORDERS {
        server.place(&format!("o-{n}"), "c-1", &lines).await;
    }
    let events = ORDERS * (LINES + 1);
    let mut history = client.stream(&server.token, &format!("?from={start}")).await;
    let mut positions = Vec::with_capacity(events);
    while positions.len() < events {
        let Some(message) = history.next(Duration::from_secs(20)).await else { break };
        positions.push(message.data["position"].as_u64().expect("a position"));
        // A client that pauses now and then, longer than the patience in all.
        if positions.len() % 1_000 == 0 {
            tokio::time::sleep(PATIENCE / 10).await;
        }
    }
    let committed = committed_since(&server, start);
    assert_eq!(positions.len(), events, "the client was cut off after {} events", positions.len());
    assert_eq!(positions, committed, "every event of the history, in order");
}

/// Serves `server` like [`support::serve`], but with small socket send buffers. On loopback
/// the kernel grows a send buffer to megabytes for a client that does not read; a small
/// fixed one makes the server's own buffer for the client fill, as it would on a real
/// network.
async fn serve_with_small_send_buffers(server: &Server) -> SocketAddr {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_send_buffer_size(16 * 1024).expect("a small send buffer");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bound");
    let listener = socket.listen(64).expect("listening");
    let address = listener.local_addr().expect("an address");
    let (router, idle) = (server.app.router(), server.app.config().idle_timeout);
    let forever = std::future::pending();
    tokio::spawn(orderly_server::connections::serve(listener, router, idle, forever));
    address
}

/// Asks for the event stream from `from` and reads nothing. The socket's receive buffer is
/// made small, so that the kernel holds little for the client and the server's buffer for it
/// fills.
async fn never_reading(address: SocketAddr, token: &str, from: u64) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let stream = socket.connect(address).await.expect("connected");
    let mut stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    let request = format!(
        "GET /v1/events?from={from} HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("the request is sent");
    stream
}

/// Reads a response of [`never_reading`] to its end (bounded) and returns the positions of
/// its events.
async fn read_to_end(mut stream: TcpStream) -> Vec<u64> {
    stream.set_read_timeout(Some(WITHIN)).expect("a read timeout");
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        // A timeout here is a stream the server never ended.
        stream.read_to_end(&mut bytes).expect("the server ends the stream");
        bytes
    })
    .await
    .expect("the reader ends");
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // The chunked body, unframed.
    let mut body = Vec::new();
    let mut rest = &bytes[head_end + 4..];
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
        let size = std::str::from_utf8(&rest[..line_end]).expect("ASCII");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    let text = String::from_utf8(body).expect("UTF-8 events");
    let positions: Vec<u64> = text
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|line| line.strip_prefix("data:")))
        .map(|data| {
            let event: serde_json::Value = serde_json::from_str(data.trim()).expect("JSON data");
            event["position"].as_u64().expect("a position")
        })
        .collect();
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_tenant_are_capped() {
    let server = Server::configured(|config| config.streams_per_tenant = 2);
    let globex = server.add_tenant("globex");
    let client = Client::of(&server).await;
    let first = client.stream(&server.token, "").await;
    let second = client.stream(&server.token, "").await;

    let third = client.events(&server.token, "").send().await.expect("an answer");
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await.expect("JSON");
    assert_eq!(support::error_code(&body), "too_many_streams");
    // The KPI stream counts too; another tenant has its own streams.
    let kpi = client.http.get(format!("{}/v1/kpi/stream", client.base)).bearer_auth(&server.token);
    assert_eq!(kpi.send().await.expect("an answer").status(), StatusCode::TOO_MANY_REQUESTS);
    let theirs = client.stream(&globex, "").await;

    // Closing one frees its place, once the server has noticed.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _third = loop {
        let reply = client.events(&server.token, "").send().await.expect("an answer");
        if reply.status() == StatusCode::OK {
            break reply;
        }
        assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the closed stream's place was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop((second, theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_opens_event_streams_at_most_its_cap_at_once_then_one_a_second() {
    let server = Server::configured(|config| config.streams_per_tenant = 2);
    let client = Client::of(&server).await;
    let open =
        || async { client.events(&server.token, "?from=0").send().await.expect("an answer") };
    // Two opened and closed at once, as a client reconnecting in a loop would.
    for _ in 0..2 {
        assert_eq!(open().await.status(), StatusCode::OK);
    }
    // The third finds a place once the server has noticed the two closed (a few ms), and is
    // refused for its rate.
    let body = loop {
        let third = open().await;
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(third.headers().contains_key("retry-after"));
        let body: serde_json::Value = third.json().await.expect("JSON");
        if support::error_code(&body) != "too_many_streams" {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(support::error_code(&body), "rate_limited", "{body}");
    // The tenant's dashboard is not kept out: a KPI stream shares figures read once a second.
    let kpi = client.http.get(format!("{}/v1/kpi/stream", client.base)).bearer_auth(&server.token);
    assert_eq!(kpi.send().await.expect("an answer").status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(open().await.status(), StatusCode::OK, "one more a second later");
}
