//! The map type of the state that grows for as long as an engine runs (the engine keeps its
//! idempotency keys in one too).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use hashbrown::hash_map::RawEntryMut;
use rustc_hash::FxBuildHasher;

/// A plain map, the whole of a small `GrowingMap` and each shard of a big one.
type Shard<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;

/// A map that grows in shards once it holds this many entries: the most a map of 32,768
/// buckets holds, so that the insert that would double it splits it instead. Below it, one
/// map's doubling moves too few entries to be noticed.
#[cfg(not(test))]
const SPLIT_AT: usize = 28_672;
/// In this crate's unit tests a map splits at a few entries, so that the engine state's and
/// the snapshot's tests (a snapshot restored equals the log replayed) run on split maps too.
#[cfg(test)]
const SPLIT_AT: usize = 56;

/// Shards of a big map: a shard that doubles moves this fraction of the entries.
const SHARDS: usize = 64;

/// A hash map that grows without a long pause, for maps that reach millions of entries: a
/// tenant's orders, payments and idempotency keys (and, to keep one kind of map, its stock).
///
/// A plain hash map doubles by moving every entry at once. Placing orders into one tenant on
/// the development machine, the place that doubled the orders map took 85 ms at 458,752
/// orders, 170 ms at 917,504 and 698 ms at 1,835,008: the decision thread, and every caller
/// behind it, waited that long. Past [`SPLIT_AT`] entries this map is [`SHARDS`] plain maps,
/// one chosen by the hash of the key; each doubles on its own, moving a 64th of the entries.
/// The engine benchmark's `longest_decision_ms` measures the longest pause at two million
/// orders: 6–8 ms in five runs interleaved with a map that moves a few entries per insert
/// (griddle's, used before), which paused for 9–23 ms. With that map every lookup during a
/// move looked in two tables: replaying a log in the audit was 4–16% slower (three pairs) and
/// deciding about 7% slower (four pairs).
pub(crate) struct GrowingMap<K, V> {
    /// One shard while small, [`SHARDS`] once split.
    shards: Vec<Shard<K, V>>,
}

impl<K, V> Default for GrowingMap<K, V> {
    fn default() -> Self {
        GrowingMap { shards: vec![Shard::default()] }
    }
}

impl<K: Clone, V: Clone> Clone for GrowingMap<K, V> {
    fn clone(&self) -> Self {
        GrowingMap { shards: self.shards.clone() }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for GrowingMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> GrowingMap<K, V> {
    /// Entries in the map.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    /// Every entry, shard by shard.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        self.shards.iter().flat_map(Shard::iter)
    }
}

/// The entries of a [`GrowingMap`], shard by shard.
pub(crate) type Iter<'a, K, V> = std::iter::FlatMap<
    std::slice::Iter<'a, Shard<K, V>>,
    hashbrown::hash_map::Iter<'a, K, V>,
    fn(&'a Shard<K, V>) -> hashbrown::hash_map::Iter<'a, K, V>,
>;

impl<K: Hash + Eq, V> GrowingMap<K, V> {
    /// A map with room for `capacity` entries before it grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        if capacity < SPLIT_AT {
            return GrowingMap {
                shards: vec![Shard::with_capacity_and_hasher(capacity, FxBuildHasher)],
            };
        }
        GrowingMap { shards: split(capacity.div_ceil(SHARDS)) }
    }

