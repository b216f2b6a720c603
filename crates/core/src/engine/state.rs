//! The engine's in-memory state, owned by the decision thread: every tenant's aggregates, the
//! idempotency keys, and the hold-expiry timers. All of it is derived from the log and rebuilt
//! by replaying it on open.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;

use crossbeam_channel::Sender;
use orderly_store::{Log, Record};

use super::OpenEngineError;
use crate::Position;
use crate::codec::{self, Decoded, Fingerprint};
use crate::domain::GrowingMap;
use crate::domain::{
    Command, Decider, Event, IdempotencyKey, OrderEvent, OrderId, OrderStatus, Tenant, TenantId,
    TenantState, Timestamp,
};

/// Where the events of a command accepted with an idempotency key are in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub fingerprint: Fingerprint,
    /// Position of the first record holding the command's events.
    pub first: u64,
    /// Records holding them: one decision record (or, in logs written before decision
    /// records, one record per event).
    pub records: u32,
}

/// Records read back and decoded (with their positions and admission times), handed from the
/// thread that reads the log to the one that replays it.
type ReadBack = Vec<(u64, u64, Decoded)>;

/// How often a long replay, and the log's open before it, report their progress.
pub(super) const REPLAY_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Records per [`ReadBack`] batch: enough that handing one over costs little per record.
const REPLAY_BATCH: usize = 1024;
/// How many records ahead of the one replayed the replay loads what they will look up.
const REPLAY_AHEAD: usize = 8;
/// How many timers that ran out ahead of the one checked have their orders loaded.
const TIMERS_AHEAD: usize = 8;

impl World {
    /// The state the records of `log` leave, and the last admission time they hold: `start`'s
    /// state (from a snapshot: the world, its last admission time and the position it is at)
    /// with the records from there on replayed, or all of them from an empty world. The log is
    /// read and decoded on a thread of its own, a few batches ahead of the replay here: the
    /// two take about as long, and a start waits for both.
    pub(crate) fn recovered(
        log: &Log,
        start: Option<(World, Timestamp, u64)>,
    ) -> Result<(World, Timestamp), OpenEngineError> {
        let (mut world, mut last_now, from) = start.unwrap_or_default();
        let head = log.head().0;
        let mut owed = None;
        let mut reported = std::time::Instant::now();
        std::thread::scope(|scope| {
            let (batches, read) = crossbeam_channel::bounded(4);
            scope.spawn(move || read_back(log, Position(from), &batches));
            for batch in read {
                // A long replay says how far it is, so that an operator can tell it from a hang.
                if reported.elapsed() >= REPLAY_REPORT_EVERY {
                    reported = std::time::Instant::now();
                    let at = batch.as_ref().ok().and_then(|b| b.first()).map_or(head, |r| r.0);
                    tracing::info!(position = at, head, "replaying the log");
                }
                // `evolve` panics on an event the state cannot take, which a log the engine
                // wrote never holds; one rewritten with recomputed checksums may. Caught per
                // batch (free unless it happens), and refused, naming the record.
                let batch = batch?;
                let mut at = from;
                super::catching(|| {
                    // What the records a few ahead will look up is loaded while these are
                    // replayed: a day's orders, payments and keys do not fit in cache.
                    for (_, _, decoded) in batch.iter().take(REPLAY_AHEAD) {
                        world.prefetch_record(decoded);
                    }
                    for (i, (position, timestamp, decoded)) in batch.iter().enumerate() {
                        if let Some((_, _, ahead)) = batch.get(i + REPLAY_AHEAD) {
                            world.prefetch_record(ahead);
                        }
                        at = *position;
                        follows_its_key_record(&mut owed, decoded);
                        world.replay(*position, decoded);
                        last_now = last_now.max(Timestamp(*timestamp));
                    }
                })
                .map_err(|invariant| OpenEngineError::Inconsistent { position: at, invariant })?;
            }
            if let Some((tenant, left)) = owed {
                let invariant = format!(
                    "a key record of tenant {tenant} names {left} more of its event records than the log holds"
                );
                return Err(OpenEngineError::Inconsistent { position: head, invariant });
            }
            Ok((world, last_now))
        })
    }

    /// A world of `tenants` (in the order of their places), each with its aggregates and
    /// keys, as a snapshot kept them. The expiry timers are set again for every order still
    /// unpaid, by time, ties by place and order id.
    pub(crate) fn restored(tenants: Vec<(TenantId, TenantState, Keys)>) -> World {
        let mut world = World::default();
        let mut unpaid = Vec::new();
        for (place, (id, state, keys)) in tenants.into_iter().enumerate() {
            for (order, placed) in state.orders() {
                if placed.status() == Some(OrderStatus::Placed)
                    && let Some(at) = placed.hold_expires_at()
                {
                    unpaid.push((at, place, order.clone()));
                }
            }
            world.places.insert(id.clone(), place);
            world.tenants.push(TenantWorld { id, state, keys });
        }
        unpaid.sort_unstable();
        for (at, place, order) in unpaid {
            world.timers.push(at, Place(place), &order);
        }
        world
    }

