//! Writes [`v1`](super::v1) and [`v2`](super::v2) payloads straight into a buffer, byte for
//! byte as rkyv archives the frozen types.
//!
//! The decision thread encodes every command it accepts. Going through rkyv meant building a
//! value to archive (a `Vec` of lines, a `Vec` of events, each event's payload in a buffer of
//! its own, copied into the decision afterwards) and serializing it with a scratch arena: more
//! than a third of the thread's work. The layout is simple and frozen, so it is written here
//! directly, each event's payload in place inside its decision. The codec tests hold the bytes
//! equal to rkyv's archive of the frozen types of the current version, with short and long ids
//! and references, and to the golden file; decoding still goes through rkyv's validation.
//!
//! The layout, as the format features fix it (`little_endian`, `pointer_width_32`,
//! `unaligned`: no padding anywhere):
//!
//! - A value is written after everything it points to (its *out-of-line* parts, field by
//!   field, in declaration order); the root value of a payload comes last.
//! - Numbers are little-endian; `[u8; N]` is its bytes.
//! - A string is 8 bytes. Up to 8 bytes of text are inline, padded with `0xff`. Longer text is
//!   written out of line, and the 8 bytes are its length (two tag bits `10` inserted as bits 6
//!   and 7) and the signed offset from the field to the text, each 4 bytes.
//! - A vector is 8 bytes: the signed offset from the field to its first element, and its
//!   length. Its elements' own out-of-line parts come first (element by element), then the
//!   elements back to back.
//! - An option is a tag byte (0 none, 1 some) followed by the value, or by zeros as long as
//!   the value.

use crate::domain::limits::MAX_LINES_PER_ORDER;

/// Longest text stored inside an archived string itself.
const INLINE: usize = 8;

/// Events of a decision whose positions are kept on the stack while it is written: as many as
/// the largest `Tenant` decides (an order's event, one per line, and a payment's event).
const EVENTS_ON_STACK: usize = MAX_LINES_PER_ORDER + 2;

/// Bytes of an archived `Option<DecisionKey>`: tag, key, fingerprint.
const ARCHIVED_KEY: usize = 1 + 8 + 16;

/// Where a string's text went: in the field itself, or out of line at a position.
#[derive(Clone, Copy)]
struct Text<'a> {
    text: &'a str,
    /// Position of the out-of-line text (unused when inline).
    at: usize,
}

