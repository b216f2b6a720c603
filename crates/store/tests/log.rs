//! The log's test suite: one binary, one module per concern.

mod log {
    mod checkpoint;
    pub mod common;
    mod corruption;
    mod faults;
    mod format;
    mod kill;
    mod properties;
    mod round_trip;
    mod torn_tail;
    mod zeros_ahead;
}
