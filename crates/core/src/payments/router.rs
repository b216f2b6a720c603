//! Picks a gateway per payment: among those that take the currency and whose circuit breaker
//! allows a call, the most reliable lately, then the cheapest, then the first configured.
//!
//! Reliability comes first because a failed call costs a customer's wait and a retry, which is
//! worth more than a fee difference; but it is compared in bands, so that a gateway that
//! answered 99% of calls is not passed over for one at 100% that charges more.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use super::gateway::{Authorization, AuthorizeRequest, GatewayError, PaymentGateway};
use crate::domain::{Currency, GatewayId, Money};

/// What a gateway charges for a payment in one currency: `fixed_minor` plus `basis_points`
/// ten-thousandths of the amount, in the payment's minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fee {
    /// The currency of payments this fee applies to.
    pub currency: Currency,
    /// Charged on every payment, in minor units.
    pub fixed_minor: u64,
    /// Charged per 10 000 minor units of the amount (rounded down).
    pub basis_points: u32,
}

impl Fee {
    /// The fee for a payment of `amount_minor`: `fixed + amount * bp / 10 000`, in integers,
    /// saturating at `u64::MAX` rather than wrapping.
    #[must_use]
    pub fn cost(&self, amount_minor: u64) -> u64 {
        // u128 cannot overflow here: a u64 times a u32 fits.
        let variable = u128::from(amount_minor) * u128::from(self.basis_points) / 10_000;
        u64::try_from(variable).map_or(u64::MAX, |v| v.saturating_add(self.fixed_minor))
    }
}

/// One gateway the router may use, with its fees and the currencies it takes.
#[derive(Clone, Debug)]
pub struct Route {
    /// The gateway.
    pub gateway: Arc<dyn PaymentGateway>,
    /// Its fee per currency. A currency without a fee ranks as the most expensive, since the
    /// cost is unknown.
    pub fees: Vec<Fee>,
    /// The currencies it takes; `None` takes any.
    pub currencies: Option<Vec<Currency>>,
}

impl Route {
    fn accepts(&self, currency: Currency) -> bool {
        self.currencies.as_ref().is_none_or(|list| list.contains(&currency))
    }

    fn cost(&self, amount: &Money) -> u64 {
        self.fees
            .iter()
            .find(|fee| fee.currency == amount.currency)
            .map_or(u64::MAX, |fee| fee.cost(amount.minor))
    }
}

/// How the [`Router`] measures gateways. [`Default`] gives the `DEFAULT_*` constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// The circuit breaker in front of each gateway.
    pub breaker: BreakerConfig,
    /// Calls older than this no longer count towards the success rate, so a gateway that
    /// recovered is trusted again even if it got little traffic meanwhile.
    pub success_window: Duration,
    /// At most this many of the latest calls count towards the success rate.
    pub success_samples: u32,
    /// With fewer recent calls than this a gateway ranks as 100%: a handful of calls says more
    /// about luck than about the gateway, and one that is plainly down is the breaker's job.
    pub success_min_calls: u32,
    /// Width of a success-rate band, in percentage points (1 to 100).
    pub success_band_percent: u32,
    /// [`Router::authorize`] gives up on a call after this long, as a timeout, so a gateway
    /// that hangs trips its breaker like one that refuses.
    pub call_timeout: Duration,
}

