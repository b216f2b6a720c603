//! A hint that starts loading memory into this core's cache before the decision thread needs
//! it.
//!
//! The decision thread is bound by memory more than by arithmetic. Each turn's list of answers
//! is memory last written by the log's threads on the other core (the previous turns' lists,
//! freed there): a store into such a line waits until it is brought back. A hint issued a few
//! entries earlier lets that trip overlap with deciding the commands in between (`perf
//! annotate` had put most of `commit`'s own time on that store). A hint never faults and
//! changes no value, so a useless one costs only a wasted trip.

/// Starts loading every cache line of the `T` at `at` (which need not be valid memory).
#[inline]
pub(crate) fn load<T>(at: *const T) {
    let first = at.cast::<i8>();
    for offset in (0..size_of::<T>()).step_by(64) {
        line(first.wrapping_add(offset));
    }
    // The last byte: a `T` not aligned to the lines may reach one line further.
    line(first.wrapping_add(size_of::<T>().saturating_sub(1)));
}

#[inline]
fn line(at: *const i8) {
    // SAFETY: SSE is part of every x86_64 target; a prefetch reads nothing into registers,
    // changes no memory and never faults, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
