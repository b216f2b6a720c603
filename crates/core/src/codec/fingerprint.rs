//! Command fingerprints: what makes "the same command" for an idempotency key.
//!
//! A fingerprint hashes a canonical encoding of the command (a tag per variant, then each
//! field in a fixed order, strings length-prefixed), never its `Debug` text, so that the
//! encoding stays the same across releases and a retry after an upgrade is still recognized.
//!
//! Two hashes have made fingerprints, and a record's schema version names which one made
//! the fingerprint it holds: blake3 up to version 2, xxh3-128 from version 3 on (about 15
//! times faster on a command's hundred-odd bytes: a keyed command's fingerprint took a
//! tenth of the record day's driver). Collisions are the only property needed (keys are a
//! tenant's own, so a forged collision fools only its maker), and 128 bits of xxh3 make an
//! accidental one as unlikely as 128 bits of blake3. A command sent again under a key first
//! recorded with the older hash is fingerprinted again with that hash
//! ([`Fingerprint::same_command`]).

use crate::domain::{
    CancelReason, Command, DeclineReason, Envelope, Money, OrderCommand, PaymentCommand,
};

/// 16 bytes of a hash of a command's canonical encoding, by the hash that made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fingerprint {
    /// xxh3-128 (its `u128`, little-endian): what this build makes, and what records of
    /// schema version 3 on hold.
    Xxh3([u8; 16]),
    /// The first 16 bytes of blake3: what records of schema versions 1 and 2 hold.
    Blake3([u8; 16]),
}

/// The hash a [`Fingerprint`] is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FingerprintHash {
    /// xxh3-128, what this build makes.
    Xxh3,
    /// blake3, in records written before schema version 3.
    Blake3,
}

impl Fingerprint {
    /// The hash that made it.
    #[must_use]
    pub fn hash(&self) -> FingerprintHash {
        match self {
            Fingerprint::Xxh3(_) => FingerprintHash::Xxh3,
            Fingerprint::Blake3(_) => FingerprintHash::Blake3,
        }
    }

    /// Its 16 bytes.
    #[must_use]
    pub fn bytes(&self) -> [u8; 16] {
        match self {
            Fingerprint::Xxh3(bytes) | Fingerprint::Blake3(bytes) => *bytes,
        }
    }

    /// The fingerprint of these bytes made by `hash`.
    #[must_use]
    pub fn from_bytes(hash: FingerprintHash, bytes: [u8; 16]) -> Fingerprint {
        match hash {
            FingerprintHash::Xxh3 => Fingerprint::Xxh3(bytes),
            FingerprintHash::Blake3 => Fingerprint::Blake3(bytes),
        }
    }

    /// Whether this fingerprint, recorded with a key, is of the command `envelope` carries
    /// (sent again with that key), whose fingerprint by this build is `current`: compared
    /// directly when made by the same hash, otherwise made again by this one's.
    #[must_use]
    pub fn same_command(&self, current: &Fingerprint, envelope: &Envelope) -> bool {
        if self.hash() == current.hash() {
            return self == current;
        }
        *self == fingerprint_by(self.hash(), envelope)
    }
}

/// Bytes of canonical encoding gathered on the stack: a command's encoding is most often
/// shorter (a placement of many lines spills to the heap).
const GATHER: usize = 256;

/// A command's canonical encoding, gathered to be hashed whole.
struct Canonical {
    gathered: [u8; GATHER],
    len: usize,
    spilled: Vec<u8>,
}

impl Canonical {
    fn new() -> Canonical {
        Canonical { gathered: [0; GATHER], len: 0, spilled: Vec::new() }
    }
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        if self.spilled.is_empty() && self.len + bytes.len() <= GATHER {
            self.gathered[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.gathered[..self.len]);
            }
            self.spilled.extend_from_slice(bytes);
        }
        self
    }
    fn fingerprint(&self, hash: FingerprintHash) -> Fingerprint {
        let encoding =
            if self.spilled.is_empty() { &self.gathered[..self.len] } else { &self.spilled };
        match hash {
            FingerprintHash::Xxh3 => {
                Fingerprint::Xxh3(xxhash_rust::xxh3::xxh3_128(encoding).to_le_bytes())
            }
            FingerprintHash::Blake3 => {
                let bytes = blake3::hash(encoding).as_bytes()[..16].try_into();
                Fingerprint::Blake3(bytes.expect("16 of 32 bytes"))
            }
        }
    }
    fn tag(&mut self, tag: u8) -> &mut Self {
        self.bytes(&[tag])
    }
    fn text(&mut self, text: &str) -> &mut Self {
        self.bytes(&(text.len() as u64).to_le_bytes()).bytes(text.as_bytes())
    }
    fn number(&mut self, n: u64) -> &mut Self {
        self.bytes(&n.to_le_bytes())
    }
    fn money(&mut self, m: &Money) -> &mut Self {
        self.number(m.minor).text(m.currency.as_str())
    }
}

