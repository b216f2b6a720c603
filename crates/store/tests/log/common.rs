//! Helpers shared by the log's tests.

use std::path::Path;
use std::sync::Arc;

use orderly_store::faults::{Faults, FaultyStorage};
use orderly_store::{Expected, Log, LogConfig, NewRecord, Record, Recovery};

/// A record of `stream` whose payload is `payload`, with no version check.
pub fn record(stream: &str, payload: &[u8]) -> NewRecord {
    NewRecord {
        stream: stream.as_bytes().to_vec(),
        expected: Expected::Any,
        event_type: 7,
        schema_version: 1,
        timestamp: 1_700_000_000_000,
        payload: payload.to_vec(),
    }
}

/// A 128-byte payload that names `n`.
pub fn payload(n: u64) -> Vec<u8> {
    let mut p = vec![0xA5; 128];
    p[..8].copy_from_slice(&n.to_le_bytes());
    p
}

/// Small segments, so that tests cross segment boundaries quickly.
/// Small segments, and no checkpoint while the writer runs (the tests that want one ask), so
/// that a test's checkpoint is where its opens and clean stops put it, however slow the disk.
pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_size: orderly_store::limits::MIN_SEGMENT_SIZE,
        checkpoint_every: std::time::Duration::MAX,
        ..LogConfig::default()
    }
}

pub fn open(dir: &Path, config: LogConfig) -> (Log, Recovery) {
    Log::open(dir, config).expect("log opens")
}

/// Writes `n` one-record batches (payloads 0 to n-1, stream "s") into the log in `dir` and
/// closes it.
pub fn write_records(dir: &Path, config: LogConfig, n: u64) {
    let (log, _) = open(dir, config);
    for i in 0..n {
        log.append(vec![record("s", &payload(i))]).expect("appended");
    }
}

pub fn open_faulty(dir: &Path, config: LogConfig) -> (Log, Arc<Faults>) {
    let faults = Faults::new();
    let storage = Arc::new(FaultyStorage::new(dir, faults.clone()));
    let (log, _) = Log::open_on(storage, config).expect("log opens");
    (log, faults)
}

/// Every committed record, read from position 0.
pub fn read_all(log: &Log) -> Vec<Record> {
    log.read_from(orderly_store::Position(0)).collect::<Result<_, _>>().expect("log reads")
}

/// Segment files of the log in `dir`, in order.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir lists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}
