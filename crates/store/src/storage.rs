//! The storage seam: the few file operations the log needs, behind a trait so that tests can
//! fail the Nth write or fsync, cut a write short, or flip bits (see [`crate::faults`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A folder of named files.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Names of the files in the folder.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` with `len` bytes reserved on disk and zero-filled, made durable together
    /// with its directory entry.
    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file, for writing too when `writable`.
    fn open(&self, name: &str, writable: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes `name` and makes the removal durable.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes `bytes` the whole content of `name`, atomically and durably: a reader sees the old
    /// content or the new, never a mix, even after a crash.
    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Where the files are, for messages.
    fn path_of(&self, name: &str) -> PathBuf;
}

/// One open file.
pub trait StorageFile: Send + Sync + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Drops what the operating system caches of the file, so that the next reads come from
    /// the device. After a failed `fdatasync`, Linux marks the pages it could not write as
    /// clean and keeps them: read back from the cache, they would show records that never
    /// reached the disk, and a later `fdatasync` would not report the loss again.
    fn forget_cached(&self) -> io::Result<()>;
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Cuts or extends the file to `len` bytes (durable after the next `sync_data`).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Whether the file was deleted while open (its last name is gone): what is written to it
    /// then survives no restart. Storage without names says no.
    fn deleted(&self) -> io::Result<bool> {
        Ok(false)
    }
}

/// Files in a directory of the local file system.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Storage in `dir`, which must exist.
    #[must_use]
    pub fn new(dir: &Path) -> DirStorage {
        DirStorage { dir: dir.to_path_buf() }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for DirStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let path = self.dir.join(name);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        preallocate(&file, len)?;
        file.sync_all()?;
        self.sync_dir()?;
        Ok(Arc::new(DiskFile { file }))
    }

    fn open(&self, name: &str, writable: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(self.dir.join(name))?;
        Ok(Arc::new(DiskFile { file }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))?;
        self.sync_dir()
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        // Written beside, synced, then renamed over: rename is atomic, and syncing the folder
        // makes the new name durable.
        let temporary = self.dir.join(format!("{name}.new"));
        let mut file = File::create(&temporary)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.dir.join(name))?;
        self.sync_dir()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Creates `dir` and the folders above it that are missing, and syncs the folder holding
/// each one it created: records acknowledged in a new log must not vanish in a power cut with
/// the name of the folder they are in.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|at| !at.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Reserves `len` bytes for `file` with `fallocate`, so appends never run out of space
/// midway and the file reads as zeros past the last record. (Writing the zeros instead would
/// make each later `fdatasync` cheaper but cost a second pass over the disk's bandwidth.)
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("segment too large"))?;
    // SAFETY: fallocate is called on a file descriptor that `file` owns and keeps open.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        // Said with the size asked for: a disk with some room left has not the room for this.
        let why = format!("cannot reserve {len} bytes for a segment file: {error}");
        return Err(io::Error::new(error.kind(), why));
    }
    Ok(())
}

#[derive(Debug)]
struct DiskFile {
    file: File,
}

impl StorageFile for DiskFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn forget_cached(&self) -> io::Result<()> {
        // SAFETY: advice on a file descriptor `file` owns and keeps open; offset and length 0
        // name the whole file. Dirty pages are not dropped, only clean ones.
        let rc =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn deleted(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.nlink() == 0)
    }
}

/// An exclusive advisory lock on a data folder, held while a writable log is open so that two
/// processes never append to the same log. Released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// The lock file a writable log keeps in its folder.
pub(crate) const LOCK_FILE: &str = "LOCK";

impl DirLock {
    /// How long to wait for a lock that is held. A process that just forked holds a copy of
    /// the lock until its child execs, so a lock released a moment ago may still look held.
    const PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

    pub(crate) fn acquire(dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        let started = std::time::Instant::now();
        loop {
            // SAFETY: flock is called on a file descriptor that `file` owns and keeps open.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) || started.elapsed() > Self::PATIENCE
            {
                return Err(error);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_data_folder_is_created_with_the_folders_above_it_and_an_existing_one_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("data");
        super::create_dir_durably(&dir).unwrap();
        assert!(dir.is_dir());
        std::fs::write(dir.join("kept"), b"x").unwrap();
        super::create_dir_durably(&dir).unwrap();
        assert!(dir.join("kept").exists());
    }
}