    /// The value of `key`, if present.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = FxBuildHasher.hash_one(key);
        self.shards[self.shard(hash)].raw_entry().from_key_hashed_nocheck(hash, key).map(|(_, v)| v)
    }

    /// Starts loading the memory a lookup of `key` reads first (its shard's group of control
    /// bytes, its home entry and the entries just after it, which lie below it): a hint given
    /// ahead of the lookup, so that it does not wait for memory. A hint never faults and
    /// changes nothing.
    ///
    /// The addresses follow hashbrown 0.14's layout, as the log's index does for its stream
    /// maps (the store's `prefetch::lookup`, which the domain may not use): the entries end
    /// where the control bytes start, entry `i` lies `i + 1` entries before that end, and a
    /// probe starts at bucket `hash & (buckets - 1)`. Were the layout to change, the hint would
    /// load the wrong lines and slow nothing down but itself.
    pub(crate) fn prefetch<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = FxBuildHasher.hash_one(key);
        let table = self.shards[self.shard(hash)].raw_table();
        #[expect(clippy::cast_possible_truncation, reason = "as hashbrown takes the home bucket")]
        let home = (hash as usize) & (table.buckets() - 1);
        let data_end = table.data_end().as_ptr().cast_const();
        let control = data_end.cast::<u8>().wrapping_add(home);
        load_line(control);
        load_line(control.wrapping_add(15));
        let entry = data_end.wrapping_sub(home + 1).cast::<u8>();
        for offset in (0..size_of::<(K, V)>()).step_by(64) {
            load_line(entry.wrapping_add(offset));
        }
        load_line(entry.wrapping_add(size_of::<(K, V)>().saturating_sub(1)));
        load_line(entry.wrapping_sub(64));
        load_line(entry.wrapping_sub(128));
    }

    /// The value of `key`, inserted as `make()` if absent, and whether it was absent. One
    /// probe either way.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        let hash = FxBuildHasher.hash_one(&key);
        let shard = self.shard_for_insert(hash);
        match self.shards[shard].raw_entry_mut().from_key_hashed_nocheck(hash, &key) {
            RawEntryMut::Occupied(seen) => (seen.into_mut(), false),
            RawEntryMut::Vacant(new) => (new.insert_hashed_nocheck(hash, key, make()).1, true),
        }
    }

    /// Sets `key` to `value`, giving back the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = FxBuildHasher.hash_one(&key);
        let shard = self.shard_for_insert(hash);
        match self.shards[shard].raw_entry_mut().from_key_hashed_nocheck(hash, &key) {
            RawEntryMut::Occupied(mut seen) => Some(seen.insert(value)),
            RawEntryMut::Vacant(new) => {
                new.insert_hashed_nocheck(hash, key, value);
                None
            }
        }
    }

    /// Takes `key` out, giving back its value if it was present.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let hash = FxBuildHasher.hash_one(key);
        let shard = self.shard(hash);
        match self.shards[shard].raw_entry_mut().from_key_hashed_nocheck(hash, key) {
            RawEntryMut::Occupied(seen) => Some(seen.remove()),
            RawEntryMut::Vacant(_) => None,
        }
    }

    /// The shard of an entry with `hash`: the top six bits of the hash times an odd constant,
    /// which depend on all of its bits (a shard's map takes its buckets from the hash's low
    /// bits and its tags from its top seven).
    fn shard(&self, hash: u64) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        let top = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros());
        usize::try_from(top).expect("fewer than 2^6")
    }

    /// The shard an entry with `hash` goes in, after splitting a map grown to [`SPLIT_AT`].
    fn shard_for_insert(&mut self, hash: u64) -> usize {
        if self.shards.len() == 1 && self.shards[0].len() >= SPLIT_AT {
            let whole = self.shards.pop().expect("one shard");
            self.shards = split(2 * whole.len() / SHARDS);
            for (key, value) in whole {
                let hash = FxBuildHasher.hash_one(&key);
                let shard = self.shard(hash);
                self.shards[shard]
                    .raw_entry_mut()
                    .from_key_hashed_nocheck(hash, &key)
                    .insert(key, value);
            }
        }
        self.shard(hash)
    }
}

/// Starts loading the cache line of `at`, whatever the address (a prefetch never faults).
#[inline]
fn load_line(at: *const u8) {
    // SAFETY: SSE is part of every x86_64 target; a prefetch reads nothing into registers,
    // changes no memory and never faults.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// [`SHARDS`] empty shards with room for `each` entries.
fn split<K, V>(each: usize) -> Vec<Shard<K, V>> {
    (0..SHARDS).map(|_| Shard::with_capacity_and_hasher(each, FxBuildHasher)).collect()
}

impl<'a, K, V> IntoIterator for &'a GrowingMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_that_splits_into_shards_keeps_every_entry_and_finds_each() {
        let mut map = GrowingMap::default();
        let n = 3 * SPLIT_AT;
        for i in 0..n as u64 {
            let (value, new) = map.get_or_insert_with(i, || i * 2);
            assert!(new);
            assert_eq!(*value, i * 2);
        }
        assert_eq!(map.shards.len(), SHARDS);
        assert_eq!(map.len(), n);
        let n = n as u64;
        for i in 0..n {
            assert_eq!(map.get(&i), Some(&(i * 2)), "entry {i}");
        }
        assert_eq!(map.get(&n), None);
        assert_eq!(map.get_or_insert_with(5, || 0), (&mut 10, false));
        assert_eq!(map.insert(7, 1), Some(14));
        assert_eq!(map.remove(&7), Some(1));
        assert_eq!(map.remove(&7), None);
        assert_eq!(map.iter().count(), map.len());
        assert_eq!(map.len(), 3 * SPLIT_AT - 1);
        let mut seen: Vec<u64> = map.iter().map(|(k, _)| *k).collect();
        seen.sort_unstable();
        assert!(seen.iter().copied().eq((0..n).filter(|&i| i != 7)));
    }

    #[test]
    fn every_shard_of_a_split_map_of_ids_takes_a_fair_share() {
        let mut map = GrowingMap::default();
        let n = 1 << 17;
        for i in 0..n {
            map.insert(crate::domain::OrderId::new(&format!("o-{i}")).unwrap(), ());
        }
        let fair = n / SHARDS;
        let fewest = map.shards.iter().map(Shard::len).min().unwrap();
        let most = map.shards.iter().map(Shard::len).max().unwrap();
        assert!(fewest > fair * 9 / 10 && most < fair * 11 / 10, "{fewest} to {most}, fair {fair}");
    }

    #[test]
    fn a_map_made_for_many_entries_starts_split_and_a_small_one_whole() {
        assert_eq!(GrowingMap::<u64, u64>::with_capacity(SPLIT_AT).shards.len(), SHARDS);
        assert_eq!(GrowingMap::<u64, u64>::with_capacity(SPLIT_AT - 1).shards.len(), 1);
    }
}
