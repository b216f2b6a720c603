//! The decider: the one shape every aggregate has.

use super::limits::DEFAULT_HOLD_TTL_MS;
use super::types::Timestamp;

/// What a decision may know besides the state and the command: the admission time (the only
/// clock the domain sees) and the engine's policy. Stamped once per command, so replaying the
/// same commands with the same contexts gives the same events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// When the engine admitted the command.
    pub now: Timestamp,
    /// How long a placed order holds its stock, in milliseconds.
    pub hold_ttl_ms: u64,
}

impl Context {
    /// A context at `now` with the default policy.
    #[must_use]
    pub fn at(now: Timestamp) -> Context {
        Context { now, hold_ttl_ms: DEFAULT_HOLD_TTL_MS }
    }
}

/// The message of a panic raised by [`Decider::evolve`]: the invariant it names, on one line
/// (an `assert_eq!` adds its two sides on lines of their own). For callers that apply events
/// they did not decide (a replay of a log that may have been tampered with) and catch the
/// panic to report it.
pub(crate) fn broken_invariant(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .filter(|message| !message.trim().is_empty())
        .unwrap_or("an invariant of the domain broke");
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}

/// An aggregate as a pair of pure functions.
///
/// `decide` checks a command against the current state and returns the events that record it,
/// or a rejection; it never changes anything. `evolve` applies one event and cannot fail: an
/// event is a fact that was already decided, so a state that cannot take it is a bug and
/// panics with an assertion naming the broken invariant.
pub trait Decider {
    /// Everything a decision needs to know about the aggregate; `Default` is "never seen".
    type State: Default;
    /// What a caller asks for.
    type Command;
    /// What happened, in the past tense.
    type Event;
    /// Why a command was refused, as a value with a stable code.
    type Rejection;

    /// Decides `command` against `state` at the time and policy of `ctx`.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        ctx: &Context,
    ) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// Applies one event to the state.
    fn evolve(state: &mut Self::State, event: &Self::Event);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_broken_invariant_is_told_on_one_line() {
        let panic = std::panic::catch_unwind(|| assert_eq!(1 + 1, 3, "sums hold")).unwrap_err();
        let told = super::broken_invariant(&*panic);
        assert!(told.starts_with("assertion `left == right` failed: sums hold; left: 2"), "{told}");
        assert!(!told.contains('\n'), "{told}");
    }
}
