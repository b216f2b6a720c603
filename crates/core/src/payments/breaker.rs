//! A circuit breaker in front of one gateway: after repeated failures it stops sending calls for
//! a while, so a dead gateway costs one fast refusal instead of a timeout per payment, and then
//! lets a trial call through to find out whether the gateway is back.
//!
//! Time is an argument (`now`) rather than read from a clock, so tests drive the breaker through
//! every state without sleeping and the router stamps outcomes with one consistent time.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// When a [`CircuitBreaker`] opens and how it recovers. [`Default`] gives the `DEFAULT_*`
/// constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row, however many calls came before.
    pub failure_threshold: u32,
    /// How many of the latest calls the failure-rate rule looks at.
    pub window: u32,
    /// Open when more than this percentage (0 to 100) of the calls in the window failed...
    pub failure_rate_percent: u32,
    /// ...provided the window holds at least this many calls, so that the first failure of a
    /// fresh breaker is not a 100% failure rate.
    pub min_calls: u32,
    /// How long the breaker stays open before letting trial calls through.
    pub open_for: Duration,
    /// How many trial calls the half-open breaker lets through; all must succeed to close it.
    pub half_open_trials: u32,
    /// How long a trial permit whose outcome is never recorded (its caller gave up) counts as
    /// a call under way, from when it was handed out: at least the longest a call may take,
    /// or a probe still waiting for a hanging gateway would let a second one through. The
    /// [`Router`](super::Router) raises it to its call timeout.
    pub trial_lapse: Duration,
}

impl BreakerConfig {
    /// Default [`failure_threshold`](Self::failure_threshold): five failures in a row are an
    /// outage, not bad luck.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
    /// Default [`window`](Self::window): the last 20 calls.
    pub const DEFAULT_WINDOW: u32 = 20;
    /// Default [`failure_rate_percent`](Self::failure_rate_percent): more than half failing.
    pub const DEFAULT_FAILURE_RATE_PERCENT: u32 = 50;
    /// Default [`min_calls`](Self::min_calls): half the window.
    pub const DEFAULT_MIN_CALLS: u32 = 10;
    /// Default [`open_for`](Self::open_for): five seconds.
    pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
    /// Default [`half_open_trials`](Self::half_open_trials): one probe call.
    pub const DEFAULT_HALF_OPEN_TRIALS: u32 = 1;
    /// Default [`trial_lapse`](Self::trial_lapse): fifteen seconds, past the router's default
    /// call timeout.
    pub const DEFAULT_TRIAL_LAPSE: Duration = Duration::from_secs(15);

    /// Asserts the configuration can work; a bad one is a bug in the code that built it.
    fn validate(&self) {
        assert!(self.failure_threshold >= 1, "breaker failure_threshold must be at least 1");
        assert!(self.window >= 1, "breaker window must be at least 1");
        assert!(self.min_calls >= 1, "breaker min_calls must be at least 1");
        assert!(self.min_calls <= self.window, "breaker min_calls must not exceed the window");
        assert!(self.failure_rate_percent <= 100, "breaker failure_rate_percent is 0 to 100");
        assert!(self.half_open_trials >= 1, "breaker half_open_trials must be at least 1");
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
            window: Self::DEFAULT_WINDOW,
            failure_rate_percent: Self::DEFAULT_FAILURE_RATE_PERCENT,
            min_calls: Self::DEFAULT_MIN_CALLS,
            open_for: Self::DEFAULT_OPEN_FOR,
            half_open_trials: Self::DEFAULT_HALF_OPEN_TRIALS,
            trial_lapse: Self::DEFAULT_TRIAL_LAPSE,
        }
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are refused until [`BreakerConfig::open_for`] has passed since it opened.
    Open,
    /// A limited number of trial calls go through; their outcomes close or reopen the breaker.
    HalfOpen,
}

/// A circuit breaker for one gateway, shared by the concurrent payment flows that call it.
///
/// Only calls that got no answer (unavailable, timed out) are failures; a decline or a
/// rejection is a success here, because the gateway answered.
///
/// Outcomes are not tied to the permit that allowed their call: a call allowed while closed
/// that fails after the breaker went half-open counts as a failed trial. That errs towards
/// keeping a flaky gateway out, which is the safe side.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Failures since the last success, while closed.
    consecutive_failures: u32,
    /// Outcomes of the latest calls while closed, oldest first; `true` is a failure.
    recent: VecDeque<bool>,
    /// How many entries of `recent` are failures, kept to avoid recounting.
    recent_failures: u32,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    HalfOpen {
        /// When the last trial permit was handed out (when the phase began, before the first).
        issued_at: Instant,
        /// Trial permits handed out by `allow` in this round.
        issued: u32,
        /// Trials that succeeded.
        succeeded: u32,
    },
}

