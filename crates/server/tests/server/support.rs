//! What the tests share: a server on a temporary data folder called through its `Router`,
//! assertions on the one error shape, the log read straight, and a Server-Sent Events reader.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use orderly_core::Position;
use orderly_core::domain::TenantId;
use orderly_core::engine::CommittedEvent;
use orderly_server::app::{App, ServerConfig, Shared};
use orderly_server::tenants;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

/// The tenant every [`Server`] starts with.
pub const TENANT: &str = "acme";

/// A server on its own temporary data folder, node open, with tenant [`TENANT`].
pub struct Server {
    pub app: Shared,
    /// The bearer token of [`TENANT`].
    pub token: String,
    config: ServerConfig,
    // Dropped last: the node is shut down first (see `Drop`).
    dir: TempDir,
}

/// Small log segments, so that temporary folders stay small.
pub fn config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(dir.to_path_buf());
    config.node.engine.log.segment_size = 1 << 20;
    config
}

impl Server {
    /// The default configuration, without payments: orders stay `placed`.
    pub fn start() -> Server {
        Server::configured(|_| {})
    }

    /// With the simulated payments, so that placed orders get confirmed.
    pub fn with_payments() -> Server {
        Server::configured(|config| {
            config.simulated_gateways = true;
        })
    }

    /// The default configuration changed by `configure`.
    pub fn configured(configure: impl FnOnce(&mut ServerConfig)) -> Server {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let token = tenants::add(dir.path(), &tenant(TENANT)).expect("tenant added");
        let mut config = config(dir.path());
        configure(&mut config);
        let app = App::open(config.clone()).expect("the app opens");
        Server { app, token, config, dir }
    }

    /// The data folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Closes the app and opens it again on the same folder and configuration.
    pub fn restart(&mut self) {
        self.app.shutdown().expect("the app closes cleanly");
        self.app = App::open(self.config.clone()).expect("the app reopens");
    }

    /// Adds tenant `name` while the server runs and returns its token (the server rereads the
    /// tenants file when it meets a token it does not know).
    pub fn add_tenant(&self, name: &str) -> String {
        tenants::add(self.dir(), &tenant(name)).expect("tenant added")
    }

    /// Sends `request` through the router.
    pub async fn call(&self, request: Request<Body>) -> Reply {
        call(&self.app, request).await
    }

    /// `GET uri` with [`TENANT`]'s token.
    pub async fn get(&self, uri: &str) -> Reply {
        self.call(get(uri, Some(&self.token))).await
    }

    /// `POST uri` with [`TENANT`]'s token and `body` as JSON.
    pub async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.call(post(uri, Some(&self.token), body)).await
    }

    /// `POST uri` with [`TENANT`]'s token, `body` as JSON and an idempotency key.
    pub async fn post_keyed(&self, uri: &str, key: &str, body: &Value) -> Reply {
        let mut request = post(uri, Some(&self.token), body);
        request.headers_mut().insert("idempotency-key", key.parse().expect("a header value"));
        self.call(request).await
    }

    /// Receives `quantity` units of `sku`; returns the command's position.
    pub async fn receive(&self, sku: &str, quantity: u64) -> u64 {
        let uri = format!("/v1/inventory/{sku}/receive");
        position(&self.post(&uri, &json!({ "quantity": quantity })).await.ok(StatusCode::OK))
    }

    /// Places order `id` of `lines` (SKU, quantity; unit price 1000) for `customer`; returns
    /// the 201 body.
    pub async fn place(&self, id: &str, customer: &str, lines: &[(&str, u64)]) -> Value {
        self.post("/v1/orders", &order(Some(id), customer, lines)).await.ok(StatusCode::CREATED)
    }

    /// Polls `GET /v1/orders/{id}` (bounded) until the order has `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = self.get(&format!("/v1/orders/{id}")).await;
            // The read model may not have the order yet.
            let body = match reply.status {
                StatusCode::NOT_FOUND => reply.error(StatusCode::NOT_FOUND, "unknown_order"),
                _ => reply.ok(StatusCode::OK),
            };
            if body["status"] == status {
                return body;
            }
            assert!(Instant::now() < deadline, "order {id} never became {status}: {body}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that failed may leave anything behind; one that passed checked what it needs.
        let _ = self.app.shutdown();
    }
}

/// `name` as a tenant id.
pub fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("a valid tenant name")
}

