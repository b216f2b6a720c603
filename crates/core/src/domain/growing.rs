//! The map type of the state that grows for as long as an engine runs (the engine keeps its
//! idempotency keys in one too).

/// A hash map that grows without a pause, for maps that reach millions of entries: a tenant's
/// orders, payments and idempotency keys (and, to keep one kind of map, its stock).
///
/// A plain hash map doubles by moving every entry at once. Placing orders into one tenant on
/// the development machine, the place that doubled the orders map took 85 ms at 458,752
/// orders, 170 ms at 917,504 and 698 ms at 1,835,008: the decision thread, and every caller
/// behind it, waited that long. This map moves a few entries per insert instead: the longest
/// of two million places took 8–10 ms in a process of its own, and all of them together took
/// no longer. The engine benchmark's `longest_decision_ms` measures it after its other phases
/// (306–606 ms before, 22–25 ms after, in three pairs). The price is paid by bulk replays,
/// whose lookups look in two tables while one is moved: the audit benchmark's verify + replay
/// was about 10% slower in four interleaved pairs.
pub(crate) type GrowingMap<K, V> = griddle::HashMap<K, V, rustc_hash::FxBuildHasher>;
