//! Value types of the domain: identifiers, quantities, money and time.
//!
//! Each is a newtype validated on construction, so a value that exists is within the limits of
//! [`super::limits`] and deciders never re-check it.

use std::fmt;

use smol_str::SmolStr;

use super::limits::{MAX_ID_LEN, MAX_QUANTITY, MAX_REFERENCE_LEN};

/// Why a value could not be constructed; the server reports it as `validation_failed`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// An identifier was empty, too long, or had a character outside `[A-Za-z0-9._:-]`.
    #[error("{kind} must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -, got {value:?}")]
    Id {
        /// Which kind of identifier (for example `sku`).
        kind: &'static str,
        /// The rejected text, cut to a printable length.
        value: String,
    },
    /// A quantity was zero or above the limit.
    #[error("quantity must be 1 to {MAX_QUANTITY}, got {0}")]
    Quantity(u64),
    /// A currency was not three upper-case letters.
    #[error("currency must be three upper-case letters (ISO 4217), got {0:?}")]
    Currency(String),
    /// A gateway's reference was empty, too long, or had a space or a character outside
    /// printable ASCII.
    #[error(
        "a gateway reference must be 1 to {MAX_REFERENCE_LEN} printable ASCII characters without spaces, got {0:?}"
    )]
    Reference(String),
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        // The same id sits in many events and map keys, handled by several threads. An id of
        // up to 23 bytes (most are) is kept inline: a clone is a copy, not a counter shared
        // across threads, and a map compares it where it sits, with no pointer to follow.
        // A longer id is shared text, whose clone is a counter increment.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(SmolStr);

        impl $name {
            /// Checks `value` against the identifier rules and wraps it.
            pub fn new(value: &str) -> Result<Self, InvalidValue> {
                validate_id($kind, value)?;
                Ok(Self(inline_or_shared(value)))
            }

            /// The identifier as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(value: &str) -> Result<Self, InvalidValue> {
                Self::new(value)
            }
        }
    };
}

id_type!(
    /// A tenant: one commerce platform customer; nothing crosses from one tenant to another.
    TenantId,
    "tenant_id"
);
id_type!(
    /// A stock keeping unit, unique within a tenant.
    Sku,
    "sku"
);
id_type!(
    /// An order, unique within a tenant; chosen by the caller or the engine.
    OrderId,
    "order_id"
);
id_type!(
    /// The shopper who placed an order.
    CustomerId,
    "customer_id"
);
id_type!(
    /// One payment attempt for an order.
    PaymentId,
    "payment_id"
);
id_type!(
    /// A payment gateway (acquirer) that authorized or declined a payment.
    GatewayId,
    "gateway_id"
);
id_type!(
    /// A caller's key that makes a command safe to retry: the same key returns the first outcome.
    IdempotencyKey,
    "idempotency_key"
);

/// Which bytes an id may hold, by byte: one load per byte where the rule's comparisons were
/// several (ids are checked for every record decoded).
const ID_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b: u8 = 0;
    loop {
        allowed[b as usize] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if b == u8::MAX {
            break allowed;
        }
        b += 1;
    }
};

fn validate_id(kind: &'static str, value: &str) -> Result<(), InvalidValue> {
    let allowed = |b: u8| ID_BYTES[usize::from(b)];
    if value.is_empty() || value.len() > MAX_ID_LEN || !value.bytes().all(allowed) {
        let shown: String = value.chars().take(MAX_ID_LEN + 1).collect();
        return Err(InvalidValue::Id { kind, value: shown });
    }
    Ok(())
}

/// `value` as a `SmolStr`: short text with `new_inline`, which only copies it into the inline
/// buffer. `SmolStr::new` chooses among its representations first, and measured 25–27 ns
/// against 9–10 ns for a short id; ids are made millions of times a day (every decoded
/// record, every command of a load).
fn inline_or_shared(value: &str) -> SmolStr {
    if value.len() <= SmolStr::INLINE_CAP {
        SmolStr::new_inline(value)
    } else {
        SmolStr::new(value)
    }
}

/// A gateway's own name for an authorization (a payment intent, a PSP reference), which its
/// later capture, void or refund must quote. Gateways choose its form, so it allows more than
/// an id: 1 to [`MAX_REFERENCE_LEN`] bytes of printable ASCII without spaces.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GatewayReference(SmolStr);

impl GatewayReference {
    /// Checks `value` against the rules above and wraps it.
    pub fn new(value: &str) -> Result<Self, InvalidValue> {
        let printable = |b: u8| b.is_ascii_graphic();
        if value.is_empty() || value.len() > MAX_REFERENCE_LEN || !value.bytes().all(printable) {
            let shown: String = value.chars().take(MAX_REFERENCE_LEN + 1).collect();
            return Err(InvalidValue::Reference(shown));
        }
        Ok(Self(inline_or_shared(value)))
    }

    /// The reference as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GatewayReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatewayReference({:?})", &*self.0)
    }
}

/// A number of units of one SKU in a command: 1 to [`MAX_QUANTITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    /// Checks `value` is 1 to [`MAX_QUANTITY`].
    pub fn new(value: u64) -> Result<Quantity, InvalidValue> {
        match u32::try_from(value) {
            Ok(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(Quantity(q)),
            _ => Err(InvalidValue::Quantity(value)),
        }
    }

    /// The quantity as a number.
    #[must_use]
    pub fn get(self) -> u64 {
        u64::from(self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ISO 4217 currency code such as `EUR`: three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Checks `code` is three upper-case letters: the shape of an ISO 4217 code, not the list
    /// (`ZZZ` passes). Which currencies to take is the caller's choice: the server takes for a
    /// new order only the circulating ones ISO 4217 lists (`unknown_currency` otherwise).
    pub fn new(code: &str) -> Result<Currency, InvalidValue> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(InvalidValue::Currency(code.chars().take(8).collect())),
        }
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a currency is ASCII by construction")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

/// An amount in integer minor units (cents for EUR) of one currency; never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    /// Amount in minor units.
    pub minor: u64,
    /// Currency of the amount.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` units of `currency`.
    #[must_use]
    pub fn new(minor: u64, currency: Currency) -> Money {
        Money { minor, currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.minor, self.currency)
    }
}

/// Milliseconds since the Unix epoch, as stamped by the engine at admission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `millis`, saturating at the far future.
    #[must_use]
    pub fn plus_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
