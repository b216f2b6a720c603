//! A write cut short at any byte leaves a torn tail that reopening cuts and reports, keeping
//! every acknowledged record; a batch cut midway disappears whole.

use orderly_store::{AppendError, Position, TornTail};

use super::common::{open, open_faulty, payload, read_all, record, segment_files, small_segments};

/// Appends `n` acknowledged records through faulty storage, then one more record whose write
/// keeps only its first `keep` bytes. Returns the acknowledged records and the cut record's size.
fn log_with_cut_write(
    dir: &std::path::Path,
    n: u64,
    batch: usize,
    keep: usize,
) -> Vec<orderly_store::Record> {
    let (log, faults) = open_faulty(dir, small_segments());
    for i in 0..n {
        log.append(vec![record("s", &payload(i))]).unwrap();
    }
    let acked = read_all(&log);
    faults.cut_write_after(0, keep);
    let cut = (0..batch).map(|j| record("t", &payload(1_000 + j as u64))).collect();
    match log.append(cut) {
        Err(AppendError::Stopped { .. }) => {}
        other => panic!("a cut write must stop the log, got {other:?}"),
    }
    assert!(matches!(log.append(vec![record("s", b"x")]), Err(AppendError::Stopped { .. })));
    acked
}

/// One record of stream "s" or "t" with a 128-byte payload.
const RECORD_LEN: usize = 72 + 1 + 128;

/// Where the acknowledged records end when there are `n` of them.
fn end_of_acked(n: u64) -> u64 {
    64 + n * RECORD_LEN as u64
}

/// The bytes a torn tail at `offset` holds in the segment file: up to its last non-zero byte.
fn torn_bytes_on_disk(dir: &std::path::Path, offset: u64) -> u64 {
    let bytes = std::fs::read(&segment_files(dir)[0]).unwrap();
    let tail = &bytes[usize::try_from(offset).unwrap()..];
    tail.iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1)
}

fn assert_torn(torn: Option<&TornTail>, keep: usize, offset: u64, on_disk: u64) {
    match torn {
        Some(torn) => {
            assert_eq!(torn.offset, offset, "keep {keep}: torn bytes start where the log ends");
            assert_eq!(torn.bytes, on_disk, "keep {keep}: every non-zero byte after the end");
        }
        None => assert_eq!(on_disk, 0, "keep {keep}: non-zero bytes after the end are reported"),
    }
}

#[test]
fn a_write_cut_at_every_byte_of_the_last_record_is_a_torn_tail() {
    for keep in 0..=RECORD_LEN {
        let dir = tempfile::tempdir().unwrap();
        let acked = log_with_cut_write(dir.path(), 5, 1, keep);
        let on_disk = torn_bytes_on_disk(dir.path(), end_of_acked(5));
        let (log, recovery) = open(dir.path(), small_segments());
        // A complete record whose fsync never returned may survive; it was never acknowledged.
        let survivor = u64::from(keep == RECORD_LEN);
        assert_eq!(recovery.records, 5 + survivor, "keep {keep}: every acknowledged record");
        if survivor == 0 {
            assert_torn(recovery.torn_tail.as_ref(), keep, end_of_acked(5), on_disk);
            assert!(keep <= 8 || on_disk > 8, "keep {keep}: the version byte shows the cut");
        }
        let mut after = read_all(&log);
        if survivor == 1 {
            after.pop();
        }
        assert_eq!(after, acked, "keep {keep}");
        // The log goes on where the committed part ended.
        let next = log.append(vec![record("s", b"after")]).unwrap();
        assert_eq!(next.first, Position(5 + survivor));
        drop(log);
        let (_, recovery) = open(dir.path(), small_segments());
        assert_eq!(recovery.torn_tail, None, "keep {keep}: the torn tail is gone for good");
    }
}

#[test]
fn a_batch_cut_after_its_first_records_disappears_whole() {
    for keep in [RECORD_LEN, RECORD_LEN + 10, 2 * RECORD_LEN, 3 * RECORD_LEN - 1] {
        let dir = tempfile::tempdir().unwrap();
        let acked = log_with_cut_write(dir.path(), 3, 3, keep);
        let on_disk = torn_bytes_on_disk(dir.path(), end_of_acked(3));
        let (log, recovery) = open(dir.path(), small_segments());
        assert_eq!(recovery.records, 3, "keep {keep}");
        assert!(on_disk >= RECORD_LEN as u64, "keep {keep}: a whole record was written");
        assert_torn(recovery.torn_tail.as_ref(), keep, end_of_acked(3), on_disk);
        assert_eq!(read_all(&log), acked);
        assert_eq!(log.stream_version(b"t").0, 0, "no record of the cut batch counts");
    }
}
