//! A seeded model of a Black Friday day, as the commands a platform would send: the input of
//! `orderly bench` and of the day-sized tests.
//!
//! N tenants share the traffic unevenly (Zipf-like); each has a catalog with skewed product
//! popularity and a few flash-sale products with little stock that sell out. Orders arrive on
//! the day's curve ([`day_curve`]: exactly `orders`, the busiest minute at 987 per 1,033,625),
//! with baskets of 1 to 5 lines. Each order then lives a life the model draws when it is
//! placed ([`Fate`]): paid and shipped (some refunded later), cancelled by the shopper,
//! declined by the bank, or never paid, so that its hold expires. Gateway outages are windows
//! of the day in which every authorization fails with `gateway_unavailable`; shoppers caught in
//! one try again a few minutes later. Some placements and authorizations are sent twice with
//! the same idempotency key, as a client that lost an answer does.
//!
//! The model decides the payments itself and emits them as `Command::Payment` authorize or
//! decline commands (an authorization confirms the order): a bench driven by it measures the
//! engine, not the simulated gateway network. Holds of unpaid orders are left to the engine's
//! own expiry timers: a runner drives the engine with a `ManualClock` that follows the steps'
//! virtual times and never admits a step later than its own.
//!
//! [`Workload`] yields the steps in virtual-time order, lazily: arrivals come from the curve
//! and each order's next step waits in a heap, so a day of millions of commands never sits in
//! memory. **Architecture Invariant:** like the domain, the workload does no IO, reads no
//! clock, is not async and draws its chance only from its seed (checked by
//! `tests/domain_purity.rs`): the same seed yields the same steps.

mod catalog;
mod curve;
mod random;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use smol_str::SmolStrBuilder;

pub use curve::{
    MINUTES_PER_DAY, PEAK_MINUTE, RECORD_DAY_ORDERS, RECORD_PEAK_MINUTE, day_curve, peak_orders,
};

use self::catalog::Shop;
use self::random::{Seeded, Skewed};
use crate::domain::limits::{DEFAULT_HOLD_TTL_MS, MAX_QUANTITY};
use crate::domain::{
    CancelReason, Command, CustomerId, DeclineReason, Envelope, GatewayId, GatewayReference,
    IdempotencyKey, Money, OrderCommand, OrderId, OrderLine, OrderStatus, PaymentCommand,
    PaymentId, Quantity, TenantId, Timestamp,
};

/// Flash-sale products in each tenant's catalog.
pub const FLASH_SKUS_PER_TENANT: usize = 5;
/// Share of basket lines that ask for a flash-sale product, per mille.
pub const FLASH_LINE_PER_MILLE: u64 = 40;
/// Share of placements sent a second time with the same key, per mille.
pub const PLACE_RETRY_PER_MILLE: u64 = 30;
/// Share of authorizations sent a second time with the same key, per mille.
pub const AUTHORIZE_RETRY_PER_MILLE: u64 = 20;
/// Share of orders never paid (their hold expires), per mille.
pub const ABANDON_PER_MILLE: u64 = 50;
/// Share of payment attempts the bank refuses, per mille.
pub const DECLINE_PER_MILLE: u64 = 30;
/// Share of paid orders the shopper cancels before shipping, per mille.
pub const CANCEL_PER_MILLE: u64 = 40;
/// Share of shipped orders refunded later, per mille.
pub const REFUND_PER_MILLE: u64 = 30;
/// Gateway outages in the day.
pub const OUTAGES: usize = 3;

/// The least virtual time between two steps of one order.
pub const MIN_FOLLOW_UP_MS: u64 = 10_000;

/// The latest an order's payment steps come after its placement (a cancel after a refused
/// payment included).
pub const LAST_PAYMENT_STEP_MS: u64 = 9 * 60_000;

/// How much earlier than its virtual time a runner may have a step admitted. The engine stamps
/// one time per turn, so a runner with many commands in flight cannot give each its own; the
/// model leaves this much room before the default 15-minute hold runs out, so that no payment
/// is refused for a hold the model meant to be still open. (Admitted later than its virtual
/// time, a step would find holds expired that the model still counts on; admitted earlier, a
/// placement's hold runs out early by as much.)
pub const MAX_ADMISSION_LAG_MS: u64 = 5 * 60_000;

