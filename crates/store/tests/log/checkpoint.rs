//! The checkpoint: a reopened log recomputes its hash chain only after the position its last
//! open verified (or its writer reached when it stopped cleanly), yet still finds every damaged
//! byte (checksums); a checkpoint that disagrees with the log, or a log cut short of it (a
//! damaged last record included), refuses to open; a damaged checkpoint file is ignored and
//! reported. Only a full scan (the audit) catches a rewrite that fixed checksums.

use std::path::Path;
use std::time::Duration;

use orderly_store::{Log, LogConfig, OpenError, Problem};

use super::common::{
    open, payload, read_all, record, segment_files, small_segments, write_records,
};

/// Bytes of one test record: header, a one-byte stream id, a 128-byte payload.
const RECORD_LEN: u64 = 72 + 1 + 128;
/// Bytes of a segment header.
const SEGMENT_HEADER: u64 = 64;

/// A log of `n` one-record batches in small segments (tests copy them often), opened twice,
/// so its checkpoint stands at `n`.
fn checkpointed_log(dir: &Path, n: u64) {
    write_records(dir, small_segments(), n);
    let (_, recovery) = open(dir, small_segments());
    assert_eq!(recovery.records, n);
}

/// Zeroes the records `records` of the log's first segment, as if they were never written.
fn zero_records(dir: &Path, records: std::ops::Range<u64>) {
    let segment = segment_files(dir)[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = |record: u64| usize::try_from(SEGMENT_HEADER + record * RECORD_LEN).unwrap();
    bytes[at(records.start)..at(records.end)].fill(0);
    std::fs::write(&segment, bytes).unwrap();
}

fn open_error(dir: &Path) -> OpenError {
    match Log::open(dir, small_segments()) {
        Err(e) => e,
        Ok(_) => panic!("a damaged log must not open"),
    }
}

/// Changes payload byte 40 of record `n` and writes a checksum that fits the change: damage
/// only the hash chain can see.
fn rewrite_with_valid_checksum(segment: &Path, n: u64) {
    let mut bytes = std::fs::read(segment).unwrap();
    let start = usize::try_from(SEGMENT_HEADER + n * RECORD_LEN).unwrap();
    let end = start + usize::try_from(RECORD_LEN).unwrap();
    bytes[start + 72 + 1 + 40] ^= 0xFF;
    let crc = crc32c::crc32c(&bytes[start + 4..end]);
    bytes[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(segment, bytes).unwrap();
}

#[test]
fn a_reopened_log_recomputes_the_chain_only_after_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    {
        let (log, recovery) = open(dir.path(), small_segments());
        assert_eq!((recovery.chain_verified_from, recovery.checkpoint_ignored), (0, None));
        for i in 0..50 {
            log.append(vec![record("s", &payload(i))]).unwrap();
        }
    }
    // The writer checkpointed its head as it stopped: no chain hash is recomputed.
    let (log, recovery) = open(dir.path(), small_segments());
    assert_eq!((recovery.records, recovery.chain_verified_from), (50, 50));
    let at_open = std::fs::read(&checkpoint).unwrap();
    for i in 50..80 {
        log.append(vec![record("s", &payload(i))]).unwrap();
    }
    drop(log);
    // As if that writer had been killed after its last sync: the checkpoint is its open's.
    std::fs::write(&checkpoint, at_open).unwrap();
    let (log, recovery) = open(dir.path(), small_segments());
    assert_eq!((recovery.records, recovery.chain_verified_from), (80, 50));
    let records = read_all(&log);
    assert_eq!(records.len(), 80);
    assert!(records.iter().enumerate().all(|(i, r)| r.payload == payload(i as u64)));
}

#[test]
fn a_damaged_last_record_of_a_log_that_stopped_cleanly_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), small_segments(), 10);
    // One flipped bit in the last record, acknowledged before the writer stopped: alone, it
    // looks like a write torn by a crash.
    let segment = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = usize::try_from(SEGMENT_HEADER + 9 * RECORD_LEN + 100).unwrap();
    bytes[last] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    match open_error(dir.path()) {
        OpenError::Corrupt(c) => {
            assert_eq!(c.problem, Problem::EndsBeforeCheckpoint { checkpoint: 10 }, "{c}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "nothing was cut");
}

#[test]
fn after_a_crash_a_damaged_last_record_a_running_checkpoint_covers_is_refused_not_cut() {
    // With a checkpoint after every sync, with none while the writer runs, and with one at
    // most every 50 ms: the records synced since the last are recorded once the log is idle.
    let cases = [(Duration::ZERO, true), (Duration::MAX, false), (Duration::from_millis(50), true)];
    for (every, covered) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), LogConfig { checkpoint_every: every, ..small_segments() });
        for i in 0..10 {
            log.append(vec![record("s", &payload(i))]).unwrap();
        }
        if every < Duration::from_secs(1) {
            // Long enough for a loaded machine's sync thread to wake after `every`.
            std::thread::sleep(every * 20);
        }
        // What a crash leaves: the files as they are while the writer runs, every record synced.
        let crashed = tempfile::tempdir().unwrap();
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, crashed.path().join(file.file_name().unwrap())).unwrap();
        }
        drop(log);
        // One flipped bit in the last record, acknowledged: alone, it looks like a torn write.
        let segment = segment_files(crashed.path())[0].clone();
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[usize::try_from(SEGMENT_HEADER + 9 * RECORD_LEN + 100).unwrap()] ^= 0x10;
        std::fs::write(&segment, &bytes).unwrap();
        if covered {
            match open_error(crashed.path()) {
                OpenError::Corrupt(c) => {
                    assert_eq!(c.problem, Problem::EndsBeforeCheckpoint { checkpoint: 10 }, "{c}");
                }
                other => panic!("expected corruption, got {other}"),
            }
            assert_eq!(std::fs::read(&segment).unwrap(), bytes, "nothing was cut");
        } else {
            // The limit that remains for records acknowledged after the last checkpoint.
            let (_, recovery) = open(crashed.path(), small_segments());
            assert_eq!(recovery.records, 9, "cut as a torn write");
        }
    }
}

