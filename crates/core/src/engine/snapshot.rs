//! The engine's state, written when it shuts down cleanly, so that the next open replays only
//! the records after it instead of the whole log.
//!
//! A snapshot speeds a start up; it is never the source of truth, the log is. The file is
//! bound to the log by the position it was taken at and the chain hash of the record just
//! before it (which commits to every record before it too). An open that finds it unreadable,
//! of another format version, damaged (its blake3 does not match), bound to another log, or
//! holding what no events could leave (the hash finds damage, not a deliberate edit) ignores
//! it, says why, and replays the whole log. One ahead of the log proves that the log lost
//! acknowledged records: the open refuses, also when the snapshot is intact but of another
//! format version (every version begins with the same header). A crash after a snapshot leaves it usable: the log
//! only grows, and the open replays the records written since.
//!
//! ```text
//! magic "OENGSNAP" · format version u16 (4) · position u64 · chain hash of record position-1 [32]
//! · last admission time u64 · tenants u32 · tenant… · blake3 of every byte before [32]
//! tenant:    id · keys · inventory · orders · payments (each a count u64, then entries)
//! key:       key · fingerprint hash u8 (0 xxh3, 1 blake3) · fingerprint [16] · first u64
//!            · records u32
//! inventory: sku · known u8 · on hand u64 · reserved u64 · open holds u64
//! order:     id · status u8 · currency · total u64 · refunded u64 · hold expires at u64
//!            · payment (u8 0, or 1 and id) · lines u8 · (sku · quantity u64 · unit price u64)…
//! payment:   id · status u8 · order · gateway · reference (empty for none) · currency
//!            · authorized · captured · refunded u64
//! ```
//! Text (ids, keys, references, currencies) is a length byte and the bytes; numbers are
//! little-endian. Format 3 added the payment's gateway reference, and format 4 the hash that
//! made a key's fingerprint; a snapshot of an older format is ignored (the open replays the
//! log).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use orderly_store::Log;

use crate::audit::Digest;

use super::state::{KeyEntry, Keys, World};
use crate::codec::{Fingerprint, FingerprintHash};
use crate::domain::GrowingMap;
use crate::domain::limits::MAX_LINES_PER_ORDER;
use crate::domain::order::Placed;
use crate::domain::payment::Started;
use crate::domain::{
    Currency, GatewayId, GatewayReference, IdempotencyKey, InventoryState, OrderId, OrderLine,
    OrderState, OrderStatus, PaymentId, PaymentState, PaymentStatus, Quantity, Sku, TenantId,
    TenantState, Timestamp,
};

use super::SNAPSHOT_FILE as FILE_NAME;
const MAGIC: &[u8; 8] = b"OENGSNAP";
const FORMAT_VERSION: u16 = 4;
/// Bytes gathered before they go to the hasher and the file.
const CHUNK: usize = 1 << 20;
/// Most entries a map of the snapshot is made for before it is read; beyond, it grows.
const PRESIZED: usize = 1 << 20;

/// What an open starts from: the world, its last admission time, and the position it is at.
pub(crate) type Restored = (World, Timestamp, u64);

/// Writes `world` (with `last_now`), which holds every record of `log` before `position`, to
/// the snapshot file in `dir`, replacing the one there at once (written aside, synced, then
/// renamed). Returns the bytes written.
pub(crate) fn write(
    dir: &Path,
    log: &Log,
    world: &World,
    last_now: Timestamp,
    position: u64,
) -> io::Result<u64> {
    let digest = digest_before(log, position)?;
    let aside = dir.join(format!("{FILE_NAME}.new"));
    let written = (|| {
        let mut out = Out::new(File::create(&aside)?);
        out.bytes(MAGIC)?;
        out.u16(FORMAT_VERSION)?;
        out.u64(position)?;
        out.bytes(&digest)?;
        out.u64(last_now.0)?;
        let tenants: Vec<_> = world.tenants_and_keys().collect();
        out.u32(u32::try_from(tenants.len()).map_err(|_| invalid("too many tenants"))?)?;
        for (id, state, keys) in tenants {
            write_tenant(&mut out, id, state, keys)?;
        }
        out.finish()
    })();
    if written.is_err() {
        // What was written of it (as much as a full disk took) is given back.
        let _ = std::fs::remove_file(&aside);
    }
    let written = written?;
    std::fs::rename(&aside, snapshot_path(dir))?;
    File::open(dir)?.sync_all()?;
    Ok(written)
}

