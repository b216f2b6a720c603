//! The writer writes zeros ahead of its groups, so that a sync seldom has extents to convert:
//! a megabyte at a time, never over a record, capped at the segment's end; a failed write of
//! them stops the log like any other.

use orderly_store::limits::ZEROS_AHEAD;
use orderly_store::{AppendError, LogConfig};

use super::common::{open, open_faulty, payload, read_all, record, small_segments};

/// Bytes one record of [`record`] with a [`payload`] takes in a segment.
const RECORD_LEN: u64 = 72 + 1 + 128;

#[test]
fn zeros_are_written_a_megabyte_ahead_once_the_groups_reach_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, faults) = open_faulty(dir.path(), LogConfig::default());
    let before = faults.writes();
    log.append(vec![record("s", &payload(0))]).unwrap();
    assert_eq!(faults.writes() - before, 2, "the first group, then the zeros after it");

    // Groups within the zeros written before write only themselves.
    let within = (ZEROS_AHEAD as u64 / RECORD_LEN) - 10;
    let before = faults.writes();
    for i in 1..=within {
        log.append(vec![record("s", &payload(i))]).unwrap();
    }
    assert_eq!(faults.writes() - before, within);

    // The group that reaches past them writes the next megabyte.
    let before = faults.writes();
    log.append((0..20).map(|i| record("s", &payload(10_000 + i))).collect()).unwrap();
    assert_eq!(faults.writes() - before, 2);
    drop(log);

    let (log, _) = open(dir.path(), LogConfig::default());
    assert_eq!(read_all(&log).len() as u64, 1 + within + 20, "no zeros over a record");
}

#[test]
fn in_small_segments_zeros_stop_at_the_segment_end_and_no_record_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let appended = {
        let (log, _) = open(dir.path(), small_segments());
        let batches = 3 * orderly_store::limits::MIN_SEGMENT_SIZE / (RECORD_LEN * 8);
        for b in 0..batches {
            log.append((0..8).map(|i| record("s", &payload(b * 8 + i))).collect()).unwrap();
        }
        read_all(&log)
    };
    let (log, recovery) = open(dir.path(), small_segments());
    assert!(recovery.torn_tail.is_none(), "{recovery:?}");
    assert_eq!(read_all(&log), appended);
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files >= 3, "the records span several segments: {files} files");
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let len = file.unwrap().metadata().unwrap().len();
        assert!(len <= orderly_store::limits::MIN_SEGMENT_SIZE, "no file grew past its size");
    }
}

#[test]
fn a_failed_write_of_the_zeros_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, faults) = open_faulty(dir.path(), LogConfig::default());
        // The first group's write succeeds; the zeros after it fail.
        faults.fail_write_after(1);
        let failed = log.append(vec![record("s", &payload(0))]);
        assert!(matches!(failed, Err(AppendError::Stopped { .. })), "got {failed:?}");
        assert_eq!(log.head().0, 0, "nothing became visible");
        let later = log.append(vec![record("s", &payload(1))]);
        assert!(matches!(later, Err(AppendError::Stopped { .. })), "got {later:?}");
    }
    let (log, _) = open(dir.path(), LogConfig::default());
    assert!(read_all(&log).len() <= 1, "at most the unacknowledged record");
}
