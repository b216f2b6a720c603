//! Borrowing twins of the [`v1`] payload types, for writing.
//!
//! Each twin is archived *as* its v1 type: it writes exactly the bytes the v1 type writes,
//! while holding the text and bytes it writes as borrowed slices instead of owned copies. The
//! decision thread encodes every command it accepts, and copying each order, SKU and payment
//! id into a fresh `String` (and each event's payload into a fresh `Vec`) only to archive it
//! was most of that work. The compiler checks that a twin names every field of its v1 type
//! with the same archived type; the codec tests check the bytes against the v1 types and the
//! golden file.
//!
//! The impls are written out by [`twin!`] rather than derived: rkyv's derive bounds every field
//! type in a `where` clause, and for a type with a lifetime that bound hides which archived
//! type the field has. Types without text (`StockReceived`, `Amount`, …) need no twin: the v1
//! type is written directly.

use rkyv::munge::munge;
use rkyv::place::Place;
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Serialize};

use super::v1;

/// Text written as an archived `String`.
#[derive(Clone, Copy)]
pub(super) struct Text<'a>(pub &'a str);

impl Archive for Text<'_> {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(self.0, resolver, out);
    }
}

impl<S: Fallible + Writer + ?Sized> Serialize<S> for Text<'_>
where
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(self.0, serializer)
    }
}

/// Bytes written as an archived `Vec<u8>`.
#[derive(Clone, Copy)]
pub(super) struct Bytes<'a>(pub &'a [u8]);

impl Archive for Bytes<'_> {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_slice(self.0, resolver, out);
    }
}

impl<S: Fallible + Writer + Allocator + ?Sized> Serialize<S> for Bytes<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(self.0, serializer)
    }
}

/// Declares a borrowing twin of a v1 type and archives it as that type, field by field.
macro_rules! twin {
    ($(#[$doc:meta])* $name:ident, $resolver:ident as $archived:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        pub(super) struct $name<'a> {
            $(pub $field: $ty,)*
        }

        pub(super) struct $resolver<'a> {
            $($field: <$ty as Archive>::Resolver,)*
            _twin: std::marker::PhantomData<&'a ()>,
        }

        impl<'a> Archive for $name<'a> {
            type Archived = v1::$archived;
            type Resolver = $resolver<'a>;

            fn resolve(&self, resolver: Self::Resolver, out: Place<v1::$archived>) {
                munge!(let v1::$archived { $($field),* } = out);
                $(self.$field.resolve(resolver.$field, $field);)*
            }
        }

        impl<'a, S: Fallible + Writer + Allocator + ?Sized> Serialize<S> for $name<'a>
        where
            S::Error: Source,
        {
            fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
                Ok($resolver {
                    $($field: self.$field.serialize(serializer)?,)*
                    _twin: std::marker::PhantomData,
                })
            }
        }
    };
}

twin! {
    /// Writes like [`v1::StockHeld`].
    StockHeld, StockHeldResolver as ArchivedStockHeld { order: Text<'a>, quantity: u32, expires_at: u64, }
}

twin! {
    /// Writes like [`v1::HoldClosed`].
    HoldClosed, HoldClosedResolver as ArchivedHoldClosed { order: Text<'a>, quantity: u32, }
}

twin! {
    /// Writes like [`v1::Line`].
    Line, LineResolver as ArchivedLine { sku: Text<'a>, quantity: u32, unit_price: u64, }
}

twin! {
    /// Writes like [`v1::OrderPlaced`].
    OrderPlaced, OrderPlacedResolver as ArchivedOrderPlaced {
        customer: Text<'a>,
        currency: [u8; 3],
        lines: Vec<Line<'a>>,
        total: u64,
        hold_expires_at: u64,
    }
}

twin! {
    /// Writes like [`v1::OrderConfirmed`].
    OrderConfirmed, OrderConfirmedResolver as ArchivedOrderConfirmed { payment: Text<'a>, }
}

twin! {
    /// Writes like [`v1::PaymentStarted`].
    PaymentStarted, PaymentStartedResolver as ArchivedPaymentStarted {
        order: Text<'a>,
        amount: u64,
        currency: [u8; 3],
        gateway: Text<'a>,
        reason: u8,
    }
}

twin! {
    /// Writes like [`v1::Decision`].
    Decision, DecisionResolver as ArchivedDecision {
        key: Option<DecisionKey<'a>>,
        events: Vec<DecidedEvent<'a>>,
    }
}

twin! {
    /// Writes like [`v1::DecisionKey`].
    DecisionKey, DecisionKeyResolver as ArchivedDecisionKey { key: Text<'a>, fingerprint: [u8; 16], }
}

twin! {
    /// Writes like [`v1::DecidedEvent`].
    DecidedEvent, DecidedEventResolver as ArchivedDecidedEvent {
        event_type: u16,
        aggregate: Text<'a>,
        payload: Bytes<'a>,
    }
}
