//! The host's reader: a second thread that reads and decodes the log ahead of the thread that
//! writes redb, so that decoding one batch overlaps with committing the previous one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use orderly_store::LogReader;

use super::ProjectionError;
use super::worker::{WorkerConfig, read_batch};
use crate::Position;
use crate::engine::CommittedEvent;

/// Decoded batches waiting for the writer: two keep it busy without holding much memory.
const AHEAD: usize = 2;

/// What the reader sends: a batch, or the read error that ended it.
pub(super) type Batches = Receiver<Result<Batch, ProjectionError>>;

/// The records `from..reached` of the log, decoded (domain events only).
pub(super) struct Batch {
    pub(super) from: u64,
    pub(super) reached: u64,
    pub(super) events: Vec<CommittedEvent>,
}

/// Starts reading `log` from `from` in contiguous batches of whatever is committed, up to
/// `config.max_batch` records each. The thread ends when `stop` is set, when the receiver is
/// dropped, or after sending a read error.
pub(super) fn start(
    log: LogReader,
    from: u64,
    config: &WorkerConfig,
    stop: Arc<AtomicBool>,
) -> Result<(Batches, JoinHandle<()>), ProjectionError> {
    let (batches, receiver) = crossbeam_channel::bounded(AHEAD);
    let config = config.clone();
    let thread = std::thread::Builder::new()
        .name("orderly-proj-read".to_owned())
        .spawn(move || read(&log, from, &config, &stop, &batches))
        .map_err(ProjectionError::Spawn)?;
    Ok((receiver, thread))
}

fn read(
    log: &LogReader,
    mut from: u64,
    config: &WorkerConfig,
    stop: &AtomicBool,
    batches: &Sender<Result<Batch, ProjectionError>>,
) {
    let max_batch = u64::try_from(config.max_batch.max(1)).unwrap_or(u64::MAX);
    while !stop.load(Ordering::Acquire) {
        let mut head = log.wait_beyond(Position(from), config.idle_wait).0;
        if head <= from {
            if log.failure().is_some() {
                // A failed log answers at once and will not grow: do not spin.
                std::thread::sleep(config.idle_wait);
            }
            continue;
        }
        if head - from < config.gather_records && !config.gather.is_zero() {
            let enough = from.saturating_add(config.gather_records);
            head = log.wait_beyond(Position(enough - 1), config.gather).0.max(head);
        }
        let until = head.min(from.saturating_add(max_batch));
        let mut events = Vec::new();
        let batch = read_batch(log, from, until, &mut events).map(|reached| Batch {
            from,
            reached,
            events,
        });
        let failed = batch.is_err();
        if let Ok(batch) = &batch {
            from = batch.reached;
        }
        if batches.send(batch).is_err() || failed {
            return;
        }
    }
}
