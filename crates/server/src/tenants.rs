//! Tenants and their bearer tokens.
//!
//! `<data>/tenants` holds one line per token, `tenant NAME BLAKE3-OF-TOKEN`, and one per
//! revocation, `revoke NAME`, which ends every token NAME was given before it (a later
//! `tenant` line gives it a new one: a rotation). Tokens are 256 random bits, so a plain hash
//! stores them safely (nothing to brute-force); the token itself is shown once, when it is
//! made. The file is only ever appended to (one short `O_APPEND` write, then fsync), so
//! `orderly tenant add` and `revoke` may run beside a server, which rereads the file when it
//! sees a token it does not know, and at most a second after it changed for any token (so a
//! revocation takes effect within a second).
//!
//! A last line without its newline is an add still being written, or one a crash cut short:
//! its fsync never returned, so its token was never shown. Readers skip it; the next add,
//! holding the file's lock (adds take it one at a time, so a name is never given two tokens),
//! cuts it off before appending.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use orderly_core::domain::TenantId;

/// The tenants file inside a data folder.
pub const TENANTS_FILE: &str = "tenants";
/// Every token starts with this, so a leaked one is easy to recognize (and to scan for).
const TOKEN_PREFIX: &str = "orderly_";

/// The known tokens, by their hash.
#[derive(Debug)]
pub struct Tenants {
    path: PathBuf,
    by_hash: RwLock<HashMap<blake3::Hash, TenantId>>,
    /// The file's modification time and length when it was last read, to reread it only when
    /// it changed. The length too: the file only grows, and two appends within one tick of a
    /// coarse file-system clock leave the same modification time.
    read_at: Mutex<Option<(SystemTime, u64)>>,
    /// When the file was last checked for changes (ms since `opened`): a known token checks
    /// it at most once a second, so a revocation is seen without a request per token.
    checked_ms: AtomicU64,
    /// When a failure to read the file was last logged (ms since `opened`): a file that cannot
    /// be read is tried again at every unknown token, and logged at most once a second.
    warned_ms: AtomicU64,
    opened: Instant,
}

/// How often a known token's request checks the file for a revocation, at most.
const RECHECK_MS: u64 = 1_000;

impl Tenants {
    /// Reads the tenants of the data folder `data` (none if the file does not exist yet).
    pub fn open(data: &Path) -> anyhow::Result<Tenants> {
        let tenants = Tenants {
            path: data.join(TENANTS_FILE),
            by_hash: RwLock::new(HashMap::new()),
            read_at: Mutex::new(None),
            checked_ms: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
            opened: Instant::now(),
        };
        tenants.reload()?;
        Ok(tenants)
    }