#[test]
fn every_sampled_flipped_bit_before_the_checkpoint_is_still_detected() {
    let pristine = tempfile::tempdir().unwrap();
    checkpointed_log(pristine.path(), 40);
    let segment = segment_files(pristine.path())[0].clone();
    let end = SEGMENT_HEADER + 40 * RECORD_LEN;
    for (n, offset) in (0..end).step_by(13).enumerate() {
        let dir = tempfile::tempdir().unwrap();
        for file in std::fs::read_dir(pristine.path()).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
        }
        let damaged = dir.path().join(segment.file_name().unwrap());
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes[usize::try_from(offset).unwrap()] ^= 1 << (n % 8);
        std::fs::write(&damaged, bytes).unwrap();
        match open_error(dir.path()) {
            OpenError::Corrupt(c) => assert!(c.offset <= offset, "bit at byte {offset}: {c}"),
            other => panic!("bit at byte {offset}: expected corruption, got {other}"),
        }
    }
}

#[test]
fn a_rewrite_before_the_checkpoint_that_fixed_its_checksum_is_left_to_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed_log(dir.path(), 40);
    let segment = segment_files(dir.path())[0].clone();
    rewrite_with_valid_checksum(&segment, 10);
    // Opening trusts the chain before the checkpoint (checksums, positions and versions hold).
    let (_, recovery) = open(dir.path(), small_segments());
    assert_eq!(recovery.chain_verified_from, 40);
    // The audit's full scan recomputes the chain: the next record no longer carries the
    // rewritten record's hash.
    match orderly_store::scan(dir.path(), |_| {}, |_| std::ops::ControlFlow::Continue(())) {
        Err(orderly_store::ScanError::Corrupt(c)) => {
            assert_eq!((c.position, c.problem), (Some(11), Problem::BrokenChain));
        }
        other => panic!("the audit must find the rewrite, got {other:?}"),
    }
}

