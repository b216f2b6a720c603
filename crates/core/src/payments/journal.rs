//! The books of a [`SimulatedGateway`](super::SimulatedGateway) kept in a file, so that they
//! outlive the process as a real provider's do: one JSON line per call that changed them (a new
//! authorization with its outcome, a cancel, a capture, void or refund under a new key),
//! appended before the call is answered. A start replays the lines through the same code.
//!
//! A line is written with one `write` call and no `fsync`: the books survive the process (a
//! crash, a restart), which is what a simulator is for, not the machine. (After a power loss
//! the log, which is synced, may name authorizations these books lost: their captures are then
//! refused as of an unknown reference.) A last line cut short by a crash is the call that was
//! never answered: it is dropped, and the file cut back to the line before. A write that fails
//! (a full disk) is cut back too, and fails only its own call.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One call that changed the books.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub(super) enum Entry {
    /// A new authorization key and its outcome.
    Authorize {
        key: String,
        tenant: String,
        order: String,
        minor: u64,
        currency: String,
        approved: bool,
    },
    /// A cancel of whatever an authorization key reserved.
    Cancel { key: String, tenant: String, order: String, minor: u64, currency: String },
    /// A capture, void or refund under a new key (`kind` is one of those words).
    Move { kind: String, key: String, reference: String, minor: u64, currency: String },
}

impl Entry {
    /// The cancel of `request`'s key.
    pub(super) fn cancel(request: &super::AuthorizeRequest) -> Entry {
        Entry::Cancel {
            key: request.idempotency_key.clone(),
            tenant: request.tenant.to_string(),
            order: request.order.to_string(),
            minor: request.amount.minor,
            currency: request.amount.currency.to_string(),
        }
    }
}

/// The file the books are appended to, locked by this gateway for as long as it is open.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of whole lines: where the next line goes, and where a failed write is cut back to.
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, locked for this process (another gateway on
    /// the same books, in this process or another, is refused), and hands each entry it holds
    /// to `replay`, in order, one line at a time. A damaged line other than a last one cut
    /// short, or one `replay` refuses, is an error naming it.
    pub(super) fn open(
        path: &Path,
        mut replay: impl FnMut(Entry) -> Result<(), String>,
    ) -> io::Result<Journal> {
        let at_path = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), at_path(&e)))?;
        file.try_lock().map_err(|e| {
            let why = format!("in use by another gateway ({e})");
            io::Error::new(io::ErrorKind::WouldBlock, at_path(&why))
        })?;
        let mut len = 0u64;
        let mut lines = BufReader::new(&mut file);
        let mut line = Vec::new();
        for number in 1.. {
            line.clear();
            lines
                .read_until(b'\n', &mut line)
                .map_err(|e| io::Error::new(e.kind(), at_path(&e)))?;
            if line.last() != Some(&b'\n') {
                break;
            }
            let damaged = |why: &dyn std::fmt::Display| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    at_path(&format!("line {number}: {why}")),
                )
            };
            let entry = serde_json::from_slice(&line).map_err(|e| damaged(&e))?;
            replay(entry).map_err(|why| damaged(&why))?;
            len += line.len() as u64;
        }
        // What follows the last whole line is a write a crash cut short: that call was never
        // answered, so it never happened.
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        Ok(Journal { file, path: path.to_path_buf(), len })
    }

    /// Appends `entry` as one line. A write that fails (a full disk) is cut back out of the
    /// file, so that the books stay whole and a later write can succeed.
    pub(super) fn append(&mut self, entry: &Entry) -> Result<(), Failed> {
        let mut line = serde_json::to_vec(entry).expect("an entry serializes");
        line.push(b'\n');
        let Err(e) = self.file.write_all(&line) else {
            self.len += line.len() as u64;
            return Ok(());
        };
        let failed = format!("cannot write {}: {e}", self.path.display());
        match self.cut_back() {
            Ok(()) => Err(Failed::CutBack(failed)),
            Err(cut) => Err(Failed::Damaged(format!("{failed}, nor cut it back: {cut}"))),
        }
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts the file back to its last whole line (what a failed write left after it is not
    /// the books'): once it succeeds, the file holds the books again.
    pub(super) fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.seek(SeekFrom::Start(self.len)).map(drop)
    }
}

/// Why a line was not appended.
#[derive(Debug)]
pub(super) enum Failed {
    /// Nothing of it is in the file: the books are as they were.
    CutBack(String),
    /// Part of it may be: the file no longer holds the books until it is cut back
    /// ([`Journal::cut_back`]).
    Damaged(String),
}
