//! A single flipped bit anywhere in a closed segment, or before the tail of the last one, is
//! reported as corruption with segment file and byte offset; the log refuses to open.

use std::path::Path;

use orderly_store::{Log, LogConfig, OpenError};

use super::common::{open, payload, record, segment_files, small_segments, write_records};

fn flip(path: &Path, offset: u64, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

fn two_segment_log(dir: &Path) {
    let (log, _) = open(dir, small_segments());
    let mut i = 0u64;
    while segment_files(dir).len() < 2 {
        log.append(vec![record(&format!("s{}", i % 5), &payload(i))]).unwrap();
        i += 1;
    }
    for j in 0..10 {
        log.append(vec![record("tail", &payload(i + j))]).unwrap();
    }
}

fn expect_corruption(dir: &Path, segment: &Path, what: &str) -> orderly_store::Corruption {
    match Log::open(dir, small_segments()) {
        Err(OpenError::Corrupt(c)) => {
            assert_eq!(c.segment, segment, "{what}: names the damaged segment");
            c
        }
        Err(other) => panic!("{what}: expected corruption, got {other}"),
        Ok(_) => panic!("{what}: a damaged log must not open"),
    }
}

#[test]
fn every_flipped_bit_sampled_across_a_closed_segment_is_detected() {
    let pristine = tempfile::tempdir().unwrap();
    two_segment_log(pristine.path());
    let closed = segment_files(pristine.path())[0].clone();
    let len = std::fs::metadata(&closed).unwrap().len();
    // Every byte of the segment header and of the first and last records, and a spread of
    // offsets in between, each with a different bit.
    let mut offsets: Vec<u64> = (0..64 + 600).chain(len - 600..len).collect();
    offsets.extend((0..len).step_by(97));
    for (n, offset) in offsets.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        for file in segment_files(pristine.path()) {
            std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
        }
        let segment = dir.path().join(closed.file_name().unwrap());
        flip(&segment, offset, u8::try_from(n % 8).unwrap());
        let c = expect_corruption(dir.path(), &segment, &format!("bit at byte {offset}"));
        assert!(
            c.offset <= offset,
            "reported at or before the flipped byte ({} > {offset})",
            c.offset
        );
    }
}

#[test]
fn a_flipped_bit_before_the_tail_of_the_last_segment_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), LogConfig::default(), 20);
    let segment = segment_files(dir.path())[0].clone();
    // Inside the payload of the tenth record.
    let offset = 64 + 9 * (72 + 1 + 128) + 72 + 1 + 40;
    flip(&segment, offset, 3);
    let c = match Log::open(dir.path(), LogConfig::default()) {
        Err(OpenError::Corrupt(c)) => c,
        other => panic!("expected corruption, got {other:?}"),
    };
    assert_eq!((c.segment, c.offset, c.position), (segment, 64 + 9 * 201, Some(9)));
    assert_eq!(c.problem, orderly_store::Problem::BadChecksum);
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    two_segment_log(dir.path());
    let (log, _) = open(dir.path(), small_segments());
    let mut i = 0;
    while segment_files(dir.path()).len() < 3 {
        log.append(vec![record("more", &payload(i))]).unwrap();
        i += 1;
    }
    drop(log);
    let files = segment_files(dir.path());
    std::fs::remove_file(&files[1]).unwrap();
    let c = expect_corruption(dir.path(), &files[2], "missing middle segment");
    assert_eq!(c.problem, orderly_store::Problem::MissingSegment);
}

#[test]
fn a_zeroed_header_on_the_last_segment_is_corruption_not_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open(dir.path(), LogConfig::default());
        for i in 0..100 {
            log.append(vec![record("s", &payload(i))]).unwrap();
        }
    }
    let segment = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[..64].fill(0);
    std::fs::write(&segment, bytes).unwrap();
    let c = expect_corruption(dir.path(), &segment, "zeroed header");
    assert_eq!(c.problem, orderly_store::Problem::BadSegmentHeader);
}

#[test]
fn a_last_segment_never_written_is_removed_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    two_segment_log(dir.path());
    let files = segment_files(dir.path());
    let last = files.last().unwrap().clone();
    let head = open(dir.path(), small_segments()).0.head();
    // A crash right after creating the next segment file, before its header was written.
    let next = dir.path().join(format!("{:020}.seg", head.0));
    std::fs::write(&next, vec![0u8; 4096]).unwrap();
    let (log, recovery) = open(dir.path(), small_segments());
    assert_eq!(recovery.removed_segment, Some(next.clone()));
    assert!(!next.exists());
    let before = log.head();
    for i in 0..400 {
        log.append(vec![record("after", &payload(i))]).unwrap();
    }
    assert_eq!(log.head().0, before.0 + 400, "the previous last segment takes appends again");
    drop(log);
    let (log, _) = open(dir.path(), small_segments());
    assert_eq!(log.head().0, before.0 + 400);
    assert!(last.exists());
}

#[test]
fn an_empty_last_segment_that_does_not_follow_the_log_reveals_missing_records() {
    let dir = tempfile::tempdir().unwrap();
    two_segment_log(dir.path());
    let head = open(dir.path(), small_segments()).0.head();
    let stray = dir.path().join(format!("{:020}.seg", head.0 + 50));
    std::fs::write(&stray, vec![0u8; 4096]).unwrap();
    let c = expect_corruption(dir.path(), &stray, "an empty segment 50 positions too far");
    assert_eq!(c.problem, orderly_store::Problem::MissingSegment);
}

/// A damaged record in the last segment followed by an acknowledged record that starts within
/// the reach of a torn write but ends past it (two large records, the second ending in zeros)
/// is corruption: the record after it is read whole and found valid, so nothing is cut.
#[test]
fn a_damaged_record_followed_by_a_long_valid_one_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let big = orderly_store::limits::MAX_PAYLOAD_LEN * 2 / 3;
    let first = {
        let (log, _) = open(dir.path(), LogConfig::default());
        for i in 0..3 {
            log.append(vec![record("s", &payload(i))]).unwrap();
        }
        let damaged: Vec<u8> = (0..big).map(|i| u8::try_from(i % 251).unwrap() | 1).collect();
        let mut zero_ended = vec![0u8; big];
        zero_ended[..big / 8].fill(0x5A);
        let first = log.append(vec![record("s", &damaged)]).unwrap().first.0;
        log.append(vec![record("s", &zero_ended)]).unwrap();
        first
    };
    let segment = segment_files(dir.path())[0].clone();
    // Inside the payload of the first big record (three 201-byte records before it).
    flip(&segment, 64 + 3 * 201 + 72 + 1 + 1000, 2);
    let c = match Log::open(dir.path(), LogConfig::default()) {
        Err(OpenError::Corrupt(c)) => c,
        Err(other) => panic!("expected corruption, got {other}"),
        Ok((log, recovery)) => panic!(
            "two acknowledged records were cut as a torn tail: {:?}, {} records left",
            recovery.torn_tail,
            log.head().0
        ),
    };
    assert_eq!((c.offset, c.position), (64 + 3 * 201, Some(first)));
}
