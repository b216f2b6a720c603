//! A simulated gateway for demos, tests and benchmarks: configurable latency, decline rate and
//! outage windows, deterministic for a seed, and as strict about idempotency keys and amounts as
//! a real provider, so a flow that double-charges against it would double-charge for real.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use smol_str::SmolStr;
use tokio::time::Instant;

use super::gateway::{
    Authorization, AuthorizeRequest, BoxFuture, GatewayError, MoneyRequest, PaymentGateway,
};
use super::journal::{Entry, Failed, Journal};
use crate::domain::{Currency, GatewayId, InvalidValue, Money, OrderId, TenantId};

/// Basis points in a whole: a decline rate of `BASIS_POINTS` declines everything.
const BASIS_POINTS: u32 = 10_000;

/// A time window, relative to the gateway's creation, during which every call fails with
/// [`GatewayError::Unavailable`]: `from` inclusive, `until` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// Start of the outage, since the gateway was created.
    pub from: Duration,
    /// End of the outage (exclusive), since the gateway was created.
    pub until: Duration,
}

/// How a [`SimulatedGateway`] behaves. [`SimulatedGatewayConfig::new`] gives an instant,
/// always-approving, always-up gateway to adjust field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedGatewayConfig {
    /// The gateway's id.
    pub id: GatewayId,
    /// Time each call takes. Zero still yields once to the runtime, so callers see a real
    /// await point, as with any IO.
    pub latency: Duration,
    /// Share of authorizations declined, in basis points (0 to 10 000; 250 is 2.5%).
    pub decline_basis_points: u32,
    /// Windows during which the gateway is down.
    pub outages: Vec<Outage>,
    /// Picks which keys are declined; the same seed and key always give the same answer.
    pub seed: u64,
}

impl SimulatedGatewayConfig {
    /// No latency, no declines, no outages, seed 0.
    #[must_use]
    pub fn new(id: GatewayId) -> SimulatedGatewayConfig {
        SimulatedGatewayConfig {
            id,
            latency: Duration::ZERO,
            decline_basis_points: 0,
            outages: Vec::new(),
            seed: 0,
        }
    }
}

/// A [`PaymentGateway`] that moves no real money but keeps the books a real one would.
///
/// Whether an authorization is declined depends only on the seed and the idempotency key, so a
/// run replays exactly. Outcomes are remembered per key: a repeated key returns the first
/// outcome and moves nothing, and reusing a key for a different request is
/// [`GatewayError::Rejected`], as real providers do. A call during an outage fails before it is
/// recorded, so retrying it with the same key after the outage is safe.
///
/// [`SimulatedGateway::new`] keeps the books in memory (tests, benchmarks);
/// [`SimulatedGateway::keeping_books_in`] also in a file, so that they outlive the process as a
/// provider's do: a capture after a restart finds the authorization it quotes.
#[derive(Debug)]
pub struct SimulatedGateway {
    config: SimulatedGatewayConfig,
    started: Instant,
    down: AtomicBool,
    books: Mutex<Books>,
}

/// Everything the gateway remembers, under one lock so each call is atomic. Keyed with a fast
/// hash: the keys are the payments process's own (a stand-in for a provider, not a service
/// facing the internet).
#[derive(Debug, Default)]
struct Books {
    /// Authorizations by idempotency key. An approval's reference is `{gateway}:{key}`, so
    /// that one entry per key serves both the key's repeats and the calls that quote the
    /// reference: one map insert per authorization. Keys are kept inline (`SmolStr`, up to 23
    /// bytes, as the payments process's are), so that growing the map rehashes keys in its own
    /// entries rather than one heap string each.
    authorizations: FxHashMap<SmolStr, Authorized>,
    /// What an approval's reference starts with, before its key: the gateway's id and `:`.
    reference_prefix: String,
    /// Keys cancelled before any authorization under them: one that arrives later is refused.
    cancelled: FxHashMap<SmolStr, AuthorizeFingerprint>,
    /// Captures, voids and refunds by idempotency key, with their outcome.
    movements: FxHashMap<SmolStr, (Movement, Result<(), GatewayError>)>,
    /// The file every change is written to first, if the books are kept in one.
    journal: Option<Journal>,
    /// Why a failed write could not even be cut back out of the journal: until a later call
    /// cuts it back, no call changes the books (each fails as the gateway being unavailable),
    /// since the file may not hold them.
    broken: Option<String>,
    /// Whether the last write to the journal failed (see [`Books::record`]).
    failing: bool,
    calls: u64,
    approvals: u64,
    declines: u64,
    captured_minor: u64,
    refunded_minor: u64,
    voids: u64,
}

/// An authorization under one key.
#[derive(Debug)]
struct Authorized {
    /// The request that made it.
    first: AuthorizeFingerprint,
    /// The money it holds, if it was approved; `None` if declined.
    held: Option<Held>,
}

/// What an authorization key was first used for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AuthorizeFingerprint {
    tenant: TenantId,
    order: OrderId,
    amount: Money,
}

