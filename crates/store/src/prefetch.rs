//! Hints that start loading memory into this core's cache before it is needed.
//!
//! Passes over a long log and the engine's decision thread are bound by memory more than by
//! arithmetic: a lookup in a map of a million streams or orders waits for its lines to come
//! from memory (about 100–220 ns on the development machine). A hint issued while the work
//! before it runs lets that trip overlap with the work. A hint never faults and changes no
//! value, so a useless one (a wrong guess, a stale address) costs only a wasted trip.

use std::hash::BuildHasher;

/// Starts loading every cache line of the `T` at `at` (which need not be valid memory).
#[inline]
pub fn load<T>(at: *const T) {
    let first = at.cast::<i8>();
    for offset in (0..size_of::<T>()).step_by(64) {
        line(first.wrapping_add(offset));
    }
    // The last byte: a `T` not aligned to the lines may reach one line further.
    line(first.wrapping_add(size_of::<T>().saturating_sub(1)));
}

/// Lines loaded below a lookup's home entry: an entry sits in the first bucket that was free
/// from its home bucket on, mostly the home bucket or one of the next few, which lie just
/// below it in memory.
const LINES_BELOW: usize = 2;

/// Starts loading what a lookup of the key hashed as `hash` reads first in `map`: its group of
/// control bytes, its home entry and the entries just after it.
///
/// The addresses follow hashbrown 0.14's layout (the entries end where the control bytes
/// start, entry `i` lies `i + 1` entries before that end, a probe starts at bucket `hash &
/// (buckets - 1)`). Were the layout to change, the hint would load the wrong lines, which
/// slows nothing down but the hint itself. The domain's `GrowingMap::prefetch` is its twin
/// for the engine's maps (the domain may not use the store).
#[inline]
pub fn lookup<K, V, S: BuildHasher>(map: &hashbrown::HashMap<K, V, S>, hash: u64) {
    let table = map.raw_table();
    #[expect(clippy::cast_possible_truncation, reason = "as hashbrown takes the home bucket")]
    let home = (hash as usize) & (table.buckets() - 1);
    let data_end = table.data_end().as_ptr().cast_const();
    let control = data_end.cast::<i8>().wrapping_add(home);
    // A group is 16 control bytes, perhaps across two lines.
    line(control);
    line(control.wrapping_add(15));
    let entry = data_end.wrapping_sub(home + 1);
    load(entry);
    for below in 1..=LINES_BELOW {
        line(entry.cast::<i8>().wrapping_sub(below * 64));
    }
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