#[test]
fn a_rewrite_of_the_record_before_the_checkpoint_does_not_match_it() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed_log(dir.path(), 40);
    let segment = segment_files(dir.path())[0].clone();
    rewrite_with_valid_checksum(&segment, 39);
    match open_error(dir.path()) {
        OpenError::Corrupt(c) => {
            assert_eq!((c.segment, c.position), (segment, Some(39)));
            assert_eq!(c.problem, Problem::CheckpointMismatch);
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn a_log_cut_short_of_its_checkpoint_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed_log(dir.path(), 40);
    // The last five records, acknowledged and checkpointed, are gone.
    zero_records(dir.path(), 35..40);
    match open_error(dir.path()) {
        OpenError::Corrupt(c) => {
            assert_eq!(c.position, Some(35));
            assert_eq!(c.problem, Problem::EndsBeforeCheckpoint { checkpoint: 40 });
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn a_damaged_checkpoint_file_is_ignored_and_the_whole_chain_verified() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed_log(dir.path(), 40);
    let file = dir.path().join("checkpoint");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let (log, recovery) = open(dir.path(), small_segments());
    assert_eq!(recovery.chain_verified_from, 0);
    assert!(recovery.checkpoint_ignored.is_some_and(|why| why.contains("damaged")));
    assert_eq!(read_all(&log).len(), 40);
    drop(log);
    // That open verified everything and wrote a good checkpoint again.
    let (_, recovery) = open(dir.path(), small_segments());
    assert_eq!((recovery.chain_verified_from, recovery.checkpoint_ignored), (40, None));
}

/// The read-only pass of audits checks the log against its checkpoint too (while recomputing
/// the whole chain): a log cut short of it, which an open refuses, is not reported intact.
#[test]
fn the_read_only_pass_finds_a_log_cut_short_of_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed_log(dir.path(), 40);
    let intact = orderly_store::scan(dir.path(), |_| {}, |_| std::ops::ControlFlow::Continue(()));
    assert_eq!(intact.expect("an intact log").records, 40);
    zero_records(dir.path(), 35..40);
    match orderly_store::scan(dir.path(), |_| {}, |_| std::ops::ControlFlow::Continue(())) {
        Err(orderly_store::ScanError::Corrupt(c)) => {
            assert_eq!(c.position, Some(35));
            assert_eq!(c.problem, Problem::EndsBeforeCheckpoint { checkpoint: 40 });
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn the_chain_hash_of_each_record_is_the_one_the_audit_s_full_scan_computes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    // Batches of 1 to 7 records, and one of 200 (found back from its last record in steps),
    // over small segments.
    append_batches(&log, (0..60).map(|n| n % 7 + 1).chain([200]));
    assert!(segment_files(dir.path()).len() > 1, "the batches fill more than one segment");
    assert_scan_and_reads_agree(&log, dir.path(), |_| true);
}

#[test]
fn batches_larger_than_the_scan_s_read_window_chain_as_small_ones_do() {
    // Megabyte batches: the scan hashes each in pieces as its read window moves on.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    append_batches(&log, [3, 6_000, 1, 5_000, 2]);
    assert_scan_and_reads_agree(&log, dir.path(), |position| position % 331 == 0);
}

/// Appends batches of `lens` records, over two streams.
fn append_batches(log: &Log, lens: impl IntoIterator<Item = u64>) {
    let mut i = 0;
    for len in lens {
        let batch = (0..len).map(|_| {
            i += 1;
            record(if i % 3 == 0 { "a" } else { "b" }, &payload(i))
        });
        log.append(batch.collect()).unwrap();
    }
}

/// The chain hashes an audit's scan computes for every record, against those read one by one
/// at the positions `sampled` picks and at every batch's end.
fn assert_scan_and_reads_agree(log: &Log, dir: &Path, sampled: impl Fn(u64) -> bool) {
    let mut scanned = Vec::new();
    orderly_store::scan(
        dir,
        |_| {},
        |record| {
            let hash = record.chain_hash().expect("an audit's scan hashes every record");
            scanned.push((hash, record.ends_batch));
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(scanned.len() as u64, log.head().0);
    for (position, (hash, ends_batch)) in scanned.iter().enumerate() {
        if *ends_batch || sampled(position as u64) {
            let at = orderly_store::Position(position as u64);
            assert_eq!(log.chain_hash_at(at).unwrap().unwrap(), *hash, "record {position}");
        }
    }
    assert!(log.chain_hash_at(log.head()).is_none(), "nothing at the head yet");
}