const _: () = assert!(LAST_PAYMENT_STEP_MS + MAX_ADMISSION_LAG_MS < DEFAULT_HOLD_TTL_MS);

/// 2025-11-28 00:00 UTC, Black Friday: when the modelled day begins.
pub const BLACK_FRIDAY: Timestamp = Timestamp(1_764_288_000_000);

/// What day to model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Orders placed over the day.
    pub orders: u64,
    /// Tenants sharing the traffic (at least one).
    pub tenants: usize,
    /// Regular products per tenant (at least five), besides the flash-sale ones.
    pub skus_per_tenant: usize,
    /// The seed: the same seed yields the same steps.
    pub seed: u64,
    /// When the day begins (virtual time, ms since the Unix epoch).
    pub day_start: Timestamp,
}

impl WorkloadConfig {
    /// A day of `orders` over `tenants` tenants with 200 products each, on Black Friday.
    #[must_use]
    pub fn new(orders: u64, tenants: usize, seed: u64) -> WorkloadConfig {
        WorkloadConfig { orders, tenants, skus_per_tenant: 200, seed, day_start: BLACK_FRIDAY }
    }
}

/// How an order's life ends, as the model drew it when the order was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Paid and shipped.
    Shipped,
    /// Paid, shipped, then partly or fully refunded.
    Refunded,
    /// Paid, then cancelled by the shopper before shipping.
    CancelledByShopper,
    /// The bank refused the payment; the order was cancelled.
    Declined,
    /// Never paid (abandoned, or both attempts fell into gateway outages): its hold expires.
    Expired,
}

impl Fate {
    /// The order's status once its life is over.
    #[must_use]
    pub fn final_status(self) -> OrderStatus {
        match self {
            Fate::Shipped | Fate::Refunded => OrderStatus::Shipped,
            Fate::CancelledByShopper | Fate::Declined | Fate::Expired => OrderStatus::Cancelled,
        }
    }
}

/// What a step is, for a runner that counts and checks the answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Opening stock of one SKU (before the first order).
    ReceiveStock,
    /// A new order.
    Place,
    /// A placement sent again with the same key: the first outcome must come back.
    RetryPlace,
    /// The gateway authorized the payment (confirms the order).
    Authorize,
    /// The same authorization sent again with the same key.
    RetryAuthorize,
    /// The bank refused the payment.
    Decline,
    /// A gateway outage failed the payment attempt (`gateway_unavailable`).
    DeclineUnavailable,
    /// The order is cancelled (by the shopper, or after a refused payment).
    Cancel,
    /// The goods leave the warehouse (commits the stock, captures the payment).
    Ship,
    /// Money is given back after shipping.
    Refund,
}

/// Whether `sku` is one of the model's flash-sale products: the only ones stocked to sell out,
/// so a placement refused for want of any other says the engine lost or miscounted stock.
#[must_use]
pub fn is_flash_sale(sku: &crate::domain::Sku) -> bool {
    Shop::is_flash_sale(sku)
}

/// The order a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrderTag {
    /// The order's number in the day, from 0; its id is `o-{number}`.
    pub number: u64,
    /// How its life ends, if its placement is accepted.
    pub fate: Fate,
}

/// One command to run, at its virtual admission time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// When the command is sent, in virtual time (also in `envelope.admitted_at`).
    pub at: Timestamp,
    /// The command with its tenant and idempotency key.
    pub envelope: Envelope,
    /// What it is.
    pub kind: StepKind,
    /// The order it belongs to (none for stock).
    pub order: Option<OrderTag>,
}

/// The seeded day: an iterator of [`Step`]s in virtual-time order.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    curve: Vec<u64>,
    outages: Vec<(Timestamp, Timestamp)>,
    shops: Vec<Shop>,
    traffic: Skewed,
    random: Seeded,
    setup: VecDeque<Step>,
    arrivals: Arrivals,
    follow_ups: FollowUps,
    gateways: [GatewayId; 2],
}

/// Where the arrivals are: the minute and the order within it.
#[derive(Debug, Default)]
struct Arrivals {
    minute: usize,
    within: u64,
    next_number: u64,
    /// The time of the next arrival once drawn: it must not be drawn again while follow-ups
    /// go first.
    drawn: Option<u64>,
}

/// The next step of one order, waiting for its time.
#[derive(Debug)]
struct FollowUp {
    at: u64,
    life: Life,
    next: Next,
}

