//! Pipes: many commands in flight, their acknowledgements received in batches.
//!
//! [`Engine::send_ack`] calls one callback per command, on the log's thread: a boxed closure
//! allocated by the caller and freed by that thread, and whatever hand-over the callback does
//! (a channel send, a wake-up), for each command. A pipe's commands carry only a tag of the
//! caller's choosing and the pipe they came through; the log's thread gathers the
//! acknowledgements of a durable batch and hands them to the pipe at once, which the caller
//! takes as one `Vec`. On the record day (`orderly bench`, 2.9 million commands) the
//! per-command hand-over was about 6% of the threads' samples; with a pipe the log's threads and
//! the driver each used about 0.2 CPU-seconds less (see `docs/design/performance.md`).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::decision::{Answer, Events, Reply};
use super::{Ack, Answering, Engine, ExecuteError};
use crate::domain::Envelope;

/// A caller's lane into the engine for commands it keeps many of in flight: a bulk import, a
/// queue consumer, a load driver. Each command goes in with a tag; its answer, the same
/// [`Ack`] or error as [`Engine::send_ack`] gives, comes back with that tag, exactly once,
/// once durable (or when the engine stops). The acknowledgements and rejections of one log
/// batch are handed over together; a replay (once the first execution is durable), a refusal
/// at the door and a rejection decided while nothing was written come on their own.
///
/// Answers come in no promised order: a batch's acknowledgements come before its rejections,
/// and a retry's replay may come before the first send's acknowledgement (both are durable
/// by then). Match them by tag. Answers wait in the pipe until taken, however many: a caller
/// that stops taking them should stop sending.
///
/// Made by [`Engine::pipe`]. It holds the engine open like a clone of it. Sending and
/// receiving take `&self`: one thread may send while another receives. When
/// [`Engine::shutdown`] returns, every admitted command's answer is in its pipe.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// use orderly_core::domain::{Command, Envelope, Quantity, Sku, TenantId};
/// use orderly_core::engine::{Config, Engine};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path(), Config::default())?;
/// let pipe = engine.pipe();
/// let tenant = TenantId::new("acme")?;
/// let skus = ["mug", "tee", "cap"];
/// for (tag, sku) in (0..).zip(skus) {
///     let receive = Command::ReceiveStock { sku: Sku::new(sku)?, quantity: Quantity::new(10)? };
///     pipe.send(Envelope::new(tenant.clone(), receive), tag);
/// }
/// let mut durable = 0;
/// while durable < skus.len() {
///     for piped in pipe.recv(Duration::from_secs(10)) {
///         let ack = piped.answer?;
///         println!("{} received: decision record at {}", skus[piped.tag as usize], ack.first.0);
///         durable += 1;
///     }
/// }
/// engine.shutdown();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Pipe {
    engine: Engine,
    inbox: Arc<Inbox>,
}

/// One answer out of a [`Pipe`].
#[derive(Debug)]
pub struct PipedAck {
    /// The tag the command was sent with.
    pub tag: u64,
    /// What [`Engine::send_ack`] would have answered.
    pub answer: Result<Ack, ExecuteError>,
    /// When the engine gave it: the answers of one batch share the instant.
    pub at: Instant,
}

/// Where a pipe's answers wait for its caller.
#[derive(Debug)]
struct Inbox {
    answering: Arc<Answering>,
    acks: Mutex<Vec<PipedAck>>,
    arrived: Condvar,
}

impl Inbox {
    /// Hands `acks` over, leaving it empty.
    fn give(&self, acks: &mut Vec<PipedAck>) {
        let mut waiting = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.is_empty() {
            std::mem::swap(&mut *waiting, acks);
        } else {
            waiting.append(acks);
        }
        drop(waiting);
        self.arrived.notify_one();
    }
}

impl Pipe {
    pub(super) fn new(engine: Engine) -> Pipe {
        let inbox = Inbox {
            answering: engine.inner.answering.clone(),
            acks: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
        };
        Pipe { engine, inbox: Arc::new(inbox) }
    }

    /// Admits `envelope` and returns at once. Its answer comes out of [`Pipe::recv`] with
    /// `tag`; a command the engine cannot take at once (a full queue, shutting down) is
    /// answered so before `send` returns.
    pub fn send(&self, envelope: Envelope, tag: u64) {
        let reply = Reply::Tagged(Tagged { tag, inbox: Some(self.inbox.clone()) });
        if let Err((refused, reply)) = self.engine.try_submit(envelope, reply, Events::Drop) {
            reply.answer(Err(refused));
        }
    }

