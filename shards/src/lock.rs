//! Folder locks: one process writes a store (`slotcon-ingest`) or a run folder
//! (`slotcon-train`, `slotcon-import`) at a time.
//!
//! A writer holds an OS advisory lock (`flock`) on a lock file in the folder
//! (`.ingest.lock`, `.train.lock`), which holds its PID, from before it looks at the
//! folder until it is done; a second writer is refused with that PID. The OS releases the
//! lock when the process dies, so a lock file left behind by a killed writer never blocks
//! the next one. The holder removes the file as it ends.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{io_err, Error, Result};

/// Who takes a folder's lock: the lock file's name, and the words of the refusal.
#[derive(Clone, Copy, Debug)]
pub struct LockKind {
    /// The lock file's name inside the folder.
    pub file: &'static str,
    /// The program that writes the folder, as the refusal names it.
    pub tool: &'static str,
    /// What the folder is, as the refusal names it ("store", "run").
    pub what: &'static str,
}

/// A held lock on a folder; dropping it removes the lock file and releases it.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    file: File,
}

impl FolderLock {
    /// Locks the folder `out` (which must exist), or fails with [`Error::Locked`] naming
    /// the holder's PID.
    pub fn acquire(out: &Path, kind: LockKind) -> Result<FolderLock> {
        let path = out.join(kind.file);
        loop {
            let file = open(&path)?;
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => {
                    let pid = holder(&path);
                    return Err(Error::Locked {
                        path: out.to_path_buf(),
                        tool: kind.tool,
                        what: kind.what,
                        pid,
                    });
                }
                Err(fs4::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
            // The holder before us may have removed the file between our open and our
            // lock; then we locked a file nobody else will open, and start over.
            if same_file(&file, &path) {
                return FolderLock { path, file }.stamped();
            }
        }
    }

    /// Writes this process's PID into the lock file.
    fn stamped(mut self) -> Result<Self> {
        self.file.set_len(0).map_err(io_err(&self.path))?;
        writeln!(self.file, "{}", std::process::id()).map_err(io_err(&self.path))?;
        Ok(self)
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Removed while still held, then released as the file closes: a run that opened
        // the old file in between finds it gone (`same_file`) and takes a new one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An exclusive `flock` on an open file, held until dropped: the short critical sections
/// that processes sharing a folder take in turn (the remote store's cache).
pub(crate) struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = fs4::FileExt::unlock(self.0);
    }
}

/// How long [`exclusive`] waits for another process's critical section.
const CRITICAL_WAIT: Duration = Duration::from_secs(120);

/// Locks `file` (at `path`) exclusively, waiting while another process holds it; an error
/// naming `path` after [`CRITICAL_WAIT`] (a holder stuck that long is not a short one).
pub(crate) fn exclusive<'a>(file: &'a File, path: &Path) -> Result<Held<'a>> {
    let start = std::time::Instant::now();
    loop {
        match fs4::FileExt::try_lock(file) {
            Ok(()) => return Ok(Held(file)),
            Err(fs4::TryLockError::WouldBlock) if start.elapsed() < CRITICAL_WAIT => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(fs4::TryLockError::WouldBlock) => {
                let reason = format!(
                    "another process has held its lock for more than {} s",
                    CRITICAL_WAIT.as_secs()
                );
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    reason,
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_err(path)(e)),
        }
    }
}

fn open(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

/// The PID in the lock file. The holder writes it just after locking, so an empty file
/// is read again for a moment before giving up.
fn holder(path: &Path) -> Option<u32> {
    for _ in 0..20 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        (Err(_), _) => true,
        (_, Err(_)) => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: LockKind = LockKind {
        file: ".ingest.lock",
        tool: "slotcon-ingest",
        what: "store",
    };
    const LOCK_FILE: &str = KIND.file;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = FolderLock::acquire(dir.path(), KIND).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        let err = FolderLock::acquire(dir.path(), KIND).unwrap_err().to_string();
        let want = format!(
            "{}: another slotcon-ingest (pid {}) is writing this store; wait for it or stop it",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(err, want);
        drop(held);
        assert!(!dir.path().join(LOCK_FILE).exists());
        drop(FolderLock::acquire(dir.path(), KIND).unwrap());
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed run leaves: the file, with a PID, but no lock on it.
        std::fs::write(dir.path().join(LOCK_FILE), "4194304\n").unwrap();
        let held = FolderLock::acquire(dir.path(), KIND).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(held);
    }
}