impl AuthorizeFingerprint {
    fn of(request: &AuthorizeRequest) -> AuthorizeFingerprint {
        AuthorizeFingerprint {
            tenant: request.tenant.clone(),
            order: request.order.clone(),
            amount: request.amount,
        }
    }
}

/// What a capture, void or refund key was first used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MovementKind {
    Capture,
    Void,
    Refund,
}

impl MovementKind {
    const ALL: [MovementKind; 3] =
        [MovementKind::Capture, MovementKind::Void, MovementKind::Refund];

    /// The name the journal writes.
    fn name(self) -> &'static str {
        match self {
            MovementKind::Capture => "capture",
            MovementKind::Void => "void",
            MovementKind::Refund => "refund",
        }
    }

    fn named(name: &str) -> Option<MovementKind> {
        MovementKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// An authorization request from the journal's text.
fn authorize_request(
    key: String,
    tenant: &str,
    order: &str,
    minor: u64,
    currency: &str,
) -> Result<AuthorizeRequest, InvalidValue> {
    Ok(AuthorizeRequest {
        idempotency_key: key,
        tenant: TenantId::new(tenant)?,
        order: OrderId::new(order)?,
        amount: Money::new(minor, Currency::new(currency)?),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Movement {
    kind: MovementKind,
    reference: String,
    amount: Money,
}

/// An approved authorization and what has happened to it since.
#[derive(Debug)]
struct Held {
    amount: Money,
    captured: u64,
    refunded: u64,
    voided: bool,
}

impl SimulatedGateway {
    /// A gateway whose outage windows count from now.
    ///
    /// # Panics
    /// If the decline rate is above 10 000 basis points or an outage ends before it starts.
    #[must_use]
    pub fn new(config: SimulatedGatewayConfig) -> SimulatedGateway {
        assert!(
            config.decline_basis_points <= BASIS_POINTS,
            "decline_basis_points is 0 to {BASIS_POINTS}, got {}",
            config.decline_basis_points
        );
        for outage in &config.outages {
            assert!(outage.from <= outage.until, "outage ends before it starts: {outage:?}");
        }
        let books = Books { reference_prefix: format!("{}:", config.id), ..Books::default() };
        SimulatedGateway {
            config,
            started: Instant::now(),
            down: AtomicBool::new(false),
            books: Mutex::new(books),
        }
    }

    /// A gateway whose books are kept in the file at `path` as well (created if missing):
    /// everything it did before, in an earlier process, is read back from it first.
    ///
    /// # Errors
    /// The file cannot be read or written, or holds a line that is not one of its calls (a
    /// last line cut short by a crash is dropped: that call was never answered).
    ///
    /// # Panics
    /// As [`SimulatedGateway::new`].
    pub fn keeping_books_in(config: SimulatedGatewayConfig, path: &Path) -> io::Result<Self> {
        let gateway = SimulatedGateway::new(config);
        let mut books = gateway.books();
        let journal = Journal::open(path, |entry| books.replay(entry))?;
        books.journal = Some(journal);
        drop(books);
        Ok(gateway)
    }

    /// The configuration the gateway was built with.
    #[must_use]
    pub fn config(&self) -> &SimulatedGatewayConfig {
        &self.config
    }

    /// Forces an outage (`true`) until called with `false`, on top of the configured windows.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Calls received since this gateway was made, including those that failed with an outage
    /// or were repeats (not kept in its books: a gateway made again from them counts anew).
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.books().calls
    }

    /// Authorizations approved, each key counted once.
    #[must_use]
    pub fn approvals(&self) -> u64 {
        self.books().approvals
    }

    /// Authorizations declined, each key counted once.
    #[must_use]
    pub fn declines(&self) -> u64 {
        self.books().declines
    }

    /// Sum of all captures in minor units (of whatever currency each was in).
    #[must_use]
    pub fn captured_total(&self) -> u64 {
        self.books().captured_minor
    }

    /// Sum of all refunds in minor units (of whatever currency each was in).
    #[must_use]
    pub fn refunded_total(&self) -> u64 {
        self.books().refunded_minor
    }

    /// Authorizations voided, by reference or by key.
    #[must_use]
    pub fn voids(&self) -> u64 {
        self.books().voids
    }

    /// Approved authorizations still holding the customer's money: neither captured nor
    /// voided.
    #[must_use]
    pub fn holding(&self) -> usize {
        let books = self.books();
        let held = books.authorizations.values().filter_map(|a| a.held.as_ref());
        held.filter(|held| held.captured == 0 && !held.voided).count()
    }

    /// Whether the gateway is declining this key; a pure function of the seed and the key.
    fn declines_key(&self, key: &str) -> bool {
        let roll = splitmix64(self.config.seed ^ fnv1a64(key.as_bytes()));
        roll % u64::from(BASIS_POINTS) < u64::from(self.config.decline_basis_points)
    }

    /// Waits out the latency, counts the call and fails it if the gateway is down.
    async fn arrive(&self) -> Result<(), GatewayError> {
        if self.config.latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.config.latency).await;
        }
        self.books().calls += 1;
        if self.down.load(Ordering::SeqCst) || self.in_outage() {
            return Err(GatewayError::Unavailable(format!(
                "simulated outage of {}",
                self.config.id
            )));
        }
        Ok(())
    }

    /// Whether a configured outage window is open now (the clock is read only if there are any).
    fn in_outage(&self) -> bool {
        if self.config.outages.is_empty() {
            return false;
        }
        let elapsed = Instant::now().saturating_duration_since(self.started);
        self.config.outages.iter().any(|o| o.from <= elapsed && elapsed < o.until)
    }

    fn authorize_now(&self, request: &AuthorizeRequest) -> Result<Authorization, GatewayError> {
        let declines = || self.declines_key(&request.idempotency_key);
        self.books().authorize(request, declines)
    }

    /// Voids what `request`'s key authorized, or bars the key if it authorized nothing yet.
    fn cancel_now(&self, request: &AuthorizeRequest) -> Result<(), GatewayError> {
        self.books().cancel(request)
    }

    /// Applies a capture, void or refund once per key; a repeated key returns the first outcome.
    fn move_money(&self, kind: MovementKind, request: &MoneyRequest) -> Result<(), GatewayError> {
        self.books().move_money(kind, request)
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Each call checks everything before changing anything, so a poisoned lock (a panic in
        // another test thread) still guards consistent books.
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Books {
    /// Authorizes under a new key (declined if `declines` says so) or answers a known key's
    /// first outcome.
    fn authorize(
        &mut self,
        request: &AuthorizeRequest,
        declines: impl FnOnce() -> bool,
    ) -> Result<Authorization, GatewayError> {
        let fingerprint = AuthorizeFingerprint::of(request);
        let key = request.idempotency_key.as_str();
        if let Some(authorized) = self.authorizations.get(key) {
            if authorized.first != fingerprint {
                return Err(reused_key(key));
            }
            return Ok(self.outcome(key, authorized));
        }
        if let Some(first) = self.cancelled.get(key) {
            if *first != fingerprint {
                return Err(reused_key(&request.idempotency_key));
            }
            return Err(rejected(format!(
                "authorization {:?} was cancelled",
                request.idempotency_key
            )));
        }
        if request.amount.minor == 0 {
            return Err(GatewayError::Rejected("cannot authorize a zero amount".to_owned()));
        }
        let approved = !declines();
        self.record(|| Entry::Authorize {
            key: request.idempotency_key.clone(),
            tenant: request.tenant.to_string(),
            order: request.order.to_string(),
            minor: request.amount.minor,
            currency: request.amount.currency.to_string(),
            approved,
        })?;
        let held = approved.then_some(Held {
            amount: request.amount,
            captured: 0,
            refunded: 0,
            voided: false,
        });
        if approved {
            self.approvals += 1;
        } else {
            self.declines += 1;
        }
        let authorized = Authorized { first: fingerprint, held };
        let outcome = self.outcome(key, &authorized);
        self.authorizations.insert(SmolStr::new(key), authorized);
        Ok(outcome)
    }

    /// What the authorization under `key` answered. The key is unique among authorizations,
    /// so it makes the reference unique too.
    fn outcome(&self, key: &str, authorized: &Authorized) -> Authorization {
        match authorized.held {
            Some(_) => {
                Authorization::Approved { reference: format!("{}{key}", self.reference_prefix) }
            }
            None => Authorization::Declined,
        }
    }

    /// The money held by the approval `reference` names, if this gateway made it.
    fn held_by(&mut self, reference: &str) -> Option<&mut Held> {
        let key = reference.strip_prefix(self.reference_prefix.as_str())?;
        self.authorizations.get_mut(key)?.held.as_mut()
    }

    /// Voids what `request`'s key authorized, or bars the key if it authorized nothing yet.
    fn cancel(&mut self, request: &AuthorizeRequest) -> Result<(), GatewayError> {
        let fingerprint = AuthorizeFingerprint::of(request);
        let key = request.idempotency_key.as_str();
        let held = match self.authorizations.get(key) {
            Some(authorized) if authorized.first != fingerprint => return Err(reused_key(key)),
            Some(Authorized { held: None, .. }) => return Ok(()),
            Some(Authorized { held: Some(held), .. }) => held,
            None => {
                return match self.cancelled.get(key) {
                    Some(first) if *first == fingerprint => Ok(()),
                    Some(_) => Err(reused_key(key)),
                    None => {
                        self.record(|| Entry::cancel(request))?;
                        self.cancelled.insert(SmolStr::new(key), fingerprint);
                        Ok(())
                    }
                };
            }
        };
        if held.captured > 0 {
            return Err(rejected(format!("authorization {key:?} was captured")));
        }
        if !held.voided {
            self.record(|| Entry::cancel(request))?;
            let authorized = self.authorizations.get_mut(key).expect("just found");
            authorized.held.as_mut().expect("approved").voided = true;
            self.voids += 1;
        }
        Ok(())
    }

    /// Applies a capture, void or refund once per key; a repeated key returns the first outcome.
    fn move_money(
        &mut self,
        kind: MovementKind,
        request: &MoneyRequest,
    ) -> Result<(), GatewayError> {
        let movement =
            Movement { kind, reference: request.reference.clone(), amount: request.amount };
        if let Some((first, outcome)) = self.movements.get(request.idempotency_key.as_str()) {
            if *first != movement {
                return Err(reused_key(&request.idempotency_key));
            }
            return outcome.clone();
        }
        self.record(|| Entry::Move {
            kind: kind.name().to_owned(),
            key: request.idempotency_key.clone(),
            reference: request.reference.clone(),
            minor: request.amount.minor,
            currency: request.amount.currency.to_string(),
        })?;
        let outcome = self.apply(&movement);
        self.movements.insert(SmolStr::new(&request.idempotency_key), (movement, outcome.clone()));
        outcome
    }

    /// Writes `entry` to the journal, if the books are kept in one, before the change it
    /// describes is made. A failed write fails this call (as the gateway being unavailable:
    /// retried, it may succeed); one that could not even be cut back out of the file fails
    /// every later change too, until a call cuts it back (a disk that refused for a moment).
    fn record(&mut self, entry: impl FnOnce() -> Entry) -> Result<(), GatewayError> {
        let Some(journal) = &mut self.journal else { return Ok(()) };
        if let Some(why) = &self.broken {
            if journal.cut_back().is_err() {
                return Err(GatewayError::Unavailable(format!("its books cannot be kept: {why}")));
            }
            self.broken = None;
        }
        let written = journal.append(&entry()).map_err(|failed| match failed {
            Failed::CutBack(why) => why,
            Failed::Damaged(why) => self.broken.insert(why).clone(),
        });
        // Said once when the writes start failing (a full disk: every authorization fails as
        // the gateway being unavailable, and the payments process declines the orders), and
        // once when they succeed again.
        let books = journal.path().display();
        match (&written, self.failing) {
            (Err(why), false) => {
                tracing::error!(%books, %why, "the simulated gateway cannot write its books: its calls fail as unavailable, and orders are declined, until it can");
            }
            (Ok(()), true) => {
                tracing::warn!(%books, "the simulated gateway writes its books again")
            }
            _ => {}
        }
        self.failing = written.is_err();
        written.map_err(|why| GatewayError::Unavailable(format!("its books cannot be kept: {why}")))
    }

    /// Makes again a call the journal holds (the journal is not open yet, so nothing is
    /// written). A call refused then is refused again, as it was: only an authorization the
    /// books cannot take means the file is not this gateway's.
    fn replay(&mut self, entry: Entry) -> Result<(), String> {
        let invalid = |e: InvalidValue| e.to_string();
        match entry {
            Entry::Authorize { key, tenant, order, minor, currency, approved } => {
                let request =
                    authorize_request(key, &tenant, &order, minor, &currency).map_err(invalid)?;
                self.authorize(&request, || !approved).map_err(|e| e.to_string())?;
            }
            Entry::Cancel { key, tenant, order, minor, currency } => {
                let request =
                    authorize_request(key, &tenant, &order, minor, &currency).map_err(invalid)?;
                let _ = self.cancel(&request);
            }
            Entry::Move { kind, key, reference, minor, currency } => {
                let kind = MovementKind::named(&kind).ok_or(format!("no movement {kind:?}"))?;
                let amount = Money::new(minor, Currency::new(&currency).map_err(invalid)?);
                let request = MoneyRequest { idempotency_key: key, reference, amount };
                let _ = self.move_money(kind, &request);
            }
        }
        Ok(())
    }

    /// Checks a movement against its authorization and applies it, all or nothing.
    fn apply(&mut self, movement: &Movement) -> Result<(), GatewayError> {
        let Some(held) = self.held_by(&movement.reference) else {
            return Err(rejected(format!("unknown reference {:?}", movement.reference)));
        };
        let amount = movement.amount;
        if amount.currency != held.amount.currency {
            return Err(rejected(format!(
                "currency {} differs from the authorization's {}",
                amount.currency, held.amount.currency
            )));
        }
        if held.voided {
            return Err(rejected(format!("authorization {:?} was voided", movement.reference)));
        }
        match movement.kind {
            MovementKind::Capture => {
                let left = held.amount.minor - held.captured;
                if amount.minor == 0 || amount.minor > left {
                    return Err(rejected(format!(
                        "capture of {} with {left} left to capture",
                        amount.minor
                    )));
                }
                held.captured += amount.minor;
                self.captured_minor = self.captured_minor.saturating_add(amount.minor);
            }
            MovementKind::Void => {
                if held.captured > 0 {
                    return Err(rejected("cannot void a captured authorization".to_owned()));
                }
                if amount.minor != held.amount.minor {
                    return Err(rejected(format!(
                        "void of {} for an authorization of {}",
                        amount.minor, held.amount.minor
                    )));
                }
                held.voided = true;
                self.voids += 1;
            }
            MovementKind::Refund => {
                let left = held.captured - held.refunded;
                if amount.minor == 0 || amount.minor > left {
                    return Err(rejected(format!(
                        "refund of {} with {left} left to refund",
                        amount.minor
                    )));
                }
                held.refunded += amount.minor;
                self.refunded_minor = self.refunded_minor.saturating_add(amount.minor);
            }
        }
        Ok(())
    }
}

impl PaymentGateway for SimulatedGateway {
    fn id(&self) -> &GatewayId {
        &self.config.id
    }

    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<Authorization, GatewayError>> {
        Box::pin(async move {
            self.arrive().await?;
            self.authorize_now(request)
        })
    }

    fn capture<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.arrive().await?;
            self.move_money(MovementKind::Capture, request)
        })
    }

    fn void<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.arrive().await?;
            self.move_money(MovementKind::Void, request)
        })
    }

    fn refund<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.arrive().await?;
            self.move_money(MovementKind::Refund, request)
        })
    }

    fn cancel_authorization<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.arrive().await?;
            self.cancel_now(request)
        })
    }
}

