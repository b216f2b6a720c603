//! Every limit of the domain in one place, with compile-time checks of how they relate.
//!
//! Limits keep each decision bounded in time and memory and keep arithmetic far from overflow;
//! input beyond them is rejected with a clear error, never truncated.

/// Longest identifier (tenant, SKU, order, customer, payment, gateway, idempotency key), in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Longest gateway reference (see `GatewayReference`), in bytes: room for the forms providers
/// use (Stripe documents ids of up to 255 characters; the simulated gateways' name the tenant
/// and the order), and what the engine's snapshot writes in a length byte.
pub const MAX_REFERENCE_LEN: usize = 255;

/// Most lines one order may have; placing holds stock on every line in one decision.
pub const MAX_LINES_PER_ORDER: usize = 50;

/// Largest quantity one command may carry (one order line, one receipt, one adjustment).
pub const MAX_QUANTITY: u32 = 1_000_000;

/// Whether `delta` may correct a stock count: 1 to [`MAX_QUANTITY`] units either way.
#[must_use]
pub fn is_adjustment(delta: i64) -> bool {
    delta != 0 && delta.unsigned_abs() <= u64::from(MAX_QUANTITY)
}

/// Largest stock a SKU may have on hand; receipts beyond it are rejected.
pub const MAX_ON_HAND: u64 = 1_000_000_000_000;

/// Largest unit price, in minor units (one billion in a two-decimal currency).
pub const MAX_UNIT_PRICE: u64 = 100_000_000_000;

/// Largest amount of one order or payment, in minor units.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000_000;

/// How long a placed order holds its stock before the engine expires it, unless configured
/// otherwise: 15 minutes, in milliseconds.
pub const DEFAULT_HOLD_TTL_MS: u64 = 15 * 60 * 1000;

// A full order of maximal lines fits in u64, so totals are summed plainly and then compared
// with MAX_AMOUNT.
const _: () = assert!(
    (MAX_LINES_PER_ORDER as u128) * (MAX_QUANTITY as u128) * (MAX_UNIT_PRICE as u128)
        <= u64::MAX as u128
);
// Stock arithmetic: on hand plus one more receipt never overflows.
const _: () = assert!(MAX_ON_HAND.checked_add(MAX_QUANTITY as u64).is_some());
const _: () = assert!(MAX_ID_LEN <= u8::MAX as usize);
// A reference too: the engine's snapshot writes its length in a byte.
const _: () = assert!(MAX_REFERENCE_LEN <= u8::MAX as usize);