/// A snapshot read back whole, not yet checked against the log: what it restores, and the
/// digest of the record before its position.
pub(crate) struct Loaded {
    restored: Restored,
    digest: [u8; 32],
}

/// A snapshot the open cannot use: why, and the position it was taken at if the file is intact
/// (its hash matches), whatever its format version. Every format begins with the same header,
/// so one that an older or newer build wrote still proves where its log had come to.
#[derive(Debug)]
pub(crate) struct Ignored {
    pub(crate) why: String,
    pub(crate) intact_at: Option<u64>,
}

impl Ignored {
    pub(crate) fn because(why: impl Into<String>) -> Ignored {
        Ignored { why: why.into(), intact_at: None }
    }
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Reads `dir`'s snapshot, if there is one (`Ok(None)` when there is none); otherwise why not.
/// Needs no log, so that it can run while the log opens; [`Loaded::fits`] then checks it
/// against the log.
pub(crate) fn load(dir: &Path) -> Result<Option<Loaded>, Ignored> {
    load_in_chunks(dir, CHUNK)
}

/// [`load`], reading `chunk` bytes at a time.
fn load_in_chunks(dir: &Path, chunk: usize) -> Result<Option<Loaded>, Ignored> {
    let path = snapshot_path(dir);
    let at_path =
        |why: &dyn std::fmt::Display| Ignored::because(format!("{}: {why}", path.display()));
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at_path(&e)),
    };
    let mut input = In::new(file, chunk).map_err(|e| at_path(&e))?;
    let header = parse_header(&mut input);
    let loaded = header.clone().and_then(|(version, position)| {
        if version == FORMAT_VERSION {
            parse(&mut input, position)
        } else {
            Err(format!("format version {version}, not {FORMAT_VERSION}"))
        }
    });
    // The hash is checked last, the file read once: what a damaged file let the parser build
    // is dropped here.
    match input.hash_matches() {
        Ok(true) => loaded.map(Some).map_err(|why| Ignored {
            intact_at: header.ok().map(|(_, position)| position),
            ..at_path(&why)
        }),
        Ok(false) => Err(at_path(&"damaged (its hash does not match)")),
        Err(e) => Err(at_path(&e)),
    }
}

impl Loaded {
    /// The position the snapshot was taken at: every record before it was durable then.
    pub(crate) fn position(&self) -> u64 {
        self.restored.2
    }

    /// What the snapshot restores, if `log` bears it out: it holds a record at the position
    /// before the snapshot's, and that record is the one the snapshot was taken after. (A log
    /// that ends before the snapshot lost acknowledged records: the engine refuses it before
    /// asking.)
    pub(crate) fn fits(self, log: &Log) -> Result<Restored, String> {
        let position = self.restored.2;
        if digest_before(log, position).map_err(|e| e.to_string())? != self.digest {
            return Err(format!("taken from another log (record {} differs)", position - 1));
        }
        Ok(self.restored)
    }
}

/// The state in `dir`'s snapshot, if there is one that `log` bears out; otherwise why not
/// (`Ok(None)` when there is no snapshot at all).
#[cfg(test)]
fn read(dir: &Path, log: &Log) -> Result<Option<Restored>, String> {
    read_in_chunks(dir, log, CHUNK)
}

/// [`read`], reading `chunk` bytes at a time.
#[cfg(test)]
fn read_in_chunks(dir: &Path, log: &Log, chunk: usize) -> Result<Option<Restored>, String> {
    load_in_chunks(dir, chunk)
        .map_err(|ignored| ignored.why)?
        .map(|loaded| loaded.fits(log))
        .transpose()
}

/// The header every format version begins with: its version and position.
fn parse_header(input: &mut In) -> Result<(u16, u64), String> {
    if input.take(MAGIC.len())? != MAGIC {
        return Err("not an engine snapshot".into());
    }
    Ok((input.u16()?, input.u64()?))
}