/// Follow-ups in the order they are due: by time, ties in the order they were planned, so the
/// day is the same every time. A day's follow-ups run into the hundreds of thousands and one
/// heap of all of them was most of the workload's own time, so they are kept by [`BUCKET_MS`]
/// of time: a later bucket is a list in the order planned, and only the bucket being taken is
/// ordered, as a heap of small keys (time, plan number, index) into its own list. The list of
/// the bucket being taken was just built, so taking a follow-up reads memory in the cache,
/// where a slot in one list of all of them was a trip to memory each time.
#[derive(Debug, Default)]
struct FollowUps {
    /// Keys of the bucket being taken, and of any planned for it or before it since.
    current: BinaryHeap<Reverse<Key>>,
    /// The follow-ups `current`'s keys point at, each taken once.
    taken_from: Vec<Option<FollowUp>>,
    current_bucket: u64,
    /// The buckets after `current_bucket`: their follow-ups with their plan numbers, in the
    /// order planned.
    later: BTreeMap<u64, Vec<(u64, FollowUp)>>,
    planned: u64,
}

/// A follow-up's place in the queue: its time, its plan number, its index in `taken_from`.
type Key = (u64, u64, usize);

/// The time span of a bucket of [`FollowUps`].
const BUCKET_MS: u64 = 10_000;

impl FollowUps {
    /// Adds `follow_up`, due after those planned before it for the same time.
    fn plan(&mut self, follow_up: FollowUp) {
        self.planned += 1;
        let bucket = follow_up.at / BUCKET_MS;
        if bucket <= self.current_bucket {
            let key = Reverse((follow_up.at, self.planned, self.taken_from.len()));
            self.taken_from.push(Some(follow_up));
            self.current.push(key);
        } else {
            self.later.entry(bucket).or_default().push((self.planned, follow_up));
        }
    }

    /// When the next follow-up is due.
    fn next_at(&mut self) -> Option<u64> {
        self.refill();
        self.current.peek().map(|Reverse((at, ..))| *at)
    }

    /// Takes the follow-up due first.
    fn take_next(&mut self) -> Option<FollowUp> {
        self.refill();
        let Reverse((_, _, index)) = self.current.pop()?;
        self.taken_from[index].take()
    }

    /// Makes the next bucket current once the current one is empty: every key in `current`
    /// is due before every follow-up in `later`.
    fn refill(&mut self) {
        if self.current.is_empty()
            && let Some((bucket, planned)) = self.later.pop_first()
        {
            self.current_bucket = bucket;
            self.taken_from.clear();
            let mut keys = Vec::with_capacity(planned.len());
            for (index, (number, follow_up)) in planned.into_iter().enumerate() {
                keys.push(Reverse((follow_up.at, number, index)));
                self.taken_from.push(Some(follow_up));
            }
            self.current = BinaryHeap::from(keys);
        }
    }
}

/// What the model remembers of one order between its steps.
#[derive(Clone, Debug)]
struct Life {
    number: u64,
    tenant: usize,
    total: Money,
    fate: Fate,
    /// Payment attempts that will fall into outages (0, 1 or 2).
    unavailable: u8,
    /// When the first and the second payment attempt are made.
    payments_at: [u64; 2],
    /// The placement, kept only while a retry of it is due.
    placement: Option<Box<Envelope>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    RetryPlace,
    Pay { attempt: u8 },
    RetryAuthorize { attempt: u8 },
    CancelDeclined,
    CancelByShopper,
    Ship,
    Refund,
}