/// The body of placing an order.
pub fn order(id: Option<&str>, customer: &str, lines: &[(&str, u64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity, "unit_price": 1000 }))
        .collect();
    let mut body = json!({ "customer_id": customer, "currency": "EUR", "lines": lines });
    if let Some(id) = id {
        body["order_id"] = json!(id);
    }
    body
}

/// The `position` field of a command's answer.
pub fn position(body: &Value) -> u64 {
    body["position"].as_u64().unwrap_or_else(|| panic!("no position in {body}"))
}

/// `GET uri`, with a bearer token if given.
pub fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    request(Method::GET, uri, token).body(Body::empty()).expect("a request")
}

/// `POST uri` with `body` as JSON, with a bearer token if given.
pub fn post(uri: &str, token: Option<&str>, body: &Value) -> Request<Body> {
    request(Method::POST, uri, token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request")
}

/// A request builder for `method` and `uri`, with a bearer token if given.
pub fn request(method: Method, uri: &str, token: Option<&str>) -> axum::http::request::Builder {
    let builder = Request::builder().method(method).uri(uri);
    match token {
        Some(token) => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
        None => builder,
    }
}

/// Sends `request` through `app`'s router.
pub async fn call(app: &Shared, request: Request<Body>) -> Reply {
    reply(app.router().oneshot(request).await.expect("the router is infallible")).await
}

/// `response` with its body read.
pub async fn reply(response: axum::response::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("the body is read").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
    Reply { status, headers, text }
}

/// A response, its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {:?}", self.status, self.text))
    }

    /// Asserts `status` and returns the JSON body.
    #[track_caller]
    pub fn ok(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        self.json()
    }

    /// Asserts an error answer with `status` and `code` in the one shape; returns its details.
    #[track_caller]
    pub fn error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        let body = self.json();
        assert_eq!(error_code(&body), code, "unexpected code: {body}");
        body["error"]["details"].clone()
    }

    /// Asserts a `Retry-After` header of a whole number of seconds, at least 1.
    #[track_caller]
    pub fn assert_retry_after(&self) {
        let after = self.headers.get(header::RETRY_AFTER).expect("a Retry-After header");
        let seconds: u64 = after.to_str().expect("ASCII").parse().expect("whole seconds");
        assert!(seconds >= 1, "Retry-After {seconds}");
    }

    /// Whether the header `idempotent-replayed: true` is set.
    pub fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some_and(|value| value == "true")
    }
}

/// Asserts `body` is in the one error shape — `{"error":{"code","message","details"}}` and
/// nothing else — and returns its code.
#[track_caller]
pub fn error_code(body: &Value) -> &str {
    let top = body.as_object().unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(top.len(), 1, "more than `error` at the top: {body}");
    let error = body["error"].as_object().unwrap_or_else(|| panic!("no error object: {body}"));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "details", "message"], "{body}");
    let code = error["code"].as_str().unwrap_or_else(|| panic!("code is not a string: {body}"));
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "code is not snake_case: {body}"
    );
    let message = error["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"));
    assert!(!message.is_empty(), "empty message: {body}");
    assert!(error["details"].is_object(), "details is not an object: {body}");
    code
}

/// Serves `app` on a real socket on 127.0.0.1; returns its address. The server runs until the
/// test's runtime ends.
pub async fn serve(app: &Shared) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let address = listener.local_addr().expect("an address");
    let (router, idle) = (app.router(), app.config().idle_timeout);
    let forever = std::future::pending();
    tokio::spawn(orderly_server::connections::serve(listener, router, idle, forever));
    address
}

/// Every domain event of `tenant` in the log, in commit order, read straight from the log.
pub fn log_events(app: &Shared, tenant: &str) -> Vec<CommittedEvent> {
    let node = app.node().expect("the node is open");
    let tenant = self::tenant(tenant);
    let mut events = Vec::new();
    for record in node.engine().log().read_from(Position(0)) {
        let record = record.expect("the log reads");
        let decoded = CommittedEvent::decode_record(&record).expect("records decode");
        events.extend(decoded.into_iter().filter(|event| event.tenant == tenant));
    }
    events
}

/// An open Server-Sent Events stream, read from a real socket.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// The last `id:` received, also of an event without data (as a browser keeps it, to send
    /// back as `Last-Event-ID`).
    pub last_id: Option<u64>,
}