    /// Every tenant, in the order of their places, with its aggregates and keys.
    pub(crate) fn tenants_and_keys(
        &self,
    ) -> impl Iterator<Item = (&TenantId, &TenantState, &Keys)> {
        self.tenants.iter().map(|tenant| (&tenant.id, &tenant.state, &tenant.keys))
    }
}

/// Checks a record of a log written before decision records: a key record (`CommandAccepted`)
/// names how many event records of its tenant follow it, which a retry of its key is answered
/// with, so they must be there, and be that tenant's (`owed` counts them down). Panics, as
/// `evolve` does, on a record that breaks that.
fn follows_its_key_record(owed: &mut Option<(TenantId, u32)>, record: &Decoded) {
    if let Some((tenant, left)) = owed.take() {
        match record {
            Decoded::Event { tenant: of, .. } if *of == tenant => {
                *owed = (left > 1).then_some((tenant, left - 1));
            }
            _ => panic!(
                "a key record of tenant {tenant} names {left} more of its event records than follow it"
            ),
        }
    }
    if let Decoded::CommandAccepted { tenant, events, .. } = record
        && *events > 0
    {
        *owed = Some((tenant.clone(), *events));
    }
}

/// A tenant's idempotency keys and where their commands' events are.
pub(crate) type Keys = GrowingMap<IdempotencyKey, KeyEntry>;

/// Reads and decodes the records of `log` from `from` into batches for `batches`: up to the end, the first
/// record that cannot be read or decoded (its error is sent last), or a receiver that is gone.
fn read_back(log: &Log, from: Position, batches: &Sender<Result<ReadBack, OpenEngineError>>) {
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    for record in log.read_from(from) {
        match record.map_err(OpenEngineError::from).and_then(decode) {
            Ok(read) => batch.push(read),
            Err(error) => {
                let _ = batches.send(Err(error));
                return;
            }
        }
        if batch.len() == REPLAY_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(REPLAY_BATCH));
            if batches.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    let _ = batches.send(Ok(batch));
}

/// A record's position, admission time and decoded contents.
fn decode(record: Record) -> Result<(u64, u64, Decoded), OpenEngineError> {
    let position = record.position.0;
    codec::decode_stored(&record)
        .map(|decoded| (position, record.timestamp, decoded))
        .map_err(|error| OpenEngineError::Decode { position, error })
}

#[derive(Debug, Default)]
pub(crate) struct World {
    /// Each tenant's place in `tenants`: a command looks its tenant up once, by name, and
    /// everything after (its keys, its state, its timers) goes by that place.
    places: FxHashMap<TenantId, usize>,
    tenants: Vec<TenantWorld>,
    timers: Timers,
}

/// Where a tenant's part of the world is kept, for the command at hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place(usize);

/// One tenant's part of the world: its aggregates and the keys of its accepted commands.
#[derive(Debug)]
struct TenantWorld {
    id: TenantId,
    state: TenantState,
    keys: Keys,
}

/// Placed orders by the time their stock hold runs out, earliest first, ties in the order they
/// were set (log order). Entries are never removed early: an order paid or cancelled meanwhile
/// is skipped when its time comes, which is cheaper than finding it on every confirmation.
///
/// One run of the engine sets them in time order (admission times never go back and the hold's
/// time to live is fixed), so they wait in a queue, taken from the front. Only a log written
/// with a longer time to live than the next run's can set one earlier than the last; those
/// wait in a heap beside the queue.
#[derive(Debug, Default)]
struct Timers {
    in_order: VecDeque<Timer>,
    out_of_order: BinaryHeap<Reverse<Timer>>,
    /// Timers set so far.
    set: u64,
}

impl Timers {
    fn push(&mut self, at: Timestamp, tenant: Place, order: &OrderId) {
        self.set += 1;
        let timer = Timer { at, set: self.set, tenant, order: order.clone() };
        if self.in_order.back().is_none_or(|last| last.at <= at) {
            self.in_order.push_back(timer);
        } else {
            self.out_of_order.push(Reverse(timer));
        }
    }

    /// The earliest timer, if it has run out by `now`.
    fn pop_due(&mut self, now: Timestamp) -> Option<Timer> {
        let from_heap = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(queued), Some(Reverse(heaped))) => heaped.key() < queued.key(),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if from_heap {
            let Reverse(next) = self.out_of_order.peek()?;
            (next.at <= now).then(|| self.out_of_order.pop().map(|Reverse(t)| t))?
        } else {
            let next = self.in_order.front()?;
            (next.at <= now).then(|| self.in_order.pop_front())?
        }
    }
}

