//! Digests: a position and the chain hash there, to publish and check later.

use std::fmt;
use std::str::FromStr;

use orderly_store::ChainHash;
use serde::{Serialize, Serializer};

/// A published digest of a log, written `POS:HASH`: `head` is the number of records it covers
/// (records `0..head`), `hash` the chain hash (blake3, see `docs/design/event-log.md`) at the
/// record at `head - 1`, 64 lower-case hex digits; all zeros when `head` is 0.
///
/// Every record carries the chain hash at the record before it or before its batch, so a log
/// that has exactly this hash at `head - 1` holds exactly the records the digest was taken
/// over: a change anywhere before it changes this hash, even if every checksum and later hash
/// were recomputed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    /// Number of records covered: the log's head when the digest was taken.
    pub head: u64,
    /// Chain hash of the record at `head - 1`.
    pub hash: ChainHash,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.head)?;
        self.hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Digest {
    /// The digest of `log` at `head`: the chain hash of the record before it (zeros at 0),
    /// read from the disk. What binds a file kept beside a log (the engine's snapshot, the
    /// payments checkpoint) to the log it was written for.
    pub fn of(log: &orderly_store::LogReader, head: u64) -> std::io::Result<Digest> {
        let Some(before) = head.checked_sub(1) else { return Ok(Digest { head, hash: [0; 32] }) };
        let missing = || std::io::Error::other(format!("the log has no record at {before}"));
        let hash = log
            .chain_hash_at(orderly_store::Position(before))
            .ok_or_else(missing)?
            .map_err(std::io::Error::other)?;
        Ok(Digest { head, hash })
    }
}

/// Why a text is not a digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a digest is POSITION:HASH with 64 hex digits of hash, got {0:?}")]
pub struct DigestParseError(pub String);

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Digest, DigestParseError> {
        let bad = || DigestParseError(text.chars().take(100).collect());
        let (head, hex) = text.trim().split_once(':').ok_or_else(bad)?;
        // Digits only: Rust's integer parsing also takes a leading `+`, which no digest has.
        if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let head = head.parse().map_err(|_| bad())?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Digest { head, hash })
    }
}
