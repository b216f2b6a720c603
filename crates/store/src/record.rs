//! The record format: a hand-encoded little-endian header, the stream id and the opaque
//! payload. `docs/design/event-log.md` has the byte diagram; this file is its only encoder and
//! decoder.
//!
//! ```text
//! offset size field
//!      0    4 crc32c of bytes [4, record end): everything after this field
//!      4    4 payload length
//!      8    1 format version (2, or 1 in older logs); 0 marks unused space after the last record
//!      9    1 flags (bit 0: last record of its batch)
//!     10    2 stream id length (1..=MAX_STREAM_ID_LEN)
//!     12    2 event type
//!     14    2 schema version
//!     16    8 global position
//!     24    8 stream version
//!     32    8 timestamp (milliseconds since the Unix epoch)
//!     40   32 chain hash of the previous record (zeros before the first record)
//!     72    . stream id, then payload
//! ```
//!
//! A record's *chain hash*, which the next record carries, commits to every byte of it:
//! - format 2: the blake3 keyed hash with the record's own previous-record hash (bytes
//!   [40, 72)) as the key, over the rest of its bytes ([0, 40) then [72, end));
//! - format 1: the blake3 hash of all its bytes [0, end).
//!
//! Format 2 exists for speed: the previous hash, as the key, is no longer hashed as 32 bytes
//! of input, which is one blake3 compression in two (a 221-byte record needed four, now
//! three), and the chain hash is most of the log's CPU cost per record.

use crate::limits::{MAX_PAYLOAD_LEN, MAX_STREAM_ID_LEN};
use crate::position::{Position, StreamVersion};

/// Bytes of the fixed header before the stream id.
pub(crate) const HEADER_LEN: usize = 72;
/// The record format version written.
pub(crate) const FORMAT_VERSION: u8 = 2;
/// The first record format: read, verified and chained, never written any more.
const FORMAT_V1: u8 = 1;

/// Whether `version` is a record format version this code reads.
pub(crate) fn is_known_version(version: u8) -> bool {
    version == FORMAT_VERSION || version == FORMAT_V1
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

    /// The hash the next record must carry as its previous hash.
    pub(crate) fn hash(&self) -> ChainHash {
        chain_hash(self.bytes)
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

/// Seals the unsealed records that fill `buf` back to back, the first chained to `prev_hash`:
/// writes each one's previous-record hash and checksum. Returns the chain hash of the last.
pub(crate) fn seal_all(buf: &mut [u8], mut prev_hash: ChainHash) -> ChainHash {
    let mut at = 0;
    while at < buf.len() {
        let len = len_at(&buf[at..]);
        prev_hash = seal(&mut buf[at..at + len], &prev_hash);
        at += len;
    }
    prev_hash
}

/// Completes one unsealed record (`bytes` is exactly the record) and returns its chain hash.
fn seal(bytes: &mut [u8], prev_hash: &ChainHash) -> ChainHash {
    bytes[40..72].copy_from_slice(prev_hash);
    let crc = crc32c::crc32c(&bytes[4..]);
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
    chain_hash(bytes)
}

/// The chain hash of one record's bytes.
/// `bytes` is exactly one well-formed record.
pub(crate) fn chain_hash(bytes: &[u8]) -> ChainHash {
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
        prev_hash: bytes[40..72].try_into().expect("32 bytes"),
        stream: &bytes[HEADER_LEN..HEADER_LEN + stream_len],
        payload: &bytes[HEADER_LEN + stream_len..],
        bytes,
    })
}
