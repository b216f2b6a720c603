//! Segment files: naming, the segment header, and reading records out of a segment.
//!
//! ```text
//! offset size field (segment header, 64 bytes)
//!      0    8 magic "ORDLYSEG"
//!      8    2 segment format version (3; 1 and 2 in older logs)
//!     10    6 reserved, zero
//!     16    8 global position of the segment's first record
//!     24   36 reserved, zero
//!     60    4 crc32c of bytes [0, 60)
//! ```
//! Records follow back to back from byte 64. A segment is preallocated; the bytes after its
//! last record are zero until written. A closed segment is cut to the end of its last record.

use std::io;
use std::ops::ControlFlow;

use crate::limits::{MAX_RECORD_LEN, SEGMENT_HEADER_LEN};
use crate::record::{self, ChainHash, Damage, HEADER_LEN, RecordView};
use crate::storage::StorageFile;

const MAGIC: &[u8; 8] = b"ORDLYSEG";
/// Segments are written with this version: 3 may hold records of formats up to 3. Segments of
/// versions 1 and 2 (records of formats up to their version) are still read; a log whose last
/// segment is older is given a new segment on open before anything is appended (see
/// `Log::open`), so that an older binary refuses the segment it cannot read instead of taking
/// its records for a torn write and cutting them.
pub(crate) const SEGMENT_FORMAT_VERSION: u16 = 3;
/// Segment format versions this build reads.
const READABLE_SEGMENT_VERSIONS: std::ops::RangeInclusive<u16> = 1..=SEGMENT_FORMAT_VERSION;
/// Bytes read from a segment at a time, at most.
const READ_CHUNK: usize = 1 << 20;
/// A window's first read, and its read after a jump: it doubles with every refill that goes on
/// from the window up to [`READ_CHUNK`]. A reader that wants one record (an idempotent retry
/// reads its first outcome back, from the sparse index entry before it, a few KiB away) then
/// reads a few KiB, not a MiB, while a scan soon reads whole chunks.
const FIRST_READ: usize = 16 << 10;

/// The file name of the segment whose first record is at `first_position`.
pub(crate) fn name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// The first position encoded in a segment file name, or `None` for other files.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment header for a segment starting at `first_position`.
pub(crate) fn encode_header(first_position: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment header says, or why it cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// A valid header for a segment starting at this position.
    Valid(u64),
    /// All zeros: the file was created but its header never written.
    Unwritten,
    /// Anything else.
    Damaged,
}