impl Workload {
    /// The day of `config`.
    #[must_use]
    pub fn new(config: WorkloadConfig) -> Workload {
        assert!(config.tenants > 0, "a day needs at least one tenant");
        assert!(config.skus_per_tenant >= 5, "a basket may have five distinct products");
        let mut seeds = Seeded::new(config.seed);
        let mut catalog_random = seeds.fork(1);
        let mut outage_random = seeds.fork(2);
        let random = seeds.fork(3);
        let traffic = Skewed::zipf(config.tenants);
        let shops: Vec<Shop> = (0..config.tenants)
            .map(|t| {
                let expected = traffic.share(t, config.orders);
                Shop::new(t, config.skus_per_tenant, expected, &mut catalog_random)
            })
            .collect();
        let before_day = config.day_start.0.saturating_sub(60_000);
        let setup = shops
            .iter()
            .flat_map(|shop| {
                shop.opening_stock().flat_map(move |(sku, units)| {
                    receipts(units).map(move |quantity| Step {
                        at: Timestamp(before_day),
                        envelope: admitted(
                            Envelope::new(
                                shop.tenant.clone(),
                                Command::ReceiveStock { sku: sku.clone(), quantity },
                            ),
                            before_day,
                        ),
                        kind: StepKind::ReceiveStock,
                        order: None,
                    })
                })
            })
            .collect();
        let outages = (0..OUTAGES)
            .map(|_| {
                let start = config.day_start.0 + outage_random.below(22 * 60) * 60_000;
                let length = outage_random.between(8, 20) * 60_000;
                (Timestamp(start), Timestamp(start + length))
            })
            .collect();
        let gateways = ["gw-a", "gw-b"].map(|g| GatewayId::new(g).expect("a valid gateway id"));
        Workload {
            curve: day_curve(config.orders),
            config,
            outages,
            shops,
            traffic,
            random,
            setup,
            arrivals: Arrivals::default(),
            follow_ups: FollowUps::default(),
            gateways,
        }
    }

    /// Orders per minute over the day.
    #[must_use]
    pub fn curve(&self) -> &[u64] {
        &self.curve
    }

    /// Every product's opening stock, per tenant: what the day's receipts add up to.
    pub fn opening_stock(&self) -> impl Iterator<Item = (&TenantId, &crate::domain::Sku, u64)> {
        self.shops.iter().flat_map(|shop| {
            shop.opening_stock().map(move |(sku, units)| (&shop.tenant, sku, units))
        })
    }

    /// The gateway outages: from (inclusive) to (exclusive), virtual time.
    #[must_use]
    pub fn outages(&self) -> &[(Timestamp, Timestamp)] {
        &self.outages
    }