impl CircuitBreaker {
    /// A closed breaker.
    ///
    /// # Panics
    /// If `config` cannot work: a zero threshold, window, `min_calls` or trial count,
    /// `min_calls` above the window, or a failure rate above 100%.
    #[must_use]
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        config.validate();
        let window = usize::try_from(config.window).unwrap_or(usize::MAX);
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive_failures: 0,
                recent: VecDeque::with_capacity(window),
                recent_failures: 0,
            }),
        }
    }

    /// The configuration the breaker was built with.
    #[must_use]
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now`. An open breaker whose `open_for` has passed reports
    /// [`BreakerState::HalfOpen`].
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match inner.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may be made at `now`. When half-open this hands out one of the
    /// [`half_open_trials`](BreakerConfig::half_open_trials) permits, so call it only right
    /// before making the call, and record the call's outcome.
    ///
    /// A permit whose outcome is never recorded (the caller gave up) lapses
    /// [`trial_lapse`](BreakerConfig::trial_lapse) after it was handed out, so a lost trial
    /// cannot wedge the breaker, and one still under way is not doubled.
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match &mut inner.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen { issued_at, issued, succeeded } => {
                if *issued < self.config.half_open_trials {
                    *issued += 1;
                    *issued_at = now;
                    true
                } else if now.saturating_duration_since(*issued_at) >= self.config.trial_lapse {
                    // The last trial handed out went unanswered for longer than a call may
                    // take: presume the trials lost and start a fresh round.
                    *issued_at = now;
                    *issued = 1;
                    *succeeded = 0;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records a call that got an answer (including a decline).
    pub fn record_success(&self, now: Instant) {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match &mut inner.phase {
            Phase::Closed => {
                inner.consecutive_failures = 0;
                self.push_outcome(&mut inner, false);
            }
            // A call allowed before the breaker opened; the gateway is still presumed down
            // until a trial says otherwise.
            Phase::Open { .. } => {}
            Phase::HalfOpen { succeeded, .. } => {
                *succeeded += 1;
                if *succeeded >= self.config.half_open_trials {
                    inner.phase = Phase::Closed;
                    inner.reset_counts();
                }
            }
        }
    }

    /// Records a call that got no answer (unavailable or timed out).
    pub fn record_failure(&self, now: Instant) {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match inner.phase {
            Phase::Closed => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                self.push_outcome(&mut inner, true);
                if inner.consecutive_failures >= self.config.failure_threshold
                    || self.rate_exceeded(&inner)
                {
                    inner.phase = Phase::Open { since: now };
                    inner.reset_counts();
                }
            }
            // A late failure of a call allowed before opening: the breaker is already open, and
            // extending the open time would punish the gateway twice for one outage.
            Phase::Open { .. } => {}
            Phase::HalfOpen { .. } => inner.phase = Phase::Open { since: now },
        }
    }

    /// Moves an open breaker to half-open once `open_for` has passed.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if let Phase::Open { since } = inner.phase
            && now.saturating_duration_since(since) >= self.config.open_for
        {
            inner.phase = Phase::HalfOpen { issued_at: now, issued: 0, succeeded: 0 };
        }
    }

    fn push_outcome(&self, inner: &mut Inner, failed: bool) {
        let full = inner.recent.len() >= usize::try_from(self.config.window).unwrap_or(usize::MAX);
        if full && inner.recent.pop_front() == Some(true) {
            inner.recent_failures -= 1;
        }
        inner.recent.push_back(failed);
        if failed {
            inner.recent_failures += 1;
        }
    }

    fn rate_exceeded(&self, inner: &Inner) -> bool {
        let calls = u64::try_from(inner.recent.len()).unwrap_or(u64::MAX);
        calls >= u64::from(self.config.min_calls)
            && u64::from(inner.recent_failures) * 100
                > u64::from(self.config.failure_rate_percent) * calls
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update completes before anything that could panic, so a poisoned lock still
        // guards consistent counts.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn reset_counts(&mut self) {
        self.consecutive_failures = 0;
        self.recent.clear();
        self.recent_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    //! Proves the breaker's state machine: opening on consecutive failures and on the failure
    //! rate, staying open for `open_for`, and closing or reopening on the half-open trial.

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig::default())
    }

    /// A default breaker opened by a threshold of consecutive failures at the returned time.
    fn opened() -> (CircuitBreaker, Instant) {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD {
            b.record_failure(t0);
        }
        (b, t0)
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD - 1 {
            assert!(b.allow(t0));
            b.record_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "one failure short of the threshold");
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allow(t0));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        // The rate rule is off (nothing exceeds 100%), so only the consecutive rule can fire.
        let config = BreakerConfig { failure_rate_percent: 100, ..BreakerConfig::default() };
        let b = CircuitBreaker::new(config);
        let t0 = Instant::now();
        for _ in 0..5 {
            for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD - 1 {
                b.record_failure(t0);
            }
            b.record_success(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "never 5 failures in a row");
    }

    #[test]
    fn stays_open_until_open_for_then_half_opens() {
        let (b, t0) = opened();
        let open_for = BreakerConfig::DEFAULT_OPEN_FOR;
        let just_before = t0 + open_for - Duration::from_millis(1);
        assert_eq!(b.state(just_before), BreakerState::Open);
        assert!(!b.allow(just_before));
        assert_eq!(b.state(t0 + open_for), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_lets_only_the_configured_trials_through() {
        let (b, t0) = opened();
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        assert!(b.allow(t1), "the trial call");
        assert!(!b.allow(t1), "only one trial at a time by default");
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
    }

    #[test]
    fn closes_on_a_successful_trial_with_counters_reset() {
        let (b, t0) = opened();
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        assert!(b.allow(t1));
        b.record_success(t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
        // Reset: it takes a full threshold of new failures to open again.
        for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD - 1 {
            b.record_failure(t1);
        }
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn reopens_on_a_failed_trial() {
        let (b, t0) = opened();
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        assert!(b.allow(t1));
        b.record_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        // Open for a fresh `open_for`, counted from the failed trial.
        let t2 = t1 + BreakerConfig::DEFAULT_OPEN_FOR - Duration::from_millis(1);
        assert_eq!(b.state(t2), BreakerState::Open);
        assert_eq!(b.state(t1 + BreakerConfig::DEFAULT_OPEN_FOR), BreakerState::HalfOpen);
    }

    #[test]
    fn needs_every_trial_to_succeed_when_several_are_configured() {
        let config = BreakerConfig { half_open_trials: 3, ..BreakerConfig::default() };
        let b = CircuitBreaker::new(config);
        let t0 = Instant::now();
        for _ in 0..BreakerConfig::DEFAULT_FAILURE_THRESHOLD {
            b.record_failure(t0);
        }
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        for _ in 0..3 {
            assert!(b.allow(t1));
        }
        assert!(!b.allow(t1));
        b.record_success(t1);
        b.record_success(t1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.record_success(t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn a_lost_trial_permit_lapses_after_the_trial_lapse() {
        let (b, t0) = opened();
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        assert!(b.allow(t1), "a trial whose outcome is never recorded");
        assert!(!b.allow(t1 + SEC));
        let lapse = BreakerConfig::DEFAULT_TRIAL_LAPSE;
        assert!(!b.allow(t1 + lapse - SEC), "a trial under way is not doubled");
        assert!(b.allow(t1 + lapse), "a fresh trial");
    }

    #[test]
    fn the_lapse_counts_from_the_trial_not_from_when_the_breaker_half_opened() {
        let (b, t0) = opened();
        let t1 = t0 + BreakerConfig::DEFAULT_OPEN_FOR;
        // Read long before anyone calls (a router ranks every gateway on every payment).
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let t2 = t1 + BreakerConfig::DEFAULT_TRIAL_LAPSE * 2;
        assert!(b.allow(t2), "the trial");
        assert!(!b.allow(t2 + Duration::from_millis(1)), "a second trial 1 ms later");
    }

    #[test]
    fn opens_when_the_failure_rate_exceeds_the_limit() {
        let b = breaker();
        let t0 = Instant::now();
        // Alternate failure, failure, success: never 5 in a row, but 2/3 of calls fail.
        let mut opened_after = None;
        for call in 1..=30_u32 {
            if call % 3 == 0 {
                b.record_success(t0);
            } else {
                b.record_failure(t0);
            }
            if b.state(t0) == BreakerState::Open {
                opened_after = Some(call);
                break;
            }
        }
        // The rule needs `min_calls` (10) calls; the 10th call is a failure (7 of 10 failed).
        assert_eq!(opened_after, Some(BreakerConfig::DEFAULT_MIN_CALLS));
    }

    #[test]
    fn a_failure_rate_at_the_limit_does_not_open() {
        let b = breaker();
        let t0 = Instant::now();
        // Exactly 50% over a full window of 20 and beyond: "exceeds" means strictly above.
        for _ in 0..40 {
            b.record_success(t0);
            b.record_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn the_failure_rate_only_counts_the_window() {
        // Consecutive rule off, so only the rate over the last 10 calls decides.
        let config = BreakerConfig {
            failure_threshold: 100,
            window: 10,
            min_calls: 10,
            ..BreakerConfig::default()
        };
        let b = CircuitBreaker::new(config);
        let t0 = Instant::now();
        // Fewer than `min_calls` calls: the rate rule does not apply yet.
        for _ in 0..9 {
            b.record_failure(t0);
        }
        // Eleven successes push all nine failures out of the window.
        for _ in 0..11 {
            b.record_success(t0);
        }
        for _ in 0..5 {
            b.record_failure(t0);
        }
        // 14 of 25 calls failed (56%), but only 5 of the last 10 (50%, not above the limit).
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open, "6 of the last 10 failed");
    }

    #[test]
    #[should_panic(expected = "min_calls must not exceed the window")]
    fn rejects_a_config_that_cannot_work() {
        let _ = CircuitBreaker::new(BreakerConfig { min_calls: 30, ..BreakerConfig::default() });
    }
}
