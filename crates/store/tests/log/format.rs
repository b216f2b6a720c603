//! The record format byte for byte: records as written (format 3) against bytes spelled out
//! here, a batch's chain hash against a pinned value, and logs of format 1 and 2 records, built
//! by hand, still opening, verifying their chain and growing with format 3 records.

use std::path::Path;

use orderly_store::{Expected, Log, LogConfig, NewRecord, OpenError, Position, Problem};

use super::common::{open, read_all, segment_files};

const SEGMENT_HEADER_LEN: usize = 64;
const RECORD_HEADER_LEN: usize = 72;

/// The fields of one record, in the order of the header.
struct Fields<'a> {
    version: u8,
    batch_end: bool,
    event_type: u16,
    schema_version: u16,
    position: u64,
    stream_version: u64,
    timestamp: u64,
    prev_hash: [u8; 32],
    stream: &'a [u8],
    payload: &'a [u8],
}

/// The record's bytes, written out field by field as `docs/design/event-log.md` draws them.
fn encode(f: &Fields<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&u32::try_from(f.payload.len()).unwrap().to_le_bytes());
    b.push(f.version);
    b.push(u8::from(f.batch_end));
    b.extend_from_slice(&u16::try_from(f.stream.len()).unwrap().to_le_bytes());
    b.extend_from_slice(&f.event_type.to_le_bytes());
    b.extend_from_slice(&f.schema_version.to_le_bytes());
    b.extend_from_slice(&f.position.to_le_bytes());
    b.extend_from_slice(&f.stream_version.to_le_bytes());
    b.extend_from_slice(&f.timestamp.to_le_bytes());
    b.extend_from_slice(&f.prev_hash);
    assert_eq!(b.len(), RECORD_HEADER_LEN);
    b.extend_from_slice(f.stream);
    b.extend_from_slice(f.payload);
    let crc = crc32c::crc32c(&b[4..]);
    b[..4].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Format 1's chain hash: blake3 of all the record's bytes.
fn chain_v1(record: &[u8]) -> [u8; 32] {
    *blake3::hash(record).as_bytes()
}

/// Format 2's chain hash: blake3 keyed by the record's previous hash, over its other bytes.
fn chain_v2(record: &[u8]) -> [u8; 32] {
    let key: [u8; 32] = record[40..72].try_into().unwrap();
    let mut rest = record[..40].to_vec();
    rest.extend_from_slice(&record[72..]);
    *blake3::keyed_hash(&key, &rest).as_bytes()
}

/// Format 3's chain hash at the last of `batch`, records of one batch from its first: blake3
/// keyed by the hash they carry, over their bytes back to back.
fn chain_v3(batch: &[&[u8]]) -> [u8; 32] {
    let key: [u8; 32] = batch[0][40..72].try_into().unwrap();
    *blake3::keyed_hash(&key, &batch.concat()).as_bytes()
}

