//! A given/when/then harness over any [`Decider`]: the scenario's history is applied with
//! `evolve`, the command is decided, and accepted events are applied with `evolve` too, so every
//! scenario exercises both halves of the decider.

use std::fmt::Debug;

use orderly_core::domain::{
    Context, Decider, InventoryRejection, OrderRejection, PaymentRejection, Rejection, Timestamp,
};

/// The state a history leaves, and the context the next command is decided in.
pub struct Scenario<D: Decider> {
    state: D::State,
    ctx: Context,
}

/// The decision a scenario's command got, not yet checked.
pub struct Outcome<D: Decider> {
    state: D::State,
    result: Result<Vec<D::Event>, D::Rejection>,
}

impl<D: Decider> Scenario<D>
where
    D::Event: Debug + PartialEq,
    D::Rejection: Debug + PartialEq,
{
    /// Starts from the state that `events` leave, applied in order to the default state.
    pub fn given(events: impl IntoIterator<Item = D::Event>) -> Self {
        let mut state = D::State::default();
        for event in events {
            D::evolve(&mut state, &event);
        }
        Scenario { state, ctx: Context::at(Timestamp(0)) }
    }

    /// Decides the command at `now` milliseconds (the default is 0).
    pub fn at(mut self, now: u64) -> Self {
        self.ctx.now = Timestamp(now);
        self
    }

    /// Decides the command with a hold time-to-live other than the default.
    pub fn with_hold_ttl(mut self, millis: u64) -> Self {
        self.ctx.hold_ttl_ms = millis;
        self
    }

    /// Decides `command` against the state of the history.
    pub fn when(self, command: D::Command) -> Outcome<D> {
        let result = D::decide(&self.state, &command, &self.ctx);
        Outcome { state: self.state, result }
    }
}

impl<D: Decider> Outcome<D>
where
    D::Event: Debug + PartialEq,
    D::Rejection: Debug + PartialEq,
{
    /// Asserts the command was accepted with exactly `expected`, applies them, and returns the
    /// state after them for further checks.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>) -> D::State {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        let events = match self.result {
            Ok(events) => events,
            Err(rejection) => panic!("expected {expected:#?}, but rejected with {rejection:#?}"),
        };
        assert_eq!(events, expected, "the command was accepted with other events");
        let mut state = self.state;
        for event in &events {
            D::evolve(&mut state, event);
        }
        state
    }

    /// Asserts the command was rejected with exactly `expected`. A rejection carries no
    /// events by construction, so the state is the history's.
    #[track_caller]
    pub fn then_rejects(self, expected: D::Rejection) {
        assert_eq!(self.rejection(), expected);
    }

    /// Asserts the command was rejected with the stable code `code`, and returns the rejection.
    #[track_caller]
    pub fn then_rejects_with_code(self, code: &str) -> D::Rejection
    where
        D::Rejection: Code,
    {
        let rejection = self.rejection();
        assert_eq!(rejection.code(), code, "rejected, but with {rejection:#?}");
        rejection
    }

    #[track_caller]
    fn rejection(self) -> D::Rejection {
        match self.result {
            Ok(events) => panic!("expected a rejection, but accepted with {events:#?}"),
            Err(rejection) => rejection,
        }
    }
}

/// A rejection with a stable snake_case code: every rejection family of the domain.
pub trait Code {
    fn code(&self) -> &'static str;
}

macro_rules! code_by_inherent_method {
    ($($rejection:ty),*) => {$(
        impl Code for $rejection {
            fn code(&self) -> &'static str {
                <$rejection>::code(self)
            }
        }
    )*};
}

code_by_inherent_method!(InventoryRejection, OrderRejection, PaymentRejection, Rejection);