impl RouterConfig {
    /// Default [`success_window`](Self::success_window): the last minute.
    pub const DEFAULT_SUCCESS_WINDOW: Duration = Duration::from_secs(60);
    /// Default [`success_samples`](Self::success_samples): the last 100 calls.
    pub const DEFAULT_SUCCESS_SAMPLES: u32 = 100;
    /// Default [`success_min_calls`](Self::success_min_calls): 10 calls, the breaker's
    /// [`BreakerConfig::DEFAULT_MIN_CALLS`].
    pub const DEFAULT_SUCCESS_MIN_CALLS: u32 = 10;
    /// Default [`success_band_percent`](Self::success_band_percent): 5 points.
    pub const DEFAULT_SUCCESS_BAND_PERCENT: u32 = 5;
    /// Default [`call_timeout`](Self::call_timeout): ten seconds, above any healthy
    /// authorization.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            breaker: BreakerConfig::default(),
            success_window: Self::DEFAULT_SUCCESS_WINDOW,
            success_samples: Self::DEFAULT_SUCCESS_SAMPLES,
            success_min_calls: Self::DEFAULT_SUCCESS_MIN_CALLS,
            success_band_percent: Self::DEFAULT_SUCCESS_BAND_PERCENT,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// What [`Router::authorize`] came to.
#[derive(Debug)]
#[must_use]
pub struct Routed {
    /// The first answer, approved or declined, with the gateway that gave it; or why none came.
    pub answer: Result<(GatewayId, Authorization), GatewayError>,
    /// Gateways that took the call and gave no answer in time, in the order tried: each may
    /// still have authorized under the request's key.
    pub timed_out: Vec<GatewayId>,
}

/// Routes payments over several gateways, each behind its own [`CircuitBreaker`].
///
/// [`candidates`](Router::candidates) orders the gateways that take the payment's currency and
/// whose breaker allows a call:
/// 1. by success-rate band, best first. The success rate is the share of recent calls (the last
///    [`success_samples`](RouterConfig::success_samples) within
///    [`success_window`](RouterConfig::success_window)) that got an answer; a gateway with
///    fewer than [`success_min_calls`](RouterConfig::success_min_calls) recent calls counts as
///    100%. Bands are
///    [`success_band_percent`](RouterConfig::success_band_percent) wide counted down from 100%,
///    so with 5 points (95%, 100%] is the first band and (90%, 95%] the second;
/// 2. then by [`Fee`] for the amount, cheapest first;
/// 3. then in configuration order.
///
/// Answers include declines: a decline is the customer's bank speaking, not the gateway
/// failing, so it neither lowers the success rate nor trips the breaker.
#[derive(Debug)]
pub struct Router {
    routes: Vec<RouteState>,
    config: RouterConfig,
}

#[derive(Debug)]
struct RouteState {
    route: Route,
    breaker: CircuitBreaker,
    /// Latest call outcomes.
    samples: Mutex<Samples>,
}

/// A gateway's latest call outcomes, with a running count of the answered ones, so that its
/// success rate costs no pass over them while every sample is recent (routing asks for it on
/// every payment).
#[derive(Debug, Default)]
struct Samples {
    /// When each call ended and whether it got an answer, oldest first by time: the window's
    /// expired calls are then always at the front.
    calls: VecDeque<(Instant, bool)>,
    /// How many of `calls` got an answer.
    answered: u64,
}

impl Samples {
    /// Adds a call that ended at `at`, keeping the latest `cap` by time.
    fn add(&mut self, at: Instant, answered: bool, cap: usize) {
        // Concurrent calls may be recorded a little out of time order: each goes where its
        // time puts it (nearly always the back).
        let index = self.calls.partition_point(|&(ended, _)| ended <= at);
        self.calls.insert(index, (at, answered));
        self.answered += u64::from(answered);
        while self.calls.len() > cap {
            if let Some((_, answered)) = self.calls.pop_front() {
                self.answered -= u64::from(answered);
            }
        }
    }

