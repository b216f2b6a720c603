//! Reading the small hand-made binary rows of the read models: little-endian or varint
//! (LEB128) numbers and length-prefixed text, with every shortfall an error rather than a
//! panic.

use super::ProjectionError;

/// A cursor over one row's bytes; `kind` names the row in error messages.
pub(super) struct RowReader<'a> {
    bytes: &'a [u8],
    kind: &'static str,
}

impl<'a> RowReader<'a> {
    pub(super) fn new(bytes: &'a [u8], kind: &'static str) -> RowReader<'a> {
        RowReader { bytes, kind }
    }

    /// Whether the whole row was read.
    pub(super) fn is_done(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], ProjectionError> {
        if self.bytes.len() < n {
            return Err(ProjectionError::Corrupt(format!("{} row is truncated", self.kind)));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProjectionError> {
        Ok(self.take(N)?.try_into().expect("took exactly N bytes"))
    }

    pub(super) fn u8(&mut self) -> Result<u8, ProjectionError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, ProjectionError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, ProjectionError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, ProjectionError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A varint (unsigned LEB128, shortest form, at most `u64::MAX`).
    pub(super) fn varint(&mut self) -> Result<u64, ProjectionError> {
        let kind = self.kind;
        let bad = |what: String| ProjectionError::Corrupt(format!("{kind} row holds {what}"));
        let (n, rest) = unsigned_varint::decode::u64(self.bytes)
            .map_err(|e| bad(format!("a bad number: {e}")))?;
        // The tenth byte holds the top bit alone: the decoder drops anything above it.
        let used = self.bytes.len() - rest.len();
        if used == 10 && self.bytes[9] > 1 {
            return Err(bad("a number beyond 64 bits".to_owned()));
        }
        self.bytes = rest;
        Ok(n)
    }

    /// Text of `len` bytes.
    pub(super) fn text(&mut self, len: usize) -> Result<&'a str, ProjectionError> {
        let kind = self.kind;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| ProjectionError::Corrupt(format!("{kind} row holds invalid UTF-8")))
    }

    /// Text prefixed with its length in one byte.
    pub(super) fn str(&mut self) -> Result<&'a str, ProjectionError> {
        let len = usize::from(self.u8()?);
        self.text(len)
    }
}

/// Appends `n` as a varint (unsigned LEB128): 1 byte below 128, 3 for a price, 6 for a time
/// in ms.
pub(super) fn put_varint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(unsigned_varint::encode::u64(
        n,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
}

/// Appends `s` prefixed with its length in one byte (ids are at most 64 bytes).
pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(u8::try_from(s.len()).expect("ids are at most 64 bytes"));
    out.extend_from_slice(s.as_bytes());
}