fn new_record(stream: &[u8], payload: &[u8]) -> NewRecord {
    NewRecord {
        stream: stream.to_vec(),
        expected: Expected::Any,
        event_type: 0x0102,
        schema_version: 3,
        timestamp: 1_700_000_000_123,
        payload: payload.to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn records_are_written_as_format_3_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    log.append(vec![new_record(b"order-1", b"first"), new_record(b"order-2", b"second")]).unwrap();
    log.append(vec![new_record(b"order-1", b"third")]).unwrap();
    log.append(vec![new_record(b"order-3", b"fourth")]).unwrap();

    let fields = |position, stream_version, batch_end, prev_hash, stream, payload| Fields {
        version: 3,
        batch_end,
        event_type: 0x0102,
        schema_version: 3,
        position,
        stream_version,
        timestamp: 1_700_000_000_123,
        prev_hash,
        stream,
        payload,
    };
    // Every record of a batch carries the chain hash at the record before the batch.
    let first = encode(&fields(0, 0, false, [0; 32], b"order-1", b"first"));
    let second = encode(&fields(1, 0, true, [0; 32], b"order-2", b"second"));
    let first_batch = chain_v3(&[&first, &second]);
    let third = encode(&fields(2, 1, true, first_batch, b"order-1", b"third"));
    let fourth = encode(&fields(3, 0, true, chain_v3(&[&third]), b"order-3", b"fourth"));
    let written = std::fs::read(&segment_files(dir.path())[0]).unwrap();
    let mut at = SEGMENT_HEADER_LEN;
    for (name, expected) in
        [("first", &first), ("second", &second), ("third", &third), ("fourth", &fourth)]
    {
        assert_eq!(hex(&written[at..at + expected.len()]), hex(expected), "{name} record");
        at += expected.len();
    }
    assert!(written[at..at + RECORD_HEADER_LEN].iter().all(|&b| b == 0), "zeros after the end");
    // Inside a batch, the chain hash at a record is that of the batch up to it.
    let at = |position| log.chain_hash_at(Position(position)).unwrap().unwrap();
    assert_eq!(at(0), chain_v3(&[&first]));
    assert_eq!((at(1), at(2), at(3)), (first_batch, chain_v3(&[&third]), chain_v3(&[&fourth])));
    // Pinned, so that the hash a published digest holds can never change by accident.
    assert_eq!(
        hex(&first_batch),
        "83f97c1d60d01df2b6a5a360001b81d72d34b4ff7539f3e078bca5dce96f1f1a",
        "chain hash of the first batch"
    );
}

/// Writes a one-segment log of format `version` (1 or 2) records by hand: positions `0..n`,
/// one stream, one record per batch. Returns each record's bytes.
fn write_old_log(dir: &Path, version: u8, n: u64) -> Vec<Vec<u8>> {
    let mut segment = Vec::new();
    segment.extend_from_slice(b"ORDLYSEG");
    segment.extend_from_slice(&u16::from(version).to_le_bytes());
    segment.resize(SEGMENT_HEADER_LEN - 4, 0);
    let crc = crc32c::crc32c(&segment);
    segment.extend_from_slice(&crc.to_le_bytes());
    let mut records = Vec::new();
    let mut prev_hash = [0; 32];
    for position in 0..n {
        let payload = format!("old event {position}");
        let record = encode(&Fields {
            version,
            batch_end: true,
            event_type: 9,
            schema_version: 1,
            position,
            stream_version: position,
            timestamp: 1_600_000_000_000 + position,
            prev_hash,
            stream: b"legacy",
            payload: payload.as_bytes(),
        });
        prev_hash = if version == 1 { chain_v1(&record) } else { chain_v2(&record) };
        segment.extend_from_slice(&record);
        records.push(record);
    }
    std::fs::write(dir.join("00000000000000000000.seg"), segment).unwrap();
    records
}

#[test]
fn logs_of_formats_1_and_2_open_verify_and_grow_with_format_3_records() {
    for version in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        write_old_log(dir.path(), version, 3);
        let (log, recovery) = open(dir.path(), LogConfig::default());
        assert_eq!(recovery.torn_tail, None);
        assert_eq!(log.head(), Position(3));
        // The hand-made segment is full, so this batch rolls over to a new segment.
        let batch =
            vec![new_record(b"legacy", b"new event 3"), new_record(b"legacy", b"new event 4")];
        log.append(batch).unwrap();
        drop(log);

        let (log, _) = open(dir.path(), LogConfig::default());
        let records = read_all(&log);
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(
            payloads,
            [&b"old event 0"[..], b"old event 1", b"old event 2", b"new event 3", b"new event 4"]
        );
        assert_eq!(log.stream_version(b"legacy").0, 5);
        drop(log);
        // The new segment's records carry the old format's chain hash of the last old record.
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 2);
        let old = std::fs::read(&files[0]).unwrap();
        let new = std::fs::read(&files[1]).unwrap();
        let last_old = &old[old.len() - (RECORD_HEADER_LEN + 6 + 11)..];
        let last_old_hash = if version == 1 { chain_v1(last_old) } else { chain_v2(last_old) };
        let second = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 6 + 11;
        for at in [SEGMENT_HEADER_LEN, second] {
            assert_eq!(new[at + 8], 3, "new records are format 3");
            assert_eq!(new[at + 40..at + 72], last_old_hash, "format {version}");
        }
    }
}

/// The segment format version in a segment file's header.
fn segment_version(file: &Path) -> u16 {
    let bytes = std::fs::read(file).unwrap();
    u16::from_le_bytes([bytes[8], bytes[9]])
}