    /// The answers given since the last call, waiting up to `timeout` for the first: empty if
    /// none came by then.
    #[must_use]
    pub fn recv(&self, timeout: Duration) -> Vec<PipedAck> {
        let acks = self.inbox.acks.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut acks, _) = self
            .inbox
            .arrived
            .wait_timeout_while(acks, timeout, |acks| acks.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *acks)
    }
}

/// The reply of a command sent through a pipe. Dropped unanswered (the engine stopped with
/// the command still queued), it answers why.
#[derive(Debug)]
pub(crate) struct Tagged {
    tag: u64,
    /// Taken once answered.
    inbox: Option<Arc<Inbox>>,
}

impl Tagged {
    /// Answers on its own, not among a batch's: a refusal at the door, an error, a replay
    /// (given once the first execution is durable).
    pub(crate) fn answer(self, answer: Result<Answer, ExecuteError>) {
        if let Ok(Answer::Replay { first, records }) = answer {
            let Some(answering) = self.inbox.as_ref().map(|inbox| inbox.answering.clone()) else {
                return;
            };
            // Dropped uncalled (the engine stopped), `self` answers why.
            let then = Reply::call(move |durable: Result<Answer, ExecuteError>| {
                self.give(durable.map(|replay| replay.ack()), Instant::now());
            });
            return answering.after_durable(first, records, then);
        }
        self.give(answer.map(|answer| answer.ack()), Instant::now());
    }

    fn give(mut self, answer: Result<Ack, ExecuteError>, at: Instant) {
        if let Some(inbox) = self.inbox.take() {
            inbox.give(&mut vec![PipedAck { tag: self.tag, answer, at }]);
        }
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            let answer = Err(inbox.answering.gone());
            inbox.give(&mut vec![PipedAck { tag: self.tag, answer, at: Instant::now() }]);
        }
    }
}

/// Gives a list of answers (a log batch's, or the deferred ones that waited for it): callbacks
/// at once, piped answers gathered and handed to their pipe together (on drop at the latest),
/// so that a pipe's inbox is locked and its caller woken once per run of its answers in the
/// list (once per batch for a pipe that sends alone), not per command.
pub(crate) struct Deliveries {
    inbox: Option<Arc<Inbox>>,
    acks: Vec<PipedAck>,
    at: Instant,
}

impl Deliveries {
    pub(crate) fn new() -> Deliveries {
        Deliveries { inbox: None, acks: Vec::new(), at: Instant::now() }
    }

    pub(crate) fn give(&mut self, reply: Reply, answer: Result<Answer, ExecuteError>) {
        let Reply::Tagged(mut tagged) = reply else { return reply.answer(answer) };
        if matches!(answer, Ok(Answer::Replay { .. })) {
            return tagged.answer(answer);
        }
        let Some(inbox) = tagged.inbox.take() else { return };
        if !self.inbox.as_ref().is_some_and(|current| Arc::ptr_eq(current, &inbox)) {
            self.deliver();
            self.inbox = Some(inbox);
        }
        let answer = answer.map(|answer| answer.ack());
        self.acks.push(PipedAck { tag: tagged.tag, answer, at: self.at });
    }

    fn deliver(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            inbox.give(&mut self.acks);
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.deliver();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Position;
    use crate::engine::{Config, EngineError};

    /// A piped command dropped unanswered (still queued when the engine stopped, or in a
    /// batch the log refused) is answered all the same, with why, and only once.
    #[test]
    fn a_piped_command_dropped_unanswered_answers_why() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), Config::default()).unwrap();
        let pipe = engine.pipe();
        engine.shutdown();
        drop(Tagged { tag: 5, inbox: Some(pipe.inbox.clone()) });
        let answered = pipe.recv(Duration::ZERO);
        assert_eq!(answered.len(), 1);
        assert_eq!(answered[0].tag, 5);
        let why = &answered[0].answer;
        assert!(matches!(why, Err(ExecuteError::Engine(EngineError::ShuttingDown))), "{why:?}");

        let answering = Tagged { tag: 6, inbox: Some(pipe.inbox.clone()) };
        let ack =
            Answer::Committed { position: 3, events: Vec::new(), at: crate::domain::Timestamp(0) };
        answering.answer(Ok(ack));
        let answered = pipe.recv(Duration::ZERO);
        assert_eq!(answered.len(), 1, "answered, then dropped: once");
        let expected = Ack { first: Position(3), records: 1, replayed: false };
        assert_eq!(answered[0].answer.as_ref().ok(), Some(&expected));
    }
}