    /// Answered and total calls that ended after `cutoff` (every call without a cutoff).
    fn after(&self, cutoff: Option<Instant>) -> (u64, u64) {
        let (mut answered, mut calls) = (self.answered, self.calls.len() as u64);
        let Some(cutoff) = cutoff else { return (answered, calls) };
        if self.calls.back().is_none_or(|&(ended, _)| ended <= cutoff) {
            return (0, 0);
        }
        for &(_, ok) in self.calls.iter().take_while(|&&(ended, _)| ended <= cutoff) {
            answered -= u64::from(ok);
            calls -= 1;
        }
        (answered, calls)
    }
}

/// How a call's result counts for the gateway's health.
enum Health {
    Answered,
    NoAnswer,
    /// The call was never made.
    NotCalled,
}

fn health<T>(outcome: &Result<T, GatewayError>) -> Health {
    match outcome {
        // A rejection is an answer: the gateway is up, the request was wrong.
        Ok(_) | Err(GatewayError::Rejected(_)) => Health::Answered,
        Err(GatewayError::Unavailable(_) | GatewayError::Timeout) => Health::NoAnswer,
        Err(GatewayError::BreakerOpen) => Health::NotCalled,
    }
}

impl Router {
    /// A router over `routes`, ranked as described on [`Router`].
    ///
    /// # Panics
    /// If two routes share a gateway id, a route lists two fees for one currency, or the
    /// configuration cannot work (see [`CircuitBreaker::new`]; a zero sample count or a band
    /// outside 1 to 100 points). All are bugs in the configuration code.
    #[must_use]
    pub fn new(routes: Vec<Route>, config: RouterConfig) -> Router {
        assert!(config.success_samples >= 1, "router success_samples must be at least 1");
        assert!(
            config.success_min_calls <= config.success_samples,
            "router success_min_calls must not exceed success_samples"
        );
        assert!(
            (1..=100).contains(&config.success_band_percent),
            "router success_band_percent is 1 to 100, got {}",
            config.success_band_percent
        );
        let mut ids = HashSet::new();
        for route in &routes {
            let id = route.gateway.id();
            assert!(ids.insert(id.clone()), "two routes for gateway {id}");
            let mut currencies = HashSet::new();
            for fee in &route.fees {
                assert!(currencies.insert(fee.currency), "gateway {id}: two {} fees", fee.currency);
            }
        }
        // A probe may take as long as any call: until then it is under way, not lost.
        let breaker = BreakerConfig {
            trial_lapse: config.breaker.trial_lapse.max(config.call_timeout),
            ..config.breaker.clone()
        };
        let routes = routes
            .into_iter()
            .map(|route| RouteState {
                route,
                breaker: CircuitBreaker::new(breaker.clone()),
                samples: Mutex::new(Samples::default()),
            })
            .collect();
        Router { routes, config }
    }

    /// The configuration the router was built with.
    #[must_use]
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The ids of the configured gateways, in configuration order.
    pub fn gateway_ids(&self) -> impl Iterator<Item = GatewayId> + '_ {
        self.routes.iter().map(|state| state.route.gateway.id().clone())
    }

    /// The configured gateway with this id, for captures, voids and refunds, which must go to
    /// the gateway that authorized.
    #[must_use]
    pub fn gateway(&self, id: &GatewayId) -> Option<Arc<dyn PaymentGateway>> {
        self.find(id).map(|state| Arc::clone(&state.route.gateway))
    }

    /// The gateways to try for a payment of `amount`, best first (see [`Router`]).
    ///
    /// This takes a call permit from each returned gateway's breaker (which matters only for a
    /// half-open one): call them in order, stop at the first answer, and
    /// [`record`](Self::record) every call made. An unused half-open permit lapses after
    /// [`open_for`](BreakerConfig::open_for). [`authorize`](Self::authorize) does all of this
    /// and takes permits only for the calls it makes.
    pub fn candidates(&self, amount: &Money, now: Instant) -> Vec<Arc<dyn PaymentGateway>> {
        self.ranked(amount, now)
            .into_iter()
            .filter(|state| state.breaker.allow(now))
            .map(|state| Arc::clone(&state.route.gateway))
            .collect()
    }

    /// Records the outcome of a call to `gateway` (of any kind: authorize, capture, void,
    /// refund) at `now`, for its success rate and its breaker. An answer, including a decline
    /// or [`GatewayError::Rejected`], is a success; [`GatewayError::Unavailable`] and
    /// [`GatewayError::Timeout`] are failures; [`GatewayError::BreakerOpen`] made no call and
    /// is ignored. So is an id the router does not know, such as a gateway removed from the
    /// configuration while its calls were in flight.
    pub fn record<T>(&self, gateway: &GatewayId, outcome: &Result<T, GatewayError>, now: Instant) {
        let Some(state) = self.find(gateway) else { return };
        let answered = match health(outcome) {
            Health::Answered => true,
            Health::NoAnswer => false,
            Health::NotCalled => return,
        };
        if answered {
            state.breaker.record_success(now);
        } else {
            state.breaker.record_failure(now);
        }
        let cap = usize::try_from(self.config.success_samples).unwrap_or(usize::MAX);
        lock(&state.samples).add(now, answered, cap);
    }