pub(crate) fn check_header(file: &dyn StorageFile) -> io::Result<HeaderCheck> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    let n = file.read_at(&mut h, 0)?;
    if h[..n].iter().all(|&b| b == 0) {
        return Ok(HeaderCheck::Unwritten);
    }
    let crc = u32::from_le_bytes(h[60..].try_into().expect("4 bytes"));
    if n < SEGMENT_HEADER_LEN
        || &h[..8] != MAGIC
        || !READABLE_SEGMENT_VERSIONS.contains(&u16::from_le_bytes([h[8], h[9]]))
        || crc32c::crc32c(&h[..60]) != crc
    {
        return Ok(HeaderCheck::Damaged);
    }
    Ok(HeaderCheck::Valid(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"))))
}

/// The format version in a segment's header (which [`check_header`] found valid).
pub(crate) fn header_version(file: &dyn StorageFile) -> io::Result<u16> {
    let mut version = [0u8; 2];
    file.read_at(&mut version, 8)?;
    Ok(u16::from_le_bytes(version))
}

/// A read buffer over part of a segment file, refilled as records are consumed.
#[derive(Debug, Default)]
pub(crate) struct Window {
    data: Vec<u8>,
    /// File offset of `data[0]`.
    start: u64,
    /// The read-ahead of the last refill (0 before the first).
    read_ahead: usize,
}

impl Window {
    /// Makes the window hold `[keep, offset + need)` (`keep` ≤ `offset`), reading ahead up to
    /// a chunk, never past `end`. Returns the bytes from `keep` on.
    fn fill(
        &mut self,
        file: &dyn StorageFile,
        keep: u64,
        offset: u64,
        need: usize,
        end: u64,
    ) -> io::Result<&[u8]> {
        debug_assert!(keep <= offset);
        let window_end = self.start + self.data.len() as u64;
        let inside = offset >= self.start && offset <= window_end;
        if !(inside
            && keep >= self.start
            && (offset + need as u64 <= window_end || window_end >= end))
        {
            self.read_ahead = if inside {
                (self.read_ahead * 2).clamp(FIRST_READ, READ_CHUNK)
            } else {
                FIRST_READ
            };
            let want = (offset - keep) + need.max(self.read_ahead) as u64;
            let len = usize::try_from(want.min(end.saturating_sub(keep))).expect("fits usize");
            self.data.resize(len, 0);
            let n = file.read_at(&mut self.data, keep)?;
            self.data.truncate(n);
            self.start = keep;
        }
        let from = usize::try_from(keep - self.start).expect("offset within window");
        Ok(&self.data[from..])
    }

    /// The bytes `[from, to)`, which the last fill kept.
    fn held(&self, from: u64, to: u64) -> &[u8] {
        let at = |offset: u64| usize::try_from(offset - self.start).expect("within window");
        &self.data[at(from)..at(to)]
    }

    /// Decodes the record at `offset`, reading no byte at or past `end`.
    pub(crate) fn record_at(
        &mut self,
        file: &dyn StorageFile,
        offset: u64,
        end: u64,
    ) -> io::Result<Result<RecordView<'_>, Damage>> {
        Ok(self.record_keeping(file, offset, offset, end)?.map(|read| read.view))
    }

    /// [`Window::record_at`], keeping the bytes from `keep` on (`keep` ≤ `offset`), which it
    /// gives with the bytes the window holds after the record. Always inlined, with
    /// [`record::decode`], for the reason given there.
    #[inline(always)]
    fn record_keeping(
        &mut self,
        file: &dyn StorageFile,
        keep: u64,
        offset: u64,
        end: u64,
    ) -> io::Result<Result<WindowRead<'_>, Damage>> {
        let skip = usize::try_from(offset - keep).expect("fits usize");
        // A file cut below the bytes kept (a segment closed under a reader) ends there, as a
        // file that holds nothing at `offset` does.
        let Some(head) = self.fill(file, keep, offset, HEADER_LEN, end)?.get(skip..) else {
            return Ok(Err(Damage::Unused));
        };
        let need = record_len_hint(head).unwrap_or(HEADER_LEN);
        let bytes = self.fill(file, keep, offset, need, end)?;
        if bytes.len() < skip {
            return Ok(Err(Damage::Unused));
        }
        Ok(record::decode(&bytes[skip..]).map(|view| {
            let through = skip + view.bytes.len();
            WindowRead { view, kept: &bytes[..through], rest: &bytes[through..] }
        }))
    }
}

/// The length the header at the start of `buf` claims, if it can be read at all.
pub(crate) fn record_len_hint(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let payload = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    let stream = usize::from(u16::from_le_bytes([buf[10], buf[11]]));
    (payload <= crate::limits::MAX_PAYLOAD_LEN && stream <= crate::limits::MAX_STREAM_ID_LEN)
        .then(|| record::encoded_len(stream, payload))
}

/// A record read by [`Window::record_keeping`].
struct WindowRead<'a> {
    view: RecordView<'a>,
    /// The bytes kept before the record, and the record.
    kept: &'a [u8],
    /// The bytes the window holds after the record: the start of the next, if read already.
    rest: &'a [u8],
}

/// Where a record read by [`scan`] stands in the hash chain. Its chain hash is computed only
/// when asked ([`ChainAt::hash`]): a format 3 record's is the hash of its batch so far.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ChainAt<'a> {
    /// A record of format 1 or 2: its bytes.
    Record(&'a [u8]),
    /// A record of format 3: its batch's bytes before `rest` are in `hashed` (keyed by the hash
    /// the batch's records carry), and `rest` ends with the record.
    Batch { hashed: &'a blake3::Hasher, rest: &'a [u8] },
    /// The hash, computed already.
    Known(ChainHash),
    /// A record of format 3 in a batch the scan was told not to hash.
    Unhashed,
}

impl ChainAt<'_> {
    /// The chain hash at the record, or `None` if its batch is not hashed.
    pub(crate) fn hash(&self) -> Option<ChainHash> {
        match *self {
            ChainAt::Record(bytes) => Some(record::record_chain_hash(bytes)),
            ChainAt::Batch { hashed, rest } => {
                let mut hasher = hashed.clone();
                Some(*hasher.update(rest).finalize().as_bytes())
            }
            ChainAt::Known(hash) => Some(hash),
            ChainAt::Unhashed => None,
        }
    }
}

/// A format 3 batch being scanned: its bytes are hashed as the scan moves past them.
struct BatchHashing {
    hasher: blake3::Hasher,
    /// File offset up to which the batch's bytes are in `hasher`.
    hashed_to: u64,
}

/// Bytes of a batch a scan gathers before it hashes them: enough for blake3 to hash many
/// 1 KiB chunks at once, little enough that the read window keeps them cheaply.
pub(crate) const HASH_EVERY: u64 = 64 << 10;

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Reached `end`.
    End,
    /// Zeros: no record was written here.
    Unused,
    /// The bytes here are not a valid record.
    Damaged(Damage),
    /// The visitor asked to stop.
    Stopped,
}

