//! The books of a [`SimulatedGateway`](super::SimulatedGateway) kept in a file, so that they
//! outlive the process as a real provider's do: one JSON line per call that changed them (a new
//! authorization with its outcome, a cancel, a capture, void or refund under a new key),
//! appended before the call is answered. A start replays the lines through the same code.
//!
//! A line is written with one `write` call and no `fsync`: the books survive the process (a
//! crash, a restart), which is what a simulator is for, not the machine. A last line cut short
//! by a crash is the call that was never answered: it is dropped, and the file cut back to the
//! line before.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
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

/// The file the books are appended to.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and returns it with the entries it holds, in
    /// order. A damaged line other than a last one cut short is an error naming it.
    pub(super) fn open(path: &Path) -> io::Result<(Journal, Vec<Entry>)> {
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?;
        let whole = text.rfind('\n').map_or(0, |end| end + 1);
        if whole < text.len() {
            file.set_len(whole as u64)?;
        }
        let entries = text[..whole]
            .lines()
            .enumerate()
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| {
                    let at = format!("{} line {}", path.display(), n + 1);
                    io::Error::new(io::ErrorKind::InvalidData, format!("{at} is damaged: {e}"))
                })
            })
            .collect::<io::Result<_>>()?;
        Ok((Journal { file, path: path.to_path_buf() }, entries))
    }

    /// Appends `entry` as one line.
    pub(super) fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).expect("an entry serializes");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot write {}: {e}", self.path.display()))
        })
    }
}
