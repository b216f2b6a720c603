//! The snapshot a clean shutdown leaves: the next open starts from it and replays only the
//! records after it; one that does not check out against the log is ignored, and the whole log
//! replayed, with the same result; one past the log's end proves the log lost acknowledged
//! records, and the open refuses.

use std::path::Path;

use orderly_core::engine::{Engine, ManualClock, OpenEngineError, SNAPSHOT_FILE};
use orderly_store::{OpenError, Problem};

use super::{START, available, config, key, place, receive};

/// acme's sku-1 stocked with 10, o-1 placed for 3 with key k-1, o-2 for 2 without.
fn first_session(dir: &Path, clock: &ManualClock) {
    let engine = Engine::open(dir, config(clock)).unwrap();
    assert_eq!(engine.restored_from(), None, "a new folder has no snapshot");
    engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
    engine.execute_blocking(place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1"))).unwrap();
    engine.execute_blocking(place("acme", "o-2", &[("sku-1", 2)])).unwrap();
    engine.shutdown();
}

/// What the first session left holds, however the engine was opened: the stock, and the key
/// (a retry replays o-1, held nothing more).
fn holds_the_first_session(engine: &Engine) {
    let retry = place("acme", "o-1", &[("sku-1", 3)]).with_key(key("k-1"));
    let retried = engine.execute_blocking(retry).unwrap();
    assert!(retried.replayed, "the key is known");
    assert_eq!(retried.events[0].position.0, 1, "o-1's first outcome");
    assert_eq!(available(engine, "acme", "sku-1"), 5);
}

/// Copies the files of an engine's folder (its log and snapshot) to `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_next_open_starts_from_the_snapshot_and_replays_the_records_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    first_session(dir.path(), &clock);
    let snapshot = dir.path().join(SNAPSHOT_FILE);
    assert!(snapshot.exists(), "the shutdown left a snapshot");
    let taken_at_first_stop = std::fs::read(&snapshot).unwrap();

    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    assert_eq!(engine.restored_from(), Some(engine.head()), "nothing to replay after it");
    holds_the_first_session(&engine);
    engine.execute_blocking(place("acme", "o-3", &[("sku-1", 4)]).with_key(key("k-3"))).unwrap();
    engine.shutdown();
    drop(engine);

    // As after a crash that came before a later snapshot: the first one is still good, and
    // the records after it (o-3 and its key) are replayed.
    std::fs::write(&snapshot, taken_at_first_stop).unwrap();
    let engine = Engine::open(dir.path(), config(&clock)).unwrap();
    let restored_from = engine.restored_from().expect("the first snapshot is used");
    assert!(restored_from < engine.head(), "records after it are replayed");
    let retry = place("acme", "o-3", &[("sku-1", 4)]).with_key(key("k-3"));
    assert!(engine.execute_blocking(retry).unwrap().replayed, "o-3's key, from the log");
    assert_eq!(available(&engine, "acme", "sku-1"), 1, "o-1, o-2 and o-3 hold 9");
}

#[test]
fn a_damaged_snapshot_is_ignored_and_the_whole_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    first_session(dir.path(), &clock);
    let snapshot = dir.path().join(SNAPSHOT_FILE);
    let good = std::fs::read(&snapshot).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let cut_short = &good[..good.len() - 40];
    for bytes in [&flipped[..], cut_short, b"something else"] {
        std::fs::write(&snapshot, bytes).unwrap();
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        assert_eq!(engine.restored_from(), None);
        holds_the_first_session(&engine);
        // Dropped, not shut down: it leaves no snapshot of its own for the next case.
        drop(engine);
    }
}