fn rejected(reason: String) -> GatewayError {
    GatewayError::Rejected(reason)
}

fn reused_key(key: &str) -> GatewayError {
    rejected(format!("idempotency key {key:?} was first used for a different request"))
}

/// FNV-1a: a fixed, portable hash of the key bytes (std's `DefaultHasher` may change between
/// Rust releases, which would change which keys a seed declines).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// SplitMix64's finalizer: spreads FNV's weak low bits and mixes in the seed, so the decline
/// roll is uniform even for keys that differ in one character.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    //! Proves the simulated gateway is deterministic per (seed, key), honours its decline rate
    //! and outage windows, and never moves money twice for one key.

    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::domain::Currency;

    fn eur(minor: u64) -> Money {
        Money::new(minor, Currency::new("EUR").unwrap())
    }

    fn config(decline_basis_points: u32, seed: u64) -> SimulatedGatewayConfig {
        SimulatedGatewayConfig {
            decline_basis_points,
            seed,
            ..SimulatedGatewayConfig::new(GatewayId::new("sim").unwrap())
        }
    }

    fn request(key: &str, minor: u64) -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: key.to_owned(),
            tenant: TenantId::new("t1").unwrap(),
            order: OrderId::new(&format!("o-{key}")).unwrap(),
            amount: eur(minor),
        }
    }

    fn money(key: &str, reference: &str, minor: u64) -> MoneyRequest {
        MoneyRequest {
            idempotency_key: key.to_owned(),
            reference: reference.to_owned(),
            amount: eur(minor),
        }
    }

    async fn approve(gateway: &SimulatedGateway, key: &str, minor: u64) -> String {
        match gateway.authorize(&request(key, minor)).await.unwrap() {
            Authorization::Approved { reference } => reference,
            Authorization::Declined => panic!("{key} declined"),
        }
    }

    #[tokio::test]
    async fn same_key_same_answer() {
        // Two gateways with one seed answer alike: the answer depends on nothing else.
        let a = SimulatedGateway::new(config(5_000, 7));
        let b = SimulatedGateway::new(config(5_000, 7));
        for i in 0..200 {
            let req = request(&format!("k{i}"), 1_000);
            let first = a.authorize(&req).await.unwrap();
            assert_eq!(a.authorize(&req).await.unwrap(), first, "repeat of k{i}");
            assert_eq!(b.authorize(&req).await.unwrap(), first, "other gateway, k{i}");
        }
        assert_eq!(a.approvals() + a.declines(), 200, "repeats are not new authorizations");
        assert_eq!(a.calls(), 400);
    }

    #[tokio::test]
    async fn another_seed_declines_other_keys() {
        let a = SimulatedGateway::new(config(5_000, 1));
        let b = SimulatedGateway::new(config(5_000, 2));
        let mut differ = 0;
        for i in 0..200 {
            let req = request(&format!("k{i}"), 1_000);
            if a.authorize(&req).await.unwrap() != b.authorize(&req).await.unwrap() {
                differ += 1;
            }
        }
        assert!(differ > 50, "the seed should matter: only {differ} of 200 answers differ");
    }

    #[tokio::test]
    async fn decline_rate_is_roughly_honoured() {
        // Random keys rather than a counter, so the hash is exercised on varied input.
        let mut rng = StdRng::seed_from_u64(42);
        for (basis_points, seed) in [(0, 3), (250, 4), (2_000, 5), (10_000, 6)] {
            let gateway = SimulatedGateway::new(config(basis_points, seed));
            for _ in 0..10_000 {
                let key = format!("{:016x}", rng.random::<u64>());
                gateway.authorize(&request(&key, 500)).await.unwrap();
            }
            // 10 000 keys at rate p: standard deviation at most 50 declines; allow 4 of them
            // (and 0 and 100% must be exact).
            let expected = u64::from(basis_points);
            let declines = gateway.declines();
            assert!(
                declines.abs_diff(expected) <= 200,
                "{basis_points} bp: {declines} declines of 10 000, expected about {expected}"
            );
        }
        let none = SimulatedGateway::new(config(0, 9));
        let all = SimulatedGateway::new(config(BASIS_POINTS, 9));
        for i in 0..1_000 {
            none.authorize(&request(&format!("k{i}"), 1)).await.unwrap();
            all.authorize(&request(&format!("k{i}"), 1)).await.unwrap();
        }
        assert_eq!((none.declines(), all.approvals()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn outage_windows_fail_every_call() {
        let outage = Outage { from: Duration::from_secs(10), until: Duration::from_secs(20) };
        let gateway =
            SimulatedGateway::new(SimulatedGatewayConfig { outages: vec![outage], ..config(0, 0) });
        let reference = approve(&gateway, "before", 100).await;

        tokio::time::advance(Duration::from_secs(10)).await;
        let during = gateway.authorize(&request("during", 100)).await;
        assert!(matches!(during, Err(GatewayError::Unavailable(_))), "{during:?}");
        let capture = gateway.capture(&money("cap", &reference, 100)).await;
        assert!(matches!(capture, Err(GatewayError::Unavailable(_))), "{capture:?}");
        assert_eq!(gateway.captured_total(), 0);

        tokio::time::advance(Duration::from_secs(10)).await;
        // The failed calls left no trace, so retrying them with the same keys works.
        approve(&gateway, "during", 100).await;
        gateway.capture(&money("cap", &reference, 100)).await.unwrap();
        assert_eq!(gateway.captured_total(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_the_answer() {
        let gateway = SimulatedGateway::new(SimulatedGatewayConfig {
            latency: Duration::from_millis(250),
            ..config(0, 0)
        });
        let start = Instant::now();
        approve(&gateway, "k", 100).await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn set_down_forces_an_outage() {
        let gateway = SimulatedGateway::new(config(0, 0));
        gateway.set_down(true);
        let result = gateway.authorize(&request("k", 100)).await;
        assert!(matches!(result, Err(GatewayError::Unavailable(_))), "{result:?}");
        gateway.set_down(false);
        approve(&gateway, "k", 100).await;
    }

    #[tokio::test]
    async fn a_repeated_capture_key_captures_once() {
        let gateway = SimulatedGateway::new(config(0, 0));
        let reference = approve(&gateway, "auth", 1_000).await;
        for _ in 0..3 {
            gateway.capture(&money("cap-1", &reference, 600)).await.unwrap();
        }
        assert_eq!(gateway.captured_total(), 600);
        // A second capture under a new key takes what is left, and no more.
        gateway.capture(&money("cap-2", &reference, 400)).await.unwrap();
        let over = gateway.capture(&money("cap-3", &reference, 1)).await;
        assert!(matches!(over, Err(GatewayError::Rejected(_))), "{over:?}");
        assert_eq!(gateway.captured_total(), 1_000);
    }

    #[tokio::test]
    async fn a_reused_key_for_another_request_is_rejected() {
        let gateway = SimulatedGateway::new(config(0, 0));
        let reference = approve(&gateway, "auth", 1_000).await;
        let other_amount = gateway.authorize(&request("auth", 999)).await;
        assert!(matches!(other_amount, Err(GatewayError::Rejected(_))), "{other_amount:?}");
        gateway.capture(&money("k", &reference, 100)).await.unwrap();
        let as_refund = gateway.refund(&money("k", &reference, 100)).await;
        assert!(matches!(as_refund, Err(GatewayError::Rejected(_))), "{as_refund:?}");
        assert_eq!((gateway.captured_total(), gateway.refunded_total()), (100, 0));
    }

    #[tokio::test]
    async fn money_movements_are_checked_against_the_authorization() {
        let gateway = SimulatedGateway::new(config(0, 0));
        let reference = approve(&gateway, "auth", 1_000).await;
        let rejected = |r: Result<(), GatewayError>| matches!(r, Err(GatewayError::Rejected(_)));

        assert!(rejected(gateway.capture(&money("c0", "nope", 100)).await), "unknown reference");
        // A reference names its gateway and its authorization's key: another gateway's, or
        // one naming a key this gateway never approved, holds nothing here.
        let elsewhere = format!("sim-b:{}", reference.split_once(':').unwrap().1);
        assert!(rejected(gateway.capture(&money("c0", &elsewhere, 100)).await), "{elsewhere}");
        let never = reference.replace("auth", "auth-9");
        assert!(rejected(gateway.capture(&money("c0", &never, 100)).await), "{never}");
        assert!(rejected(gateway.capture(&money("c1", &reference, 1_001)).await), "above auth");
        assert!(rejected(gateway.refund(&money("r0", &reference, 1)).await), "nothing captured");
        assert!(rejected(gateway.void(&money("v0", &reference, 999)).await), "partial void");

        gateway.capture(&money("c2", &reference, 700)).await.unwrap();
        assert!(rejected(gateway.void(&money("v1", &reference, 1_000)).await), "captured");
        gateway.refund(&money("r1", &reference, 700)).await.unwrap();
        assert!(rejected(gateway.refund(&money("r2", &reference, 1)).await), "all refunded");
        assert_eq!((gateway.captured_total(), gateway.refunded_total()), (700, 700));

        let other = approve(&gateway, "auth-2", 500).await;
        gateway.void(&money("v2", &other, 500)).await.unwrap();
        gateway.void(&money("v2", &other, 500)).await.unwrap();
        assert_eq!(gateway.voids(), 1, "a repeated void key voids once");
        assert!(rejected(gateway.capture(&money("c3", &other, 100)).await), "voided");
    }

    #[tokio::test]
    async fn a_cancelled_key_gives_up_its_authorization_or_bars_a_later_one() {
        let gateway = SimulatedGateway::new(config(0, 0));
        let rejected = |r: Result<(), GatewayError>| matches!(r, Err(GatewayError::Rejected(_)));
        approve(&gateway, "answered-late", 1_000).await;
        assert_eq!(gateway.holding(), 1);
        for _ in 0..2 {
            gateway.cancel_authorization(&request("answered-late", 1_000)).await.unwrap();
        }
        assert_eq!((gateway.holding(), gateway.voids()), (0, 1), "voided once");

        // Cancelled before the authorization arrived: it reserves nothing when it does.
        gateway.cancel_authorization(&request("arrives-late", 500)).await.unwrap();
        let late = gateway.authorize(&request("arrives-late", 500)).await;
        assert!(matches!(late, Err(GatewayError::Rejected(_))), "{late:?}");
        assert_eq!((gateway.holding(), gateway.approvals()), (0, 1));

        assert!(rejected(gateway.cancel_authorization(&request("arrives-late", 501)).await));
        let captured = approve(&gateway, "captured", 300).await;
        gateway.capture(&money("c", &captured, 300)).await.unwrap();
        assert!(rejected(gateway.cancel_authorization(&request("captured", 300)).await));
        assert_eq!(gateway.captured_total(), 300);
    }

    /// Books kept in a file outlive the gateway: one made again from the file knows every
    /// authorization, capture, refund, void and cancelled key of the one before, answers their
    /// keys with the first outcome, and goes on from there; whatever a half-declining seed
    /// decided is read back, not decided again.
    #[tokio::test]
    async fn books_kept_in_a_file_outlive_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.books");
        let open = || SimulatedGateway::keeping_books_in(config(5_000, 7), &path).unwrap();
        let gateway = open();
        let mut approved = Vec::new();
        let mut declined = Vec::new();
        for n in 0..20 {
            let key = format!("k{n}");
            match gateway.authorize(&request(&key, 1_000)).await.unwrap() {
                Authorization::Approved { reference } => approved.push((key, reference)),
                Authorization::Declined => declined.push(key),
            }
        }
        assert!(approved.len() >= 4 && declined.len() >= 4, "{approved:?} {declined:?}");
        let [(_, captured), (_, refunded), (voided_key, voided), (cancelled_key, _), ..] =
            &approved[..]
        else {
            unreachable!()
        };
        gateway.capture(&money("c1", captured, 400)).await.unwrap();
        gateway.capture(&money("c2", refunded, 1_000)).await.unwrap();
        gateway.refund(&money("r1", refunded, 300)).await.unwrap();
        gateway.void(&money("v1", voided, 1_000)).await.unwrap();
        gateway.cancel_authorization(&request(cancelled_key, 1_000)).await.unwrap();
        gateway.cancel_authorization(&request("never-came", 10)).await.unwrap();
        let refused = gateway.refund(&money("r-over", refunded, 5_000)).await;
        assert!(matches!(refused, Err(GatewayError::Rejected(_))));
        let books = |g: &SimulatedGateway| {
            (g.approvals(), g.declines(), g.captured_total(), g.refunded_total(), g.voids())
        };
        let before = books(&gateway);
        drop(gateway);

        let again = open();
        assert_eq!(books(&again), before, "the same books");
        for (key, reference) in &approved {
            let answer = again.authorize(&request(key, 1_000)).await.unwrap();
            assert_eq!(answer, Authorization::Approved { reference: reference.clone() });
        }
        for key in &declined {
            assert_eq!(
                again.authorize(&request(key, 1_000)).await.unwrap(),
                Authorization::Declined
            );
        }
        assert_eq!(books(&again), before, "repeated keys moved nothing");
        // What is left of each authorization is known: the rest of a partial capture, the
        // rest of a refund; a voided or cancelled one takes nothing; a refused key stays so.
        again.capture(&money("c3", captured, 600)).await.unwrap();
        assert!(again.capture(&money("c4", captured, 1)).await.is_err(), "all captured");
        again.refund(&money("r2", refunded, 700)).await.unwrap();
        assert!(again.capture(&money("c5", voided, 1)).await.is_err(), "{voided_key} voided");
        let late = again.authorize(&request("never-came", 10)).await;
        assert!(matches!(late, Err(GatewayError::Rejected(_))), "a cancelled key stays barred");
        let repeated = again.refund(&money("r-over", refunded, 5_000)).await;
        assert!(matches!(repeated, Err(GatewayError::Rejected(_))));
        assert_eq!(again.captured_total(), 2_000);
        assert_eq!(again.refunded_total(), 1_000);
    }

    /// A last line cut short (a crash in the middle of a write: that call was never answered)
    /// is dropped; any other damage is named, not skipped.
    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_other_damage_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.books");
        let gateway = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        approve(&gateway, "a", 100).await;
        approve(&gateway, "b", 100).await;
        drop(gateway);
        let whole = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let gateway = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        assert_eq!(gateway.approvals(), 1, "the torn authorization is not in the books");
        approve(&gateway, "c", 100).await;
        drop(gateway);
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines.lines().count(), 2, "written after the cut: {lines}");

        std::fs::write(&path, format!("{{\"call\":\"nothing\"}}\n{lines}")).unwrap();
        let damaged = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap_err();
        assert!(damaged.to_string().contains("line 1"), "{damaged}");
    }

    /// A torn last line may end inside a character of a key (any text): it is dropped too.
    #[tokio::test]
    async fn a_torn_last_line_ending_inside_a_character_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.books");
        let gateway = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        approve(&gateway, "a", 100).await;
        let accented = AuthorizeRequest { idempotency_key: "clé-é".into(), ..request("b", 100) };
        gateway.authorize(&accented).await.unwrap();
        drop(gateway);
        let bytes = std::fs::read(&path).unwrap();
        let inside = bytes.windows(2).rposition(|w| w == "é".as_bytes()).unwrap() + 1;
        std::fs::write(&path, &bytes[..inside]).unwrap();
        let gateway = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        assert_eq!(gateway.approvals(), 1);
    }

    /// One gateway per books file: a second, in this process or another, would interleave its
    /// lines with the first's.
    #[test]
    fn a_second_gateway_on_the_same_books_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.books");
        let first = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        let second = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap_err();
        assert!(second.to_string().contains("in use by another gateway"), "{second}");
        drop(first);
        SimulatedGateway::keeping_books_in(config(0, 0), &path).expect("free once it is dropped");
    }

    /// A write that fails (the disk full for a moment: here a file-size limit, in a child
    /// process of its own) fails its call alone, leaves no part of its line in the books, and
    /// the next call is written.
    #[test]
    fn a_write_that_fails_fails_only_its_own_call() {
        const CHILD: &str = "ORDERLY_TEST_FILE_SIZE_LIMIT";
        if std::env::var_os(CHILD).is_none() {
            let name = "payments::simulated::tests::a_write_that_fails_fails_only_its_own_call";
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&child.stdout);
            assert!(child.status.success() && said.contains("1 passed"), "{said}");
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sim.books");
            let gateway = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
            approve(&gateway, "a", 100).await;
            let len = std::fs::metadata(&path).unwrap().len();
            let mut was = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: plain syscalls, in a process that runs this test alone.
            let limit = |limit: libc::rlimit| unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const limit), 0);
            };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut was) }, 0);
            limit(libc::rlimit { rlim_cur: len + 10, ..was });
            let full = gateway.authorize(&request("b", 100)).await;
            assert!(matches!(full, Err(GatewayError::Unavailable(_))), "{full:?}");
            limit(was);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "nothing of it is left");
            approve(&gateway, "c", 100).await;
            drop(gateway);
            let again = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
            assert_eq!(again.approvals(), 2, "a and c");
        });
    }

    /// A write that failed and could not be cut back either (a file made immutable for a
    /// moment) left part of a line behind: the next call cuts it back and goes on, instead
    /// of the gateway refusing every call until a restart.
    #[tokio::test]
    async fn books_a_failed_cut_back_left_damaged_are_mended_by_the_next_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.books");
        let gateway = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        approve(&gateway, "a", 100).await;
        let len = std::fs::metadata(&path).unwrap().len();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, b"{\"call\":\"authorize\",\"key\":\"b").unwrap();
        let why = "cannot write sim.books: Operation not permitted, nor cut it back".to_owned();
        gateway.books().broken = Some(why);
        approve(&gateway, "c", 100).await;
        let books = std::fs::read_to_string(&path).unwrap();
        assert!(books.len() as u64 > len && !books.contains("\"b"), "{books}");
        drop(gateway);
        let again = SimulatedGateway::keeping_books_in(config(0, 0), &path).unwrap();
        assert_eq!(again.approvals(), 2, "a and c");
    }

    #[test]
    fn the_decline_hash_is_stable() {
        // Pinned values: if these change, every seeded run replays differently.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }
}