#[test]
fn a_log_ending_in_an_older_segment_gets_a_new_segment_before_any_format_3_record() {
    // Room left in the old segment: appending there would put format 3 records where a binary
    // that knows only the older formats takes them for a torn write.
    let dir = tempfile::tempdir().unwrap();
    write_old_log(dir.path(), 2, 3);
    let old = segment_files(dir.path())[0].clone();
    let file = std::fs::OpenOptions::new().write(true).open(&old).unwrap();
    let old_len = file.metadata().unwrap().len();
    file.set_len(old_len + 64 * 1024).unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2, "opening started a new segment");
    assert_eq!((segment_version(&files[0]), segment_version(&files[1])), (2, 3));
    assert_eq!(std::fs::metadata(&old).unwrap().len(), old_len, "the old one closed at its end");
    log.append(vec![new_record(b"legacy", b"new event 3")]).unwrap();
    drop(log);
    let (log, _) = open(dir.path(), LogConfig::default());
    assert_eq!(read_all(&log).len(), 4);
    assert_eq!(segment_files(dir.path()).len(), 2, "a version 3 segment is kept");
}

#[test]
fn an_empty_older_segment_gets_a_version_3_header() {
    let dir = tempfile::tempdir().unwrap();
    write_old_log(dir.path(), 1, 0);
    let segment = segment_files(dir.path())[0].clone();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(64 * 1024).unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    assert_eq!(segment_version(&segment), 3);
    log.append(vec![new_record(b"legacy", b"first")]).unwrap();
    assert_eq!(segment_files(dir.path()), [segment]);
}

/// Rewrites the payload of the record at `offset` of `file` and fixes its checksum, so that
/// only the hash chain can tell.
fn rewrite_payload(file: &Path, offset: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let len = RECORD_HEADER_LEN
        + usize::from(u16::from_le_bytes([bytes[offset + 10], bytes[offset + 11]]))
        + u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
    bytes[offset + len - 1] ^= 0x01;
    let crc = crc32c::crc32c(&bytes[offset + 4..offset + len]);
    bytes[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

fn expect_broken_chain(dir: &Path, position: u64) {
    match Log::open(dir, LogConfig::default()) {
        Err(OpenError::Corrupt(c)) => {
            assert_eq!(c.problem, Problem::BrokenChain, "{c}");
            assert_eq!(c.position, Some(position), "{c}");
        }
        Err(other) => panic!("expected a broken chain, got {other}"),
        Ok(_) => panic!("a rewritten record must not open"),
    }
}

#[test]
fn a_rewritten_record_with_a_valid_checksum_breaks_the_chain_in_every_format() {
    // Formats 1 and 2: the second of three records.
    for version in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let records = write_old_log(dir.path(), version, 3);
        let file = dir.path().join("00000000000000000000.seg");
        rewrite_payload(&file, SEGMENT_HEADER_LEN + records[0].len());
        expect_broken_chain(dir.path(), 2);
    }

    // Format 3, written by the log: any record of a batch of two, found at the next batch.
    for rewritten in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), LogConfig::default());
        log.append(vec![new_record(b"s", b"event 0")]).unwrap();
        log.append(vec![new_record(b"s", b"event 1"), new_record(b"s", b"event 2")]).unwrap();
        log.append(vec![new_record(b"s", b"event 3")]).unwrap();
        drop(log);
        // Without the checkpoint its writer left at the head, the open recomputes the whole chain.
        std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
        let len = RECORD_HEADER_LEN + 1 + "event 0".len();
        rewrite_payload(&segment_files(dir.path())[0], SEGMENT_HEADER_LEN + (1 + rewritten) * len);
        expect_broken_chain(dir.path(), 3);
    }
}

#[test]
fn records_of_two_formats_in_one_batch_break_the_chain() {
    // A format 2 log whose last batch's second record is made format 3: each record chains to
    // what is before it as its own format says, but a batch's records share one format.
    let dir = tempfile::tempdir().unwrap();
    let mut segment = std::fs::read({
        write_old_log(dir.path(), 2, 0);
        dir.path().join("00000000000000000000.seg")
    })
    .unwrap();
    let fields = |version, position, batch_end, prev_hash| Fields {
        version,
        batch_end,
        event_type: 9,
        schema_version: 1,
        position,
        stream_version: position,
        timestamp: 1_600_000_000_000,
        prev_hash,
        stream: b"legacy",
        payload: b"event",
    };
    let first = encode(&fields(2, 0, false, [0; 32]));
    let second = encode(&fields(3, 1, true, chain_v2(&first)));
    segment.extend_from_slice(&first);
    segment.extend_from_slice(&second);
    std::fs::write(dir.path().join("00000000000000000000.seg"), segment).unwrap();
    expect_broken_chain(dir.path(), 1);
}