/// The fingerprint of the command `envelope` carries: [`fingerprint`], except that a place
/// under a fresh order id ([`Envelope::fresh_order_id`]) leaves the id out.
#[must_use]
pub fn fingerprint_of(envelope: &Envelope) -> Fingerprint {
    fingerprint_by(FingerprintHash::Xxh3, envelope)
}

/// [`fingerprint_of`] made by `hash`: a fingerprint as a record of an earlier schema version
/// holds it.
#[must_use]
pub fn fingerprint_by(hash: FingerprintHash, envelope: &Envelope) -> Fingerprint {
    let mut c = Canonical::new();
    match &envelope.command {
        Command::Order { command: place @ OrderCommand::Place { .. }, .. }
            if envelope.fresh_order_id =>
        {
            // A tag no command's own encoding starts with.
            c.tag(5);
            order_command(&mut c, place);
        }
        command => canonical(&mut c, command),
    }
    c.fingerprint(hash)
}

/// The fingerprint of `command`, made by this build's hash.
#[must_use]
pub fn fingerprint(command: &Command) -> Fingerprint {
    let mut c = Canonical::new();
    canonical(&mut c, command);
    c.fingerprint(FingerprintHash::Xxh3)
}

/// Writes `command`'s canonical encoding.
fn canonical(c: &mut Canonical, command: &Command) {
    match command {
        Command::ReceiveStock { sku, quantity } => {
            c.tag(1).text(sku.as_str()).number(quantity.get());
        }
        Command::AdjustStock { sku, delta } => {
            c.tag(2).text(sku.as_str()).number(u64::from_le_bytes(delta.to_le_bytes()));
        }
        Command::Order { order, command } => {
            c.tag(3).text(order.as_str());
            order_command(c, command);
        }
        Command::Payment { payment, command } => {
            c.tag(4).text(payment.as_str());
            match command {
                PaymentCommand::Authorize { order, amount, gateway, reference: _ } => {
                    c.tag(1).text(order.as_str()).money(amount).text(gateway.as_str());
                }
                PaymentCommand::Decline { order, amount, gateway, reason } => {
                    c.tag(2).text(order.as_str()).money(amount).text(gateway.as_str()).tag(
                        match reason {
                            DeclineReason::Refused => 0,
                            DeclineReason::GatewayUnavailable => 1,
                        },
                    );
                }
                PaymentCommand::Capture { amount } => {
                    c.tag(3).money(amount);
                }
                PaymentCommand::Void => {
                    c.tag(4);
                }
                PaymentCommand::Refund { amount } => {
                    c.tag(5).money(amount);
                }
            }
        }
    }
}

/// Writes an order command's own fields (not the order's id).
fn order_command(c: &mut Canonical, command: &OrderCommand) {
    match command {
        OrderCommand::Place { customer, currency, lines } => {
            c.tag(1).text(customer.as_str()).text(currency.as_str()).number(lines.len() as u64);
            for line in lines {
                c.text(line.sku.as_str()).number(line.quantity.get()).number(line.unit_price);
            }
        }
        OrderCommand::Confirm { payment } => {
            c.tag(2).text(payment.as_str());
        }
        OrderCommand::Ship => {
            c.tag(3);
        }
        OrderCommand::Deliver => {
            c.tag(4);
        }
        OrderCommand::Cancel { reason } => {
            c.tag(5).tag(match reason {
                CancelReason::Requested => 0,
                CancelReason::PaymentDeclined => 1,
                CancelReason::HoldExpired => 2,
            });
        }
        OrderCommand::Refund { amount } => {
            c.tag(6).money(amount);
        }
        OrderCommand::Expire => {
            c.tag(7);
        }
    }
}
