//! Value types refuse what the limits forbid: identifiers of 1 to `MAX_ID_LEN` characters of
//! `[A-Za-z0-9._:-]`, quantities of 1 to `MAX_QUANTITY`, currencies of three upper-case letters.

use std::fmt::{Debug, Display};
use std::str::FromStr;

use orderly_core::domain::limits::{MAX_ID_LEN, MAX_QUANTITY};
use orderly_core::domain::{
    Context, Currency, CustomerId, GatewayId, IdempotencyKey, InvalidValue, Money, OrderId,
    PaymentId, Quantity, Sku, TenantId, Timestamp,
};

use super::fixtures::{currency, eur};

/// Checks one identifier type against the identifier rules; `kind` is the name its errors use.
fn check_id_rules<T>(kind: &str)
where
    T: FromStr<Err = InvalidValue> + Display + Debug,
{
    let longest = "x".repeat(MAX_ID_LEN);
    for valid in ["a", "Z", "0", "sku-1.2_b:C", longest.as_str()] {
        let id: T = valid.parse().unwrap_or_else(|e| panic!("{kind} {valid:?}: {e}"));
        assert_eq!(id.to_string(), valid, "{kind} displays as its text");
    }

    let too_long = "x".repeat(MAX_ID_LEN + 1);
    let invalid = [
        "",
        " ",
        "a b",
        "a/b",
        "a\\b",
        "a,b",
        "a\n",
        "é",
        "a@b",
        "#1",
        "é".repeat(20).as_str(),
        too_long.as_str(),
    ]
    .map(str::to_owned);
    for value in invalid {
        match value.parse::<T>() {
            Err(InvalidValue::Id { kind: k, value: v }) => {
                assert_eq!(k, kind, "the error names the kind of identifier");
                assert_eq!(v, value, "the error shows the rejected text");
            }
            other => panic!("{kind} {value:?} must be rejected, got {other:?}"),
        }
    }

    // Every byte, alone in an id: exactly the documented characters are taken.
    let allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
    for byte in 0..=u8::MAX {
        let text = String::from_utf8_lossy(&[byte]).into_owned();
        let taken = text.parse::<T>().is_ok();
        assert_eq!(taken, allowed.contains(&text), "{kind} of byte {byte:#04x}");
    }
}

#[test]
fn every_identifier_type_follows_the_identifier_rules() {
    check_id_rules::<TenantId>("tenant_id");
    check_id_rules::<Sku>("sku");
    check_id_rules::<OrderId>("order_id");
    check_id_rules::<CustomerId>("customer_id");
    check_id_rules::<PaymentId>("payment_id");
    check_id_rules::<GatewayId>("gateway_id");
    check_id_rules::<IdempotencyKey>("idempotency_key");
}

#[test]
fn an_identifier_counts_its_length_in_bytes() {
    // Only ASCII is allowed, so bytes and characters agree for every valid identifier; the
    // length limit is checked first and in bytes.
    assert!(Sku::new(&"a".repeat(MAX_ID_LEN)).is_ok());
    assert!(Sku::new(&"a".repeat(MAX_ID_LEN + 1)).is_err());
}

#[test]
fn a_rejected_identifier_is_cut_to_a_printable_length() {
    let huge = "y".repeat(10_000);
    let Err(InvalidValue::Id { value, .. }) = OrderId::new(&huge) else {
        panic!("a 10 000 character order id must be rejected");
    };
    assert_eq!(value.len(), MAX_ID_LEN + 1);
}

#[test]
fn an_identifier_shows_its_kind_in_debug_and_its_text_otherwise() {
    let id = Sku::new("sku-1").unwrap();
    assert_eq!(id.as_str(), "sku-1");
    assert_eq!(format!("{id}"), "sku-1");
    assert_eq!(format!("{id:?}"), "Sku(\"sku-1\")");
    assert_eq!(format!("{:?}", PaymentId::new("p").unwrap()), "PaymentId(\"p\")");
}