/// Visits the records of `file` from `offset` until `end`, zeros, damage or the visitor says
/// stop, with where each stands in the hash chain (format 3 batches that start at position
/// `hash_from` or later are hashed, earlier ones not), and with the stream id the next record's
/// header names when it is already read: unverified, a hint of what the pass will look up
/// next. Returns the offset it stopped at and why.
pub(crate) fn scan(
    file: &dyn StorageFile,
    mut offset: u64,
    end: u64,
    hash_from: u64,
    mut visit: impl FnMut(u64, &RecordView<'_>, ChainAt<'_>, Option<&[u8]>) -> ControlFlow<()>,
) -> io::Result<(u64, ScanEnd)> {
    let mut window = Window::default();
    let mut batch: Option<BatchHashing> = None;
    loop {
        if offset >= end {
            return Ok((offset, ScanEnd::End));
        }
        // The batch's bytes the window holds are hashed before it moves on far past them.
        if let Some(batch) = batch.as_mut().filter(|b| offset - b.hashed_to >= HASH_EVERY) {
            batch.hasher.update(window.held(batch.hashed_to, offset));
            batch.hashed_to = offset;
        }
        let keep = batch.as_ref().map_or(offset, |b| b.hashed_to);
        let read = match window.record_keeping(file, keep, offset, end)? {
            Ok(read) => read,
            Err(Damage::Unused) => return Ok((offset, ScanEnd::Unused)),
            Err(damage) => return Ok((offset, ScanEnd::Damaged(damage))),
        };
        let view = read.view;
        if !view.chains_by_batch() {
            batch = None;
        } else if batch.is_none() && view.position >= hash_from {
            let hasher = blake3::Hasher::new_keyed(view.prev_hash);
            batch = Some(BatchHashing { hasher, hashed_to: offset });
        }
        let chain = match &batch {
            _ if !view.chains_by_batch() => ChainAt::Record(view.bytes),
            Some(batch) => {
                let unhashed = usize::try_from(batch.hashed_to - keep).expect("within window");
                ChainAt::Batch { hashed: &batch.hasher, rest: &read.kept[unhashed..] }
            }
            None => ChainAt::Unhashed,
        };
        if visit(offset, &view, chain, record::stream_hint(read.rest)).is_break() {
            return Ok((offset, ScanEnd::Stopped));
        }
        if view.ends_batch() {
            batch = None;
        }
        offset += view.bytes.len() as u64;
    }
}

/// Whether a valid record (header and checksum) starts at any byte offset in `[from, end)`. A
/// record that starts there may end past `end`: it is read whole, so that it is not taken for
/// damage.
pub(crate) fn has_record_within(file: &dyn StorageFile, from: u64, end: u64) -> io::Result<bool> {
    let starts = usize::try_from(end.saturating_sub(from)).expect("fits usize");
    let mut buf = vec![0u8; starts + MAX_RECORD_LEN];
    let n = file.read_at(&mut buf, from)?;
    let buf = &buf[..n];
    Ok((0..starts.min(n)).any(|at| {
        buf.get(at + 8).is_some_and(|&v| record::is_known_version(v))
            && record::decode(&buf[at..]).is_ok()
    }))
}

/// Bytes of [`ZEROS`].
const ZEROS_LEN: usize = 1 << 20;

/// A megabyte of zeros: what the writer writes after a group that reaches past what was
/// written before, and what a chunk read by [`is_zero`] is compared with (slice equality is
/// one `memcmp`, fast in any build: a byte-by-byte look made a debug build's open of a fresh
/// 256 MiB segment take a second).
pub(crate) static ZEROS: [u8; ZEROS_LEN] = [0; ZEROS_LEN];
const _: () = assert!(READ_CHUNK <= ZEROS_LEN && crate::limits::ZEROS_AHEAD <= ZEROS_LEN);

