//! The host's reader: a second thread that reads and decodes the log ahead of the thread that
//! writes redb, so that decoding overlaps with committing.
//!
//! The reader hands over through one slot rather than a queue of fixed batches: what it
//! decodes while the host is busy joins the batch waiting there, and the host takes all of it
//! at once. A host that falls behind (a durable commit, a slow disk, a busy machine) thus
//! catches up with one bigger batch instead of working through a queue of small ones, each
//! paying a transaction, while the records wait behind them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_store::LogReader;

use super::ProjectionError;
use super::worker::{WorkerConfig, read_batch};
use crate::Position;
use crate::engine::CommittedEvent;

/// The records `from..reached` of the log, decoded (domain events only).
pub(super) struct Batch {
    pub(super) from: u64,
    pub(super) reached: u64,
    pub(super) events: Vec<CommittedEvent>,
}

/// The host's end: takes what the reader has decoded. Dropping it ends the reader.
pub(super) struct Batches {
    shared: Arc<Shared>,
}

/// Why [`Batches::take`] returned no batch.
pub(super) enum Empty {
    /// Nothing new within the timeout.
    Timeout,
    /// The reader has ended (stopped, or after handing over its error).
    Ended,
}

struct Shared {
    slot: Mutex<Slot>,
    /// Signalled when the slot changes.
    changed: Condvar,
}

#[derive(Default)]
struct Slot {
    /// Decoded records not taken yet: one contiguous batch.
    batch: Option<Batch>,
    /// The read error that ended the reader, handed over after the batch before it.
    error: Option<ProjectionError>,
    /// The reader has ended.
    ended: bool,
    /// The host's end was dropped.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Batches {
    /// Takes everything decoded so far, waiting up to `timeout` for something.
    pub(super) fn take(&self, timeout: Duration) -> Result<Result<Batch, ProjectionError>, Empty> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.shared.lock();
        loop {
            if let Some(batch) = slot.batch.take() {
                drop(slot);
                // The reader may be waiting for room.
                self.shared.changed.notify_all();
                return Ok(Ok(batch));
            }
            if let Some(error) = slot.error.take() {
                return Ok(Err(error));
            }
            if slot.ended {
                return Err(Empty::Ended);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(Empty::Timeout);
            };
            slot = self
                .shared
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

/// Starts reading `log` from `from`, decoding whatever is committed into the slot, which holds
/// at most `config.max_batch` records (the reader waits for the host beyond that). The thread
/// ends when `stop` is set, when the [`Batches`] are dropped, or after a read error.
pub(super) fn start(
    log: LogReader,
    from: u64,
    config: &WorkerConfig,
    stop: Arc<AtomicBool>,
) -> Result<(Batches, JoinHandle<()>), ProjectionError> {
    let shared = Arc::new(Shared { slot: Mutex::new(Slot::default()), changed: Condvar::new() });
    let config = config.clone();
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("orderly-proj-read".to_owned())
            .spawn(move || {
                read(&log, from, &config, &stop, &shared);
                shared.lock().ended = true;
                shared.changed.notify_all();
            })
            .map_err(ProjectionError::Spawn)?
    };
    Ok((Batches { shared }, thread))
}

fn read(log: &LogReader, mut from: u64, config: &WorkerConfig, stop: &AtomicBool, shared: &Shared) {
    let max_batch = u64::try_from(config.max_batch.max(1)).unwrap_or(u64::MAX);
    while !stop.load(Ordering::Acquire) {
        // Room left in the slot: the host takes everything at once.
        let (room, host_busy) = {
            let mut slot = shared.lock();
            loop {
                if slot.closed || stop.load(Ordering::Acquire) {
                    return;
                }
                let waiting = slot.batch.as_ref().map_or(0, |b| b.reached - b.from);
                if waiting < max_batch {
                    break (max_batch - waiting, waiting > 0);
                }
                slot = shared
                    .changed
                    .wait_timeout(slot, config.idle_wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        };
        let mut head = log.wait_beyond(Position(from), config.idle_wait).0;
        if head <= from {
            if log.failure().is_some() {
                // A failed log answers at once and will not grow: do not spin.
                std::thread::sleep(config.idle_wait);
            }
            continue;
        }
        // A few records for an idle host: wait a little for more, so that a stream of small
        // commits does not cost a transaction each. A busy host takes them later anyway.
        if !host_busy && head - from < config.gather_records && !config.gather.is_zero() {
            let enough = from.saturating_add(config.gather_records);
            head = log.wait_beyond(Position(enough - 1), config.gather).0.max(head);
        }
        let until = head.min(from.saturating_add(room));
        // Room for the events of an order record (an order and its holds), so that a large
        // batch is not copied again and again as it grows.
        let records = usize::try_from(until - from).unwrap_or(usize::MAX);
        let mut events = Vec::with_capacity(records.saturating_mul(4).min(1 << 20));
        let read = read_batch(log, from, until, &mut events);
        let mut slot = shared.lock();
        match read {
            Ok(reached) => {
                match &mut slot.batch {
                    Some(batch) => {
                        batch.events.append(&mut events);
                        batch.reached = reached;
                    }
                    None => slot.batch = Some(Batch { from, reached, events }),
                }
                from = reached;
            }
            Err(error) => {
                slot.error = Some(error);
                drop(slot);
                shared.changed.notify_all();
                return;
            }
        }
        drop(slot);
        shared.changed.notify_all();
    }
}