#[test]
fn a_quantity_is_one_to_max_quantity() {
    let max = u64::from(MAX_QUANTITY);
    assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
    assert_eq!(Quantity::new(max).map(Quantity::get), Ok(max));
    assert_eq!(Quantity::new(0), Err(InvalidValue::Quantity(0)));
    assert_eq!(Quantity::new(max + 1), Err(InvalidValue::Quantity(max + 1)));
    assert_eq!(Quantity::new(u64::MAX), Err(InvalidValue::Quantity(u64::MAX)));
}

#[test]
fn a_quantity_beyond_u32_is_rejected_not_wrapped() {
    // 2^32 + 1 would wrap to 1 in a plain cast.
    let wraps_to_one = (1u64 << 32) + 1;
    assert_eq!(Quantity::new(wraps_to_one), Err(InvalidValue::Quantity(wraps_to_one)));
}

#[test]
fn a_currency_is_three_upper_case_ascii_letters() {
    for code in ["EUR", "USD", "JPY", "AAA", "ZZZ"] {
        let currency = Currency::new(code).unwrap();
        assert_eq!(currency.as_str(), code);
        assert_eq!(currency.to_string(), code);
    }
    assert_eq!(format!("{:?}", currency("EUR")), "Currency(EUR)");
    for code in ["", "E", "EU", "EURO", "eur", "Eur", "E1R", "EU ", "ÉUR", "€"] {
        assert_eq!(
            Currency::new(code),
            Err(InvalidValue::Currency(code.to_owned())),
            "{code:?} must be rejected"
        );
    }
}

#[test]
fn a_rejected_currency_is_cut_to_eight_characters() {
    assert_eq!(Currency::new("EURO-DOLLAR"), Err(InvalidValue::Currency("EURO-DOL".to_owned())));
}

#[test]
fn invalid_values_explain_themselves() {
    let id = Sku::new("a b").unwrap_err().to_string();
    assert!(id.starts_with("sku must be 1 to 64 characters"), "{id}");
    assert!(id.ends_with("got \"a b\""), "{id}");
    assert_eq!(Quantity::new(0).unwrap_err().to_string(), "quantity must be 1 to 1000000, got 0");
    assert_eq!(
        Currency::new("eur").unwrap_err().to_string(),
        "currency must be three upper-case letters (ISO 4217), got \"eur\""
    );
}

#[test]
fn money_is_minor_units_of_one_currency() {
    let money = eur(1250);
    assert_eq!(money, Money::new(1250, currency("EUR")));
    assert_ne!(money, Money::new(1250, currency("USD")));
    assert_eq!(money.to_string(), "1250 EUR (minor units)");
}

#[test]
fn a_timestamp_saturates_at_the_far_future() {
    assert_eq!(Timestamp(1_000).plus_millis(500), Timestamp(1_500));
    assert_eq!(Timestamp(u64::MAX - 1).plus_millis(10), Timestamp(u64::MAX));
    assert_eq!(Timestamp(42).to_string(), "42ms");
}

#[test]
fn a_context_at_a_time_holds_stock_for_fifteen_minutes() {
    let ctx = Context::at(Timestamp(7));
    assert_eq!(ctx.now, Timestamp(7));
    assert_eq!(ctx.hold_ttl_ms, 15 * 60 * 1000);
}

/// Stored in read models and the engine's snapshot: a status's number never changes.
#[test]
fn status_codes_are_fixed_and_read_back() {
    use orderly_core::domain::{OrderStatus as O, PaymentStatus as P};
    let orders = [O::Placed, O::Confirmed, O::Shipped, O::Delivered, O::Cancelled];
    for (code, status) in (0u8..).zip(orders) {
        assert_eq!(status.code(), code);
        assert_eq!(O::from_code(code), Some(status));
    }
    assert_eq!(O::from_code(5), None);
    let payments = [P::Authorized, P::Captured, P::Voided, P::Declined];
    for (code, status) in (0u8..).zip(payments) {
        assert_eq!(status.code(), code);
        assert_eq!(P::from_code(code), Some(status));
    }
    assert_eq!(P::from_code(4), None);
}