    /// The tenant `token` belongs to, if any.
    pub fn authenticate(&self, token: &str) -> Option<TenantId> {
        let hash = blake3::hash(token.as_bytes());
        if let Some(tenant) = self.lookup(&hash) {
            // Perhaps `tenant revoke` ended it since the file was read: checked once a second.
            let now = self.elapsed_ms();
            let checked = self.checked_ms.load(Ordering::Relaxed);
            let due = now.saturating_sub(checked) >= RECHECK_MS
                && self
                    .checked_ms
                    .compare_exchange(checked, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if !due || !self.reread() {
                return Some(tenant);
            }
            return self.lookup(&hash);
        }
        // Perhaps `tenant add` made it since the file was read.
        if self.reread() { self.lookup(&hash) } else { None }
    }

    /// [`Tenants::reload`], a failure reported (at most once a second): true if the file
    /// changed and was read.
    fn reread(&self) -> bool {
        self.reload().unwrap_or_else(|e| {
            let now = self.elapsed_ms();
            let warned = self.warned_ms.load(Ordering::Relaxed);
            let due = warned == 0 || now.saturating_sub(warned) >= RECHECK_MS;
            if due && self.warned_ms.swap(now.max(1), Ordering::Relaxed) == warned {
                tracing::warn!("cannot reread {}: {e:#}", self.path.display());
            }
            false
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The names of every tenant, sorted.
    pub fn names(&self) -> Vec<TenantId> {
        let by_hash = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<TenantId> = by_hash.values().cloned().collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        names
    }

    fn lookup(&self, hash: &blake3::Hash) -> Option<TenantId> {
        self.by_hash.read().unwrap_or_else(PoisonError::into_inner).get(hash).cloned()
    }

    /// Rereads the file if it changed since the last read; true if it did. A file that cannot
    /// be parsed is reported once per change, and the tokens read before stay: requests with
    /// unknown tokens (anyone may send them) do not reread it again and again.
    fn reload(&self) -> anyhow::Result<bool> {
        let mut read_at = self.read_at.lock().unwrap_or_else(PoisonError::into_inner);
        let modified = match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.modified()?, meta.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).context(format!("cannot read {}", self.path.display())),
        };
        if *read_at == Some(modified) {
            return Ok(false);
        }
        // A read that failed is tried again (it may have failed for a moment: too many open
        // files, say, and a revocation must not wait for the next change); a file read but
        // damaged is not, until it changes.
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        *read_at = Some(modified);
        let by_hash = parse(&text).with_context(|| format!("in {}", self.path.display()))?;
        *self.by_hash.write().unwrap_or_else(PoisonError::into_inner) = by_hash;
        Ok(true)
    }
}

/// Adds tenant `name` to the data folder `data` and returns its new token. Refuses a name
/// that already has a token.
pub fn add(data: &Path, name: &TenantId) -> anyhow::Result<String> {
    add_with(data, name, |_| Ok(()))
}

/// [`add`], handing the new token to `keep` (which shows it, or writes it to a file) once the
/// name is known to be free and before the tenant is added: a token `keep` fails to keep adds
/// no tenant, rather than one whose token nobody has.
pub fn add_with(
    data: &Path,
    name: &TenantId,
    keep: impl FnOnce(&str) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let token = new_token();
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data folder {}", data.display()))?;
    let path = data.join(TENANTS_FILE);
    let (mut file, text, existing) = locked(&path, true)?;
    if existing.values().any(|tenant| tenant == name) {
        bail!("tenant {name} already exists (revoke its token first to give it a new one)");
    }
    keep(&token)?;
    let line = format!("tenant {name} {}\n", blake3::hash(token.as_bytes()).to_hex());
    append(&mut file, &path, &text, &line)?;
    sync_dir(data)?;
    Ok(token)
}

/// Ends every token of tenant `name` in the data folder `data`: a running server refuses them
/// within a second. Its data stays; `add` gives it a new token. Refuses a name with no token.
pub fn revoke(data: &Path, name: &TenantId) -> anyhow::Result<()> {
    let path = data.join(TENANTS_FILE);
    let (mut file, text, existing) = locked(&path, false)?;
    if !existing.values().any(|tenant| tenant == name) {
        bail!("tenant {name} has no token to revoke");
    }
    append(&mut file, &path, &text, &format!("revoke {name}\n"))
}

/// The tenants file at `path` (created if `create`), locked for this writer until the file is
/// dropped (another waits, then sees this one's line), with its text and the tenants it names.
fn locked(
    path: &Path,
    create: bool,
) -> anyhow::Result<(File, String, HashMap<blake3::Hash, TenantId>)> {
    let mut file = OpenOptions::new()
        .create(create)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| format!("cannot read {}", path.display()))?;
    let existing = parse(&text).with_context(|| format!("in {}", path.display()))?;
    Ok((file, text, existing))
}

/// Appends `line` to the locked tenants file `file` (whose contents are `text`), synced; a
/// last line an interrupted writer left unfinished is cut off first.
fn append(file: &mut File, path: &Path, text: &str, line: &str) -> anyhow::Result<()> {
    let whole = complete_lines(text).len();
    if whole < text.len() {
        // No other writer is running (we hold the lock), so this line was cut short by a crash.
        tracing::warn!("{}: dropping a line an interrupted add left unfinished", path.display());
        file.set_len(whole as u64)
            .with_context(|| format!("cannot cut the unfinished line off {}", path.display()))?;
    }
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `token` alone to `path`, readable by its owner only, in place of any file there:
/// written beside it and renamed over it, so that a crash leaves the old file or the new one.
pub fn write_token_file(path: &Path, token: &str) -> anyhow::Result<()> {
    let mut beside = path.as_os_str().to_owned();
    beside.push(".new");
    let beside = Path::new(&beside);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(beside)
        .with_context(|| format!("cannot create {}", beside.display()))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(beside, path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    sync_dir(path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// A new bearer token: 256 random bits.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

/// The tenants the file's finished lines name (see the module's note on an unfinished one).
fn parse(text: &str) -> anyhow::Result<HashMap<blake3::Hash, TenantId>> {
    let mut by_hash = HashMap::new();
    for (number, line) in complete_lines(text).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let at = || format!("line {}", number + 1);
        match fields[..] {
            ["tenant", name, hash] => {
                let name = TenantId::new(name).with_context(at)?;
                let hash = blake3::Hash::from_hex(hash)
                    .with_context(|| format!("{}: not a blake3 hash", at()))?;
                // Tokens are random: one hash for two tenants is a file written by hand, and
                // a token must never authenticate as someone else.
                if by_hash.get(&hash).is_some_and(|earlier| *earlier != name) {
                    bail!("{}: a token already given to another tenant", at());
                }
                by_hash.insert(hash, name);
            }
            ["revoke", name] => {
                let name = TenantId::new(name).with_context(at)?;
                by_hash.retain(|_, tenant| *tenant != name);
            }
            _ => bail!("{}: expected `tenant NAME HASH` or `revoke NAME`", at()),
        }
    }
    Ok(by_hash)
}

/// `text` up to and with its last newline.
fn complete_lines(text: &str) -> &str {
    &text[..text.rfind('\n').map_or(0, |last| last + 1)]
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_is_reported_once_and_the_tokens_read_before_stay() {
        let data = tempfile::tempdir().unwrap();
        let token = add(data.path(), &TenantId::new("acme").unwrap()).unwrap();
        let tenants = Tenants::open(data.path()).unwrap();
        let mut file =
            OpenOptions::new().append(true).open(data.path().join(TENANTS_FILE)).unwrap();
        file.write_all(b"not a tenant line\n").unwrap();
        assert!(tenants.reload().is_err(), "the damage is reported");
        assert!(!tenants.reload().unwrap(), "and not read again until the file changes");
        assert_eq!(
            tenants.authenticate(&token).map(|t| t.as_str().to_owned()),
            Some("acme".into())
        );
        assert_eq!(tenants.authenticate("orderly_unknown"), None);

        // A file that cannot be read (a folder in its place): tried again each time (a read
        // may fail for a moment, and must not hide a revocation until the next change), with
        // the tokens read before kept meanwhile.
        let path = data.path().join(TENANTS_FILE);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(tenants.reload().is_err(), "the failure is reported");
        assert!(tenants.reload().is_err(), "and the file tried again");
        assert!(tenants.authenticate(&token).is_some(), "the tokens read before stay");
    }

    #[test]
    fn a_revoked_token_is_refused_within_a_second_and_a_new_one_can_be_given() {
        let data = tempfile::tempdir().unwrap();
        let acme = TenantId::new("acme").unwrap();
        let old = add(data.path(), &acme).unwrap();
        let other = add(data.path(), &TenantId::new("globex").unwrap()).unwrap();
        let tenants = Tenants::open(data.path()).unwrap();
        assert_eq!(tenants.authenticate(&old), Some(acme.clone()));
        assert!(add(data.path(), &acme).is_err(), "one token per tenant");

        revoke(data.path(), &acme).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(RECHECK_MS + 100));
        assert_eq!(tenants.authenticate(&old), None, "revoked");
        assert!(tenants.authenticate(&other).is_some(), "the other tenant's stays");
        assert!(revoke(data.path(), &acme).is_err(), "nothing left to revoke");
        let new = add(data.path(), &acme).unwrap();
        assert_eq!(tenants.authenticate(&new), Some(acme), "a rotation");
        assert_eq!(tenants.authenticate(&old), None);
    }

    #[test]
    fn a_token_written_for_two_tenants_is_refused() {
        let hash = blake3::hash(b"orderly_x").to_hex();
        let text = format!("tenant acme {hash}\ntenant globex {hash}\n");
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        let again = format!("tenant acme {hash}\ntenant acme {hash}\n");
        assert_eq!(parse(&again).unwrap().len(), 1, "the same line twice is harmless");
    }
}
