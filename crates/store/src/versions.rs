//! The next version of every stream a read-only scan has seen, in 16 bytes a stream.
//!
//! An audit's scan looks up a record's stream in a map of millions: the audit benchmark's log
//! of 2.7M records has 1.8M streams. With the 128-bit [`StreamId`] as its key, an entry took 32
//! bytes (a `u128` is aligned to 16) and the map 66 MB, twice the last-level cache; keyed by 64
//! bits of it, with the next 24 bits and the count packed into the value, it takes 34 MB, and
//! the store's verifying pass took 0.54–0.59 s instead of 0.62–0.68 (four interleaved pairs).

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use crate::index::{StreamId, StreamMap};

/// Low bits of a packed entry that count the stream's records; the bits above them are the
/// stream's tag. In this crate's tests the count is small, so that streams move to the exact
/// map after a few records and the tests cover that path.
#[cfg(not(test))]
const COUNT_BITS: u32 = 40;
#[cfg(test)]
const COUNT_BITS: u32 = 2;

/// The count that marks a stream as counted in the exact map instead.
const MOVED: u64 = (1 << COUNT_BITS) - 1;

/// Bits of the stream's hash that key the packed map. In this crate's tests, two: most
/// streams then share a key with another, and are counted in the exact map.
#[cfg(not(test))]
const KEY_BITS: u32 = 64;
#[cfg(test)]
const KEY_BITS: u32 = 2;

/// Every stream's next version.
///
/// Most streams are counted in `packed`, by a key of 64 bits of their hash; the entry's value
/// holds 24 more bits of the hash (a tag) above a 40-bit count. A stream is counted in `exact`,
/// by its whole [`StreamId`], when another stream with a different tag holds its key, or once
/// its count would no longer fit in 40 bits. So two streams share a count only if 88 bits of
/// their hashes agree: about once in 2^88 / n² logs of n streams.
#[derive(Debug, Default)]
pub(crate) struct StreamVersions {
    packed: hashbrown::HashMap<u64, u64, FxBuildHasher>,
    exact: StreamMap<u64>,
}

impl StreamVersions {
    /// Checks that `found` is the next version of `stream` and counts it; `Err(expected)` when
    /// it is not (a stream's first version is 0).
    pub(crate) fn count(&mut self, stream: &[u8], found: u64) -> Result<(), u64> {
        let id = StreamId::of(stream);
        let (key, tag) = key_and_tag(id);
        let entry = self.packed.entry(key).or_insert(tag);
        if *entry & !MOVED == tag && *entry & MOVED != MOVED {
            let next = *entry & MOVED;
            if next != found {
                return Err(next);
            }
            if next + 1 < MOVED {
                *entry += 1;
            } else {
                *entry = tag | MOVED;
                self.exact.insert(id, next + 1);
            }
            return Ok(());
        }
        let next = self.exact.entry(id).or_insert(0);
        if *next != found {
            return Err(*next);
        }
        *next += 1;
        Ok(())
    }

    /// Starts loading the entry of `stream`, which a record soon to be verified names.
    pub(crate) fn prefetch(&self, stream: &[u8]) {
        let (key, _) = key_and_tag(StreamId::of(stream));
        crate::prefetch::lookup(&self.packed, FxBuildHasher.hash_one(key));
    }
}

/// The packed map's key of `id`, and its tag above a zero count.
fn key_and_tag(id: StreamId) -> (u64, u64) {
    let (low, high) = id.halves();
    (low & (u64::MAX >> (64 - KEY_BITS)), high << COUNT_BITS)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever streams share a key, and however long a stream grows, each stream's
        /// versions are counted apart, as a plain map of the whole ids would count them.
        #[test]
        fn counts_as_a_map_of_whole_ids_would(
            records in prop::collection::vec((0u8..24, any::<bool>()), 0..300),
        ) {
            let mut versions = StreamVersions::default();
            let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
            for (stream, in_order) in records {
                let stream = format!("t/o/{stream}").into_bytes();
                let next = model.entry(stream.clone()).or_insert(0);
                let found = if in_order { *next } else { *next + 1 };
                let expected = if in_order { Ok(()) } else { Err(*next) };
                prop_assert_eq!(versions.count(&stream, found), expected);
                if in_order {
                    *next += 1;
                }
            }
            // Five streams or more share the four keys of a test build: the exact map was used.
            prop_assert!(model.len() <= 4 || !versions.exact.is_empty());
        }
    }
}