/// One Server-Sent Event.
#[derive(Debug)]
pub struct Message {
    /// Its `id:`, if it has one.
    pub id: Option<u64>,
    /// Its `data:`, as JSON.
    pub data: Value,
}

impl EventStream {
    /// Sends `request` and asserts it opens an event stream.
    pub async fn open(request: reqwest::RequestBuilder) -> EventStream {
        let response = request.send().await.expect("an answer");
        if response.status() != StatusCode::OK {
            let status = response.status();
            panic!("no stream: {status} {}", response.text().await.unwrap_or_default());
        }
        let kind = response.headers().get(header::CONTENT_TYPE).expect("a content type");
        assert_eq!(kind.to_str().ok(), Some("text/event-stream"));
        EventStream { response, buffer: Vec::new(), last_id: None }
    }

    /// The next event (comments such as keep-alives, and ids alone, are skipped), or `None`
    /// once the server has ended the stream. Panics when nothing comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(message) = self.next_block(deadline, within).await? {
                return Some(message);
            }
        }
    }

    /// The next block of lines: `Some(None)` for one without data, `None` once the server has
    /// ended the stream. Panics when nothing comes by `deadline`.
    async fn next_block(
        &mut self,
        deadline: tokio::time::Instant,
        within: Duration,
    ) -> Option<Option<Message>> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let (id, message) = parse_event(&block);
                self.last_id = id.or(self.last_id);
                return Some(message);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => panic!("no event within {within:?}"),
                Ok(Err(e)) => panic!("the stream broke: {e}"),
                Ok(Ok(None)) => {
                    assert!(
                        self.buffer.is_empty(),
                        "a partial event at the end: {:?}",
                        self.buffer
                    );
                    return None;
                }
                Ok(Ok(Some(bytes))) => self.buffer.extend_from_slice(&bytes),
            }
        }
    }

    /// The next event, which must come `within`.
    pub async fn expect(&mut self, within: Duration) -> Message {
        self.next(within).await.expect("an event, not the end of the stream")
    }

    /// Reads until the stream has named `position` (or one past it) as its last id, which must
    /// come `within`, with no event that has data.
    pub async fn expect_named(&mut self, position: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.last_id.is_none_or(|id| id < position) {
            match self.next_block(deadline, within).await {
                Some(None) => {}
                Some(Some(message)) => {
                    panic!("an event, where ids alone were expected: {message:?}")
                }
                None => panic!("the stream ended"),
            }
        }
    }
}

/// One event block (lines up to a blank line): its id, and the event if it has data (`None`
/// for a comment, or an id alone).
fn parse_event(block: &[u8]) -> (Option<u64>, Option<Message>) {
    let text = std::str::from_utf8(block).expect("UTF-8 events");
    let (mut id, mut data) = (None, None::<String>);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().parse().expect("a numeric id"));
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        } else {
            assert!(line.is_empty() || line.starts_with(':'), "unexpected line {line:?}");
        }
    }
    let Some(data) = data else { return (id, None) };
    let data =
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("data not JSON ({e}): {data}"));
    (id, Some(Message { id, data }))
}

/// The `orderly` binary of this build.
pub const BINARY: &str = env!("CARGO_BIN_EXE_orderly");

/// A running `orderly serve` (the real binary); killed when dropped.
pub struct Running {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Running {
    /// Starts `orderly serve` on `data` and waits (bounded) until it is ready.
    pub async fn start(data: &Path) -> Running {
        let mut child = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (address_tx, address_rx) = mpsc::channel();
        // Reads stderr to its end, so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = listening_address(&line)
                    && let Some(tx) = address_tx.take()
                {
                    let _ = tx.send(address);
                }
            }
        });
        let address =
            tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(20)))
                .await
                .expect("the reader ends")
                .expect("the server logs `listening on http://ADDR`");
        let running = Running { child, address };
        running.wait_ready().await;
        running
    }

    /// The URL of `path` on the server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(reply) = client.get(self.url("/readyz")).send().await {
                if reply.status() == StatusCode::OK {
                    return;
                }
                assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE, "readyz");
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL sent");
        let status = self.child.wait().expect("the child is reaped");
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way leaves no server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of a `listening on http://ADDR` log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    let end = rest.find(|c: char| c.is_whitespace() || c == '\u{1b}').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The demo tenant's token, as the first start wrote it.
pub fn demo_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("demo.token")).expect("demo.token")
}