/// The rest of a snapshot of this format version, taken at `position`.
fn parse(input: &mut In, position: u64) -> Result<Loaded, String> {
    if position == 0 {
        return Err("taken at position 0: an empty log needs none".into());
    }
    let digest: [u8; 32] = input.take(32)?.try_into().expect("32 bytes");
    let last_now = Timestamp(input.u64()?);
    let tenants =
        (0..input.u32()?).map(|_| read_tenant(input, position)).collect::<Result<_, _>>()?;
    if input.remaining() > 0 {
        return Err("bytes after the last tenant".into());
    }
    Ok(Loaded { restored: (World::restored(tenants), last_now, position), digest })
}

/// Where the snapshot of the engine on `dir` is.
pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// What binds a snapshot to its log: the chain hash of the record just before `position`
/// (zeros when there is none), which commits to that record and every one before it. (Format
/// version 1 hashed that record's fields alone: two logs that differed only before it took
/// each other's snapshots.)
fn digest_before(log: &Log, position: u64) -> io::Result<[u8; 32]> {
    Ok(Digest::of(&log.reader(), position)?.hash)
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

fn write_tenant(out: &mut Out, id: &TenantId, state: &TenantState, keys: &Keys) -> io::Result<()> {
    out.text(id.as_str())?;
    out.u64(keys.len() as u64)?;
    for (key, entry) in keys {
        out.text(key.as_str())?;
        out.u8(match entry.fingerprint.hash() {
            FingerprintHash::Xxh3 => 0,
            FingerprintHash::Blake3 => 1,
        })?;
        out.bytes(&entry.fingerprint.bytes())?;
        out.u64(entry.first)?;
        out.u32(entry.records)?;
    }
    out.u64(state.inventories().count() as u64)?;
    for (sku, stock) in state.inventories() {
        out.text(sku.as_str())?;
        out.u8(u8::from(stock.is_known()))?;
        out.u64(stock.on_hand())?;
        out.u64(stock.reserved())?;
        out.u64(stock.open_holds())?;
    }
    // Aggregates never started read as absent: they are left out.
    let orders = || state.orders().filter(|(_, order)| order.status().is_some());
    out.u64(orders().count() as u64)?;
    for (id, order) in orders() {
        let (Some(status), Some(total), Some(refunded), Some(expires)) =
            (order.status(), order.total(), order.refunded(), order.hold_expires_at())
        else {
            unreachable!("a placed order has all of these")
        };
        out.text(id.as_str())?;
        out.u8(status.code())?;
        out.text(total.currency.as_str())?;
        out.u64(total.minor)?;
        out.u64(refunded.minor)?;
        out.u64(expires.0)?;
        match order.payment() {
            None => out.u8(0)?,
            Some(payment) => {
                out.u8(1)?;
                out.text(payment.as_str())?;
            }
        }
        out.u8(u8::try_from(order.lines().len()).map_err(|_| invalid("too many lines"))?)?;
        for line in order.lines() {
            out.text(line.sku.as_str())?;
            out.u64(line.quantity.get())?;
            out.u64(line.unit_price)?;
        }
    }
    let payments = || state.payments().filter(|(_, payment)| payment.status().is_some());
    out.u64(payments().count() as u64)?;
    for (id, payment) in payments() {
        let (
            Some(status),
            Some(order),
            Some(gateway),
            Some(authorized),
            Some(captured),
            Some(refunded),
        ) = (
            payment.status(),
            payment.order(),
            payment.gateway(),
            payment.authorized(),
            payment.captured(),
            payment.refunded(),
        )
        else {
            unreachable!("a started payment has all of these")
        };
        out.text(id.as_str())?;
        out.u8(status.code())?;
        out.text(order.as_str())?;
        out.text(gateway.as_str())?;
        out.text(payment.reference().map_or("", GatewayReference::as_str))?;
        out.text(authorized.currency.as_str())?;
        out.u64(authorized.minor)?;
        out.u64(captured.minor)?;
        out.u64(refunded.minor)?;
    }
    Ok(())
}

/// One tenant of a snapshot taken at `position`. Besides the hash, what the domain's events
/// always keep true is checked (the engine asserts it as it applies events), so that a
/// snapshot that is well formed yet wrong is refused rather than trusted.
fn read_tenant(input: &mut In, position: u64) -> Result<(TenantId, TenantState, Keys), String> {
    let id = input.id(TenantId::new)?;
    let count = input.count(1 + 1 + 16 + 8 + 4)?;
    let mut keys = Keys::with_capacity(count.min(PRESIZED));
    for _ in 0..count {
        let key = input.id(IdempotencyKey::new)?;
        let hash = match input.u8()? {
            0 => FingerprintHash::Xxh3,
            1 => FingerprintHash::Blake3,
            other => return Err(format!("tenant {id}: a fingerprint by hash {other}")),
        };
        let bytes = input.take(16)?.try_into().expect("16 bytes");
        let fingerprint = Fingerprint::from_bytes(hash, bytes);
        let entry = KeyEntry { fingerprint, first: input.u64()?, records: input.u32()? };
        if entry.first >= position || keys.insert(key, entry).is_some() {
            return Err(format!("tenant {id}: a key past the snapshot, or twice"));
        }
    }
    let count = input.count(1 + 1 + 24)?;
    let mut inventory = GrowingMap::with_capacity(count.min(PRESIZED));
    for _ in 0..count {
        let sku = input.id(Sku::new)?;
        let known = input.u8()? != 0;
        let (on_hand, reserved, holds) = (input.u64()?, input.u64()?, input.u64()?);
        if reserved > on_hand || reserved < holds || (holds == 0) != (reserved == 0) {
            return Err(format!("tenant {id}: SKU {sku} holds more than it has"));
        }
        inventory.insert(sku, InventoryState::restored(known, on_hand, reserved, holds));
    }
    let count = input.count(1 + 1 + 1 + 24 + 1 + 1)?;
    let mut orders = GrowingMap::with_capacity(count.min(PRESIZED));
    for _ in 0..count {
        let order_id = input.id(OrderId::new)?;
        let code = input.u8()?;
        let status = OrderStatus::from_code(code).ok_or(format!("order status {code}"))?;
        let currency = input.id(Currency::new)?;
        let (total, refunded, expires) = (input.u64()?, input.u64()?, input.u64()?);
        if refunded > total {
            return Err(format!("tenant {id}: order {order_id} refunded more than its total"));
        }
        let payment = match input.u8()? {
            0 => None,
            _ => Some(input.id(PaymentId::new)?),
        };
        let lines = usize::from(input.u8()?);
        if lines > MAX_LINES_PER_ORDER {
            return Err(format!("tenant {id}: order {order_id}: {lines} lines"));
        }
        let lines = (0..lines)
            .map(|_| {
                let sku = input.id(Sku::new)?;
                let quantity = Quantity::new(input.u64()?).map_err(|e| e.to_string())?;
                Ok(OrderLine { sku, quantity, unit_price: input.u64()? })
            })
            .collect::<Result<_, String>>()?;
        let hold_expires_at = Timestamp(expires);
        let order = OrderState::restored(Placed {
            status,
            currency,
            lines,
            total,
            refunded,
            hold_expires_at,
            payment,
        });
        orders.insert(order_id, order);
    }
    let count = input.count(1 + 1 + 1 + 1 + 1 + 1 + 24)?;
    let mut payments = GrowingMap::with_capacity(count.min(PRESIZED));
    for _ in 0..count {
        let payment_id = input.id(PaymentId::new)?;
        let code = input.u8()?;
        let status = PaymentStatus::from_code(code).ok_or(format!("payment status {code}"))?;
        let order = input.id(OrderId::new)?;
        let gateway = input.id(GatewayId::new)?;
        let reference = input.id(|text| match text {
            "" => Ok(None),
            text => GatewayReference::new(text).map(Some),
        })?;
        let currency = input.id(Currency::new)?;
        let (authorized, captured, refunded) = (input.u64()?, input.u64()?, input.u64()?);
        if captured > authorized || refunded > captured {
            return Err(format!("tenant {id}: payment {payment_id} moved more than authorized"));
        }
        let payment = PaymentState::restored(Started {
            status,
            order,
            gateway,
            reference,
            currency,
            authorized,
            captured,
            refunded,
        });
        payments.insert(payment_id, payment);
    }
    check_links(&id, &inventory, &orders, &payments)?;
    Ok((id, TenantState::restored(inventory, orders, payments), keys))
}

/// What ties a tenant's aggregates together, as the decisions keep it: each SKU reserves
/// exactly the lines of the orders holding it, an order holding stock is for the sum of its
/// lines, and an order's payment is for that order. Each aggregate read alone can look fine
/// while breaking these (a writer's bug, an edit with the hash made again), and the engine
/// would then decide on them: sell stock that orders hold, or stop at an assertion later.
fn check_links(
    tenant: &TenantId,
    inventory: &GrowingMap<Sku, InventoryState>,
    orders: &GrowingMap<OrderId, OrderState>,
    payments: &GrowingMap<PaymentId, PaymentState>,
) -> Result<(), String> {
    let mut held: std::collections::HashMap<&Sku, (u64, u64)> = std::collections::HashMap::new();
    for (order_id, order) in orders.iter() {
        let lines = order.lines();
        let total = order.total().map_or(0, |t| t.minor);
        if !lines.is_empty() && total != lines.iter().map(OrderLine::amount).sum::<u64>() {
            return Err(format!("tenant {tenant}: order {order_id}'s total is not its lines'"));
        }
        for line in lines {
            let (units, holds) = held.entry(&line.sku).or_default();
            *units += line.quantity.get();
            *holds += 1;
        }
        if let Some(payment) = order.payment()
            && payments.get(payment).and_then(PaymentState::order) != Some(order_id)
        {
            return Err(format!("tenant {tenant}: order {order_id}'s payment is not for it"));
        }
    }
    for (sku, stock) in inventory.iter() {
        let (units, holds) = held.remove(sku).unwrap_or_default();
        if (stock.reserved(), stock.open_holds()) != (units, holds) {
            return Err(format!("tenant {tenant}: SKU {sku} reserves other than its orders hold"));
        }
    }
    match held.into_keys().next() {
        Some(sku) => Err(format!("tenant {tenant}: orders hold SKU {sku}, which has no stock")),
        None => Ok(()),
    }
}

/// The snapshot being written: bytes gather in a chunk, which goes to the hasher and the file
/// whole (hashing field by field would cost more than the fields).
struct Out {
    file: File,
    chunk: Vec<u8>,
    hasher: blake3::Hasher,
    written: u64,
}

impl Out {
    fn new(file: File) -> Out {
        Out { file, chunk: Vec::with_capacity(CHUNK), hasher: blake3::Hasher::new(), written: 0 }
    }

    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.chunk.extend_from_slice(bytes);
        if self.chunk.len() >= CHUNK { self.spill() } else { Ok(()) }
    }

    fn spill(&mut self) -> io::Result<()> {
        self.hasher.update(&self.chunk);
        self.file.write_all(&self.chunk)?;
        self.written += self.chunk.len() as u64;
        self.chunk.clear();
        Ok(())
    }

    fn u8(&mut self, value: u8) -> io::Result<()> {
        self.bytes(&[value])
    }

    fn u16(&mut self, value: u16) -> io::Result<()> {
        self.bytes(&value.to_le_bytes())
    }

    fn u32(&mut self, value: u32) -> io::Result<()> {
        self.bytes(&value.to_le_bytes())
    }

    fn u64(&mut self, value: u64) -> io::Result<()> {
        self.bytes(&value.to_le_bytes())
    }

    /// Ids, keys, references and currencies are at most 255 bytes (see `domain::limits`).
    fn text(&mut self, text: &str) -> io::Result<()> {
        self.u8(u8::try_from(text.len()).map_err(|_| invalid("text longer than 255 bytes"))?)?;
        self.bytes(text.as_bytes())
    }

    /// Ends the file with the hash of every byte before and syncs it; returns its length.
    fn finish(mut self) -> io::Result<u64> {
        self.spill()?;
        let hash = *self.hasher.finalize().as_bytes();
        self.file.write_all(&hash)?;
        self.file.sync_all()?;
        Ok(self.written + hash.len() as u64)
    }
}