#[test]
fn a_snapshot_of_another_log_is_ignored_and_one_past_the_log_s_end_refused() {
    let clock = ManualClock::at(START);
    let ours = tempfile::tempdir().unwrap();
    first_session(ours.path(), &clock);

    // Another log as long as ours, with other records: its snapshot's digest does not match.
    let theirs = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(theirs.path(), config(&clock)).unwrap();
        engine.execute_blocking(receive("globex", "sku-9", 1)).unwrap();
        engine.execute_blocking(receive("globex", "sku-9", 1)).unwrap();
        engine.execute_blocking(receive("globex", "sku-9", 1)).unwrap();
        assert_eq!(engine.head().0, 3, "as many records as ours");
        engine.shutdown();
    }
    let copy = tempfile::tempdir().unwrap();
    copy_folder(ours.path(), copy.path());
    std::fs::copy(theirs.path().join(SNAPSHOT_FILE), copy.path().join(SNAPSHOT_FILE)).unwrap();
    let engine = Engine::open(copy.path(), config(&clock)).unwrap();
    assert_eq!(engine.restored_from(), None, "another log's snapshot");
    holds_the_first_session(&engine);
    let theirs = engine.execute_blocking(place("globex", "o-9", &[("sku-9", 1)]));
    assert_eq!(theirs.unwrap_err().code(), "unknown_sku", "nothing of theirs");
    engine.shutdown();
    drop(engine);

    // Our folder as the first session left it, with the snapshot of a later state (a restored
    // backup of the log beside a newer snapshot): past the log's end, the snapshot proves that
    // o-3 was acknowledged, and the log lost it. The open says so and decides nothing again;
    // without the snapshot, it opens on what the log holds.
    let older = tempfile::tempdir().unwrap();
    copy_folder(ours.path(), older.path());
    {
        let engine = Engine::open(ours.path(), config(&clock)).unwrap();
        engine.execute_blocking(place("acme", "o-3", &[("sku-1", 4)])).unwrap();
        engine.shutdown();
    }
    let later = older.path().join(SNAPSHOT_FILE);
    std::fs::copy(ours.path().join(SNAPSHOT_FILE), &later).unwrap();
    let refused = |why: &str| match Engine::open(older.path(), config(&clock)) {
        Err(OpenEngineError::LogEndsBeforeSnapshot { snapshot: 4, head: 3, path }) => {
            assert_eq!(path, later);
        }
        Err(other) => panic!("{why}: expected the log's loss to be named, got {other}"),
        Ok(_) => panic!("{why}: an engine opened on a log that lost acknowledged records"),
    };
    refused("a snapshot of this build");
    // The same proof from an intact snapshot of another format version, which this build
    // cannot restore (as after an upgrade): its header says where it was taken.
    let mut bytes = std::fs::read(&later).unwrap();
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let body = bytes.len() - 32;
    let hash = *blake3::hash(&bytes[..body]).as_bytes();
    bytes[body..].copy_from_slice(&hash);
    std::fs::write(&later, &bytes).unwrap();
    refused("a snapshot of an older format");
    std::fs::remove_file(&later).unwrap();
    let engine = Engine::open(older.path(), config(&clock)).unwrap();
    holds_the_first_session(&engine);
}

#[test]
fn a_damaged_last_record_after_a_clean_shutdown_stops_the_open_and_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    first_session(dir.path(), &clock);
    // A flipped bit in o-2's placement, the last record, acknowledged before the shutdown:
    // alone, it looks like a write torn by a crash.
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.iter().rposition(|byte| *byte != 0).expect("records");
    bytes[last - 8] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    match Engine::open(dir.path(), config(&clock)) {
        Err(OpenEngineError::Log(OpenError::Corrupt(corruption))) => {
            assert_eq!(corruption.problem, Problem::EndsBeforeCheckpoint { checkpoint: 3 });
        }
        Err(other) => panic!("expected the damaged record to be named, got {other}"),
        Ok(engine) => panic!("opened at head {}, without o-2", engine.head().0),
    }
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_snapshot_of_another_log_whose_last_record_is_the_same_is_ignored() {
    // Two logs alike in their last record (same stream, event, time and position) and not
    // before it: the snapshot is bound to the whole chain, not to that record alone.
    let clock = ManualClock::at(START);
    let session = |dir: &Path, first_receipt| {
        let engine = Engine::open(dir, config(&clock)).unwrap();
        engine.execute_blocking(receive("acme", "sku-1", first_receipt)).unwrap();
        engine.execute_blocking(receive("acme", "sku-2", 1)).unwrap();
        engine.shutdown();
    };
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    session(ours.path(), 10);
    session(theirs.path(), 3);
    std::fs::copy(theirs.path().join(SNAPSHOT_FILE), ours.path().join(SNAPSHOT_FILE)).unwrap();
    let engine = Engine::open(ours.path(), config(&clock)).unwrap();
    assert_eq!(engine.restored_from(), None, "their snapshot");
    assert_eq!(available(&engine, "acme", "sku-1"), 10, "what our log holds");
}

#[test]
fn refused_commands_of_tenants_never_seen_leave_nothing_in_the_snapshot() {
    let clock = ManualClock::at(START);
    let session = |dir: &Path, ghosts: usize| {
        let engine = Engine::open(dir, config(&clock)).unwrap();
        engine.execute_blocking(receive("acme", "sku-1", 10)).unwrap();
        for ghost in 0..ghosts {
            let keyed = place(&format!("ghost-{ghost}"), "o-1", &[("sku-1", 1)]).with_key(key("k"));
            let refused = engine.execute_blocking(keyed).unwrap_err();
            assert_eq!(refused.code(), "unknown_sku");
        }
        engine.shutdown();
    };
    let (plain, haunted) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    session(plain.path(), 0);
    session(haunted.path(), 100);
    let snapshot = |dir: &Path| std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
    assert_eq!(snapshot(haunted.path()), snapshot(plain.path()), "the same state as its log's");
}

#[test]
fn a_folder_another_engine_holds_is_refused_snapshot_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    first_session(dir.path(), &clock);
    let holder = Engine::open(dir.path(), config(&clock)).unwrap();
    match Engine::open(dir.path(), config(&clock)) {
        Err(orderly_core::engine::OpenEngineError::Log(orderly_store::OpenError::Locked {
            ..
        })) => {}
        Err(other) => panic!("expected the folder to be held, got {other}"),
        Ok(_) => panic!("a second engine opened a held folder"),
    }
    holds_the_first_session(&holder);
}
