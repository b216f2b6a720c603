//! The in-memory index, rebuilt on open: where each segment starts, a sparse map from position
//! to byte offset within segments, and the positions of every stream.
//!
//! A stream's positions are kept as a linked list through the log: the stream map holds only
//! each stream's length and last position, and a per-position link gives the position of the
//! previous record of the same stream. Adding a record then costs one map lookup and one
//! append to the links, with no allocation per stream beyond its key; the writer adds every
//! record of the log, so this is on its critical path. Reading a stream walks the links back.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rustc_hash::FxBuildHasher;

use crate::storage::StorageFile;

/// One position in every this many gets an entry in the sparse position index. A read of one
/// record (an idempotent retry reading its first outcome back) starts at the entry before it
/// and passes half this many records on average: with 32, a few KiB (with 256 it read tens of
/// KiB, a noticeable share of a day with retries). The entries cost half a byte per record.
pub(crate) const SPARSE_EVERY: u64 = 32;

/// The stream map is split into this many shards by hash, so that growing one (a rehash that
/// copies every entry) stalls the writer for a 64th of the time a single map would: at a
/// million streams, a few milliseconds instead of a few hundred.
const STREAM_SHARDS: usize = 64;

/// Links are stored in chunks of this many positions, so that growing them never copies them.
const LINK_CHUNK: usize = 1 << 16;

/// The link of a stream's first record.
const NO_PREVIOUS: u64 = u64::MAX;

/// An open segment.
#[derive(Debug)]
pub(crate) struct SegmentMeta {
    pub name: String,
    /// Position of the segment's first record.
    pub first: u64,
    pub file: Arc<dyn StorageFile>,
    /// Byte offset just past the last committed record; readers never read beyond it.
    pub committed_end: AtomicU64,
}

/// Segments and streams. Positions at or past the log's head may be listed (the writer adds
/// them before its fsync returns); readers filter them out by the head.
#[derive(Debug)]
pub(crate) struct Index {
    pub segments: Vec<Arc<SegmentMeta>>,
    /// Per segment, `(position, byte offset)` of every [`SPARSE_EVERY`]th position.
    sparse: Vec<Vec<(u64, u64)>>,
    /// The length and last position of every stream, in [`STREAM_SHARDS`] shards.
    streams: Vec<StreamMap<StreamTail>>,
    /// For every position from `first_linked` on, the position of the previous record of its
    /// stream ([`NO_PREVIOUS`] for a stream's first), in chunks of [`LINK_CHUNK`].
    links: Vec<Vec<u64>>,
    /// The first position added; positions are added in order from it.
    first_linked: Option<u64>,
}

/// Where a stream ends.
#[derive(Clone, Copy, Debug)]
struct StreamTail {
    /// Records of the stream, committed or not.
    len: u64,
    /// Position of its last record.
    last: u64,
}

/// A stream id as the store's maps key it: a 128-bit hash (xxh3) of its bytes. An entry then
/// holds 16 bytes of key however long the id, a lookup compares no bytes and follows no
/// pointer, and a day's millions of streams take less memory to grow and to page in (in the
/// audit's replay the map of stream versions, keyed by the bytes, was a sixth of the pass).
/// Two ids share an entry only if their hashes collide: about once in 2^128 / n² logs of n
/// streams, far rarer than an error a checksum misses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StreamId(u128);

impl StreamId {
    pub(crate) fn of(stream: &[u8]) -> StreamId {
        StreamId(xxhash_rust::xxh3::xxh3_128(stream))
    }

    /// Its low and high 64 bits.
    #[expect(clippy::cast_possible_truncation, reason = "each half is taken apart")]
    pub(crate) fn halves(self) -> (u64, u64) {
        (self.0 as u64, (self.0 >> 64) as u64)
    }

    /// The hash a [`StreamMap`] takes it by, for [`crate::prefetch::lookup`].
    pub(crate) fn map_hash(self) -> u64 {
        FxBuildHasher.hash_one(self)
    }
}

/// A map from stream ids.
pub(crate) type StreamMap<V> = hashbrown::HashMap<StreamId, V, FxBuildHasher>;

impl Default for Index {
    fn default() -> Index {
        Index {
            segments: Vec::new(),
            sparse: Vec::new(),
            streams: (0..STREAM_SHARDS).map(|_| StreamMap::default()).collect(),
            links: Vec::new(),
            first_linked: None,
        }
    }
}