/// A payload (or a decision) being written at the end of `out`.
pub(super) struct Out<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Out<'b> {
    pub(super) fn new(out: &'b mut Vec<u8>) -> Self {
        Out { out }
    }

    fn pos(&self) -> usize {
        self.out.len()
    }

    /// Writes the out-of-line part of a string (its text, if too long to be inline).
    fn text_body<'a>(&mut self, text: &'a str) -> Text<'a> {
        let at = self.pos();
        if text.len() > INLINE {
            self.out.extend_from_slice(text.as_bytes());
        }
        Text { text, at }
    }

    /// Writes a string field whose body `text_body` wrote.
    fn text(&mut self, text: Text<'_>) {
        let bytes = text.text.as_bytes();
        if bytes.len() <= INLINE {
            let mut field = [0xff; INLINE];
            field[..bytes.len()].copy_from_slice(bytes);
            self.out.extend_from_slice(&field);
        } else {
            // The offset is from the start of the string's 8 bytes, not from its own 4.
            let offset = self.offset_to(text.at);
            let len = u32::try_from(bytes.len()).expect("ids are at most 64 bytes");
            let tagged = (len & 0b0011_1111) | 0b1000_0000 | ((len & !0b0011_1111) << 2);
            self.u32(tagged);
            self.bytes(&offset.to_le_bytes());
        }
    }

    /// Writes a vector field of `len` elements starting at `at`.
    fn vec(&mut self, at: usize, len: usize) {
        let offset = self.offset_to(at);
        self.bytes(&offset.to_le_bytes());
        self.u32(u32::try_from(len).expect("a vector of a payload has fewer than 2^32 elements"));
    }

    /// The signed offset from the field about to be written to `target`.
    fn offset_to(&self, target: usize) -> i32 {
        let from = i64::try_from(self.pos()).expect("a payload is shorter than 2^63 bytes");
        let to = i64::try_from(target).expect("a payload is shorter than 2^63 bytes");
        i32::try_from(to - from).expect("a payload is shorter than 2 GiB")
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// [`v1::StockReceived`].
    pub(super) fn stock_received(&mut self, quantity: u32) {
        self.u32(quantity);
    }

    /// [`v1::StockAdjusted`].
    pub(super) fn stock_adjusted(&mut self, delta: i64) {
        self.i64(delta);
    }

    /// [`v1::StockHeld`].
    pub(super) fn stock_held(&mut self, order: &str, quantity: u32, expires_at: u64) {
        let order = self.text_body(order);
        self.text(order);
        self.u32(quantity);
        self.u64(expires_at);
    }

    /// [`v1::HoldClosed`].
    pub(super) fn hold_closed(&mut self, order: &str, quantity: u32) {
        let order = self.text_body(order);
        self.text(order);
        self.u32(quantity);
    }

    /// [`v1::OrderPlaced`], its lines given as (SKU, quantity, unit price).
    pub(super) fn order_placed<'l>(
        &mut self,
        customer: &str,
        currency: [u8; 3],
        lines: impl Iterator<Item = (&'l str, u32, u64)> + Clone,
        total: u64,
        hold_expires_at: u64,
    ) {
        let customer = self.text_body(customer);
        // Each line's SKU text (if out of line), then the lines; the position of each SKU's
        // text follows from the lengths of those before it.
        let mut sku_at = self.pos();
        for (sku, _, _) in lines.clone() {
            self.text_body(sku);
        }
        let lines_at = self.pos();
        let mut count = 0;
        for (sku, quantity, unit_price) in lines {
            self.text(Text { text: sku, at: sku_at });
            if sku.len() > INLINE {
                sku_at += sku.len();
            }
            self.u32(quantity);
            self.u64(unit_price);
            count += 1;
        }
        self.text(customer);
        self.bytes(&currency);
        self.vec(lines_at, count);
        self.u64(total);
        self.u64(hold_expires_at);
    }

    /// [`v1::OrderConfirmed`].
    pub(super) fn order_confirmed(&mut self, payment: &str) {
        let payment = self.text_body(payment);
        self.text(payment);
    }

    /// [`v1::OrderCancelled`].
    pub(super) fn order_cancelled(&mut self, reason: u8) {
        self.u8(reason);
    }

    /// [`v1::Amount`].
    pub(super) fn amount(&mut self, amount: u64) {
        self.u64(amount);
    }

    /// [`v2::PaymentStarted`] (an empty `reference` for none).
    pub(super) fn payment_started(
        &mut self,
        order: &str,
        amount: u64,
        currency: [u8; 3],
        gateway: &str,
        reason: u8,
        reference: &str,
    ) {
        let order = self.text_body(order);
        let gateway = self.text_body(gateway);
        let reference = self.text_body(reference);
        self.text(order);
        self.u64(amount);
        self.bytes(&currency);
        self.text(gateway);
        self.u8(reason);
        self.text(reference);
    }

    /// [`v1::Decision`]: the key, then each event as (event type, aggregate id, a function
    /// writing its payload here).
    pub(super) fn decision<'e, E>(
        &mut self,
        key: Option<(&str, [u8; 16])>,
        events: &'e [E],
        mut event: impl FnMut(&'e E) -> (u16, &'e str),
        mut payload: impl FnMut(&mut Self, &'e E),
    ) {
        let key = key.map(|(key, fingerprint)| (self.text_body(key), fingerprint));
        // Each event's aggregate id (if out of line) and payload, back to back; only where
        // each event's part ends is kept (on the stack for any decision `Tenant` makes).
        let start = self.pos();
        let mut on_stack = [0usize; EVENTS_ON_STACK];
        let mut on_heap = Vec::new();
        let ends = if events.len() <= on_stack.len() {
            &mut on_stack[..events.len()]
        } else {
            on_heap.resize(events.len(), 0);
            &mut on_heap[..]
        };
        for (e, end) in events.iter().zip(ends.iter_mut()) {
            let (_, aggregate) = event(e);
            self.text_body(aggregate);
            payload(self, e);
            *end = self.pos();
        }
        let events_at = self.pos();
        let mut at = start;
        for (e, end) in events.iter().zip(ends.iter()) {
            let (event_type, aggregate) = event(e);
            self.u16(event_type);
            self.text(Text { text: aggregate, at });
            let payload_at = if aggregate.len() > INLINE { at + aggregate.len() } else { at };
            self.vec(payload_at, end - payload_at);
            at = *end;
        }
        match key {
            Some((key, fingerprint)) => {
                self.u8(1);
                self.text(key);
                self.bytes(&fingerprint);
            }
            None => self.bytes(&[0; ARCHIVED_KEY]),
        }
        self.vec(events_at, events.len());
    }
}
