//! How far the payments process's money movements are settled, and the checkpoint that keeps
//! it across restarts.
//!
//! A capture, void or refund (or the cancel of an order with no authorization recorded, which
//! gives up its authorization key at the gateways) is committed in the log first and made at
//! the gateway after. A
//! process that stops in between cannot know which calls were made, so a start repeats the
//! movements it is not sure of; their keys make a repeated call return its first outcome. The
//! checkpoint bounds that: every movement committed before its position was settled at the
//! gateway (made, or refused for good), so a start repeats only those from there on instead of
//! the whole history. A movement given up after its retries holds the checkpoint back, so the
//! next start tries it again; so does a capture, void or refund whose gateway is not
//! configured (a cancel goes to the gateways configured now: one no longer configured cannot
//! be reached to give anything up).
//!
//! The checkpoint names its position with the chain hash of the record before it (a
//! [`Digest`]), so that it is only trusted on the log it was written for: one from another
//! data folder, or kept while the log was put back from a copy, would count movements of
//! other records as settled.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use orderly_store::LogReader;

use crate::audit::Digest;

/// The settled movements. Shared by the process's event loop (which starts movements) and the
/// movements themselves (which report when they settle).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Positions of the movements started and not settled, with how many each.
    unsettled: BTreeMap<u64, u32>,
    /// The first movement this run cannot make (its gateway is not configured): it holds the
    /// checkpoint back like an unsettled one, and those after it need no count.
    first_unmade: Option<u64>,
    /// Every event before this position was read.
    read_to: u64,
}

impl Ledger {
    /// A ledger for a process whose movements before `position` were settled when it last
    /// ran: those are not started again, so the ledger never reports less.
    pub(super) fn resuming_at(position: u64) -> Ledger {
        Ledger { unsettled: BTreeMap::new(), first_unmade: None, read_to: position }
    }

    /// An event at `position` was read. (Others of its record may follow.)
    pub(super) fn read(&mut self, position: u64) {
        self.read_to = self.read_to.max(position);
    }

    /// No event is waiting: every event of the last record read was read too.
    pub(super) fn caught_up(&mut self, last_position: u64) {
        self.read_to = self.read_to.max(last_position + 1);
    }

    /// A movement committed at `position` was started.
    pub(super) fn started(&mut self, position: u64) {
        *self.unsettled.entry(position).or_default() += 1;
    }

    /// A movement committed at `position` was settled at the gateway.
    pub(super) fn settled(&mut self, position: u64) {
        let count = self.unsettled.get_mut(&position).expect("a started movement settles once");
        *count -= 1;
        if *count == 0 {
            self.unsettled.remove(&position);
        }
    }

    /// A movement committed at `position` cannot be made in this run: a later start tries it.
    pub(super) fn unmade(&mut self, position: u64) {
        self.first_unmade = Some(self.first_unmade.map_or(position, |first| first.min(position)));
    }

    /// Every movement committed before this position is settled.
    pub(super) fn settled_before(&self) -> u64 {
        let unsettled = self.unsettled.keys().next().copied().unwrap_or(self.read_to);
        unsettled.min(self.first_unmade.unwrap_or(self.read_to)).min(self.read_to)
    }
}

/// The checkpoint file's first line; the digest of its position follows on the second.
const HEADER: &str = "orderly payments checkpoint v2";
/// The first line of the checkpoints written before they named their log: a position alone.
const HEADER_V1: &str = "orderly payments checkpoint v1";

/// The checkpoint in `path`, for `log`: the position before which every movement was settled.
/// A missing file is 0 (every movement is repeated, which is safe); so is one that cannot be
/// read, is not a checkpoint, or does not belong to `log` (its position is past the log's head,
/// or the record before it is not the one it names), and then the reason is given.
pub(super) fn load(path: &Path, log: &LogReader) -> (u64, Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (0, None),
        Err(e) => return (0, Some(e.to_string())),
    };
    let mut lines = text.lines();
    let named = match (lines.next(), lines.next()) {
        (Some(HEADER), Some(digest)) => {
            digest.parse::<Digest>().ok().map(|d| (d.head, Some(d.hash)))
        }
        (Some(HEADER_V1), Some(position)) => position.parse().ok().map(|p| (p, None)),
        _ => None,
    };
    let Some((position, hash)) = named else {
        return (0, Some(format!("{} is not a payments checkpoint", path.display())));
    };
    // Past the log's head (recovery cut the log's tail, or it was put back from an older
    // copy), it would count the movements of the records written next as settled.
    let head = log.head().0;
    if position > head {
        return (0, Some(format!("its position {position} is past the log's head {head}")));
    }
    match (hash, Digest::of(log, position)) {
        (Some(named), Ok(found)) if named != found.hash => {
            let why = format!(
                "the record before its position {position} is not the one it names: it was written for another log"
            );
            (0, Some(why))
        }
        (Some(_), Err(e)) => (0, Some(format!("the record before its position: {e}"))),
        _ => (position, None),
    }
}

