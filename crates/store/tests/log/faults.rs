//! A failed write or fsync stops the log (fail-stop): that batch and every later one get an
//! error, and everything acknowledged before survives reopening.

use std::sync::Arc;
use std::time::Duration;

use orderly_store::{AppendError, Log, LogConfig, OpenError};

use super::common::{open, open_faulty, payload, read_all, record, segment_files, write_records};

fn assert_fail_stop(arm: impl Fn(&orderly_store::faults::Faults)) {
    let dir = tempfile::tempdir().unwrap();
    let acked = {
        let (log, faults) = open_faulty(dir.path(), LogConfig::default());
        for i in 0..10 {
            log.append(vec![record("s", &payload(i))]).unwrap();
        }
        let acked = read_all(&log);
        arm(&faults);
        let failed = log.append(vec![record("s", &payload(10))]);
        assert!(matches!(failed, Err(AppendError::Stopped { .. })), "got {failed:?}");
        for i in 11..15 {
            let later = log.append(vec![record("s", &payload(i))]);
            assert!(matches!(later, Err(AppendError::Stopped { .. })), "every later append errors");
        }
        assert!(log.failure().is_some());
        assert_eq!(log.head().0, 10, "nothing after the failure became visible");
        acked
    };
    let (log, _) = open(dir.path(), LogConfig::default());
    let after = read_all(&log);
    assert!(after.len() >= 10 && after.len() <= 11, "acknowledged records survive");
    assert_eq!(after[..10], acked[..]);
}

#[test]
fn a_failed_write_stops_the_log() {
    assert_fail_stop(|f| f.fail_write_after(0));
}

#[test]
fn a_failed_fsync_stops_the_log_and_is_never_retried() {
    assert_fail_stop(|f| f.fail_sync_after(0));
}

#[test]
fn concurrent_appenders_lose_nothing_acknowledged_when_an_fsync_fails() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Vec<u64> = {
        let (log, faults) = open_faulty(dir.path(), LogConfig::default());
        faults.fail_sync_after(40);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..100u64 {
                        let id = t * 1_000 + i;
                        match log.append(vec![record("s", &payload(id))]) {
                            Ok(_) => acked.push(id),
                            Err(AppendError::Stopped { .. }) => break,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    acked
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    };
    let (log, _) = open(dir.path(), LogConfig::default());
    let present: std::collections::HashSet<u64> = read_all(&log)
        .iter()
        .map(|r| u64::from_le_bytes(r.payload[..8].try_into().unwrap()))
        .collect();
    assert!(!acked.is_empty());
    for id in acked {
        assert!(present.contains(&id), "acknowledged record {id} survived");
    }
}

#[test]
fn a_subscription_to_a_failed_log_waits_out_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (log, faults) = open_faulty(dir.path(), LogConfig::default());
    log.append(vec![record("s", &payload(0))]).unwrap();
    faults.fail_sync_after(0);
    assert!(log.append(vec![record("s", &payload(1))]).is_err());
    let mut sub = log.subscribe(orderly_store::Position(0));
    assert!(sub.next_timeout(Duration::from_secs(5)).unwrap().is_ok(), "what was committed");
    // No record comes after a failure: each wait takes its time instead of returning at once
    // to a caller that loops on it.
    let started = std::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(300) {
        assert!(sub.next_timeout(Duration::from_millis(50)).is_none());
        calls += 1;
    }
    assert!(calls <= 7, "{calls} waits of 50 ms in 300 ms");
}

#[test]
fn a_segment_deleted_under_the_log_stops_it_before_it_acknowledges_more() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    log.append(vec![record("s", &payload(0))]).unwrap();
    for segment in segment_files(dir.path()) {
        std::fs::remove_file(segment).unwrap();
    }
    let refused = log.append(vec![record("s", &payload(1))]);
    assert!(matches!(refused, Err(AppendError::Stopped { .. })), "{refused:?}");
    let failure = log.failure().expect("the log stopped");
    assert!(failure.contains("deleted"), "{failure}");
    assert_eq!(log.head().0, 1, "nothing written to the deleted file was acknowledged");
}