/// Whether every byte of `file` in `[from, end)` is zero.
pub(crate) fn is_zero(file: &dyn StorageFile, from: u64, end: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = from;
    while offset < end {
        let len = usize::try_from((end - offset).min(READ_CHUNK as u64)).expect("chunk");
        let n = file.read_at(&mut buf[..len], offset)?;
        if n == 0 {
            break;
        }
        if buf[..n] != ZEROS[..n] {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A read-only file of `bytes` that records the length of every read, and is cut to `cut`
    /// bytes after its first `cut_after` reads: a segment closed (cut to its last record) under
    /// a reader.
    #[derive(Debug)]
    struct ReadOnlyFile {
        bytes: Vec<u8>,
        cut: usize,
        cut_after: usize,
        reads: Mutex<Vec<usize>>,
    }

    impl ReadOnlyFile {
        fn new(bytes: Vec<u8>) -> ReadOnlyFile {
            ReadOnlyFile { bytes, cut: 0, cut_after: usize::MAX, reads: Mutex::default() }
        }
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
    }

    impl StorageFile for ReadOnlyFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let mut reads = self.reads.lock().unwrap();
            let len = if reads.len() >= self.cut_after { self.cut } else { self.bytes.len() };
            let from = usize::try_from(offset).unwrap().min(len);
            let n = buf.len().min(len - from);
            buf[..n].copy_from_slice(&self.bytes[from..from + n]);
            reads.push(n);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            unreachable!("read only")
        }
        fn sync_data(&self) -> io::Result<()> {
            unreachable!("read only")
        }
        fn forget_cached(&self) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.len())
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            unreachable!("read only")
        }
    }

    #[test]
    fn a_window_reads_little_for_one_record_and_whole_chunks_for_a_scan() {
        let file = ReadOnlyFile::new(vec![0; 8 << 20]);
        let mut window = Window::default();
        window.fill(&file, 0, 0, HEADER_LEN, file.len()).unwrap();
        assert_eq!(*file.reads.lock().unwrap(), [FIRST_READ], "one record reads 16 KiB");

        // Reading on past the window's end: each refill doubles, up to a whole chunk.
        let mut offset = 0;
        for _ in 0..8 {
            offset = window.start + window.data.len() as u64;
            window.fill(&file, offset, offset, HEADER_LEN, file.len()).unwrap();
        }
        let reads = file.reads.lock().unwrap().clone();
        let kib: Vec<usize> = reads.iter().map(|n| n >> 10).collect();
        assert_eq!(kib, [16, 32, 64, 128, 256, 512, 1024, 1024, 1024]);
        assert_eq!(window.start, offset);

        // A jump elsewhere starts again small; a read near the end stops there.
        window.fill(&file, 1 << 20, 1 << 20, HEADER_LEN, file.len()).unwrap();
        window.fill(&file, file.len() - 1000, file.len() - 1000, HEADER_LEN, file.len()).unwrap();
        let reads = file.reads.lock().unwrap().clone();
        assert_eq!(reads[reads.len() - 2..], [FIRST_READ, 1000]);

        // A record larger than the read-ahead is read whole.
        let mut fresh = Window::default();
        let bytes = fresh.fill(&file, 0, 0, 3 << 20, file.len()).unwrap();
        assert_eq!(bytes.len(), 3 << 20);
    }

    /// Records back to back that one batch of `count` records with `payload_len`-byte payloads
    /// fills, sealed as the writer seals them.
    fn sealed_batch(count: u64, payload_len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        for position in 0..count {
            let at = buf.len();
            let record = crate::record::NewRecord {
                stream: b"s".to_vec(),
                expected: crate::record::Expected::Any,
                event_type: 1,
                schema_version: 1,
                timestamp: 0,
                payload: vec![7; payload_len],
            };
            record::encode_unsealed(&record, &mut buf);
            record::place(&mut buf[at..], position, position, position + 1 == count);
        }
        record::seal_all(&mut buf, [0; 32]);
        buf
    }

    #[test]
    fn a_file_cut_under_a_scan_inside_a_batch_ends_the_scan_there() {
        // A batch of 2 MB: the scan's window keeps its bytes not yet hashed, and refills from
        // them; the file is cut below them after the first few reads.
        let bytes = sealed_batch(200, 10_000);
        let (len, cut) = (bytes.len() as u64, 200_000);
        let file = ReadOnlyFile { cut, cut_after: 4, ..ReadOnlyFile::new(bytes) };
        let mut visited = 0;
        let (stopped_at, end) = scan(&file, 0, len, 0, |_, _, _, _| {
            visited += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(end, ScanEnd::Unused);
        assert!(stopped_at <= len && visited < 200, "stopped at {stopped_at} after {visited}");
    }

    #[test]
    fn a_scan_hashes_a_batch_larger_than_its_window_as_one_input() {
        let bytes = sealed_batch(200, 10_000);
        let expected = record::batch_chain_hash(&[0; 32], &bytes);
        let len = bytes.len() as u64;
        let file = ReadOnlyFile::new(bytes);
        let mut last = None;
        let (_, end) = scan(&file, 0, len, 0, |_, view, chain, _| {
            if view.ends_batch() {
                last = chain.hash();
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!((end, last), (ScanEnd::End, Some(expected)));
    }
}
