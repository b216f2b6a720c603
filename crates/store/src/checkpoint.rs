//! The log's checkpoint: how far the hash chain was verified, so that opening the log
//! recomputes chain hashes only after it.
//!
//! Opening a log for writing verifies it (see [`crate::recovery`]) and then records the head
//! and the chain hash of its last record in the file `checkpoint`; so does its writer, for the
//! records it wrote (its sealer hashed them), at most once a second while it runs and when it
//! stops cleanly, so that a damaged last record, which alone looks like a torn write, is
//! refused as a loss instead of cut. The next open still reads
//! every record — checksum, header, position and stream version, which rebuild the index and
//! catch any damaged byte — but recomputes the blake3 chain only from the checkpoint on: it
//! hashes the batch that ends just before the checkpoint (the one record, in the older
//! formats chained record by record) and requires it to match, then verifies the chain
//! onwards as before. Hashing is most of a verifying pass, so a restart costs a read
//! of the log plus a verification of what was appended since the last open. A rewrite of
//! older records that also fixes their checksums is what the chain exists to catch: `audit
//! verify` (a full [`crate::scan`]) recomputes the whole chain and never uses the checkpoint.
//!
//! ```text
//! offset size field
//!      0    8 magic "OLOGCKPT"
//!      8    2 checkpoint format version (1)
//!     10    8 position: records before it were verified
//!     18   32 chain hash of the record at position - 1 (zeros when position is 0)
//!     50    4 crc32c of bytes [0, 50)
//! ```
//!
//! The file is replaced atomically ([`Storage::replace`]). One that cannot be read or does not
//! check out is ignored (the whole chain is then verified) and reported; one that checks out
//! but disagrees with the log is corruption (see [`crate::Problem`]).

use std::io;

use crate::record::ChainHash;
use crate::storage::Storage;

/// The checkpoint file's name in the log's folder.
pub(crate) const FILE_NAME: &str = "checkpoint";
const MAGIC: &[u8; 8] = b"OLOGCKPT";
const FORMAT_VERSION: u16 = 1;
const LEN: usize = 54;

/// How far the log's hash chain was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Records before this position were verified.
    pub position: u64,
    /// The chain hash of the record at `position - 1`.
    pub hash: ChainHash,
}

impl Checkpoint {
    fn encode(&self) -> [u8; LEN] {
        let mut bytes = [0u8; LEN];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[10..18].copy_from_slice(&self.position.to_le_bytes());
        bytes[18..50].copy_from_slice(&self.hash);
        let crc = crc32c::crc32c(&bytes[..50]);
        bytes[50..54].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        if bytes.len() != LEN {
            return Err(format!("{} bytes instead of {LEN}", bytes.len()));
        }
        let crc = u32::from_le_bytes(bytes[50..54].try_into().expect("4 bytes"));
        if &bytes[0..8] != MAGIC || crc != crc32c::crc32c(&bytes[..50]) {
            return Err("not a checkpoint, or damaged".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(format!("unknown checkpoint format version {version}"));
        }
        Ok(Checkpoint {
            position: u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes")),
            hash: bytes[18..50].try_into().expect("32 bytes"),
        })
    }
}

/// What the checkpoint file holds: a checkpoint, nothing (no file), or why it was ignored.
pub(crate) fn load(storage: &dyn Storage) -> io::Result<Result<Option<Checkpoint>, String>> {
    let file = match storage.open(FILE_NAME, false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(e),
    };
    let mut bytes = [0u8; LEN + 1];
    let mut len = 0;
    loop {
        let n = file.read_at(&mut bytes[len..], len as u64)?;
        if n == 0 || len + n == bytes.len() {
            len += n;
            break;
        }
        len += n;
    }
    Ok(Checkpoint::decode(&bytes[..len]).map(Some))
}

/// Replaces the checkpoint file with `checkpoint`.
pub(crate) fn store(storage: &dyn Storage, checkpoint: &Checkpoint) -> io::Result<()> {
    storage.replace(FILE_NAME, &checkpoint.encode())
}