    /// The tenants, busiest first.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.shops.iter().map(|shop| &shop.tenant)
    }

    /// The id of order `number`.
    #[must_use]
    pub fn order_id(number: u64) -> OrderId {
        OrderId::new(order_text(number, "", None).as_str()).expect("a valid order id")
    }

    /// The virtual time of the next arrival, if any order is still to come.
    fn next_arrival(&mut self) -> Option<u64> {
        if let Some(at) = self.arrivals.drawn {
            return Some(at);
        }
        let a = &mut self.arrivals;
        while a.minute < MINUTES_PER_DAY && a.within >= self.curve[a.minute] {
            a.minute += 1;
            a.within = 0;
        }
        let count = *self.curve.get(a.minute)?;
        // Spread evenly over the minute with a little jitter: stays in order.
        let slot = 60_000 / count;
        let minute_start = self.config.day_start.0 + a.minute as u64 * 60_000;
        let at = minute_start + a.within * 60_000 / count + self.random.below(slot.max(1));
        self.arrivals.drawn = Some(at);
        Some(at)
    }

    fn plan(&mut self, at: u64, life: Life, next: Next) {
        self.follow_ups.plan(FollowUp { at, life, next });
    }

    fn in_outage(&self, at: u64) -> bool {
        self.outages.iter().any(|(from, to)| (from.0..to.0).contains(&at))
    }

    fn arrive(&mut self, at: u64) -> Step {
        self.arrivals.within += 1;
        self.arrivals.drawn = None;
        let number = self.arrivals.next_number;
        self.arrivals.next_number += 1;
        let tenant = self.traffic.pick(&mut self.random);
        let shop = &self.shops[tenant];
        let lines = shop.basket(&mut self.random);
        let total: u64 = lines.iter().map(OrderLine::amount).sum();
        let total = Money::new(total, shop.currency);
        let mut customer = SmolStrBuilder::new();
        customer.push_str("c-");
        customer.push_str(itoa::Buffer::new().format(self.random.below(50_000)));
        let customer = CustomerId::new(customer.as_str()).expect("a valid customer id");
        let order = Workload::order_id(number);
        let command = OrderCommand::Place { customer, currency: shop.currency, lines };
        let envelope = admitted(
            Envelope::new(shop.tenant.clone(), Command::Order { order, command })
                .with_key(place_key(number)),
            at,
        );
        // The life is drawn now, whole, so that the step carries its fate. Payment attempts
        // come 2 to 5 minutes after placing (after a retry of the placement, if any), and a
        // second one 90 to 150 seconds after an attempt an outage failed.
        let first_payment = at + self.random.between(2 * 60_000, 5 * 60_000);
        let second_payment = first_payment + self.random.between(90_000, 150_000);
        let abandoned = self.random.chance(ABANDON_PER_MILLE);
        let unavailable = if abandoned || !self.in_outage(first_payment) {
            0
        } else if !self.in_outage(second_payment) {
            1
        } else {
            2
        };
        let fate = if abandoned || unavailable == 2 {
            Fate::Expired
        } else if self.random.chance(DECLINE_PER_MILLE) {
            Fate::Declined
        } else if self.random.chance(CANCEL_PER_MILLE) {
            Fate::CancelledByShopper
        } else if self.random.chance(REFUND_PER_MILLE) {
            Fate::Refunded
        } else {
            Fate::Shipped
        };
        let retry = self.random.chance(PLACE_RETRY_PER_MILLE);
        let payments_at = [first_payment, second_payment];
        let mut life =
            Life { number, tenant, total, fate, unavailable, payments_at, placement: None };
        if retry {
            life.placement = Some(Box::new(envelope.clone()));
            let retry_at = at + self.random.between(MIN_FOLLOW_UP_MS, 40_000);
            self.plan(retry_at, life, Next::RetryPlace);
        } else {
            self.plan_payment(life);
        }
        Step { at: Timestamp(at), envelope, kind: StepKind::Place, order: Some(tag(number, fate)) }
    }

    /// Plans the first payment attempt; an abandoned order makes none.
    fn plan_payment(&mut self, life: Life) {
        let abandoned = life.fate == Fate::Expired && life.unavailable == 0;
        if !abandoned {
            self.plan(life.payments_at[0], life, Next::Pay { attempt: 1 });
        }
    }

    fn follow_up(&mut self, FollowUp { at, life, next }: FollowUp) -> Step {
        let shop = &self.shops[life.tenant];
        let tenant = shop.tenant.clone();
        let order = Workload::order_id(life.number);
        let gateway = self.gateways[usize::from(life.number % 2 == 1)].clone();
        let (envelope, kind) = match next {
            Next::RetryPlace => {
                let placement = life.placement.clone().expect("a retried placement is kept");
                let mut life = life.clone();
                life.placement = None;
                self.plan_payment(life);
                (admitted(*placement, at), StepKind::RetryPlace)
            }
            Next::Pay { attempt } if attempt <= life.unavailable => {
                let command = PaymentCommand::Decline {
                    order,
                    amount: life.total,
                    gateway,
                    reason: DeclineReason::GatewayUnavailable,
                };
                if attempt == 1 {
                    self.plan(life.payments_at[1], life.clone(), Next::Pay { attempt: 2 });
                }
                let envelope = payment_attempt(tenant, life.number, attempt, command);
                (envelope, StepKind::DeclineUnavailable)
            }
            Next::Pay { attempt } if life.fate == Fate::Declined => {
                let command = PaymentCommand::Decline {
                    order,
                    amount: life.total,
                    gateway,
                    reason: DeclineReason::Refused,
                };
                let cancel_at = at + self.random.between(20_000, 90_000);
                self.plan(cancel_at, life.clone(), Next::CancelDeclined);
                let envelope = payment_attempt(tenant, life.number, attempt, command);
                (envelope, StepKind::Decline)
            }
            Next::Pay { attempt } | Next::RetryAuthorize { attempt } => {
                // The reference a gateway would answer with: one per order, the same on retry.
                let mut reference = SmolStrBuilder::new();
                reference.push_str("auth-");
                reference.push_str(itoa::Buffer::new().format(life.number));
                let reference =
                    GatewayReference::new(reference.as_str()).expect("a valid reference");
                let command = PaymentCommand::Authorize {
                    order,
                    amount: life.total,
                    gateway,
                    reference: Some(reference),
                };
                let retried = matches!(next, Next::RetryAuthorize { .. });
                if !retried && self.random.chance(AUTHORIZE_RETRY_PER_MILLE) {
                    let again = at + self.random.between(MIN_FOLLOW_UP_MS, 40_000);
                    self.plan(again, life.clone(), Next::RetryAuthorize { attempt });
                } else if life.fate == Fate::CancelledByShopper {
                    let cancel_at = at + self.random.between(10 * 60_000, 60 * 60_000);
                    self.plan(cancel_at, life.clone(), Next::CancelByShopper);
                } else {
                    let ship_at = at + self.random.between(60 * 60_000, 4 * 60 * 60_000);
                    self.plan(ship_at, life.clone(), Next::Ship);
                }
                let envelope = payment_attempt(tenant, life.number, attempt, command);
                let kind = if retried { StepKind::RetryAuthorize } else { StepKind::Authorize };
                (envelope, kind)
            }
            Next::CancelDeclined | Next::CancelByShopper => {
                let reason = if next == Next::CancelDeclined {
                    CancelReason::PaymentDeclined
                } else {
                    CancelReason::Requested
                };
                let command = OrderCommand::Cancel { reason };
                (Envelope::new(tenant, Command::Order { order, command }), StepKind::Cancel)
            }
            Next::Ship => {
                if life.fate == Fate::Refunded {
                    let refund_at = at + self.random.between(2 * 3_600_000, 12 * 3_600_000);
                    self.plan(refund_at, life.clone(), Next::Refund);
                }
                let command = OrderCommand::Ship;
                (Envelope::new(tenant, Command::Order { order, command }), StepKind::Ship)
            }
            Next::Refund => {
                // Half the refunds give everything back, the others half of it (a returned item).
                let minor = if self.random.chance(500) {
                    life.total.minor
                } else {
                    (life.total.minor / 2).max(1)
                };
                let command =
                    OrderCommand::Refund { amount: Money::new(minor, life.total.currency) };
                (Envelope::new(tenant, Command::Order { order, command }), StepKind::Refund)
            }
        };
        Step {
            at: Timestamp(at),
            envelope: admitted(envelope, at),
            kind,
            order: Some(tag(life.number, life.fate)),
        }
    }
}

