//! Where the engine's time comes from. The domain never reads a clock; the engine stamps each
//! command's admission time from this one, so tests can move time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::Timestamp;

/// A source of admission times.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: for tests and simulations. Release and acquire are
/// enough for it (a thread that sees what the setter did after `set` reads that time or later);
/// a sequentially consistent store would cost a simulation that sets it before every command a
/// full barrier each time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `now`.
    #[must_use]
    pub fn at(now: Timestamp) -> ManualClock {
        ManualClock { now: Arc::new(AtomicU64::new(now.0)) }
    }

    /// Moves the clock forward by `millis`.
    pub fn advance(&self, millis: u64) {
        self.now.fetch_add(millis, Ordering::AcqRel);
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: Timestamp) {
        self.now.store(now.0, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::Acquire))
    }
}

/// A wall clock that does not follow its source through a sudden jump at once. Each reading
/// is compared with the last one it took, plus the time a monotonic clock says has passed
/// since: within [`SteadyClock::TOLERANCE_MS`] of that, the source is followed (so that NTP's slow
/// corrections are too); further off, the steady time goes on at the monotonic clock's pace,
/// until the source has disagreed for [`SteadyClock::PERSIST`], when it is taken as the new
/// time, with a warning.
///
/// A virtual machine restored or migrated may read a clock hours off for a moment: followed,
/// that one reading expired every unpaid hold at once, and once the clock was set right again
/// admission times (kept from going back) stood still for as long as the jump was, with no
/// hold expiring meanwhile.
#[derive(Debug)]
pub struct SteadyClock<C> {
    source: C,
    persist: std::time::Duration,
    state: std::sync::Mutex<Steady>,
}

/// The last agreed reading and when the source started to disagree.
#[derive(Debug)]
struct Steady {
    at: Option<(u64, std::time::Instant)>,
    disagreeing_since: Option<std::time::Instant>,
}

impl<C: Clock> SteadyClock<C> {
    /// How far the source may stand from the steady time and still be followed.
    pub const TOLERANCE_MS: u64 = 1_000;
    /// How long the source must disagree before it is believed.
    pub const PERSIST: std::time::Duration = std::time::Duration::from_secs(60);

    /// `source`, steadied.
    pub fn new(source: C) -> SteadyClock<C> {
        SteadyClock::believing_after(source, Self::PERSIST)
    }

    /// `source`, steadied, believed after disagreeing for `persist` (tests use a short one).
    pub fn believing_after(source: C, persist: std::time::Duration) -> SteadyClock<C> {
        let state = Steady { at: None, disagreeing_since: None };
        SteadyClock { source, persist, state: std::sync::Mutex::new(state) }
    }
}

impl<C: Clock> Clock for SteadyClock<C> {
    fn now(&self) -> Timestamp {
        let read = self.source.now().0;
        let instant = std::time::Instant::now();
        let mut steady = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((last, last_instant)) = steady.at else {
            steady.at = Some((read, instant));
            return Timestamp(read);
        };
        let passed = instant.saturating_duration_since(last_instant).as_millis();
        let expected = last.saturating_add(u64::try_from(passed).unwrap_or(u64::MAX));
        if read.abs_diff(expected) <= Self::TOLERANCE_MS {
            steady.at = Some((read, instant));
            steady.disagreeing_since = None;
            return Timestamp(read);
        }
        let since = *steady.disagreeing_since.get_or_insert_with(|| {
            tracing::warn!(
                clock = read,
                steady = expected,
                "the wall clock jumped; keeping steady time until it holds"
            );
            instant
        });
        if instant.saturating_duration_since(since) >= self.persist {
            tracing::warn!(
                clock = read,
                steady = expected,
                "the wall clock held its jump; following it"
            );
            steady.at = Some((read, instant));
            steady.disagreeing_since = None;
            return Timestamp(read);
        }
        // Counted from the last reading it agreed with, not re-anchored: no rounding piles up.
        Timestamp(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_is_followed_only_once_it_holds() {
        let (start, day) = (1_764_115_200_000, 86_400_000);
        let wall = ManualClock::at(Timestamp(start));
        let steady =
            SteadyClock::believing_after(wall.clone(), std::time::Duration::from_millis(200));
        assert_eq!(steady.now(), Timestamp(start));
        // NTP's small steps are followed.
        wall.advance(300);
        assert_eq!(steady.now(), Timestamp(start + 300));
        // A day ahead for a moment: not followed; then set right: no time lost or frozen.
        wall.advance(day);
        let during = steady.now().0;
        assert!(during < start + 300 + 100, "{during}");
        wall.set(Timestamp(start + 600));
        let after = steady.now().0;
        assert!((start + 300..start + 1_600).contains(&after), "{after}");
        // A jump that holds is followed, after the wait.
        wall.set(Timestamp(start + day));
        assert!(steady.now().0 < start + 2_000);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(steady.now(), Timestamp(start + day));
        // And so is a step back that holds (the engine keeps its admission times from going
        // back, so they wait for the clock then).
        wall.set(Timestamp(start + day - 600_000));
        assert!(steady.now().0 >= start + day);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(steady.now(), Timestamp(start + day - 600_000));
    }
}
