//! Panics caught on purpose. The domain's `evolve` asserts its invariants and panics on an
//! event its state cannot take, and `decide` may panic on such a state: only a bug or a log
//! rewritten with recomputed checksums leads there. The engine and the audit catch those
//! panics and report them by name (a refused command, a record that breaks the domain's
//! rules, a discrepancy); the default panic hook would also print each on stderr as if the
//! program had crashed. [`install_panic_hook`] keeps it quiet for them, and keeps where each
//! panicked, which the message reported then names: a bug (an `unwrap` in a replay, say) is
//! caught the same way, and its place is what finds it.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::domain::broken_invariant;

thread_local! {
    /// Whether this thread runs code under [`catching`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic caught quietly on this thread was raised (`file:line`).
    static RAISED_AT: Cell<Option<String>> = const { Cell::new(None) };
}

/// Runs `f`; a panic in it is caught and returned as the broken invariant's message, with
/// where it was raised when the quiet hook saw it.
pub(crate) fn catching<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let was = CATCHING.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(was);
    result.map_err(|panic| {
        let message = broken_invariant(&*panic);
        match RAISED_AT.take() {
            Some(at) => format!("{message} (at {at})"),
            None => message,
        }
    })
}

/// Installs a panic hook that prints nothing for the panics the engine and the audit catch
/// and report themselves, and hands every other panic to the hook installed before. For
/// programs (the `orderly` binary) that would otherwise show a rewritten log's broken
/// invariant as a crash.
pub fn install_panic_hook() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CATCHING.get() {
            RAISED_AT.set(info.location().map(|at| format!("{}:{}", at.file(), at.line())));
        } else {
            before(info);
        }
    }));
}
