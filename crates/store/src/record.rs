//! The record format: a hand-encoded little-endian header, the stream id and the opaque
//! payload. `docs/design/event-log.md` has the byte diagram; this file is its only encoder and
//! decoder.
//!
//! ```text
//! offset size field
//!      0    4 crc32c of bytes [4, record end): everything after this field
//!      4    4 payload length
//!      8    1 format version (3, or 1 and 2 in older logs); 0 marks unused space after the last record
//!      9    1 flags (bit 0: last record of its batch)
//!     10    2 stream id length (1..=MAX_STREAM_ID_LEN)
//!     12    2 event type
//!     14    2 schema version
//!     16    8 global position
//!     24    8 stream version
//!     32    8 timestamp (milliseconds since the Unix epoch)
//!     40   32 chain hash before the record (format 3: before its batch); zeros at first
//!     72    . stream id, then payload
//! ```
//!
//! The *chain hash* at a record commits to every byte of it and of every record before it:
//! - format 3: the blake3 keyed hash, with the hash its batch's records carry (bytes [40, 72),
//!   the chain hash at the record before the batch) as the key, over the bytes of the batch's
//!   records back to back, up to and including this one. The next batch carries the hash at
//!   the batch's last record;
//! - format 2: the blake3 keyed hash with the record's own previous-record hash (bytes
//!   [40, 72)) as the key, over the rest of its bytes ([0, 40) then [72, end)); the next record
//!   carries it;
//! - format 1: the blake3 hash of all its bytes [0, end); the next record carries it.
//!
//! Each format exists for speed, as the chain hash is most of the log's CPU cost per record.
//! Format 2 no longer hashes the previous hash as input. Format 3 hashes a whole batch as one
//! input, which blake3 hashes several 1 KiB chunks at a time (SIMD), where one record at a time
//! is hashed a 64-byte block after another: measured here, 68–90 ns a 278-byte record in a
//! batch of 1,024, against 314–338 ns one by one. The records of a batch share one format.

use crate::limits::{MAX_PAYLOAD_LEN, MAX_STREAM_ID_LEN};
use crate::position::{Position, StreamVersion};

/// Bytes of the fixed header before the stream id.
pub(crate) const HEADER_LEN: usize = 72;
/// The record format version written: chained by batch.
pub(crate) const FORMAT_VERSION: u8 = 3;
/// The first record format: read, verified and chained, never written any more.
const FORMAT_V1: u8 = 1;

/// Whether `version` is a record format version this code reads (1 to [`FORMAT_VERSION`]).
pub(crate) fn is_known_version(version: u8) -> bool {
    (FORMAT_V1..=FORMAT_VERSION).contains(&version)
}

/// Whether records of format `version` are chained by batch, not one by one.
pub(crate) fn chains_by_batch(version: u8) -> bool {
    version >= 3
}
/// Flag bit: this record ends its batch; a batch is durable only with its last record.
pub(crate) const FLAG_BATCH_END: u8 = 1;

/// The blake3 hash that chains one record to the next.
pub type ChainHash = [u8; 32];

/// A record to append. The log assigns its position and stream version at commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// The stream (aggregate) the record belongs to: 1 to [`MAX_STREAM_ID_LEN`] bytes.
    pub stream: Vec<u8>,
    /// Optimistic concurrency: what the stream's version must be when this record is written.
    pub expected: Expected,
    /// The caller's event type code; opaque to the log.
    pub event_type: u16,
    /// The schema version of the payload; opaque to the log.
    pub schema_version: u16,
    /// Milliseconds since the Unix epoch, stamped by the caller.
    pub timestamp: u64,
    /// The event, opaque bytes of at most [`MAX_PAYLOAD_LEN`].
    pub payload: Vec<u8>,
}

/// What a stream's version must be for a record to be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// No check.
    Any,
    /// The stream must be at exactly this version (0: the stream must not exist yet).
    Exactly(StreamVersion),
}

/// A committed record, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its place in the whole log.
    pub position: Position,
    /// Its stream.
    pub stream: Vec<u8>,
    /// Its version within the stream (0 for the stream's first record).
    pub stream_version: StreamVersion,
    /// The caller's event type code.
    pub event_type: u16,
    /// The schema version of the payload.
    pub schema_version: u16,
    /// Milliseconds since the Unix epoch, as stamped by the appender.
    pub timestamp: u64,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl NewRecord {
    /// Bytes it takes on disk: the record header, its stream id and its payload.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.stream.len(), self.payload.len())
    }
}

