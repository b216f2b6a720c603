//! Appended records read back exactly, by position and by stream, across segments and reopen.

use std::time::Duration;

use orderly_store::{
    AppendError, Expected, Log, LogConfig, OpenError, Position, ScanProgress, StreamVersion,
};

use super::common::{open, payload, read_all, record, small_segments};

#[test]
fn appended_batches_read_back_in_order_with_gapless_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (log, recovery) = open(dir.path(), LogConfig::default());
    assert_eq!(recovery.records, 0);
    let a = log.append(vec![record("a", b"one"), record("b", b"two")]).unwrap();
    let b = log.append(vec![record("a", b"three")]).unwrap();
    assert_eq!(
        (a.first, a.next, b.first, b.next),
        (Position(0), Position(2), Position(2), Position(3))
    );
    assert_eq!(log.head(), Position(3));

    let all = read_all(&log);
    let payloads: Vec<&[u8]> = all.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, [b"one".as_slice(), b"two", b"three"]);
    let positions: Vec<u64> = all.iter().map(|r| r.position.0).collect();
    assert_eq!(positions, [0, 1, 2]);
    assert_eq!(all[2].stream_version, StreamVersion(1), "second record of stream a");
    assert_eq!(all[0].event_type, 7);
    assert_eq!(all[0].schema_version, 1);
    assert_eq!(all[0].timestamp, 1_700_000_000_000);

    let stream_a = log.read_stream(b"a").unwrap();
    assert_eq!(stream_a.iter().map(|r| r.position.0).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(log.stream_version(b"a"), StreamVersion(2));
    assert_eq!(log.stream_version(b"nobody"), StreamVersion(0));
}

#[test]
fn reopening_recovers_every_record_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (log, _) = open(dir.path(), small_segments());
        for i in 0..2_000u64 {
            log.append(vec![record(&format!("s{}", i % 7), &payload(i))]).unwrap();
        }
        read_all(&log)
    };
    assert!(super::common::segment_files(dir.path()).len() > 3, "records span several segments");
    let (log, recovery) = open(dir.path(), small_segments());
    assert_eq!(recovery.records, 2_000);
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(read_all(&log), before);
    assert_eq!(log.stream_version(b"s3"), StreamVersion(286));
    log.append(vec![record("s3", b"after reopen")]).unwrap();
    drop(log);
    let (log, _) = open(dir.path(), small_segments());
    let last = log.read_stream(b"s3").unwrap().pop().unwrap();
    assert_eq!((last.position, last.stream_version), (Position(2_000), StreamVersion(286)));
    assert_eq!(last.payload, b"after reopen");
}

#[test]
fn an_open_reports_how_far_its_verifying_pass_has_come() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open(dir.path(), LogConfig::default());
        for i in 0..40u8 {
            let batch = (0..4).map(|j| record(&format!("s{j}"), &vec![i; 50_000])).collect();
            log.append(batch).unwrap();
        }
    }
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reports.clone();
    let progress =
        orderly_store::OpenProgress::new(move |p: &ScanProgress| seen.lock().unwrap().push(*p));
    let config = LogConfig { open_progress: Some(progress), ..LogConfig::default() };
    let (_log, recovery) = open(dir.path(), config);
    assert_eq!(recovery.records, 160);
    let reports = reports.lock().unwrap();
    // Every few MiB of the 8 MB written, and once at the end.
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done), "{reports:?}");
    let last = reports.last().unwrap();
    assert_eq!(last.bytes_done, last.bytes_total);
    assert!(last.bytes_total >= 160 * 50_000, "{last:?}");
}

#[test]
fn reading_from_the_middle_starts_at_that_position() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for i in 0..1_500u64 {
        log.append(vec![record("s", &payload(i))]).unwrap();
    }
    for from in [0u64, 1, 255, 256, 257, 700, 1_499] {
        let first = log.read_from(Position(from)).next().unwrap().unwrap();
        assert_eq!(first.position, Position(from));
        assert_eq!(&first.payload[..8], &from.to_le_bytes());
    }
    assert!(log.read_from(Position(1_500)).next().is_none(), "nothing past the head");
}

#[test]
fn expected_version_conflict_writes_nothing_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let mut first = record("order-1", b"placed");
    first.expected = Expected::Exactly(StreamVersion(0));
    log.append(vec![first]).unwrap();

    let mut stale = record("order-1", b"placed again");
    stale.expected = Expected::Exactly(StreamVersion(0));
    let err = log.append(vec![record("other", b"x"), stale]).unwrap_err();
    assert_eq!(
        err,
        AppendError::Conflict {
            stream: b"order-1".to_vec(),
            expected: StreamVersion(0),
            actual: StreamVersion(1)
        }
    );
    assert_eq!(log.head(), Position(1), "no record of the refused batch was written");

    // Versions count earlier records of the same batch.
    let mut second = record("order-1", b"confirmed");
    second.expected = Expected::Exactly(StreamVersion(1));
    let mut third = record("order-1", b"shipped");
    third.expected = Expected::Exactly(StreamVersion(2));
    log.append(vec![second, third]).unwrap();
    assert_eq!(log.stream_version(b"order-1"), StreamVersion(3));
}

