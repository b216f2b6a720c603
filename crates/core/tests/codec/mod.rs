//! Every domain event survives encoding and decoding unchanged, and the bytes of each schema
//! version never change: the codec's bytes of today's version are compared with golden bytes
//! checked in beside this file (`golden_v3.txt`), and those of every earlier version
//! (`golden_v1.txt`, `golden_v2.txt`) must still decode to the same events. Run with
//! `ORDERLY_BLESS=1` only when adding a new event or version.

use std::fmt::Write as _;

use orderly_core::codec::{
    self, DecodeError, Decoded, EventType, Fingerprint, FingerprintHash, fingerprint,
    fingerprint_by, fingerprint_of,
};
use orderly_core::domain::{
    CancelReason, Command, Currency, CustomerId, DeclineReason, Envelope, Event, GatewayId,
    GatewayReference, IdempotencyKey, InventoryEvent, Money, OrderCommand, OrderEvent, OrderId,
    OrderLine, PaymentEvent, PaymentId, Quantity, Sku, TenantId, Timestamp,
};

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}
fn sku(s: &str) -> Sku {
    Sku::new(s).unwrap()
}
fn order() -> OrderId {
    OrderId::new("o-1001").unwrap()
}
fn eur(minor: u64) -> Money {
    Money::new(minor, Currency::new("EUR").unwrap())
}
fn qty(n: u64) -> Quantity {
    Quantity::new(n).unwrap()
}

/// One sample of every event kind, in event-type order.
fn samples() -> Vec<Event> {
    samples_named(&Names {
        order: "o-1001",
        payment: "o-1001.1",
        skus: ["SKU-1", "SKU-2"],
        customer: "c-42",
        gateway: "stripe-eu",
        reference: Some("pi_3QhX9vLkdIwHu7ix0kLpYk2s"),
    })
}