impl Index {
    pub(crate) fn add_segment(&mut self, segment: Arc<SegmentMeta>) {
        self.segments.push(segment);
        self.sparse.push(Vec::new());
    }

    /// Records that the record at `position` of `stream` lies at `offset` of the last segment,
    /// and returns its stream version (the stream's length before it). Positions are added in
    /// order, each once.
    pub(crate) fn add_record(&mut self, stream: &[u8], position: u64, offset: u64) -> u64 {
        let id = StreamId::of(stream);
        let tail = self.streams[shard_of(id)]
            .entry(id)
            .or_insert(StreamTail { len: 0, last: NO_PREVIOUS });
        let (version, previous) = (tail.len, tail.last);
        *tail = StreamTail { len: version + 1, last: position };
        let first = *self.first_linked.get_or_insert(position);
        let linked =
            self.links.len().saturating_sub(1) * LINK_CHUNK + self.links.last().map_or(0, Vec::len);
        assert_eq!(position - first, linked as u64, "positions are indexed in order, each once");
        match self.links.last_mut() {
            Some(chunk) if chunk.len() < LINK_CHUNK => chunk.push(previous),
            _ => {
                let mut chunk = Vec::with_capacity(LINK_CHUNK);
                chunk.push(previous);
                self.links.push(chunk);
            }
        }
        let last_segment = self.sparse.last_mut().expect("records live in a segment");
        if position.is_multiple_of(SPARSE_EVERY) || last_segment.is_empty() {
            last_segment.push((position, offset));
        }
        version
    }

    /// Starts loading the entry of `stream`, which a lookup will read soon (see
    /// [`crate::prefetch`]).
    pub(crate) fn prefetch_stream(&self, stream: &[u8]) {
        let hash = StreamId::of(stream).map_hash();
        crate::prefetch::lookup(&self.streams[shard_of_hash(hash)], hash);
    }

    /// The number of records of `stream`, committed or not.
    pub(crate) fn stream_len(&self, id: StreamId) -> u64 {
        self.streams[shard_of(id)].get(&id).map_or(0, |tail| tail.len)
    }

    /// The number of records of `stream` at positions below `head`.
    pub(crate) fn stream_len_below(&self, stream: &[u8], head: u64) -> u64 {
        let id = StreamId::of(stream);
        let beyond = self.walk_back(id).take_while(|&p| p >= head).count();
        self.stream_len(id) - beyond as u64
    }

    /// Positions of `stream` below `head`, in order.
    pub(crate) fn stream_positions(&self, stream: &[u8], head: u64) -> Vec<u64> {
        let walk = self.walk_back(StreamId::of(stream));
        let mut positions: Vec<u64> = walk.skip_while(|&p| p >= head).collect();
        positions.reverse();
        positions
    }

    /// Positions of stream `id`, committed or not, from its last record back to its first.
    fn walk_back(&self, id: StreamId) -> impl Iterator<Item = u64> + '_ {
        let last = self.streams[shard_of(id)].get(&id).map(|tail| tail.last);
        std::iter::successors(last, |&position| {
            let i = usize::try_from(position - self.first_linked?).expect("fits in memory");
            let previous = self.links[i / LINK_CHUNK][i % LINK_CHUNK];
            (previous != NO_PREVIOUS).then_some(previous)
        })
    }

    /// Number of streams.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.iter().map(StreamMap::len).sum()
    }

    /// The segment holding `position` and a byte offset in it at or before that record.
    pub(crate) fn locate(&self, position: u64) -> Option<(Arc<SegmentMeta>, u64)> {
        let i = self.segments.partition_point(|s| s.first <= position).checked_sub(1)?;
        let sparse = &self.sparse[i];
        let j = sparse.partition_point(|&(p, _)| p <= position);
        let offset = match j.checked_sub(1) {
            Some(j) => sparse[j].1,
            None => crate::limits::SEGMENT_HEADER_LEN as u64,
        };
        Some((self.segments[i].clone(), offset))
    }
}

/// The shard of `stream`: six bits from the middle of its hash. The shard's map uses the low
/// bits to pick a bucket and the top seven as the tag it compares before the key, so both
/// must stay independent of the shard: sharding by the top bits left a tag one bit of entropy
/// within a shard, and every other probe compared a key out of cache.
fn shard_of(id: StreamId) -> usize {
    shard_of_hash(id.map_hash())
}

fn shard_of_hash(hash: u64) -> usize {
    usize::try_from((hash >> 32) % STREAM_SHARDS as u64).expect("below STREAM_SHARDS")
}