impl Iterator for Workload {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if let Some(step) = self.setup.pop_front() {
            return Some(step);
        }
        let arrival = self.next_arrival();
        let follow_up_first = match (self.follow_ups.next_at(), arrival) {
            (Some(f), Some(a)) => f <= a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if follow_up_first {
            let follow_up = self.follow_ups.take_next().expect("just looked");
            return Some(self.follow_up(follow_up));
        }
        arrival.map(|at| self.arrive(at))
    }
}

fn tag(number: u64, fate: Fate) -> OrderTag {
    OrderTag { number, fate }
}

fn place_key(number: u64) -> IdempotencyKey {
    IdempotencyKey::new(order_text(number, ".place", None).as_str()).expect("a valid key")
}

/// Payment attempt `attempt` of order `number`: its own payment id, keyed by the attempt.
fn payment_attempt(
    tenant: TenantId,
    number: u64,
    attempt: u8,
    command: PaymentCommand,
) -> Envelope {
    let payment = PaymentId::new(order_text(number, ".p", Some(attempt)).as_str())
        .expect("a valid payment id");
    Envelope::new(tenant, Command::Payment { payment, command })
        .with_key(payment_key(number, attempt))
}

fn payment_key(number: u64, attempt: u8) -> IdempotencyKey {
    IdempotencyKey::new(order_text(number, ".pay", Some(attempt)).as_str()).expect("a valid key")
}

/// `o-{number}{suffix}{attempt}`: the text of order `number`'s ids and keys, written
/// without `format!` and, up to 23 bytes (every id of a day), without allocating: a day writes
/// millions of them.
fn order_text(number: u64, suffix: &str, attempt: Option<u8>) -> SmolStrBuilder {
    let mut text = SmolStrBuilder::new();
    text.push_str("o-");
    text.push_str(itoa::Buffer::new().format(number));
    text.push_str(suffix);
    if let Some(attempt) = attempt {
        text.push_str(itoa::Buffer::new().format(attempt));
    }
    text
}

fn admitted(mut envelope: Envelope, at: u64) -> Envelope {
    envelope.admitted_at = Timestamp(at);
    envelope
}