/// The ids the samples use.
struct Names {
    order: &'static str,
    payment: &'static str,
    skus: [&'static str; 2],
    customer: &'static str,
    gateway: &'static str,
    /// The authorization's reference at the gateway, if recorded.
    reference: Option<&'static str>,
}

fn samples_named(names: &Names) -> Vec<Event> {
    let order = || OrderId::new(names.order).unwrap();
    let payment = || PaymentId::new(names.payment).unwrap();
    let [sku_1, sku_2] = names.skus.map(sku);
    let on_sku = |event| Event::Inventory { sku: sku_1.clone(), event };
    let on_order = |event| Event::Order { order: order(), event };
    let on_payment = |event| Event::Payment { payment: payment(), event };
    let gateway = GatewayId::new(names.gateway).unwrap();
    vec![
        on_sku(InventoryEvent::StockReceived { quantity: qty(100) }),
        on_sku(InventoryEvent::StockAdjusted { delta: -3 }),
        on_sku(InventoryEvent::StockHeld {
            order: order(),
            quantity: qty(2),
            expires_at: Timestamp(1_764_000_900_000),
        }),
        on_sku(InventoryEvent::StockCommitted { order: order(), quantity: qty(2) }),
        on_sku(InventoryEvent::StockReleased { order: order(), quantity: qty(2) }),
        on_sku(InventoryEvent::HoldExpired { order: order(), quantity: qty(2) }),
        on_order(OrderEvent::OrderPlaced {
            customer: CustomerId::new(names.customer).unwrap(),
            currency: Currency::new("EUR").unwrap(),
            lines: vec![
                OrderLine { sku: sku_1.clone(), quantity: qty(2), unit_price: 1_999 },
                OrderLine { sku: sku_2.clone(), quantity: qty(1), unit_price: 500 },
            ],
            total: 4_498,
            hold_expires_at: Timestamp(1_764_000_900_000),
        }),
        on_order(OrderEvent::OrderConfirmed { payment: payment() }),
        on_order(OrderEvent::OrderShipped),
        on_order(OrderEvent::OrderDelivered),
        on_order(OrderEvent::OrderCancelled { reason: CancelReason::HoldExpired }),
        on_order(OrderEvent::OrderRefunded { amount: 1_000 }),
        on_payment(PaymentEvent::PaymentAuthorized {
            reference: names.reference.map(|r| GatewayReference::new(r).unwrap()),
            order: order(),
            amount: eur(4_498),
            gateway: gateway.clone(),
        }),
        on_payment(PaymentEvent::PaymentDeclined {
            order: order(),
            amount: eur(4_498),
            gateway,
            reason: DeclineReason::GatewayUnavailable,
        }),
        on_payment(PaymentEvent::PaymentCaptured { amount: 4_498 }),
        on_payment(PaymentEvent::PaymentVoided),
        on_payment(PaymentEvent::PaymentRefunded { amount: 1_000 }),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn every_event_round_trips() {
    for event in samples() {
        let encoded = codec::encode_event(&tenant(), &event);
        let decoded = codec::decode(
            &encoded.stream,
            encoded.event_type,
            encoded.schema_version,
            &encoded.payload,
        )
        .unwrap();
        assert_eq!(decoded, Decoded::Event { tenant: tenant(), event: event.clone() });
        assert_eq!(EventType::from_code(encoded.event_type), Some(EventType::of(&event)));
    }
}

/// The records the golden files hold, in their order: each sample event on its own, a key
/// record, and a decision (an order placed with its hold, under a key whose fingerprint
/// `hash` made); each with its name and what it decodes to.
fn golden_records(
    samples: &[Event],
    hash: FingerprintHash,
) -> Vec<(&'static str, codec::Encoded, Decoded)> {
    let mut records: Vec<_> = samples
        .iter()
        .map(|event| {
            let decoded = Decoded::Event { tenant: tenant(), event: event.clone() };
            (EventType::of(event).name(), codec::encode_event(&tenant(), event), decoded)
        })
        .collect();
    let key = IdempotencyKey::new("retry-7").unwrap();
    let fingerprint = Fingerprint::from_bytes(hash, [7; 16]);
    records.push((
        "command_accepted",
        codec::encode_command_accepted(&tenant(), &key, fingerprint, 3),
        Decoded::CommandAccepted { tenant: tenant(), key: key.clone(), fingerprint, events: 3 },
    ));
    let find = |kind| samples.iter().find(|e| EventType::of(e) == kind).unwrap().clone();
    let events = vec![find(EventType::OrderPlaced), find(EventType::StockHeld)];
    records.push((
        "decision",
        codec::encode_decision(&tenant(), Some((&key, fingerprint)), &events),
        Decoded::Decision { tenant: tenant(), key: Some((key, fingerprint)), events },
    ));
    records
}

fn golden_path(version: u16) -> String {
    format!("{}/tests/codec/golden_v{version}.txt", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_bytes_of_the_current_schema_version_never_change() {
    let mut lines = String::new();
    for (name, e, _) in golden_records(&samples(), FingerprintHash::Xxh3) {
        let stream = String::from_utf8(e.stream).unwrap();
        let (event_type, version) = (e.event_type, e.schema_version);
        writeln!(lines, "{name} {event_type} {version} {stream} {}", hex(&e.payload)).unwrap();
    }
    let path = golden_path(codec::CURRENT_SCHEMA);
    if std::env::var_os("ORDERLY_BLESS").is_some() {
        std::fs::write(&path, &lines).unwrap();
    }
    let golden = std::fs::read_to_string(&path).expect("golden bytes are checked in");
    for (now, then) in lines.lines().zip(golden.lines()) {
        assert_eq!(now, then, "released bytes changed: write a new schema version instead");
    }
    assert_eq!(lines.lines().count(), golden.lines().count());
}

#[test]
fn the_bytes_of_schema_version_1_still_decode_to_the_same_events() {
    // Version 1 recorded no gateway reference: its authorization decodes without one.
    let mut before_references = samples();
    for event in &mut before_references {
        if let Event::Payment { event: PaymentEvent::PaymentAuthorized { reference, .. }, .. } =
            event
        {
            *reference = None;
        }
    }
    golden_version_decodes(1, &golden_records(&before_references, FingerprintHash::Blake3));
}

#[test]
fn the_bytes_of_schema_version_2_still_decode_to_the_same_events() {
    // Version 2 differs from 3 only in its fingerprints' hash.
    golden_version_decodes(2, &golden_records(&samples(), FingerprintHash::Blake3));
}

/// Every line of the golden file of `version` decodes to its record of `records`.
fn golden_version_decodes(version: u16, records: &[(&str, codec::Encoded, Decoded)]) {
    let golden =
        std::fs::read_to_string(golden_path(version)).expect("golden bytes are checked in");
    assert_eq!(golden.lines().count(), records.len());
    for (line, (name, _, expected)) in golden.lines().zip(records) {
        let fields: Vec<&str> = line.split(' ').collect();
        let [golden_name, event_type, written, stream, payload] = fields[..] else {
            panic!("a golden line: {line}")
        };
        assert_eq!((golden_name, written), (*name, version.to_string().as_str()));
        let payload = unhex(payload);
        let decoded =
            codec::decode(stream.as_bytes(), event_type.parse().unwrap(), version, &payload)
                .unwrap();
        assert_eq!(&decoded, expected, "{name}");
    }
}

#[test]
fn a_fingerprint_made_by_blake3_is_written_at_version_2_and_read_back_as_made_by_blake3() {
    let key = IdempotencyKey::new("retry-7").unwrap();
    let events = vec![samples()[0].clone()];
    for (hash, version) in [(FingerprintHash::Blake3, 2), (FingerprintHash::Xxh3, 3)] {
        let fingerprint = Fingerprint::from_bytes(hash, [9; 16]);
        let e = codec::encode_decision(&tenant(), Some((&key, fingerprint)), &events);
        assert_eq!(e.schema_version, version);
        let decoded = codec::decode(&e.stream, e.event_type, e.schema_version, &e.payload);
        let expected = Some((key.clone(), fingerprint));
        assert_eq!(
            decoded.unwrap(),
            Decoded::Decision { tenant: tenant(), key: expected, events: events.clone() }
        );
        let e = codec::encode_command_accepted(&tenant(), &key, fingerprint, 1);
        assert_eq!(e.schema_version, version);
        let decoded = codec::decode(&e.stream, e.event_type, e.schema_version, &e.payload);
        let accepted =
            Decoded::CommandAccepted { tenant: tenant(), key: key.clone(), fingerprint, events: 1 };
        assert_eq!(decoded.unwrap(), accepted);
    }
    // The same bytes said to be of the other version are another hash's fingerprint: never
    // taken for the same command.
    let blake3 = Fingerprint::Blake3([9; 16]);
    let e = codec::encode_decision(&tenant(), Some((&key, blake3)), &events);
    let decoded = codec::decode(&e.stream, e.event_type, 3, &e.payload).unwrap();
    let Decoded::Decision { key: Some((_, read)), .. } = decoded else {
        panic!("a keyed decision")
    };
    assert_eq!(read, Fingerprint::Xxh3([9; 16]));
    assert_ne!(read, blake3);
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// The payload of `event` written the plain way, through the owned frozen types of the current
/// version (v1's, and v2's `PaymentStarted`): what the codec's borrowing writers must reproduce
/// byte for byte.
fn plain_payload(event: &Event) -> Vec<u8> {
    use codec::v1;
    fn bytes<T>(value: &T) -> Vec<u8>
    where
        T: for<'a> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rkyv::rancor::Error,
                >,
            >,
    {
        rkyv::to_bytes::<rkyv::rancor::Error>(value).unwrap().to_vec()
    }
    let q = |quantity: &Quantity| u32::try_from(quantity.get()).unwrap();
    let currency = |c: &Currency| <[u8; 3]>::try_from(c.as_str().as_bytes()).unwrap();
    match event {
        Event::Inventory { event, .. } => match event {
            InventoryEvent::StockReceived { quantity } => {
                bytes(&v1::StockReceived { quantity: q(quantity) })
            }
            InventoryEvent::StockAdjusted { delta } => bytes(&v1::StockAdjusted { delta: *delta }),
            InventoryEvent::StockHeld { order, quantity, expires_at } => bytes(&v1::StockHeld {
                order: order.to_string(),
                quantity: q(quantity),
                expires_at: expires_at.0,
            }),
            InventoryEvent::StockCommitted { order, quantity }
            | InventoryEvent::StockReleased { order, quantity }
            | InventoryEvent::HoldExpired { order, quantity } => {
                bytes(&v1::HoldClosed { order: order.to_string(), quantity: q(quantity) })
            }
        },
        Event::Order { event, .. } => match event {
            OrderEvent::OrderPlaced { customer, currency: c, lines, total, hold_expires_at } => {
                bytes(&v1::OrderPlaced {
                    customer: customer.to_string(),
                    currency: currency(c),
                    lines: lines
                        .iter()
                        .map(|l| v1::Line {
                            sku: l.sku.to_string(),
                            quantity: q(&l.quantity),
                            unit_price: l.unit_price,
                        })
                        .collect(),
                    total: *total,
                    hold_expires_at: hold_expires_at.0,
                })
            }
            OrderEvent::OrderConfirmed { payment } => {
                bytes(&v1::OrderConfirmed { payment: payment.to_string() })
            }
            OrderEvent::OrderShipped | OrderEvent::OrderDelivered => Vec::new(),
            OrderEvent::OrderCancelled { reason } => {
                let reason = match reason {
                    CancelReason::Requested => 0,
                    CancelReason::PaymentDeclined => 1,
                    CancelReason::HoldExpired => 2,
                };
                bytes(&v1::OrderCancelled { reason })
            }
            OrderEvent::OrderRefunded { amount } => bytes(&v1::Amount { amount: *amount }),
        },
        Event::Payment { event, .. } => {
            let started =
                |order: &OrderId, amount: &Money, gateway: &GatewayId, reason, reference| {
                    bytes(&codec::v2::PaymentStarted {
                        order: order.to_string(),
                        amount: amount.minor,
                        currency: currency(&amount.currency),
                        gateway: gateway.to_string(),
                        reason,
                        reference,
                    })
                };
            match event {
                PaymentEvent::PaymentAuthorized { order, amount, gateway, reference } => {
                    let reference = reference.as_ref().map(ToString::to_string).unwrap_or_default();
                    started(order, amount, gateway, 0, reference)
                }
                PaymentEvent::PaymentDeclined { order, amount, gateway, reason } => {
                    let reason = match reason {
                        DeclineReason::Refused => 0,
                        DeclineReason::GatewayUnavailable => 1,
                    };
                    started(order, amount, gateway, reason, String::new())
                }
                PaymentEvent::PaymentCaptured { amount }
                | PaymentEvent::PaymentRefunded { amount } => {
                    bytes(&v1::Amount { amount: *amount })
                }
                PaymentEvent::PaymentVoided => Vec::new(),
            }
        }
    }
}

#[test]
fn the_codec_writes_the_bytes_of_the_frozen_types() {
    // Short ids are stored inline in an archived string, long ones out of line: both kinds.
    let long = Names {
        order: "order-2026-11-27-000000001",
        payment: "order-2026-11-27-000000001.1",
        skus: ["sku-flash-sale-television-65", "sku-gift-card-fifty-euro"],
        customer: "customer-000000000042",
        gateway: "stripe-eu-west-primary",
        reference: Some("pi_3QhX9vLkdIwHu7ix0kLpYk2s_secret_Zr41"),
    };
    let short = samples();
    let long = samples_named(&long);
    for event in short.iter().chain(&long) {
        let written = codec::encode_event(&tenant(), event).payload;
        assert_eq!(written, plain_payload(event), "{event:?}");
    }
    let key = IdempotencyKey::new("checkout-attempt-000000000042").unwrap();
    for events in [&short, &long] {
        for keyed in [None, Some((&key, Fingerprint::Xxh3([5; 16])))] {
            let written = codec::encode_decision(&tenant(), keyed, events).payload;
            let plain = plain_decision(events, keyed);
            assert_eq!(
                written,
                plain,
                "decision of {} events, keyed: {}",
                events.len(),
                keyed.is_some()
            );
        }
    }
}

/// The decision of `events` written the plain way: rkyv's archive of the owned frozen types.
fn plain_decision(events: &[Event], key: Option<(&IdempotencyKey, codec::Fingerprint)>) -> Vec<u8> {
    let plain = codec::v1::Decision {
        key: key.map(|(key, fingerprint)| codec::v1::DecisionKey {
            key: key.to_string(),
            fingerprint: fingerprint.bytes(),
        }),
        events: events
            .iter()
            .map(|event| codec::v1::DecidedEvent {
                event_type: EventType::of(event) as u16,
                aggregate: match event {
                    Event::Inventory { sku, .. } => sku.to_string(),
                    Event::Order { order, .. } => order.to_string(),
                    Event::Payment { payment, .. } => payment.to_string(),
                },
                payload: plain_payload(event),
            })
            .collect(),
    };
    rkyv::to_bytes::<rkyv::rancor::Error>(&plain).unwrap().to_vec()
}

proptest::proptest! {
    /// Ids of every length (inline up to 8 bytes, out of line beyond), orders of up to the
    /// most lines, decisions of up to the most events, with and without a key: the codec's
    /// writer gives rkyv's bytes of the frozen types.
    #[test]
    fn the_codec_writes_the_bytes_of_the_frozen_types_for_any_ids(
        lens in proptest::collection::vec(1usize..=64, 6),
        reference in proptest::option::of(1usize..=255),
        skus in proptest::collection::vec(1usize..=64, 1..=50),
        take in 1usize..=60,
        keyed in proptest::option::of(1usize..=64),
    ) {
        let text = |len: usize, c: char| c.to_string().repeat(len);
        let order = OrderId::new(&text(lens[0], 'o')).unwrap();
        let payment = PaymentId::new(&text(lens[1], 'p')).unwrap();
        let customer = CustomerId::new(&text(lens[2], 'c')).unwrap();
        let gateway = GatewayId::new(&text(lens[3], 'g')).unwrap();
        let lines: Vec<OrderLine> = skus
            .iter()
            .enumerate()
            .map(|(i, len)| OrderLine {
                sku: sku(&format!("{i}{}", text(len.saturating_sub(2).max(1), 's'))),
                quantity: qty(1 + i as u64),
                unit_price: 100 + i as u64,
            })
            .collect();
        let mut events = vec![Event::Order {
            order: order.clone(),
            event: OrderEvent::OrderPlaced {
                customer,
                currency: Currency::new("EUR").unwrap(),
                lines: lines.clone(),
                total: 4_498,
                hold_expires_at: Timestamp(1_764_000_900_000),
            },
        }];
        for line in &lines {
            events.push(Event::Inventory {
                sku: line.sku.clone(),
                event: InventoryEvent::StockHeld {
                    order: order.clone(),
                    quantity: line.quantity,
                    expires_at: Timestamp(1_764_000_900_000),
                },
            });
            events.push(Event::Inventory {
                sku: line.sku.clone(),
                event: InventoryEvent::StockCommitted { order: order.clone(), quantity: line.quantity },
            });
        }
        events.push(Event::Payment {
            payment: payment.clone(),
            event: PaymentEvent::PaymentAuthorized {
                order: order.clone(),
                amount: eur(4_498),
                gateway,
                reference: reference.map(|len| GatewayReference::new(&text(len, 'r')).unwrap()),
            },
        });
        events.push(Event::Order { order: order.clone(), event: OrderEvent::OrderConfirmed { payment } });
        events.push(Event::Order { order, event: OrderEvent::OrderShipped });
        let events = &events[events.len().saturating_sub(take)..];
        let key = keyed.map(|len| IdempotencyKey::new(&text(len, 'k')).unwrap());
        let key = key.as_ref().map(|key| (key, Fingerprint::Xxh3([9; 16])));
        for event in events {
            proptest::prop_assert_eq!(
                codec::encode_event(&tenant(), event).payload,
                plain_payload(event)
            );
        }
        proptest::prop_assert_eq!(
            codec::encode_decision(&tenant(), key, events).payload,
            plain_decision(events, key)
        );
    }
}

#[test]
fn a_decision_encoded_into_a_reused_record_is_the_same_record() {
    // The engine writes each turn's records into the buffers of the last turn's.
    let key = IdempotencyKey::new("retry-7").unwrap();
    let all = samples();
    let mut reused = codec::encode_decision(&tenant(), None, &all).into_record(Timestamp(1));
    for n in 0..all.len() {
        let events: Vec<Event> = all[n..].iter().take(3).cloned().collect();
        for keyed in [None, Some((&key, Fingerprint::Xxh3([3; 16])))] {
            let at = Timestamp(1_000 + n as u64);
            codec::encode_decision_into(&tenant(), keyed, &events, at, &mut reused);
            assert_eq!(reused, codec::encode_decision(&tenant(), keyed, &events).into_record(at));
        }
    }
}

#[test]
fn a_decision_record_round_trips_on_the_stream_of_its_first_event() {
    let key = IdempotencyKey::new("retry-7").unwrap();
    let all = samples();
    for (n, first) in all.iter().enumerate() {
        let events: Vec<Event> = all[n..].iter().take(3).cloned().collect();
        for keyed in [None, Some((&key, Fingerprint::Xxh3([3; 16])))] {
            let e = codec::encode_decision(&tenant(), keyed, &events);
            assert_eq!(EventType::from_code(e.event_type), Some(EventType::Decision));
            let stream = codec::encode_event(&tenant(), first).stream;
            assert_eq!(e.stream, stream, "on the stream of the command's aggregate");
            let decoded =
                codec::decode(&e.stream, e.event_type, e.schema_version, &e.payload).unwrap();
            let expected_key = keyed.map(|(k, f)| (k.clone(), f));
            assert_eq!(
                decoded,
                Decoded::Decision { tenant: tenant(), key: expected_key, events: events.clone() }
            );
            assert_eq!(decoded.events(), &events[..]);
        }
    }
}

#[test]
fn the_command_accepted_record_round_trips() {
    let key = IdempotencyKey::new("retry-7").unwrap();
    let e = codec::encode_command_accepted(&tenant(), &key, Fingerprint::Xxh3([9; 16]), 4);
    let decoded = codec::decode(&e.stream, e.event_type, e.schema_version, &e.payload).unwrap();
    assert_eq!(
        decoded,
        Decoded::CommandAccepted {
            tenant: tenant(),
            key,
            fingerprint: Fingerprint::Xxh3([9; 16]),
            events: 4
        }
    );
}

#[test]
fn unknown_types_versions_streams_and_garbage_are_errors_not_panics() {
    let e = codec::encode_event(&tenant(), &samples()[6]);
    assert!(matches!(
        codec::decode(&e.stream, 999, 1, &e.payload),
        Err(DecodeError::UnknownType { event_type: 999, schema_version: 1 })
    ));
    let next = codec::CURRENT_SCHEMA + 1;
    assert_eq!(
        codec::decode(&e.stream, e.event_type, next, &e.payload),
        Err(DecodeError::NewerSchema { schema_version: next }),
        "a version after this build's is named as a newer orderly's"
    );
    assert_eq!(
        codec::decode(&e.stream, 999, next, &e.payload),
        Err(DecodeError::NewerSchema { schema_version: next }),
        "and so is a type this build does not know, at a newer version"
    );
    assert!(matches!(
        codec::decode(&e.stream, e.event_type, 0, &e.payload),
        Err(DecodeError::UnknownType { .. })
    ));
    assert!(matches!(
        codec::decode(b"acme/i/o-1001", e.event_type, 1, &e.payload),
        Err(DecodeError::BadStream(_))
    ));
    assert!(matches!(
        codec::decode(b"no-slash", e.event_type, 1, &e.payload),
        Err(DecodeError::BadStream(_))
    ));
    for cut in [0, 1, e.payload.len() / 2, e.payload.len() - 1] {
        assert!(
            codec::decode(&e.stream, e.event_type, 1, &e.payload[..cut]).is_err(),
            "a payload cut at {cut} is an error"
        );
    }
    let mut flipped = e.payload.clone();
    for byte in flipped.iter_mut() {
        *byte = 0xFF;
    }
    assert!(codec::decode(&e.stream, e.event_type, 1, &flipped).is_err());
}

/// A decision record of every sample event, under a key: the widest payload there is.
fn decision_of_every_sample() -> codec::Encoded {
    let key = IdempotencyKey::new("retry-7").unwrap();
    codec::encode_decision(&tenant(), Some((&key, Fingerprint::Xxh3([5; 16]))), &samples())
}

/// Archives a hand-made v1 decision, to build payloads the encoder would never write.
fn archived_decision(events: Vec<codec::v1::DecidedEvent>) -> Vec<u8> {
    let decision = codec::v1::Decision { key: None, events };
    rkyv::to_bytes::<rkyv::rancor::Error>(&decision).unwrap().to_vec()
}

#[test]
fn records_decode_from_any_byte_offset() {
    // Payloads sit wherever the log put them, so decoding must not need aligned bytes.
    let mut records: Vec<codec::Encoded> =
        samples().iter().map(|e| codec::encode_event(&tenant(), e)).collect();
    records.push(decision_of_every_sample());
    for record in records {
        let expected = codec::decode(
            &record.stream,
            record.event_type,
            record.schema_version,
            &record.payload,
        )
        .unwrap();
        for offset in 1..8 {
            let mut shifted = vec![0xA5; offset];
            shifted.extend_from_slice(&record.payload);
            let decoded = codec::decode(
                &record.stream,
                record.event_type,
                record.schema_version,
                &shifted[offset..],
            )
            .unwrap();
            assert_eq!(decoded, expected, "decoded at offset {offset}");
        }
    }
}

#[test]
fn garbage_in_a_decision_record_is_an_error_not_a_panic() {
    let e = decision_of_every_sample();
    let decode = |payload: &[u8]| codec::decode(&e.stream, e.event_type, e.schema_version, payload);
    for cut in 0..e.payload.len() {
        assert!(decode(&e.payload[..cut]).is_err(), "a decision cut at {cut} is an error");
    }
    // A flipped byte may still spell a valid decision (a different quantity, say); what
    // matters is that no byte of it can make decoding panic or read out of bounds.
    for at in 0..e.payload.len() {
        for mask in [0x01, 0x80, 0xFF] {
            let mut flipped = e.payload.clone();
            flipped[at] ^= mask;
            let _ = decode(&flipped);
        }
    }
    let without_events = archived_decision(Vec::new());
    assert!(matches!(decode(&without_events), Err(DecodeError::BadPayload(_))));
    let unknown_inner = archived_decision(vec![codec::v1::DecidedEvent {
        event_type: 999,
        aggregate: "SKU-1".into(),
        payload: Vec::new(),
    }]);
    assert!(matches!(
        decode(&unknown_inner),
        Err(DecodeError::UnknownType { event_type: 999, .. })
    ));
    let garbage_inner = archived_decision(vec![codec::v1::DecidedEvent {
        event_type: EventType::StockHeld as u16,
        aggregate: "SKU-1".into(),
        payload: vec![0xFF; 7],
    }]);
    assert!(matches!(decode(&garbage_inner), Err(DecodeError::BadPayload(_))));
    let bad_aggregate = archived_decision(vec![codec::v1::DecidedEvent {
        event_type: EventType::OrderShipped as u16,
        aggregate: "o/1".into(),
        payload: Vec::new(),
    }]);
    assert!(matches!(decode(&bad_aggregate), Err(DecodeError::InvalidValue(_))));
}

/// The fingerprints of "ship order o-1001": by blake3, as first released (schema versions 1
/// and 2 hold them), and by xxh3, as schema version 3 first holds them.
const PINNED_SHIP_FINGERPRINTS: [&str; 2] =
    ["13c28ffd4c0aa9fe9f09ff68b98246b4", "12d9b730d05fd5b4e7a0b40b2755c5b3"];

/// Fingerprints of longer commands, by blake3 and by xxh3: an authorization, and a placement
/// of every line an order may have with ids of every allowed length (over a KiB of encoding).
const PINNED_AUTHORIZE_FINGERPRINTS: [&str; 2] =
    ["5245278dfec69b0d873ffdd13932c0d1", "8623dd43cefa06dd528dccae4268e151"];
const PINNED_LARGE_PLACE_FINGERPRINTS: [&str; 2] =
    ["d41ce8254f762b8ac0671e504d669b90", "438bd437ecd1332d21be1b515dee3d0e"];

/// The fingerprints of the command `envelope` carries, in hex: by blake3, then by xxh3 (this
/// build's, which [`fingerprint_of`] makes).
fn pinned(envelope: &Envelope) -> [String; 2] {
    assert_eq!(fingerprint_of(envelope), fingerprint_by(FingerprintHash::Xxh3, envelope));
    [FingerprintHash::Blake3, FingerprintHash::Xxh3]
        .map(|hash| hex(&fingerprint_by(hash, envelope).bytes()))
}

/// [`pinned`] of a command of `acme`, which [`fingerprint`] makes too.
fn pinned_command(command: &Command) -> [String; 2] {
    let envelope = Envelope::new(tenant(), command.clone());
    assert_eq!(fingerprint(command), fingerprint_of(&envelope));
    pinned(&envelope)
}

#[test]
fn fingerprints_of_long_commands_stay_put() {
    let authorize = Command::Payment {
        payment: PaymentId::new("pay-o-1001").unwrap(),
        command: orderly_core::domain::PaymentCommand::Authorize {
            order: order(),
            amount: eur(12_345),
            gateway: GatewayId::new("sim-1").unwrap(),
            reference: None,
        },
    };
    let long = |n: usize| format!("{n:0>64}");
    let lines = (0..orderly_core::domain::limits::MAX_LINES_PER_ORDER)
        .map(|n| OrderLine { sku: sku(&long(n)), quantity: qty(n as u64 + 1), unit_price: 99 })
        .collect();
    let place = Command::Order {
        order: OrderId::new(&long(7)).unwrap(),
        command: OrderCommand::Place {
            customer: CustomerId::new(&long(42)).unwrap(),
            currency: Currency::new("EUR").unwrap(),
            lines,
        },
    };
    assert_eq!(pinned_command(&authorize), PINNED_AUTHORIZE_FINGERPRINTS);
    // The gateway's reference is its answer to the same authorization: a retry that learned
    // it (after schema version 2) is the same command as one recorded before.
    let mut with_reference = authorize.clone();
    if let Command::Payment {
        command: orderly_core::domain::PaymentCommand::Authorize { reference, .. },
        ..
    } = &mut with_reference
    {
        *reference = Some(GatewayReference::new("pi_1").unwrap());
    }
    assert_ne!(with_reference, authorize);
    assert_eq!(pinned_command(&with_reference), PINNED_AUTHORIZE_FINGERPRINTS);
    assert_eq!(pinned_command(&place), PINNED_LARGE_PLACE_FINGERPRINTS);
}

#[test]
fn fingerprints_tell_commands_apart_and_stay_put() {
    let place = |unit_price| Command::Order {
        order: order(),
        command: OrderCommand::Place {
            customer: CustomerId::new("c-42").unwrap(),
            currency: Currency::new("EUR").unwrap(),
            lines: vec![OrderLine { sku: sku("SKU-1"), quantity: qty(2), unit_price }],
        },
    };
    assert_eq!(fingerprint(&place(100)), fingerprint(&place(100)));
    assert_ne!(fingerprint(&place(100)), fingerprint(&place(101)));
    let ship = Command::Order { order: order(), command: OrderCommand::Ship };
    let deliver = Command::Order { order: order(), command: OrderCommand::Deliver };
    assert_ne!(fingerprint(&ship), fingerprint(&deliver));
    // Pinned: a fingerprint is stored in the log, so its encoding must never drift.
    assert_eq!(pinned_command(&ship), PINNED_SHIP_FINGERPRINTS);
}

/// The fingerprints of "place 2 × SKU-1 at 100 EUR for c-42 under a fresh order id", by blake3
/// and by xxh3.
const PINNED_FRESH_PLACE_FINGERPRINTS: [&str; 2] =
    ["d9e9a08cb8653d77a2b0f73b1178bcc9", "0a869ee2562a56e459898f349c9f399b"];

#[test]
fn a_place_under_a_fresh_order_id_is_the_same_command_whatever_id_it_got() {
    let place = |order: &str, unit_price| {
        let lines = vec![OrderLine { sku: sku("SKU-1"), quantity: qty(2), unit_price }];
        let currency = Currency::new("EUR").unwrap();
        let command =
            OrderCommand::Place { customer: CustomerId::new("c-42").unwrap(), currency, lines };
        Envelope::new(tenant(), Command::Order { order: OrderId::new(order).unwrap(), command })
    };
    let fresh = |order: &str, unit_price| place(order, unit_price).with_fresh_order_id();
    // Each retry of the request gets another fresh id.
    assert_eq!(fingerprint_of(&fresh("o-1", 100)), fingerprint_of(&fresh("o-2", 100)));
    assert_ne!(fingerprint_of(&fresh("o-1", 100)), fingerprint_of(&fresh("o-1", 101)));
    // An id the client chose is part of its command, and of no fresh place's.
    assert_eq!(fingerprint_of(&place("o-1", 100)), fingerprint(&place("o-1", 100).command));
    assert_ne!(fingerprint_of(&place("o-1", 100)), fingerprint_of(&place("o-2", 100)));
    assert_ne!(fingerprint_of(&place("o-1", 100)), fingerprint_of(&fresh("o-1", 100)));
    // Only a place has an order to name.
    let ship =
        Envelope::new(tenant(), Command::Order { order: order(), command: OrderCommand::Ship });
    assert_eq!(fingerprint_of(&ship.clone().with_fresh_order_id()), fingerprint(&ship.command));
    assert_eq!(pinned(&fresh("o-1", 100)), PINNED_FRESH_PLACE_FINGERPRINTS);
}

/// Logs written before schema version 2 hold authorizations inside decision records (an
/// authorization and its order's confirmation): one decodes by the v1 layout, without a
/// reference, for short and long ids; the same bytes said to be version 2 are refused, never
/// misread.
#[test]
fn a_v1_decision_holding_an_authorization_decodes_without_a_reference() {
    for (order, gateway) in [("o-7", "sim"), ("order-2025-11-28-000000042", "adyen-eu-west-1")] {
        let v1 = codec::v1::PaymentStarted {
            order: order.into(),
            amount: 1_250,
            currency: *b"EUR",
            gateway: gateway.into(),
            reason: 0,
        };
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&v1).unwrap().to_vec();
        let decision = archived_decision(vec![codec::v1::DecidedEvent {
            event_type: EventType::PaymentAuthorized as u16,
            aggregate: "o-7.p1".into(),
            payload,
        }]);
        let decode = |version| {
            codec::decode(b"acme/p/o-7.p1", EventType::Decision as u16, version, &decision)
        };
        let authorized = Event::Payment {
            payment: PaymentId::new("o-7.p1").unwrap(),
            event: PaymentEvent::PaymentAuthorized {
                order: OrderId::new(order).unwrap(),
                amount: eur(1_250),
                gateway: GatewayId::new(gateway).unwrap(),
                reference: None,
            },
        };
        assert_eq!(decode(1).unwrap().events(), &[authorized]);
        assert!(decode(2).is_err(), "v1 bytes are not read as version 2");
    }
}
