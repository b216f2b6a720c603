//! Every limit of the log in one place, with compile-time checks of how they relate.

/// Longest stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 255;

/// Largest payload of one record, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// Bytes of the largest possible record.
pub const MAX_RECORD_LEN: usize = crate::record::HEADER_LEN + MAX_STREAM_ID_LEN + MAX_PAYLOAD_LEN;

/// Most records one batch may hold.
pub const MAX_BATCH_RECORDS: usize = 1 << 16;

/// Default size of a segment file, preallocated when the segment is created.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;

/// Smallest segment size accepted (tests use small segments to exercise rollover).
pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;

/// Default number of batches that may wait for the writer; beyond it appends are refused with
/// `AppendError::QueueFull` rather than buffered without bound.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;

/// Bytes the writer gathers into one `write` + `fdatasync` at most (a group may exceed it by
/// its last batch). Small groups keep several in flight at once, so encoding the next groups
/// overlaps with syncing this one; measured on this machine, 256 KiB groups carried about 1.5×
/// the records per second of 8 MiB groups, and still amortize each fsync over ~1,000 records.
pub const MAX_GROUP_BYTES: usize = 256 << 10;

/// Bytes of zeros the log writes after a group that reaches past what it wrote before. A
/// segment is preallocated with `fallocate`, whose extents stay "unwritten" until data lands in
/// them, and an `fdatasync` after the first write into one also writes the file's extent
/// metadata. Zeros written ahead turn this many bytes of extents to written at one sync, so
/// the syncs of the next groups write their data only. Measured on this machine with
/// `fdatasync` after each 4–32 KiB write: 160–260 µs per sync against 400–480 µs without.
pub const ZEROS_AHEAD: usize = 1 << 20;

/// Encoded batch buffers kept for reuse once the writer has copied them (see
/// `writer::BatchBuffers`), and the largest one kept: at most 8 MiB held idle.
pub const POOLED_BATCH_BUFFERS: usize = 32;
/// See [`POOLED_BATCH_BUFFERS`].
pub const MAX_POOLED_BATCH_BYTES: usize = MAX_GROUP_BYTES;

/// Bytes of the segment header at the start of every segment file.
pub const SEGMENT_HEADER_LEN: usize = 64;

const _: () = assert!(MIN_SEGMENT_SIZE <= DEFAULT_SEGMENT_SIZE);
// Zeros are written once per several full groups, not with every one.
const _: () = assert!(ZEROS_AHEAD >= 4 * MAX_GROUP_BYTES);
const _: () = assert!(MAX_STREAM_ID_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_PAYLOAD_LEN <= u32::MAX as usize);