impl Record {
    /// Bytes it takes on disk: the record header, its stream id and its payload.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.stream.len(), self.payload.len())
    }
}

/// A decoded record borrowing its bytes from a read buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordView<'a> {
    pub position: u64,
    pub stream_version: u64,
    pub event_type: u16,
    pub schema_version: u16,
    pub timestamp: u64,
    pub flags: u8,
    pub version: u8,
    pub prev_hash: &'a [u8; 32],
    pub stream: &'a [u8],
    pub payload: &'a [u8],
    /// The whole record, header included.
    pub bytes: &'a [u8],
}

impl RecordView<'_> {
    pub(crate) fn ends_batch(&self) -> bool {
        self.flags & FLAG_BATCH_END != 0
    }

    pub(crate) fn to_record(self) -> Record {
        Record {
            position: Position(self.position),
            stream: self.stream.to_vec(),
            stream_version: StreamVersion(self.stream_version),
            event_type: self.event_type,
            schema_version: self.schema_version,
            timestamp: self.timestamp,
            payload: self.payload.to_vec(),
        }
    }

    /// Whether the record is chained with the rest of its batch (format 3).
    pub(crate) fn chains_by_batch(&self) -> bool {
        chains_by_batch(self.version)
    }
}

/// Bytes `record` takes on disk.
pub(crate) fn encoded_len(stream_len: usize, payload_len: usize) -> usize {
    HEADER_LEN + stream_len + payload_len
}

/// What is wrong with the bytes at a record's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The bytes are zero: nothing was ever written here.
    Unused,
    /// The header's version, lengths or flags are impossible, or the record runs past the end.
    BadHeader,
    /// The checksum does not match the bytes.
    BadChecksum,
}

/// Appends `record` to `out` as an *unsealed* record: its position, stream version and flags
/// are zero until the writer places it ([`place`]), and its checksum and previous-record hash
/// until the seal thread completes it ([`seal_all`]). Appenders encode their batches this way
/// on their own threads, so the writer copies each batch with one `memcpy`.
pub(crate) fn encode_unsealed(record: &NewRecord, out: &mut Vec<u8>) {
    let payload_len = u32::try_from(record.payload.len()).expect("payload length is checked");
    let stream_len = u16::try_from(record.stream.len()).expect("stream length is checked");
    // The header is assembled on the stack and copied once, not field by field into `out`.
    let mut fixed = [0u8; HEADER_LEN];
    fixed[4..8].copy_from_slice(&payload_len.to_le_bytes());
    fixed[8] = FORMAT_VERSION;
    fixed[10..12].copy_from_slice(&stream_len.to_le_bytes());
    fixed[12..14].copy_from_slice(&record.event_type.to_le_bytes());
    fixed[14..16].copy_from_slice(&record.schema_version.to_le_bytes());
    fixed[32..40].copy_from_slice(&record.timestamp.to_le_bytes());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(&record.stream);
    out.extend_from_slice(&record.payload);
}

/// The length of the well-formed record at the start of `bytes`, from its header.
pub(crate) fn len_at(bytes: &[u8]) -> usize {
    let stream_len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    let payload_len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    encoded_len(stream_len, payload_len)
}

/// The stream id of the well-formed record at the start of `bytes`.
pub(crate) fn stream_at(bytes: &[u8]) -> &[u8] {
    let stream_len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    &bytes[HEADER_LEN..HEADER_LEN + stream_len]
}

/// Gives the unsealed record at the start of `bytes` its place in the log.
pub(crate) fn place(bytes: &mut [u8], position: u64, stream_version: u64, batch_end: bool) {
    bytes[9] = if batch_end { FLAG_BATCH_END } else { 0 };
    bytes[16..24].copy_from_slice(&position.to_le_bytes());
    bytes[24..32].copy_from_slice(&stream_version.to_le_bytes());
}