    /// Authorizes through the best gateway that answers: tries the candidates in order, moving
    /// to the next when one gives no answer (each outcome is recorded), and returns the first
    /// answer, approved or declined, with the id of the gateway that gave it. A decline is final:
    /// another gateway would ask the same bank.
    ///
    /// Moving on after a [`GatewayError::Timeout`] may leave an authorization at the gateway that
    /// timed out: [`Routed::timed_out`] names those gateways, where the caller can give up the
    /// request's key ([`PaymentGateway::cancel_authorization`]) once it has recorded the outcome.
    ///
    /// Without an answer, [`Routed::answer`] is [`GatewayError::Rejected`] as soon as a gateway
    /// rejects the request or when no configured gateway takes the currency; otherwise the last
    /// gateway's error, or [`GatewayError::BreakerOpen`] if every breaker refused the call.
    pub async fn authorize(&self, request: &AuthorizeRequest, now: Instant) -> Routed {
        let mut timed_out = Vec::new();
        let answer = self.authorize_noting(request, now, &mut timed_out).await;
        Routed { answer, timed_out }
    }

    async fn authorize_noting(
        &self,
        request: &AuthorizeRequest,
        now: Instant,
        timed_out: &mut Vec<GatewayId>,
    ) -> Result<(GatewayId, Authorization), GatewayError> {
        let currency = request.amount.currency;
        if !self.routes.iter().any(|state| state.route.accepts(currency)) {
            return Err(GatewayError::Rejected(format!("no gateway takes {currency}")));
        }
        let mut last_error = GatewayError::BreakerOpen;
        // Calls take time; outcomes are stamped `now` plus the time measured since, so a slow
        // failure opens the breaker from when it ended while `now` stays the caller's time base.
        // Measured on tokio's clock so that paused-time tests see the same time as gateways.
        let began = tokio::time::Instant::now();
        // When the last call ended (the clock is read once a call).
        let mut at = now;
        // Ranked once up front: the order should not shift under the request as its own
        // failures come in.
        for state in self.ranked(&request.amount, now) {
            if !state.breaker.allow(at) {
                continue;
            }
            let gateway = &state.route.gateway;
            let outcome =
                match tokio::time::timeout(self.config.call_timeout, gateway.authorize(request))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => Err(GatewayError::Timeout),
                };
            at = now + began.elapsed();
            self.record(gateway.id(), &outcome, at);
            match outcome {
                Ok(answer) => return Ok((gateway.id().clone(), answer)),
                Err(error @ GatewayError::Rejected(_)) => return Err(error),
                Err(error) => {
                    if error == GatewayError::Timeout {
                        timed_out.push(gateway.id().clone());
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// The configured gateways that take `currency`, in configuration order: those that may
    /// hold an authorization in it.
    #[must_use]
    pub fn gateways_taking(&self, currency: Currency) -> Vec<Arc<dyn PaymentGateway>> {
        self.routes
            .iter()
            .filter(|state| state.route.accepts(currency))
            .map(|state| Arc::clone(&state.route.gateway))
            .collect()
    }

    /// The breaker state of `gateway` at `now`, or `None` for an id the router does not know.
    #[must_use]
    pub fn breaker_state(&self, gateway: &GatewayId, now: Instant) -> Option<BreakerState> {
        self.find(gateway).map(|state| state.breaker.state(now))
    }

    /// The recent success rate of `gateway` in whole percent (rounded down), as measured, even
    /// below [`success_min_calls`](RouterConfig::success_min_calls); 100 with no recent calls,
    /// and `None` for an id the router does not know.
    #[must_use]
    pub fn success_rate_percent(&self, gateway: &GatewayId, now: Instant) -> Option<u32> {
        self.find(gateway).map(|state| {
            let (answered, calls) = self.recent(state, now);
            if calls == 0 {
                return 100;
            }
            u32::try_from(answered * 100 / calls).expect("a share of calls is at most 100%")
        })
    }

    /// Routes taking the amount's currency and whose breaker is not open, best first; unlike
    /// `candidates` this takes no permits.
    fn ranked(&self, amount: &Money, now: Instant) -> Vec<&RouteState> {
        let mut ranked: Vec<(u64, u64, usize, &RouteState)> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, state)| state.route.accepts(amount.currency))
            .filter(|(_, state)| state.breaker.state(now) != BreakerState::Open)
            .map(|(index, state)| (self.band(state, now), state.route.cost(amount), index, state))
            .collect();
        ranked.sort_by_key(|&(band, cost, index, _)| (band, cost, index));
        ranked.into_iter().map(|(_, _, _, state)| state).collect()
    }

    /// The gateway's success-rate band: 0 for the best, counting the share of calls that got no
    /// answer in steps of `success_band_percent`, rounded down.
    fn band(&self, state: &RouteState, now: Instant) -> u64 {
        let (answered, calls) = self.recent(state, now);
        if calls == 0 || calls < u64::from(self.config.success_min_calls) {
            return 0;
        }
        // Exact rational floor: a failure share in [0%, 5%) is band 0, [5%, 10%) band 1, ...
        (calls - answered) * 100 / (calls * u64::from(self.config.success_band_percent))
    }

    /// Answered and total calls in the success window at `now`.
    fn recent(&self, state: &RouteState, now: Instant) -> (u64, u64) {
        // A sample is in the window when less than the window's length before `now`: after
        // the cutoff. Without a cutoff, `now` is closer than that to the clock's origin, so
        // every sample is.
        lock(&state.samples).after(now.checked_sub(self.config.success_window))
    }

    fn find(&self, id: &GatewayId) -> Option<&RouteState> {
        self.routes.iter().find(|state| state.route.gateway.id() == id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // An update (an insert, pops and their counts) cannot panic midway, so a poisoned lock
    // still guards consistent samples.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    //! Proves the routing rule (success-rate band, then fee for the amount, then configuration
    //! order) and that traffic leaves a failing gateway once its breaker opens and returns after
    //! it recovers.

    use super::*;
    use crate::domain::{OrderId, TenantId};
    use crate::payments::{SimulatedGateway, SimulatedGatewayConfig};

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn id(name: &str) -> GatewayId {
        GatewayId::new(name).unwrap()
    }

    fn sim(name: &str) -> Arc<SimulatedGateway> {
        Arc::new(SimulatedGateway::new(SimulatedGatewayConfig::new(id(name))))
    }

    fn route(gateway: &Arc<SimulatedGateway>, fixed_minor: u64, basis_points: u32) -> Route {
        Route {
            gateway: Arc::clone(gateway) as Arc<dyn PaymentGateway>,
            fees: vec![Fee { currency: eur(), fixed_minor, basis_points }],
            currencies: None,
        }
    }

    fn order(router: &Router, minor: u64, now: Instant) -> Vec<String> {
        let amount = Money::new(minor, eur());
        router.candidates(&amount, now).iter().map(|g| g.id().to_string()).collect()
    }

    fn request(key: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: key.to_owned(),
            tenant: TenantId::new("t1").unwrap(),
            order: OrderId::new(key).unwrap(),
            amount: Money::new(10_000, eur()),
        }
    }

    /// Records `answered` answers and `failed` failures, spread so the breaker stays closed.
    fn feed(router: &Router, gateway: &str, answered: u32, failed: u32, now: Instant) {
        let ok: Result<(), GatewayError> = Ok(());
        let down: Result<(), GatewayError> = Err(GatewayError::Unavailable("test".to_owned()));
        for _ in 0..answered {
            router.record(&id(gateway), &ok, now);
        }
        for _ in 0..failed {
            router.record(&id(gateway), &down, now);
            router.record(&id(gateway), &ok, now);
        }
    }

    #[test]
    fn fee_is_fixed_plus_basis_points_rounded_down() {
        let fee = Fee { currency: eur(), fixed_minor: 25, basis_points: 290 };
        assert_eq!(fee.cost(10_000), 25 + 290);
        assert_eq!(fee.cost(99), 25 + 2, "2.871 rounds down");
        assert_eq!(fee.cost(0), 25);
        let whole = Fee { fixed_minor: 1, basis_points: 10_000, ..fee };
        assert_eq!(whole.cost(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn prefers_the_higher_success_rate_over_the_lower_fee() {
        let (cheap, dear) = (sim("cheap"), sim("dear"));
        let router =
            Router::new(vec![route(&cheap, 0, 100), route(&dear, 0, 300)], RouterConfig::default());
        let t0 = Instant::now();
        assert_eq!(order(&router, 10_000, t0), ["cheap", "dear"]);
        // 8 of 10 answered: 80% is band 4, below the fresh gateway's 100%.
        feed(&router, "cheap", 6, 2, t0);
        assert_eq!(router.success_rate_percent(&id("cheap"), t0), Some(80));
        assert_eq!(router.breaker_state(&id("cheap"), t0), Some(BreakerState::Closed));
        assert_eq!(order(&router, 10_000, t0), ["dear", "cheap"]);
    }

    #[test]
    fn within_one_band_the_lower_fee_wins() {
        let (cheap, dear) = (sim("cheap"), sim("dear"));
        let router =
            Router::new(vec![route(&dear, 0, 300), route(&cheap, 0, 100)], RouterConfig::default());
        let t0 = Instant::now();
        // 1 failure in 50 calls: 98%, the same (95%, 100%] band as a perfect record.
        feed(&router, "cheap", 48, 1, t0);
        assert_eq!(router.success_rate_percent(&id("cheap"), t0), Some(98));
        assert_eq!(order(&router, 10_000, t0), ["cheap", "dear"]);
        // Exactly 95% is the next band down.
        feed(&router, "cheap", 0, 2, t0 + Duration::from_secs(1));
        assert_eq!(router.success_rate_percent(&id("cheap"), t0), Some(94));
        assert_eq!(order(&router, 10_000, t0), ["dear", "cheap"]);
    }

    #[test]
    fn the_fee_is_compared_for_the_payment_amount() {
        // Flat 30 cents against 1%: the percentage is cheaper below 30 EUR, dearer above.
        let (flat, percent) = (sim("flat"), sim("percent"));
        let router = Router::new(
            vec![route(&flat, 30, 0), route(&percent, 0, 100)],
            RouterConfig::default(),
        );
        let t0 = Instant::now();
        assert_eq!(order(&router, 1_000, t0), ["percent", "flat"]);
        assert_eq!(order(&router, 10_000, t0), ["flat", "percent"]);
        assert_eq!(order(&router, 3_000, t0), ["flat", "percent"], "a tie keeps config order");
    }

    #[test]
    fn only_gateways_taking_the_currency_are_candidates() {
        let (eur_only, any, no_fee) = (sim("eur-only"), sim("any"), sim("no-fee"));
        let usd = Currency::new("USD").unwrap();
        let router = Router::new(
            vec![
                Route { currencies: Some(vec![eur()]), ..route(&eur_only, 0, 0) },
                Route {
                    fees: vec![Fee { currency: usd, fixed_minor: 50, basis_points: 0 }],
                    ..route(&any, 0, 0)
                },
                Route { fees: vec![], ..route(&no_fee, 0, 0) },
            ],
            RouterConfig::default(),
        );
        let t0 = Instant::now();
        let usd_ids: Vec<_> = router
            .candidates(&Money::new(100, usd), t0)
            .iter()
            .map(|g| g.id().to_string())
            .collect();
        assert_eq!(usd_ids, ["any", "no-fee"], "an unknown fee ranks last");
        // Neither "any" (a USD fee only) nor "no-fee" has a EUR fee: a tie, in config order.
        assert_eq!(order(&router, 100, t0), ["eur-only", "any", "no-fee"]);
    }

    // Paused time: calls take no measured time, so outcomes are stamped exactly `t0`, `t1`, ...
    #[tokio::test(start_paused = true)]
    async fn traffic_moves_off_a_gateway_in_outage_and_back_after_it_recovers() {
        let (primary, backup) = (sim("primary"), sim("backup"));
        let router = Router::new(
            vec![route(&primary, 0, 100), route(&backup, 0, 300)],
            RouterConfig::default(),
        );
        let t0 = Instant::now();
        primary.set_down(true);
        let threshold = u64::from(BreakerConfig::DEFAULT_FAILURE_THRESHOLD);
        for i in 0..50 {
            let (gateway, answer) =
                router.authorize(&request(&format!("k{i}")), t0).await.answer.unwrap();
            assert_eq!(gateway, id("backup"), "payment k{i}");
            assert!(matches!(answer, Authorization::Approved { .. }));
        }
        // The primary's breaker opened after the threshold of failures; it got no more calls.
        assert_eq!(primary.calls(), threshold);
        assert_eq!(router.breaker_state(&id("primary"), t0), Some(BreakerState::Open));
        assert_eq!(order(&router, 10_000, t0), ["backup"]);
        assert_eq!(backup.approvals(), 50);

        // Past `open_for` the breaker lets one trial through to the still-down primary, which
        // fails it: open again, and the payment goes to the backup all the same.
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        let (gateway, _) = router.authorize(&request("k50"), t1).await.answer.unwrap();
        assert_eq!((gateway, primary.calls()), (id("backup"), threshold + 1));
        assert_eq!(router.breaker_state(&id("primary"), t1), Some(BreakerState::Open));

        // Recovered by the next trial, which closes the breaker: the cheaper primary is back.
        primary.set_down(false);
        let t2 = t1 + BreakerConfig::DEFAULT_OPEN_FOR;
        let (gateway, _) = router.authorize(&request("k51"), t2).await.answer.unwrap();
        assert_eq!(gateway, id("primary"));
        assert_eq!(router.breaker_state(&id("primary"), t2), Some(BreakerState::Closed));
        assert_eq!(backup.approvals(), 51);
    }

    #[tokio::test]
    async fn a_decline_is_final_and_not_a_failure() {
        let decliner = Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
            decline_basis_points: 10_000,
            ..SimulatedGatewayConfig::new(id("decliner"))
        }));
        let other = sim("other");
        let router =
            Router::new(vec![route(&decliner, 0, 0), route(&other, 0, 0)], RouterConfig::default());
        let t0 = Instant::now();
        for i in 0..20 {
            let answer = router.authorize(&request(&format!("k{i}")), t0).await.answer.unwrap();
            assert_eq!(answer, (id("decliner"), Authorization::Declined));
        }
        assert_eq!(other.calls(), 0, "a decline is not retried elsewhere");
        assert_eq!(router.breaker_state(&id("decliner"), t0), Some(BreakerState::Closed));
        assert_eq!(router.success_rate_percent(&id("decliner"), t0), Some(100));
    }

    #[tokio::test]
    async fn with_every_gateway_down_the_error_says_why() {
        let (a, b) = (sim("a"), sim("b"));
        let router = Router::new(vec![route(&a, 0, 0), route(&b, 0, 0)], RouterConfig::default());
        let t0 = Instant::now();
        a.set_down(true);
        b.set_down(true);
        let first = router.authorize(&request("k0"), t0).await;
        assert!(matches!(first.answer, Err(GatewayError::Unavailable(_))), "{first:?}");
        assert!(first.timed_out.is_empty(), "a gateway that is down authorized nothing");
        for i in 1..BreakerConfig::DEFAULT_FAILURE_THRESHOLD {
            let _ = router.authorize(&request(&format!("k{i}")), t0).await.answer;
        }
        let last = router.authorize(&request("k-last"), t0).await.answer;
        assert_eq!(last, Err(GatewayError::BreakerOpen));
        let usd = AuthorizeRequest {
            amount: Money::new(100, Currency::new("USD").unwrap()),
            ..request("k-usd")
        };
        let no_route = Router::new(
            vec![Route { currencies: Some(vec![eur()]), ..route(&a, 0, 0) }],
            RouterConfig::default(),
        );
        let rejected = no_route.authorize(&usd, t0).await.answer;
        assert!(matches!(rejected, Err(GatewayError::Rejected(_))), "{rejected:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_gateway_times_out_and_the_next_one_answers() {
        let slow = Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
            latency: Duration::from_secs(60),
            ..SimulatedGatewayConfig::new(id("slow"))
        }));
        let fast = sim("fast");
        let router =
            Router::new(vec![route(&slow, 0, 0), route(&fast, 0, 0)], RouterConfig::default());
        let t0 = Instant::now();
        let routed = router.authorize(&request("k"), t0).await;
        assert_eq!(routed.answer.unwrap().0, id("fast"));
        assert_eq!(routed.timed_out, [id("slow")], "the slow one may still authorize");
        assert_eq!(router.success_rate_percent(&id("slow"), t0), Some(0), "timeout recorded");
    }

    #[test]
    fn candidates_hand_out_the_half_open_trial_once() {
        let (a, b) = (sim("a"), sim("b"));
        let router = Router::new(vec![route(&a, 0, 0), route(&b, 0, 0)], RouterConfig::default());
        let t0 = Instant::now();
        feed(&router, "a", 0, 0, t0);
        let down: Result<(), GatewayError> = Err(GatewayError::Timeout);
        for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD {
            router.record(&id("a"), &down, t0);
        }
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        // Five calls are below `success_min_calls`, so "a" still ranks as 100%, first.
        assert_eq!(order(&router, 100, t1), ["a", "b"], "a's trial permit is handed out");
        assert_eq!(order(&router, 100, t1), ["b"], "and only once");
    }

    #[test]
    fn a_probe_is_under_way_for_as_long_as_a_call_may_take() {
        let (a, b) = (sim("a"), sim("b"));
        let config =
            RouterConfig { call_timeout: Duration::from_secs(40), ..RouterConfig::default() };
        let router = Router::new(vec![route(&a, 0, 0), route(&b, 0, 0)], config);
        let t0 = Instant::now();
        let down: Result<(), GatewayError> = Err(GatewayError::Timeout);
        for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD {
            router.record(&id("a"), &down, t0);
        }
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        assert_eq!(order(&router, 100, t1), ["a", "b"], "a's probe");
        // The default lapse (15 s) is below this router's call timeout: the probe may still be
        // waiting for its answer.
        let later = t1 + BreakerConfig::DEFAULT_TRIAL_LAPSE + Duration::from_secs(1);
        assert_eq!(order(&router, 100, later), ["b"], "no second probe while the first may run");
        assert_eq!(
            order(&router, 100, t1 + Duration::from_secs(40)),
            ["a", "b"],
            "then a fresh one"
        );
    }

    proptest::proptest! {
        /// Whatever order calls are recorded in, the running counts give what a pass over the
        /// latest `cap` calls by time (ties in the order recorded) would count after any
        /// cutoff.
        #[test]
        fn samples_count_as_a_pass_over_the_latest_calls_would(
            calls in proptest::collection::vec((0u64..1_000, proptest::bool::ANY), 0..300),
            cap in 1usize..40,
            cutoffs in proptest::collection::vec(0u64..1_100, 1..20),
        ) {
            let t0 = Instant::now();
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let mut samples = Samples::default();
            for &(ms, answered) in &calls {
                samples.add(at(ms), answered, cap);
            }
            let mut latest = calls.clone();
            latest.sort_by_key(|&(ms, _)| ms);
            let latest = &latest[latest.len().saturating_sub(cap)..];
            for cutoff in cutoffs {
                let recent = latest.iter().filter(|&&(ms, _)| ms > cutoff);
                let expected = recent.fold((0, 0), |(answered, calls), &(_, ok)| {
                    (answered + u64::from(ok), calls + 1)
                });
                proptest::prop_assert_eq!(samples.after(Some(at(cutoff))), expected);
            }
            let all = latest.iter().filter(|&&(_, ok)| ok).count() as u64;
            proptest::prop_assert_eq!(samples.after(None), (all, latest.len() as u64));
        }
    }

    #[test]
    #[should_panic(expected = "two routes for gateway")]
    fn rejects_two_routes_for_one_gateway() {
        let a = sim("a");
        let _ = Router::new(vec![route(&a, 0, 0), route(&a, 0, 0)], RouterConfig::default());
    }
}
