//! Command fingerprints: what makes "the same command" for an idempotency key.
//!
//! A fingerprint hashes a canonical encoding of the command (a tag per variant, then each
//! field in a fixed order, strings length-prefixed), never its `Debug` text, so that it stays
//! the same across releases; a retry after an upgrade is still recognized.

use crate::domain::{
    CancelReason, Command, DeclineReason, Envelope, Money, OrderCommand, PaymentCommand,
};

/// The first 16 bytes of the blake3 hash of a command's canonical encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

/// Bytes of canonical encoding gathered before they go to the hasher: a command's encoding
/// is most often shorter, so it is hashed in one call, not one per field (the engine
/// fingerprints every keyed command, on the thread that submits it). The hash is the same
/// either way.
const GATHER: usize = 256;

/// The canonical encoding, hashed as it is written.
struct Canonical {
    hasher: blake3::Hasher,
    gathered: [u8; GATHER],
    len: usize,
}

impl Canonical {
    fn new() -> Canonical {
        Canonical { hasher: blake3::Hasher::new(), gathered: [0; GATHER], len: 0 }
    }
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        if self.len + bytes.len() > GATHER {
            self.hasher.update(&self.gathered[..self.len]);
            self.len = 0;
            if bytes.len() > GATHER {
                self.hasher.update(bytes);
                return self;
            }
        }
        self.gathered[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }
    fn fingerprint(&mut self) -> Fingerprint {
        self.hasher.update(&self.gathered[..self.len]);
        let hash = self.hasher.finalize();
        Fingerprint(hash.as_bytes()[..16].try_into().expect("16 of 32 bytes"))
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
    match &envelope.command {
        Command::Order { command: place @ OrderCommand::Place { .. }, .. }
            if envelope.fresh_order_id =>
        {
            let mut c = Canonical::new();
            // A tag no command's own encoding starts with.
            c.tag(5);
            order_command(&mut c, place);
            c.fingerprint()
        }
        command => fingerprint(command),
    }
}

/// The fingerprint of `command`.
#[must_use]
pub fn fingerprint(command: &Command) -> Fingerprint {
    let mut c = Canonical::new();
    match command {
        Command::ReceiveStock { sku, quantity } => {
            c.tag(1).text(sku.as_str()).number(quantity.get());
        }
        Command::AdjustStock { sku, delta } => {
            c.tag(2).text(sku.as_str()).number(u64::from_le_bytes(delta.to_le_bytes()));
        }
        Command::Order { order, command } => {
            c.tag(3).text(order.as_str());
            order_command(&mut c, command);
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
    c.fingerprint()
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