#[test]
fn a_full_queue_is_refused_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { queue_depth: 2, ..LogConfig::default() };
    let (log, faults) = open_faulty(dir.path(), config);
    faults.hold_syncs();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut refused = 0;
    for i in 0..50 {
        let tx = tx.clone();
        match log.append_with(vec![record("s", &payload(i))], move |r| tx.send(r).unwrap()) {
            Ok(()) => {}
            Err(AppendError::QueueFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(refused > 0, "a held writer fills the queue of 2");
    faults.release_syncs();
    drop(tx);
    let answered: Vec<_> = rx.iter().collect();
    assert_eq!(answered.len(), 50 - refused, "every accepted batch is answered");
    assert!(answered.iter().all(Result::is_ok));
}

#[test]
fn a_failure_just_before_a_segment_roll_leaves_a_log_that_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let config = super::common::small_segments();
    let acked = {
        let (log, faults) = open_faulty(dir.path(), config.clone());
        // Fill the first segment to one record short of full (325 fit), then fail the fsync of
        // the group that the next batch's roll waits for.
        let mut i = 0;
        while log.head().0 < 324 {
            log.append(vec![record("s", &payload(i))]).unwrap();
            i += 1;
        }
        let acked = read_all(&log);
        faults.fail_sync_after(0);
        let (tx, rx) = crossbeam_channel::unbounded();
        for j in 0..200 {
            let tx = tx.clone();
            let _ = log.append_with(vec![record("s", &payload(10_000 + j))], move |r| {
                let _ = tx.send(r.is_ok());
            });
        }
        drop(tx);
        let answers: Vec<bool> = rx.iter().collect();
        assert!(answers.iter().all(|ok| !ok), "nothing after the failure is acknowledged");
        acked
    };
    let (log, _) = open(dir.path(), config);
    let after = read_all(&log);
    assert_eq!(after[..acked.len()], acked[..], "acknowledged records survive");
    log.append(vec![record("s", b"goes on")]).unwrap();
}

/// A roll that fails for a full disk stops the log. Reopened on a disk still full, the log
/// refuses to open (its last segment has no room, and the next cannot be made) rather than
/// opening, and failing the first append after a start said it was ready; once there is room,
/// the open makes the next segment, before any append.
#[test]
fn a_log_whose_last_segment_is_full_rolls_over_when_it_opens() {
    use std::sync::Arc;

    use orderly_store::faults::FaultyStorage;
    use orderly_store::{Log, OpenError};

    // The size of each segment file, in the order of their names (their first positions).
    let segments = |dir: &std::path::Path| {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
            .collect();
        files.sort();
        files.into_iter().map(|(_, len)| len).collect::<Vec<u64>>()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = super::common::small_segments();
    let (log, faults) = open_faulty(dir.path(), config.clone());
    faults.fill_disk();
    let mut i = 0;
    let stopped = loop {
        match log.append(vec![record("s", &payload(i))]) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(stopped, AppendError::Stopped { .. }), "{stopped}");
    assert!(stopped.to_string().contains("no space left"), "{stopped}");
    let acked = read_all(&log);
    drop(log);

    let reopen =
        || Log::open_on(Arc::new(FaultyStorage::new(dir.path(), faults.clone())), config.clone());
    match reopen() {
        Err(OpenError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
        }
        Ok(_) => panic!("a log with no room left and none for the next segment opened"),
        Err(other) => panic!("{other}"),
    }
    // The full segment, and the file a creation that failed left empty.
    assert_eq!(segments(dir.path())[1..], [0], "{:?}", segments(dir.path()));
    faults.free_disk();
    let (log, _) = reopen().expect("opens once there is room");
    let sizes = segments(dir.path());
    assert_eq!(sizes[1..], [config.segment_size], "the next segment, made at the open: {sizes:?}");
    assert_eq!(read_all(&log), acked, "every acknowledged record, nothing else");
    log.append(vec![record("s", b"goes on")]).unwrap();
}

/// After a failed fsync, Linux keeps the unwritten pages in its cache, marked clean: a reopen
/// that read them from there would bring back a batch that was refused and never reached the
/// disk, and acknowledge new records after it. The log drops the failed segment's cache at once
/// (the fault storage then shows zeros where the failed fsync left only the cache's copy).
#[test]
fn a_batch_refused_by_a_failed_fsync_stays_gone_after_reopening() {
    use std::sync::Arc;

    use orderly_store::Log;
    use orderly_store::faults::FaultyStorage;

    let dir = tempfile::tempdir().unwrap();
    let (log, faults) = open_faulty(dir.path(), LogConfig::default());
    for i in 0..10 {
        log.append(vec![record("s", &payload(i))]).unwrap();
    }
    faults.fail_sync_after(0);
    let refused = log.append(vec![record("s", &payload(10)), record("s", &payload(11))]);
    assert!(matches!(refused, Err(AppendError::Stopped { .. })), "got {refused:?}");
    drop(log);

    let storage = Arc::new(FaultyStorage::new(dir.path(), faults));
    let (log, _) = Log::open_on(storage, LogConfig::default()).expect("the log reopens");
    let kept: Vec<u64> = read_all(&log)
        .iter()
        .map(|r| u64::from_le_bytes(r.payload[..8].try_into().unwrap()))
        .collect();
    assert_eq!(kept, (0..10).collect::<Vec<_>>(), "the refused batch did not come back");
    let appended = log.append(vec![record("s", &payload(12))]).unwrap();
    assert_eq!(appended.first.0, 10, "the next record takes the refused batch's place");
    drop(log);
    let (log, _) = open(dir.path(), LogConfig::default());
    assert_eq!(read_all(&log).len(), 11);
}

/// An open that finds records past its checkpoint syncs them before it vouches for them. If
/// that fsync fails, Linux keeps the unwritten pages in its cache, marked clean: the open
/// drops them, as the writer's syncer does, so that an open tried again reads what the device
/// holds rather than taking never-durable records for committed ones.
#[test]
fn a_failed_fsync_at_open_drops_the_cached_pages_of_the_last_segment() {
    use orderly_store::faults::{Faults, FaultyStorage};
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), LogConfig::default(), 20);
    // As after a writer killed before it stopped: no checkpoint at its head.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let faults = Faults::new();
    faults.fail_sync_after(0);
    let storage = Arc::new(FaultyStorage::new(dir.path(), faults.clone()));
    match Log::open_on(storage, LogConfig::default()) {
        Err(OpenError::Io { .. }) => {}
        Err(other) => panic!("expected the failed fsync, got {other}"),
        Ok(_) => panic!("an open whose fsync failed"),
    }
    assert_eq!(faults.forgotten(), 1, "the last segment's cached pages were dropped");
}