/// When a placed order's hold runs out. Ordered by time, then by when it was set: every order
/// of one turn shares its expiry time, and comparing numbers, not ids, keeps the order cheap.
#[derive(Debug)]
struct Timer {
    at: Timestamp,
    set: u64,
    tenant: Place,
    order: OrderId,
}

impl Timer {
    fn key(&self) -> (Timestamp, u64) {
        (self.at, self.set)
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Timer) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl World {
    /// The place of `tenant`, made for it if it has none yet (the state of a tenant that never
    /// recorded anything is empty either way).
    pub(crate) fn place(&mut self, tenant: &TenantId) -> Place {
        if let Some(&place) = self.places.get(tenant) {
            return Place(place);
        }
        let place = self.tenants.len();
        self.places.insert(tenant.clone(), place);
        self.tenants.push(TenantWorld {
            id: tenant.clone(),
            state: TenantState::default(),
            keys: Keys::default(),
        });
        Place(place)
    }

    /// Whether `tenant` has a place: it recorded something (or a command of it is being
    /// decided).
    pub(crate) fn knows(&self, tenant: &TenantId) -> bool {
        self.places.contains_key(tenant)
    }

    /// Takes back the place just made for a tenant whose first command was refused, so that
    /// a refused command leaves no trace: the state stays the log's, as a replay rebuilds it,
    /// and tenant ids that never record anything cost no memory (nor room in the snapshot).
    pub(crate) fn forget_new(&mut self, place: Place) {
        assert_eq!(place.0 + 1, self.tenants.len(), "the tenant placed last");
        let tenant = self.tenants.pop().expect("a tenant at that place");
        self.places.remove(&tenant.id);
    }

    /// Starts loading what deciding `command` of `tenant` with `key` will look up first (its
    /// key's entry, its order and payment), for a command a few places back in the queue. A
    /// tenant not seen yet has nothing to load.
    pub(crate) fn prefetch(
        &self,
        tenant: &TenantId,
        command: &Command,
        key: Option<&IdempotencyKey>,
    ) {
        if let Some(state) = self.prefetch_key(tenant, key) {
            state.prefetch_for(command);
        }
    }

    /// Starts loading what deciding `command` of `tenant` reaches through its order, for a
    /// command that had its order loaded by [`Self::prefetch`] a few places back.
    pub(crate) fn prefetch_through(&self, tenant: &TenantId, command: &Command) {
        if let Some(&place) = self.places.get(tenant) {
            self.tenants[place].state.prefetch_through(command);
        }
    }

    /// Starts loading the entry of `key` of `tenant`, if any, and gives the tenant's
    /// aggregates for the hints about them; `None` for a tenant not seen yet.
    fn prefetch_key(
        &self,
        tenant: &TenantId,
        key: Option<&IdempotencyKey>,
    ) -> Option<&TenantState> {
        let tenant = &self.tenants[*self.places.get(tenant)?];
        if let Some(key) = key {
            tenant.keys.prefetch(key);
        }
        Some(&tenant.state)
    }

    /// The tenant kept at `place`.
    pub(crate) fn id(&self, place: Place) -> &TenantId {
        &self.tenants[place.0].id
    }

    /// The aggregates of the tenant at `place`.
    pub(crate) fn state(&self, place: Place) -> &TenantState {
        &self.tenants[place.0].state
    }

    /// The aggregates of `tenant`, if it ever recorded anything.
    pub(crate) fn tenant(&self, tenant: &TenantId) -> Option<&TenantState> {
        self.places.get(tenant).map(|&place| &self.tenants[place].state)
    }

    /// Records `entry` for `key` unless the key was seen: then returns what it was seen with,
    /// and keeps that. One probe for a new key, the common case; a command then rejected gives
    /// its claim back with [`World::release_key`].
    pub(crate) fn claim_key(
        &mut self,
        place: Place,
        key: &IdempotencyKey,
        entry: KeyEntry,
    ) -> Option<KeyEntry> {
        match self.tenants[place.0].keys.get_or_insert_with(key.clone(), || entry) {
            (_, true) => None,
            (seen, false) => Some(*seen),
        }
    }

    /// Forgets a key claimed for a command that was then rejected: a rejected command is
    /// not remembered, and its key may come again with another command.
    pub(crate) fn release_key(&mut self, place: Place, key: &IdempotencyKey) {
        let claimed = self.tenants[place.0].keys.remove(key);
        assert!(claimed.is_some(), "only a claimed key is released");
    }

    /// Applies the events of one decision (or one event) of the tenant at `place`, keeping
    /// the expiry timers in step.
    pub(crate) fn apply(&mut self, place: Place, events: &[Event]) {
        self.apply_with(place, events, Tenant::evolve);
    }

    /// [`World::apply`] with `evolve` for each event: the decider's, or, for events read back
    /// from the log, the one that checks the links between aggregates first.
    fn apply_with(&mut self, place: Place, events: &[Event], evolve: fn(&mut TenantState, &Event)) {
        let state = &mut self.tenants[place.0].state;
        for event in events {
            if let Event::Order { order, event: OrderEvent::OrderPlaced { hold_expires_at, .. } } =
                event
            {
                self.timers.push(*hold_expires_at, place, order);
            }
            evolve(state, event);
        }
    }

    /// Starts loading what replaying `record` will look up first: its key's entry and the
    /// orders and payments its events are about. A tenant not seen yet has nothing to load.
    fn prefetch_record(&self, record: &Decoded) {
        let key = match record {
            Decoded::Event { .. } => None,
            Decoded::CommandAccepted { key, .. } => Some(key),
            Decoded::Decision { key, .. } => key.as_ref().map(|(key, _)| key),
        };
        if let Some(state) = self.prefetch_key(record.tenant(), key) {
            for event in record.events() {
                state.prefetch_for_event(event);
            }
        }
    }

    /// Applies a record read back from the log at `position`.
    pub(crate) fn replay(&mut self, position: u64, record: &Decoded) {
        match record {
            Decoded::Event { tenant, event } => {
                let place = self.place(tenant);
                self.apply_with(place, std::slice::from_ref(event), Tenant::evolve_replayed);
            }
            Decoded::CommandAccepted { tenant, key, fingerprint, events } => {
                let entry =
                    KeyEntry { fingerprint: *fingerprint, first: position + 1, records: *events };
                let place = self.place(tenant);
                self.remember_key(place, key, entry);
            }
            Decoded::Decision { tenant, key, events } => {
                let place = self.place(tenant);
                self.apply_with(place, events, Tenant::evolve_replayed);
                if let Some((key, fingerprint)) = key {
                    let entry = KeyEntry { fingerprint: *fingerprint, first: position, records: 1 };
                    self.remember_key(place, key, entry);
                }
            }
        }
    }

    fn remember_key(&mut self, place: Place, key: &IdempotencyKey, entry: KeyEntry) {
        let seen = self.claim_key(place, key, entry);
        assert!(seen.is_none(), "an idempotency key is accepted once");
    }

    /// Takes every order still unpaid whose hold has run out by `now`.
    ///
    /// Most timers that run out are of orders paid or cancelled since, and each is looked up
    /// in a map of a day's orders that does not fit in cache: the orders are loaded
    /// [`TIMERS_AHEAD`] timers ahead of the one checked, so that the checks do not wait for
    /// memory in turn (and only that many are held at once, however many ran out).
    pub(crate) fn take_due(&mut self, now: Timestamp) -> Vec<(Place, OrderId)> {
        let mut unpaid = Vec::new();
        let mut ahead = VecDeque::with_capacity(TIMERS_AHEAD + 1);
        loop {
            if let Some(Timer { tenant, order, .. }) = self.timers.pop_due(now) {
                self.state(tenant).prefetch_order(&order);
                ahead.push_back((tenant, order));
                if ahead.len() <= TIMERS_AHEAD {
                    continue;
                }
            }
            let Some((tenant, order)) = ahead.pop_front() else { break };
            let placed = self.state(tenant).order(&order);
            if placed.is_some_and(|o| o.status() == Some(OrderStatus::Placed)) {
                unpaid.push((tenant, order));
            }
        }
        unpaid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_run_out_by_time_then_in_the_order_set_also_when_set_out_of_order() {
        let mut timers = Timers::default();
        // 3, 4 and the last 5 come after later ones: as when a log written with a longer time
        // to live is replayed.
        let set = [(5, "a"), (3, "b"), (5, "c"), (7, "d"), (4, "e"), (5, "f")];
        for (at, order) in set {
            timers.push(Timestamp(at), Place(0), &OrderId::new(order).unwrap());
        }
        assert_eq!(timers.out_of_order.len(), 3, "those wait in the heap");
        let mut pop_until = |now| {
            let mut popped = Vec::new();
            while let Some(timer) = timers.pop_due(Timestamp(now)) {
                popped.push((timer.at.0, timer.order.to_string()));
            }
            popped
        };
        assert!(pop_until(2).is_empty(), "nothing has run out at 2");
        let expected = [(3, "b"), (4, "e"), (5, "a"), (5, "c"), (5, "f")];
        assert_eq!(pop_until(5), expected.map(|(at, o)| (at, o.to_owned())));
        assert_eq!(pop_until(100), [(7, "d".to_owned())]);
        assert!(timers.pop_due(Timestamp(u64::MAX)).is_none());
    }
}