/// The snapshot being read, a chunk at a time (a snapshot is as large as the state: it is not
/// held in memory whole beside the state built from it), each chunk hashed as it is read.
struct In {
    file: File,
    /// Bytes read at a time.
    chunk_len: usize,
    chunk: Vec<u8>,
    /// Where the next field starts in `chunk`.
    at: usize,
    /// Bytes before the final hash not yet read into `chunk`.
    unread: u64,
    hasher: blake3::Hasher,
}

impl In {
    fn new(file: File, chunk_len: usize) -> io::Result<In> {
        let chunk_len = chunk_len.max(1);
        let len = file.metadata()?.len();
        let unread = len.checked_sub(32).ok_or_else(|| invalid("shorter than its hash"))?;
        let chunk = Vec::with_capacity(chunk_len);
        Ok(In { file, chunk_len, chunk, at: 0, unread, hasher: blake3::Hasher::new() })
    }

    /// Bytes before the final hash not yet taken.
    fn remaining(&self) -> u64 {
        (self.chunk.len() - self.at) as u64 + self.unread
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.chunk.len() - self.at < n {
            self.refill(n)?;
        }
        let taken = &self.chunk[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    /// Reads the next chunk behind what is left of this one, so that `n` bytes are there.
    fn refill(&mut self, n: usize) -> Result<(), String> {
        self.chunk.drain(..self.at);
        self.at = 0;
        let want = (self.chunk_len.max(n) - self.chunk.len())
            .min(usize::try_from(self.unread).unwrap_or(usize::MAX));
        let start = self.chunk.len();
        self.chunk.resize(start + want, 0);
        self.file.read_exact(&mut self.chunk[start..]).map_err(|e| e.to_string())?;
        self.hasher.update(&self.chunk[start..]);
        self.unread -= want as u64;
        if self.chunk.len() < n {
            return Err("cut short".into());
        }
        Ok(())
    }

    /// Reads the rest and the final hash; whether it is the hash of every byte before it.
    fn hash_matches(&mut self) -> io::Result<bool> {
        let mut rest = vec![0; self.chunk_len];
        while self.unread > 0 {
            let n = usize::try_from(self.unread).unwrap_or(usize::MAX).min(self.chunk_len);
            self.file.read_exact(&mut rest[..n])?;
            self.hasher.update(&rest[..n]);
            self.unread -= n as u64;
        }
        let mut hash = [0; 32];
        self.file.read_exact(&mut hash)?;
        Ok(*self.hasher.finalize().as_bytes() == hash)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A text, made into an id by `new` (which checks it).
    fn id<T, E: std::fmt::Display>(
        &mut self,
        new: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, String> {
        let len = usize::from(self.u8()?);
        let text = std::str::from_utf8(self.take(len)?).map_err(|e| e.to_string())?;
        new(text).map_err(|e| e.to_string())
    }

    /// A count of entries of at least `least` bytes each: no more than the bytes left hold.
    /// (A map is made for at most [`PRESIZED`] of them at first: the hash is checked only
    /// once the file is read, so a damaged count must not reserve much more than it holds.)
    fn count(&mut self, least: usize) -> Result<usize, String> {
        let count = self.u64()?;
        usize::try_from(count)
            .ok()
            .filter(|&count| count as u64 <= self.remaining() / least as u64)
            .ok_or_else(|| format!("a count of {count} entries that the snapshot cannot hold"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use orderly_store::LogConfig;

    use super::*;
    use crate::engine::{Config, Engine, ManualClock};
    use crate::workload::{Workload, WorkloadConfig};

    /// Everything a world holds but its timers, in an order that does not depend on the
    /// order its maps were filled in.
    type Dump = Vec<(
        String,
        BTreeMap<String, KeyEntry>,
        BTreeMap<String, InventoryState>,
        BTreeMap<String, OrderState>,
        BTreeMap<String, PaymentState>,
    )>;

    fn dump(world: &World) -> Dump {
        world
            .tenants_and_keys()
            .map(|(id, state, keys)| {
                (
                    id.to_string(),
                    keys.iter().map(|(k, e)| (k.to_string(), *e)).collect(),
                    state.inventories().map(|(s, i)| (s.to_string(), i.clone())).collect(),
                    state.orders().map(|(o, s)| (o.to_string(), s.clone())).collect(),
                    state.payments().map(|(p, s)| (p.to_string(), s.clone())).collect(),
                )
            })
            .collect()
    }

    /// Runs the first `steps` of a small seeded day through an engine on `dir`, lets its idle
    /// ticks move its clock on past the last command, and shuts it down.
    fn run_day(dir: &Path, steps: usize) {
        let workload = Workload::new(WorkloadConfig::new(400, 3, 7));
        let clock = ManualClock::at(Timestamp(0));
        let config = Config { clock: Arc::new(clock.clone()), ..Config::default() };
        let engine = Engine::open(dir, config).unwrap();
        for step in workload.take(steps) {
            clock.set(step.at);
            // Some are refused (sold out, a step of an order refused before): the day says so.
            let _ = engine.execute_blocking(step.envelope);
        }
        clock.advance(1_000);
        std::thread::sleep(std::time::Duration::from_millis(300));
        engine.shutdown();
    }

    /// Most of a small seeded day (orders are left at every stage) through an engine that then
    /// idles and shuts down: the snapshot it wrote restores the same aggregates and keys, and
    /// the same last admission time, as replaying its log does.
    #[test]
    fn a_snapshot_restores_what_replaying_the_log_builds() {
        let dir = tempfile::tempdir().unwrap();
        run_day(dir.path(), 1_200);
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        let (restored, last_now, position) = read(dir.path(), &log).unwrap().expect("written");
        assert_eq!(position, log.head().0, "taken at the end of the log");
        let (replayed, replayed_now) = World::recovered(&log, None).unwrap();
        assert_eq!(last_now, replayed_now, "the last time a record holds, not the idle clock's");
        let (restored, replayed) = (dump(&restored), dump(&replayed));
        assert_eq!(restored, replayed);
        // Read in chunks so short that fields straddle them: the same.
        for chunk in [1, 7, 64] {
            let (small_chunks, ..) = read_in_chunks(dir.path(), &log, chunk).unwrap().unwrap();
            assert_eq!(dump(&small_chunks), replayed, "in chunks of {chunk} bytes");
        }

        let orders = replayed.iter().flat_map(|tenant| tenant.3.values());
        let statuses: std::collections::HashSet<_> = orders.map(OrderState::status).collect();
        assert!(statuses.len() >= 4, "orders of many statuses: {statuses:?}");
        let payments = replayed.iter().flat_map(|tenant| tenant.4.values());
        let statuses: std::collections::HashSet<_> = payments.map(PaymentState::status).collect();
        assert!(statuses.len() >= 3, "and payments of many: {statuses:?}");
        assert!(replayed.iter().any(|tenant| !tenant.1.is_empty()), "and keys");
    }

    /// Every aggregate of a snapshot can look right alone while they disagree with each other:
    /// stock that reserves nothing for the orders holding it would be sold again. Such a
    /// snapshot is refused (and the whole log replayed), as is one whose orders and payments
    /// are not each other's.
    #[test]
    fn a_snapshot_whose_aggregates_disagree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        run_day(dir.path(), 1_200);
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        let (world, last_now, position) = read(dir.path(), &log).unwrap().expect("written");
        type Edit<'a> = &'a dyn Fn(&TenantState) -> TenantState;
        let rewritten = |edit: Edit<'_>| {
            let tenants = world
                .tenants_and_keys()
                .map(|(id, state, keys)| (id.clone(), edit(state), keys.clone()))
                .collect();
            write(dir.path(), &log, &World::restored(tenants), last_now, position).unwrap();
            read(dir.path(), &log)
        };
        let rebuilt = |inventory: Vec<(Sku, InventoryState)>,
                       orders: Vec<(OrderId, OrderState)>,
                       payments: Vec<(PaymentId, PaymentState)>| {
            let mut maps = (GrowingMap::default(), GrowingMap::default(), GrowingMap::default());
            inventory.into_iter().for_each(|(k, v)| _ = maps.0.insert(k, v));
            orders.into_iter().for_each(|(k, v)| _ = maps.1.insert(k, v));
            payments.into_iter().for_each(|(k, v)| _ = maps.2.insert(k, v));
            TenantState::restored(maps.0, maps.1, maps.2)
        };
        let clone_all = |state: &TenantState| {
            (
                state.inventories().map(|(k, v)| (k.clone(), v.clone())).collect(),
                state.orders().map(|(k, v)| (k.clone(), v.clone())).collect(),
                state.payments().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )
        };
        let same: Edit<'_> = &|state| {
            let (inventory, orders, payments) = clone_all(state);
            rebuilt(inventory, orders, payments)
        };
        assert!(rewritten(same).unwrap().is_some(), "the state as it was is read back");

        let nothing_reserved: Edit<'_> = &|state| {
            let (inventory, orders, payments) = clone_all(state);
            let inventory = inventory
                .into_iter()
                .map(|(sku, s)| (sku, InventoryState::restored(s.is_known(), s.on_hand(), 0, 0)))
                .collect();
            rebuilt(inventory, orders, payments)
        };
        let refused = rewritten(nothing_reserved).unwrap_err();
        assert!(refused.contains("reserves other than its orders hold"), "{refused}");

        let no_payments: Edit<'_> = &|state| {
            let (inventory, orders, _) = clone_all(state);
            rebuilt(inventory, orders, Vec::new())
        };
        let refused = rewritten(no_payments).unwrap_err();
        assert!(refused.contains("payment is not for it"), "{refused}");
    }

    /// A snapshot whose hash checks out but whose contents are wrong (only a deliberate edit
    /// makes one: the hash is not a secret) is refused, never trusted or panicked on.
    #[test]
    fn a_well_hashed_snapshot_with_wrong_contents_is_refused_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        run_day(dir.path(), 300);
        let path = snapshot_path(dir.path());
        let good = std::fs::read(&path).unwrap();
        let body = &good[..good.len() - 32];
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        // Read whole, and in chunks of 7 bytes, so that fields straddle them.
        for chunk in [CHUNK, 7] {
            let read_with = |body: &[u8]| {
                let mut bytes = body.to_vec();
                bytes.extend_from_slice(blake3::hash(body).as_bytes());
                std::fs::write(&path, bytes).unwrap();
                read_in_chunks(dir.path(), &log, chunk)
            };
            assert!(read_with(body).unwrap().is_some(), "the written one, hashed again, is read");

            let edit = |at: usize, bytes: &[u8]| {
                let mut body = body.to_vec();
                body[at..at + bytes.len()].copy_from_slice(bytes);
                body
            };
            let position = edit(10, &0u64.to_le_bytes());
            assert!(read_with(&position).unwrap_err().contains("position 0"));
            let tenants = edit(58, &u32::MAX.to_le_bytes());
            assert!(read_with(&tenants).is_err(), "more tenants than bytes");
            let keys_of_first = 62 + 1 + usize::from(body[62]);
            let keys = edit(keys_of_first, &u64::MAX.to_le_bytes());
            assert!(read_with(&keys).unwrap_err().contains("cannot hold"));
            assert!(read_with(&body[..body.len() - 5]).unwrap_err().contains("cut short"));

            // A byte flipped and the hash left as it was: damaged, whatever the parse made of it.
            let mut unhashed = good.clone();
            unhashed[good.len() / 2] ^= 0x01;
            std::fs::write(&path, &unhashed).unwrap();
            let damaged = read_in_chunks(dir.path(), &log, chunk).unwrap_err();
            assert!(damaged.contains("damaged"), "{damaged}");
            std::fs::write(&path, &good[..20]).unwrap();
            assert!(read_in_chunks(dir.path(), &log, chunk).is_err(), "shorter than its hash");

            // Every 7th byte of the body in turn (every 997th when read in small chunks, a
            // read call each), flipped and hashed again: refused or read, never a panic.
            let mut refused = 0;
            let step = if chunk == CHUNK { 7 } else { 997 };
            for at in (MAGIC.len()..body.len()).step_by(step) {
                let mut flipped = body.to_vec();
                flipped[at] ^= 0x5a;
                refused += usize::from(read_with(&flipped).is_err());
            }
            assert!(refused > 0);
        }
    }
}
