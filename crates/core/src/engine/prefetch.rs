//! Hints that start loading memory into the cache before the decision thread needs it.
//!
//! The decision thread is bound by memory more than by arithmetic. Each turn's lists are memory
//! last written by the log's threads on the other core (the previous turns' lists, freed
//! there): a store into such a line waits until that core gives it up. A hint issued a few
//! entries earlier lets that trip overlap with deciding the commands in between. Hints never
//! fault and change no value, so a wrong one costs only a wasted trip.

/// Starts loading the cache lines of the `T` at `at` (its first and last byte: all of it for
/// a `T` up to 128 bytes) to be written: they are fetched for ownership, so that the stores
/// that follow do not wait for another core to give them up.
#[inline]
pub(crate) fn write<T>(at: *const T) {
    let first = at.cast::<i8>();
    let last = first.wrapping_add(size_of::<T>().saturating_sub(1));
    // SAFETY: SSE is part of every x86_64 target; a prefetch changes no memory and never
    // faults, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_ET0>(first);
        _mm_prefetch::<_MM_HINT_ET0>(last);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, last);
}