/// Seals the unsealed records that fill `buf` back to back, whole batches chained from
/// `chain` (the chain hash at the record before them): writes into each record the hash at
/// the record before its batch, then its checksum. Returns the chain hash at the last.
pub(crate) fn seal_all(buf: &mut [u8], mut chain: ChainHash) -> ChainHash {
    let (mut at, mut batch_start) = (0, 0);
    while at < buf.len() {
        let record = &mut buf[at..];
        let len = len_at(record);
        let ends_batch = record[9] & FLAG_BATCH_END != 0;
        record[40..HEADER_LEN].copy_from_slice(&chain);
        let crc = crc32c::crc32c(&record[4..len]);
        record[..4].copy_from_slice(&crc.to_le_bytes());
        at += len;
        if ends_batch {
            chain = batch_chain_hash(&chain, &buf[batch_start..at]);
            batch_start = at;
        }
    }
    debug_assert_eq!(batch_start, buf.len(), "a group holds whole batches");
    chain
}

/// The chain hash at the last of `records`, records of one format 3 batch back to back from
/// its first, which carry `key`.
pub(crate) fn batch_chain_hash(key: &ChainHash, records: &[u8]) -> ChainHash {
    *blake3::keyed_hash(key, records).as_bytes()
}

/// The chain hash of one record of format 1 or 2, from its own bytes.
/// `bytes` is exactly one well-formed record.
pub(crate) fn record_chain_hash(bytes: &[u8]) -> ChainHash {
    debug_assert!(!chains_by_batch(bytes[8]), "format 3 records are chained by batch");
    if bytes[8] == FORMAT_V1 {
        return *blake3::hash(bytes).as_bytes();
    }
    let key: &ChainHash = bytes[40..HEADER_LEN].try_into().expect("32 bytes");
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&bytes[..40]).update(&bytes[HEADER_LEN..]);
    *hasher.finalize().as_bytes()
}

/// The stream id named by the record header at the start of `buf`, if the header and the id
/// are within `buf` and its length is in bounds. Nothing is verified: a hint only.
pub(crate) fn stream_hint(buf: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_le_bytes([*buf.get(10)?, *buf.get(11)?]));
    (len <= MAX_STREAM_ID_LEN).then(|| buf.get(HEADER_LEN..HEADER_LEN + len)).flatten()
}

/// Decodes the record at the start of `buf`, checking its header and checksum (not its place
/// in the chain, which the caller knows). `Err(Damage::Unused)` means `buf` starts with zeros.
///
/// Always inlined, as is the window's read that calls it, into a scan's loop: a view returned
/// through memory was read back with wider loads than it was written with, which waited until
/// the writes were done, behind the checksum's chain of instructions (a scan of 2.7M records
/// took 0.44–0.52 s inlined, five runs of six under 0.48, against 0.51–0.54 s).
#[inline(always)]
pub(crate) fn decode(buf: &[u8]) -> Result<RecordView<'_>, Damage> {
    if buf.len() < HEADER_LEN {
        return Err(if buf.iter().all(|&b| b == 0) { Damage::Unused } else { Damage::BadHeader });
    }
    let u16_at = |at: usize| u16::from_le_bytes([buf[at], buf[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let version = buf[8];
    if version == 0 {
        return Err(if buf[..HEADER_LEN].iter().all(|&b| b == 0) {
            Damage::Unused
        } else {
            Damage::BadHeader
        });
    }
    let payload_len = u32_at(4) as usize;
    let stream_len = usize::from(u16_at(10));
    let flags = buf[9];
    if !is_known_version(version)
        || flags & !FLAG_BATCH_END != 0
        || stream_len == 0
        || stream_len > MAX_STREAM_ID_LEN
        || payload_len > MAX_PAYLOAD_LEN
    {
        return Err(Damage::BadHeader);
    }
    let len = encoded_len(stream_len, payload_len);
    if buf.len() < len {
        return Err(Damage::BadHeader);
    }
    let bytes = &buf[..len];
    if crc32c::crc32c(&bytes[4..]) != u32_at(0) {
        return Err(Damage::BadChecksum);
    }
    Ok(RecordView {
        position: u64_at(16),
        stream_version: u64_at(24),
        event_type: u16_at(12),
        schema_version: u16_at(14),
        timestamp: u64_at(32),
        flags,
        version,
        prev_hash: bytes[40..72].try_into().expect("32 bytes"),
        stream: &bytes[HEADER_LEN..HEADER_LEN + stream_len],
        payload: &bytes[HEADER_LEN + stream_len..],
        bytes,
    })
}