/// `units` as receipts of at most [`MAX_QUANTITY`] each.
fn receipts(units: u64) -> impl Iterator<Item = Quantity> {
    let max = u64::from(MAX_QUANTITY);
    (0..units.div_ceil(max))
        .map(move |i| Quantity::new((units - i * max).min(max)).expect("1 to MAX_QUANTITY units"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn follow_up(at: u64, number: u64) -> FollowUp {
        let total = Money::new(100, Currency::new("EUR").expect("a currency"));
        let life = Life {
            number,
            tenant: 0,
            total,
            fate: Fate::Shipped,
            unavailable: 0,
            payments_at: [at, at],
            placement: None,
        };
        FollowUp { at, life, next: Next::Ship }
    }

    fn take_all(follow_ups: &mut FollowUps) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| follow_ups.take_next()).map(|f| (f.at, f.life.number)).collect()
    }

    #[test]
    fn follow_ups_come_by_time_then_in_the_order_planned() {
        let mut follow_ups = FollowUps::default();
        for (at, number) in [(20, 1), (10, 2), (20, 3), (10, 4)] {
            follow_ups.plan(follow_up(at, number));
        }
        assert_eq!(follow_ups.next_at(), Some(10));
        let first = follow_ups.take_next().expect("four planned");
        assert_eq!((first.at, first.life.number), (10, 2));
        // Planned now, for a time already planned: after those planned earlier for it.
        follow_ups.plan(follow_up(10, 5));
        follow_ups.plan(follow_up(20, 6));
        assert_eq!(take_all(&mut follow_ups), [(10, 4), (10, 5), (20, 1), (20, 3), (20, 6)]);
        assert_eq!(follow_ups.next_at(), None);
    }

    #[test]
    fn follow_ups_come_by_time_across_buckets_also_when_planned_into_the_one_being_taken() {
        let mut follow_ups = FollowUps::default();
        for (at, number) in [(25_000, 1), (5_000, 2), (12_000, 3)] {
            follow_ups.plan(follow_up(at, number));
        }
        assert_eq!(take_all_until(&mut follow_ups, 1), [(5_000, 2)]);
        // Into a later bucket, then into the bucket being taken, then into one not yet made.
        follow_ups.plan(follow_up(11_000, 4));
        assert_eq!(take_all_until(&mut follow_ups, 1), [(11_000, 4)]);
        follow_ups.plan(follow_up(11_500, 5));
        follow_ups.plan(follow_up(30_000, 6));
        follow_ups.plan(follow_up(12_000, 7));
        assert_eq!(
            take_all(&mut follow_ups),
            [(11_500, 5), (12_000, 3), (12_000, 7), (25_000, 1), (30_000, 6)]
        );
    }

    proptest::proptest! {
        /// Whatever the times planned (before, in or after the bucket being taken), follow-ups
        /// come out as from one heap of all of them: by time, then in the order planned.
        #[test]
        fn follow_ups_come_out_as_from_one_heap(
            ops in proptest::collection::vec((0u64..4, 0u64..120_000), 1..400)
        ) {
            let mut follow_ups = FollowUps::default();
            let mut reference = BinaryHeap::new();
            let mut planned = 0;
            for (op, at) in ops {
                if op == 0 {
                    let expected = reference.pop().map(|Reverse((at, number))| (at, number));
                    proptest::prop_assert_eq!(follow_ups.next_at(), expected.map(|(at, _)| at));
                    let taken = follow_ups.take_next().map(|f| (f.at, f.life.number));
                    proptest::prop_assert_eq!(taken, expected);
                } else {
                    planned += 1;
                    follow_ups.plan(follow_up(at, planned));
                    reference.push(Reverse((at, planned)));
                }
            }
            let rest: Vec<(u64, u64)> = std::iter::from_fn(|| reference.pop())
                .map(|Reverse(key)| key)
                .collect();
            proptest::prop_assert_eq!(take_all(&mut follow_ups), rest);
        }
    }

    #[test]
    fn ids_and_keys_read_as_written_out() {
        assert_eq!(Workload::order_id(7).as_str(), "o-7");
        assert_eq!(order_text(1_033_624, ".p", Some(2)).as_str(), "o-1033624.p2");
        assert_eq!(place_key(7).as_str(), "o-7.place");
        assert_eq!(payment_key(7, 1).as_str(), "o-7.pay1");
    }

    fn take_all_until(follow_ups: &mut FollowUps, count: usize) -> Vec<(u64, u64)> {
        let taken = std::iter::from_fn(|| follow_ups.take_next()).take(count);
        taken.map(|f| (f.at, f.life.number)).collect()
    }
}
