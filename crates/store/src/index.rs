//! The in-memory index, rebuilt on open: where each segment starts, a sparse map from position
//! to byte offset within segments, and the positions of every stream.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rustc_hash::FxHashMap;

use crate::storage::StorageFile;

/// One position in every this many gets an entry in the sparse position index.
pub(crate) const SPARSE_EVERY: u64 = 256;

/// The stream map is split into this many shards by hash, so that growing one (a rehash that
/// copies every entry) stalls the writer for a 64th of the time a single map would: at a
/// million streams, a few milliseconds instead of a few hundred.
const STREAM_SHARDS: usize = 64;

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
    /// Positions of every stream, in [`STREAM_SHARDS`] shards.
    streams: Vec<FxHashMap<Box<[u8]>, Vec<u64>>>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            segments: Vec::new(),
            sparse: Vec::new(),
            streams: (0..STREAM_SHARDS).map(|_| FxHashMap::default()).collect(),
        }
    }
}

impl Index {
    pub(crate) fn add_segment(&mut self, segment: Arc<SegmentMeta>) {
        self.segments.push(segment);
        self.sparse.push(Vec::new());
    }

    /// Records that the record at `position` of `stream` lies at `offset` of the last segment,
    /// and returns its stream version (the stream's length before it).
    pub(crate) fn add_record(&mut self, stream: &[u8], position: u64, offset: u64) -> u64 {
        let shard = self.shard_mut(stream);
        let version = match shard.get_mut(stream) {
            Some(positions) => {
                positions.push(position);
                positions.len() - 1
            }
            None => {
                shard.insert(stream.into(), vec![position]);
                0
            }
        };
        let last_segment = self.sparse.last_mut().expect("records live in a segment");
        if position.is_multiple_of(SPARSE_EVERY) || last_segment.is_empty() {
            last_segment.push((position, offset));
        }
        version as u64
    }

    /// The number of records of `stream`, committed or not.
    pub(crate) fn stream_len(&self, stream: &[u8]) -> u64 {
        self.stream_positions(stream).len() as u64
    }

    /// Positions of `stream`, committed or not, in order.
    pub(crate) fn stream_positions(&self, stream: &[u8]) -> &[u64] {
        self.streams[shard_of(stream)].get(stream).map_or(&[], Vec::as_slice)
    }

    /// Number of streams.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.iter().map(FxHashMap::len).sum()
    }

    fn shard_mut(&mut self, stream: &[u8]) -> &mut FxHashMap<Box<[u8]>, Vec<u64>> {
        &mut self.streams[shard_of(stream)]
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
fn shard_of(stream: &[u8]) -> usize {
    use std::hash::BuildHasher;
    let hash = rustc_hash::FxBuildHasher.hash_one(stream);
    usize::try_from((hash >> 32) % STREAM_SHARDS as u64).expect("below STREAM_SHARDS")
}
