//! The cache's ledger: what the cache folder holds, kept in the file `ROOT/.ledger`, so
//! that a write need not list the folder (a folder of 100 000 blocks took a scan of
//! 100 000 files per write).
//!
//! - The file is a list of records, one a line: `+ STORE NAME BYTES` (a block is there,
//!   or is being written) and `- STORE NAME` (it is gone). It is only written under the
//!   cache's exclusive lock, so records never interleave.
//! - Each process keeps its own view and reads what others appended since its last look
//!   ([`Ledger::sync`], under the lock). Nothing lives in shared memory.
//! - Safe under a crash: a block is recorded before its file is written, and its record
//!   removed only after its file (and its temporary file) is deleted, so the ledger may
//!   count a block that is not there (a dead writer's), never the reverse, and the limit
//!   holds. A record cut by a crash is dropped by the next writer.
//! - [`Ledger::rebuild`] writes the ledger anew from a listing of the folder: at each
//!   process's first use of the cache, and when dead records outnumber live ones. It
//!   replaces the file, whose first line names its generation, and every other process,
//!   seeing a new generation, reads it whole.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// A block in the ledger: its store's folder name and its name.
pub(crate) type Key = (String, String);

/// One process's view of the ledger file.
pub(crate) struct Ledger {
    path: PathBuf,
    entries: HashMap<Key, u64>,
    used: u64,
    /// The file this view was read from (its first line, the generation) and how far.
    header: Vec<u8>,
    offset: u64,
    /// Records in the file, live or dead: the file is rewritten when dead ones outnumber
    /// the live.
    records: u64,
}

/// The ledger's file name below the cache root.
pub(crate) const LEDGER_FILE: &str = ".ledger";

/// The first line's start; a generation in 16 hex digits and a newline follow.
const HEADER: &str = "# slotcon cache ledger ";
const HEADER_LEN: usize = HEADER.len() + 17;

impl Ledger {
    /// An empty view of the ledger below `root` (nothing is read yet).
    pub fn new(root: &Path) -> Self {
        Ledger {
            path: root.join(LEDGER_FILE),
            entries: HashMap::new(),
            used: 0,
            header: Vec::new(),
            offset: 0,
            records: 0,
        }
    }

    /// The bytes the ledger counts.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Every block the ledger counts, with its bytes.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, u64)> {
        self.entries.iter().map(|(k, &b)| (k, b))
    }

    /// True when the ledger counts block `key`.
    pub fn has(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Replaces the ledger with `blocks` (a listing of the folder). The caller holds
    /// the cache's lock.
    pub fn rebuild(&mut self, blocks: impl IntoIterator<Item = (Key, u64)>) -> Result<()> {
        self.entries = blocks.into_iter().collect();
        self.used = self.entries.values().sum();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let generation = nanos ^ (u64::from(std::process::id()) << 40);
        let mut text = format!("{HEADER}{generation:016x}\n");
        self.header = text.as_bytes().to_vec();
        for ((store, name), bytes) in &self.entries {
            text.push_str(&added(store, name, *bytes));
        }
        crate::format::write_atomic(&self.path, text.as_bytes())?;
        (self.offset, self.records) = (text.len() as u64, self.entries.len() as u64);
        Ok(())
    }

    /// Reads what other processes appended since this view's last look; a ledger
    /// replaced or missing is read whole (missing: `rebuild` it). The caller holds the
    /// lock. Returns false when there is no ledger file.
    pub fn sync(&mut self) -> Result<bool> {
        let mut file = match File::options().read(true).write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let len = file.metadata().map_err(io_err(&self.path))?.len();
        let mut header = vec![0; HEADER_LEN.min(len as usize)];
        file.read_exact_at(&mut header, 0).map_err(io_err(&self.path))?;
        if header != self.header || len < self.offset {
            // Another generation (a rebuild), or a file this view never read: whole.
            (self.header, self.offset, self.records) = (header, 0, 0);
            self.entries.clear();
            self.used = 0;
        }
        if len == self.offset {
            return Ok(true);
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(io_err(&self.path))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err(&self.path))?;
        // Only whole lines: a tail without its newline is a record a dead writer cut.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in text[..whole].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if !line.starts_with(HEADER.as_bytes()) {
                self.apply(&String::from_utf8_lossy(line));
            }
        }
        self.offset += whole as u64;
        if whole < text.len() {
            file.set_len(self.offset).map_err(io_err(&self.path))?;
        }
        Ok(true)
    }

    /// Records that blocks `gone` were deleted and block `add` is being written (either
    /// may be empty), in one append. The caller holds the lock and has synced.
    pub fn record(&mut self, gone: &[Key], add: Option<(&Key, u64)>) -> Result<()> {
        let mut text = String::new();
        for (store, name) in gone {
            text.push_str(&format!("- {store} {name}\n"));
        }
        if let Some(((store, name), bytes)) = add {
            text.push_str(&added(store, name, bytes));
        }
        if text.is_empty() {
            return Ok(());
        }
        let mut file = File::options()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        file.write_all(text.as_bytes()).map_err(io_err(&self.path))?;
        for line in text.lines() {
            self.apply(line);
        }
        self.offset += text.len() as u64;
        Ok(())
    }

    /// True when dead records outnumber live ones (time to [`Ledger::rebuild`]).
    pub fn bloated(&self) -> bool {
        self.records > 1024 && self.records > 2 * self.entries.len() as u64
    }

    fn apply(&mut self, line: &str) {
        self.records += 1;
        let mut words = line.split(' ');
        let (op, store, name) = (words.next(), words.next(), words.next());
        let (Some(store), Some(name)) = (store, name) else {
            return;
        };
        let key = (store.to_string(), name.to_string());
        if let Some(old) = self.entries.remove(&key) {
            self.used -= old;
        }
        if op == Some("+") {
            if let Some(bytes) = words.next().and_then(|b| b.parse::<u64>().ok()) {
                self.used += bytes;
                self.entries.insert(key, bytes);
            }
        }
    }
}

fn added(store: &str, name: &str, bytes: u64) -> String {
    debug_assert!(!store.contains(char::is_whitespace) && !name.contains(char::is_whitespace));
    format!("+ {store} {name} {bytes}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("s".to_string(), name.to_string())
    }

    #[test]
    fn two_views_follow_each_others_records_and_a_cut_record_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (Ledger::new(root.path()), Ledger::new(root.path()));
        assert!(!a.sync().unwrap());
        a.rebuild([(key("x"), 10)]).unwrap();
        assert!(b.sync().unwrap());
        assert_eq!(b.used(), 10);
        b.record(&[], Some((&key("y"), 5))).unwrap();
        a.sync().unwrap();
        assert_eq!((a.used(), a.has(&key("y"))), (15, true));
        a.record(&[key("x")], Some((&key("z"), 7))).unwrap();
        // A writer died mid-record.
        let mut f = File::options()
            .append(true)
            .open(root.path().join(LEDGER_FILE))
            .unwrap();
        f.write_all(b"+ s w 99").unwrap();
        b.sync().unwrap();
        assert_eq!((b.used(), b.has(&key("x")), b.has(&key("w"))), (12, false, false));
        b.record(&[], Some((&key("v"), 1))).unwrap();
        a.sync().unwrap();
        assert_eq!((a.used(), a.has(&key("v"))), (13, true));
        // A rebuild replaces the file: the other view reads it whole.
        b.rebuild([(key("q"), 3)]).unwrap();
        a.sync().unwrap();
        assert_eq!(a.entries().collect::<Vec<_>>(), vec![(&key("q"), 3)]);
    }
}