#[test]
fn invalid_batches_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    assert!(matches!(log.append(vec![]), Err(AppendError::Invalid(_))));
    assert!(matches!(log.append(vec![record("", b"x")]), Err(AppendError::Invalid(_))));
    let long = "s".repeat(256);
    assert!(matches!(log.append(vec![record(&long, b"x")]), Err(AppendError::Invalid(_))));
    let big = vec![0u8; orderly_store::limits::MAX_PAYLOAD_LEN + 1];
    assert!(matches!(log.append(vec![record("s", &big)]), Err(AppendError::Invalid(_))));
    assert_eq!(log.head(), Position(0));
    log.append(vec![record("s", b"still fine")]).unwrap();
}

#[test]
fn a_second_writer_on_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = open(dir.path(), LogConfig::default());
    match Log::open(dir.path(), LogConfig::default()) {
        Err(OpenError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn held_elsewhere_tells_whether_a_writer_holds_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!Log::held_elsewhere(dir.path()).unwrap(), "no log yet");
    let (log, _) = open(dir.path(), LogConfig::default());
    assert!(Log::held_elsewhere(dir.path()).unwrap(), "an open writer holds it");
    drop(log);
    assert!(!Log::held_elsewhere(dir.path()).unwrap(), "free once closed");
    // The probe took the lock only for a moment: a writer opens it after.
    let (_reopened, _) = open(dir.path(), LogConfig::default());
}

#[test]
fn a_log_whose_last_handle_an_append_callback_drops_closes_and_frees_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let (answered, answer) = std::sync::mpsc::channel();
    for i in 0..200 {
        // Each callback holds a handle: the last one is dropped on the log's own thread.
        let (held, answered) = (log.clone(), answered.clone());
        let appended = log.append_with(vec![record("s", &payload(i))], move |outcome| {
            let _ = answered.send(outcome.is_ok());
            drop(held);
        });
        appended.unwrap();
    }
    drop((log, answered));
    assert!(answer.iter().take(200).all(|ok| ok), "every batch was answered");
    // The writer stops on its own once the last callback returns, and frees the folder.
    let reopened = (0..20).find_map(|_| match Log::open(dir.path(), LogConfig::default()) {
        Err(OpenError::Locked { .. }) => {
            std::thread::sleep(Duration::from_millis(50));
            None
        }
        other => Some(other),
    });
    let (log, _) = reopened.expect("the folder was freed within seconds").unwrap();
    assert_eq!(log.head(), Position(200));
}

#[test]
fn a_subscription_wakes_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    log.append(vec![record("s", b"before")]).unwrap();
    let mut sub = log.subscribe(Position(0));
    assert_eq!(sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap().payload, b"before");
    assert!(sub.next_timeout(Duration::from_millis(20)).is_none(), "caught up: times out");
    let appender = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            log.append(vec![record("s", b"later")]).unwrap();
        })
    };
    let later = sub.next_timeout(Duration::from_secs(10)).expect("woken by the commit").unwrap();
    assert_eq!((later.position, later.payload.as_slice()), (Position(1), b"later".as_slice()));
    appender.join().unwrap();
}

#[test]
fn many_concurrent_appenders_get_distinct_gapless_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..200u64)
                    .map(|i| {
                        let batch = (0..3)
                            .map(|j| record(&format!("t{t}"), &payload(t * 10_000 + i * 3 + j)));
                        log.append(batch.collect()).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut spans: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    spans.sort_by_key(|a| a.first);
    let mut next = Position(0);
    for a in &spans {
        assert_eq!(a.first, next, "batches tile the positions without gaps or overlaps");
        assert_eq!(a.next.0 - a.first.0, 3);
        next = a.next;
    }
    assert_eq!(read_all(&log).len(), 8 * 200 * 3);
    for t in 0..8u64 {
        let stream = log.read_stream(format!("t{t}").as_bytes()).unwrap();
        let ids: Vec<u64> =
            stream.iter().map(|r| u64::from_le_bytes(r.payload[..8].try_into().unwrap())).collect();
        let expected: Vec<u64> = (0..600).map(|k| t * 10_000 + k).collect();
        assert_eq!(ids, expected, "each thread's records keep its order within its stream");
    }
}

#[test]
fn an_empty_log_reopened_with_bigger_segments_takes_a_batch_bigger_than_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), small_segments()));
    let bigger = LogConfig { segment_size: 1 << 20, ..LogConfig::default() };
    let (log, _) = open(dir.path(), bigger);
    let batch: Vec<_> = (0..500).map(|i| record("big", &payload(i))).collect();
    log.append(batch).expect("a 100 KB batch fits the 1 MiB segment size now configured");
    assert_eq!(read_all(&log).len(), 500);
}

#[test]
fn a_wait_for_as_long_as_it_takes_is_no_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = super::common::open(dir.path(), orderly_store::LogConfig::default());
    log.append(vec![super::common::record("s", b"x")]).unwrap();
    // Already past: answered at once, whatever the timeout.
    assert_eq!(log.wait_beyond(orderly_store::Position(0), std::time::Duration::MAX).0, 1);
    let mut records = log.subscribe(orderly_store::Position(0));
    assert!(records.next_timeout(std::time::Duration::MAX).is_some());
}