/// Replaces the checkpoint in `path` with `position` of `log`, atomically (written beside,
/// synced, renamed over, folder synced).
pub(super) fn store(path: &Path, log: &LogReader, position: u64) -> std::io::Result<()> {
    let digest = Digest::of(log, position)?;
    let temporary = PathBuf::from(format!("{}.new", path.display()));
    let mut file = std::fs::File::create(&temporary)?;
    writeln!(file, "{HEADER}\n{digest}")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_stops_at_the_oldest_unsettled_movement() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.settled_before(), 0);
        ledger.read(5);
        ledger.started(5);
        ledger.read(9);
        ledger.started(9);
        ledger.started(9);
        ledger.read(12);
        assert_eq!(ledger.settled_before(), 5);
        ledger.settled(9);
        ledger.settled(5);
        assert_eq!(ledger.settled_before(), 9, "one of the two at 9 is still out");
        ledger.settled(9);
        assert_eq!(ledger.settled_before(), 12, "all settled: up to the record being read");
        ledger.caught_up(12);
        assert_eq!(ledger.settled_before(), 13, "and past it once nothing more is waiting");
        let mut resumed = Ledger::resuming_at(40);
        resumed.read(3);
        resumed.caught_up(3);
        assert_eq!(resumed.settled_before(), 40, "history before the checkpoint moves nothing");
    }

    #[test]
    fn a_movement_that_cannot_be_made_holds_the_checkpoint_back() {
        let mut ledger = Ledger::default();
        ledger.read(5);
        ledger.started(5);
        ledger.read(7);
        ledger.unmade(7);
        ledger.read(9);
        ledger.unmade(9);
        ledger.caught_up(9);
        assert_eq!(ledger.settled_before(), 5);
        ledger.settled(5);
        assert_eq!(ledger.settled_before(), 7, "the first movement not made");
    }

    /// A log in `dir` with `records` records of stream `s`, each holding `payload`.
    fn log_of(dir: &Path, records: u8, payload: u8) -> orderly_store::Log {
        let (log, _) = orderly_store::Log::open(dir, orderly_store::LogConfig::default()).unwrap();
        for _ in 0..records {
            let record = orderly_store::NewRecord {
                stream: b"s".to_vec(),
                expected: orderly_store::Expected::Any,
                event_type: 1,
                schema_version: 1,
                timestamp: 0,
                payload: vec![payload],
            };
            log.append(vec![record]).unwrap();
        }
        log
    }

    #[test]
    fn a_stored_checkpoint_loads_on_its_log_and_a_foreign_file_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_of(&dir.path().join("log"), 5, 1).reader();
        let path = dir.path().join("payments.checkpoint");
        assert_eq!(load(&path, &log), (0, None));
        store(&path, &log, 4).unwrap();
        assert_eq!(load(&path, &log), (4, None));
        std::fs::write(&path, "something else\n77\n").unwrap();
        let (position, why) = load(&path, &log);
        assert_eq!(position, 0);
        assert!(why.is_some_and(|w| w.contains("not a payments checkpoint")));
        // One written before checkpoints named their log is taken at its word.
        std::fs::write(&path, "orderly payments checkpoint v1\n3\n").unwrap();
        assert_eq!(load(&path, &log), (3, None));
    }

    #[test]
    fn a_checkpoint_of_another_log_or_past_the_head_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let ours = log_of(&dir.path().join("ours"), 5, 1).reader();
        let theirs = log_of(&dir.path().join("theirs"), 9, 2).reader();
        let path = dir.path().join("payments.checkpoint");
        store(&path, &theirs, 4).unwrap();
        let (position, why) = load(&path, &ours);
        assert_eq!(position, 0);
        assert!(why.is_some_and(|w| w.contains("another log")), "a foreign log's checkpoint");
        store(&path, &theirs, 8).unwrap();
        let (position, why) = load(&path, &ours);
        assert_eq!(position, 0);
        assert!(why.is_some_and(|w| w.contains("past the log's head")));
    }
}
