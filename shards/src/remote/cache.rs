//! The local block cache: one folder per store below a root that several processes may
//! share, with a size limit that is never exceeded.
//!
//! - A block is a file `STORE/NAME.blk` holding exactly the block's bytes. It appears
//!   whole or not at all: it is written as `STORE/.tmp-NAME` and renamed.
//! - Every write (evicting, writing, renaming) happens under an exclusive `flock` on
//!   `ROOT/.lock`, so the files below the root, temporary ones included, never add up to
//!   more than the limit. What the folder holds is counted in a ledger file beside it
//!   ([`super::ledger`]), so that a write does not list the folder. A process that dies
//!   while holding the lock leaves at most a temporary file, which the ledger counts
//!   until a later eviction or listing deletes it (no writer can be using it: writes
//!   happen under the lock). Nothing lives in shared memory.
//! - Reads take no lock: a name that exists is a whole block. A block is verified (its
//!   size, and the CRC-32C of every sample it holds) each time a process maps it; one
//!   that fails is deleted and fetched again.
//! - Eviction follows the known order: the block needed last (or never again, or of
//!   another store) goes first, and a block is never evicted for one needed later.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ledger::{Key, Ledger};
use crate::error::{io_err, Result};
use crate::lock::exclusive;

/// A cache folder for one store, below a shared root.
pub(crate) struct Cache {
    root: PathBuf,
    dir: PathBuf,
    /// This store's folder name below the root.
    key: String,
    limit: u64,
    lock: File,
    /// Threads of this process take turns here first (a `flock` is per open file, so it
    /// orders processes, not the threads sharing `lock`); the mutex holds this
    /// process's view of the ledger.
    turn: std::sync::Mutex<Ledger>,
}

/// A block file in the cache.
pub(crate) struct Entry {
    /// The store's folder name.
    pub key: String,
    /// The block's file name, without `.blk`.
    pub name: String,
    pub bytes: u64,
}

/// What [`Cache::insert`] did.
pub(crate) enum Inserted {
    /// The block is in the cache now (written here, or by another process first).
    Cached(Mmap),
    /// It would not fit without evicting blocks needed sooner: not cached.
    NoRoom,
}

const SUFFIX: &str = ".blk";
const TEMP_PREFIX: &str = ".tmp-";

impl Cache {
    /// Opens (creating) the cache `root`, with this store's folder `key`. The folder's
    /// `SOURCE` file names the store's URL, for people looking at the cache.
    pub fn open(root: &Path, key: &str, url: &str, limit: u64) -> Result<Self> {
        let dir = root.join(key);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let source = dir.join("SOURCE");
        if !source.exists() {
            crate::format::write_atomic(&source, format!("{url}\n").as_bytes())?;
        }
        let lock_path = root.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let cache = Cache {
            root: root.to_path_buf(),
            dir,
            key: key.to_string(),
            limit,
            lock,
            turn: std::sync::Mutex::new(Ledger::new(root)),
        };
        // The ledger starts from a listing once per process: what a process that died
        // left (a temporary file, a block it recorded and never wrote) is counted no more.
        let (mut ledger, _held) = cache.locked()?;
        cache.rebuild(&mut ledger)?;
        drop((ledger, _held));
        Ok(cache)
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This store's folder name below the root.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// This process's turn, then the folder's lock.
    fn locked(&self) -> Result<(std::sync::MutexGuard<'_, Ledger>, crate::lock::Held<'_>)> {
        let ledger = self.turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok((ledger, exclusive(&self.lock, &self.root)?))
    }

    /// [`Cache::locked`], with the ledger up to date.
    fn critical(&self) -> Result<(std::sync::MutexGuard<'_, Ledger>, crate::lock::Held<'_>)> {
        let (mut ledger, held) = self.locked()?;
        if !ledger.sync()? {
            self.rebuild(&mut ledger)?;
        }
        Ok((ledger, held))
    }

    /// The ledger anew from a listing of the folder (under the lock).
    fn rebuild(&self, ledger: &mut Ledger) -> Result<()> {
        let entries = self.entries_locked()?;
        ledger.rebuild(entries.into_iter().map(|e| ((e.key, e.name), e.bytes)))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    /// Where block `name` of the store folder `store` is written before its rename.
    fn temp_path(&self, store: &str, name: &str) -> PathBuf {
        self.root.join(store).join(format!("{TEMP_PREFIX}{name}"))
    }

    /// The block `name` mapped, if the cache holds it whole and `check` accepts its
    /// bytes; a block that fails is deleted (the caller fetches it again) and reported
    /// as `Err(())` inside `Ok`.
    pub fn lookup(
        &self,
        name: &str,
        len: u64,
        check: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<std::result::Result<Mmap, ()>>> {
        let path = self.path(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let size = file.metadata().map_err(io_err(&path))?.len();
        if size == len {
            let map = crate::reader::map_open(&file, &path)?;
            if check(&map) {
                return Ok(Some(Ok(map)));
            }
        }
        // Short, long or corrupt: never used. Another process may have replaced it
        // meanwhile; deleting a good block only costs a fetch.
        let (mut ledger, _held) = self.critical()?;
        remove_if_present(&path)?;
        ledger.record(&[(self.key.clone(), name.to_string())], None)?;
        Ok(Some(Err(())))
    }

    /// Writes block `name` (needed next at position `need`, `u64::MAX` when not again),
    /// evicting blocks whose next use, as `next_use(key, name)` tells, is later than
    /// `need`, farthest first. Returns the evicted blocks of this store.
    pub fn insert(
        &self,
        name: &str,
        bytes: &[u8],
        need: u64,
        next_use: impl Fn(&str, &str) -> u64,
    ) -> Result<(Inserted, Vec<String>)> {
        let len = bytes.len() as u64;
        if len > self.limit {
            return Ok((Inserted::NoRoom, Vec::new()));
        }
        let (mut ledger, _held) = self.critical()?;
        let path = self.path(name);
        let key = (self.key.clone(), name.to_string());
        if let Ok(file) = File::open(&path) {
            if file.metadata().map_err(io_err(&path))?.len() == len {
                if !ledger.has(&key) {
                    ledger.record(&[], Some((&key, len)))?;
                }
                return Ok((Inserted::Cached(crate::reader::map_open(&file, &path)?), Vec::new()));
            }
        }
        let Some(victims) = self.victims(&ledger, len, need, next_use) else {
            return Ok((Inserted::NoRoom, Vec::new()));
        };
        for (store, victim) in &victims {
            remove_if_present(&self.root.join(store).join(format!("{victim}{SUFFIX}")))?;
            remove_if_present(&self.temp_path(store, victim))?;
        }
        // Recorded before it is written: a crash leaves it counted, never uncounted.
        ledger.record(&victims, Some((&key, len)))?;
        let temp = self.temp_path(&self.key, name);
        let written = write_file(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path).map_err(io_err(&path)));
        if let Err(e) = written {
            // A full disk: nothing half-written stays, nor its record.
            remove_if_present(&temp)?;
            ledger.record(&[key], None)?;
            return Err(e);
        }
        if ledger.bloated() {
            self.rebuild(&mut ledger)?;
        }
        let file = File::open(&path).map_err(io_err(&path))?;
        let evicted = victims.into_iter().filter(|v| v.0 == self.key).map(|v| v.1).collect();
        Ok((Inserted::Cached(crate::reader::map_open(&file, &path)?), evicted))
    }

    /// The blocks to evict so that `len` more bytes fit, farthest next use first (among
    /// blocks never needed again, the largest first), none needed at or before `need`;
    /// None when that cannot make room. Beyond what `len` needs, blocks never needed
    /// again go too, up to a 64th of the limit, so that the next writes find room
    /// without ranking the cache again.
    fn victims(&self, ledger: &Ledger, len: u64, need: u64, next_use: impl Fn(&str, &str) -> u64) -> Option<Vec<Key>> {
        let mut used = ledger.used();
        if used + len <= self.limit {
            return Some(Vec::new());
        }
        let slack = self.limit / 64;
        let ranked: Vec<(u64, u64, &Key)> = ledger.entries().map(|(k, b)| (next_use(&k.0, &k.1), b, k)).collect();
        // A heap: only the few blocks evicted are ordered, not the whole cache.
        let mut heap = std::collections::BinaryHeap::from(ranked);
        let mut victims = Vec::new();
        while let Some((next, bytes, key)) = heap.pop() {
            let fits = used + len <= self.limit;
            if next <= need || (fits && (next != u64::MAX || used + len + slack <= self.limit)) {
                break;
            }
            victims.push(key.clone());
            used -= bytes;
        }
        (used + len <= self.limit).then_some(victims)
    }

    /// The bytes the cache's files hold now, temporary ones included (all stores), from
    /// a listing of the folder, not the ledger: the check of the limit.
    pub fn used(&self) -> Result<u64> {
        let (_ledger, _held) = self.critical()?;
        Ok(self.entries_locked()?.iter().map(|e| e.bytes).sum())
    }

    /// Every file below the root, each store's folder; temporary files left by a
    /// process that died are deleted (the caller holds the lock, so no writer is
    /// using them).
    fn entries_locked(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for store in read_dir(&self.root)? {
            let store = store.map_err(io_err(&self.root))?;
            if !store.file_type().map_err(io_err(&self.root))?.is_dir() {
                continue;
            }
            let key = store.file_name().to_string_lossy().into_owned();
            for file in read_dir(&store.path())? {
                let file = file.map_err(io_err(&store.path()))?;
                let file_name = file.file_name().to_string_lossy().into_owned();
                let path = file.path();
                if file_name.starts_with(TEMP_PREFIX) {
                    remove_if_present(&path)?;
                    continue;
                }
                let Some(name) = file_name.strip_suffix(SUFFIX) else {
                    continue;
                };
                let bytes = match file.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                };
                entries.push(Entry {
                    key: key.clone(),
                    name: name.to_string(),
                    bytes,
                });
            }
        }
        Ok(entries)
    }
}

fn read_dir(dir: &Path) -> Result<std::fs::ReadDir> {
    std::fs::read_dir(dir).map_err(io_err(dir))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    Ok(())
}

/// A cache limit given as text: bytes, or with a unit (`500M`, `20G`, `1.5T`, `64KiB`).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (for example 500M, 20G or 1.5T)"))?;
    let scale: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("{text:?} is not a size between 1 byte and 8 EiB"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("2 TB"), Ok(2 << 40));
        for bad in ["", "-1", "0", "1Q", "nan", "G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn eviction_keeps_the_limit_and_what_is_needed_sooner() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path(), "store", "s3://b/p/", 300).unwrap();
        let next = |pos: &[(&str, u64)]| {
            let pos: Vec<(String, u64)> = pos.iter().map(|(n, p)| (n.to_string(), *p)).collect();
            move |_: &str, name: &str| pos.iter().find(|(n, _)| n == name).map_or(u64::MAX, |p| p.1)
        };
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let (got, evicted) = cache.insert(name, &[i as u8; 100], 10, next(&[])).unwrap();
            assert!(matches!(got, Inserted::Cached(_)) && evicted.is_empty());
        }
        assert_eq!(cache.used().unwrap(), 300);
        // d is needed at 5; b (needed at 50) goes before a (at 20); c is needed at 1.
        let uses = next(&[("a", 20), ("b", 50), ("c", 1)]);
        let (got, evicted) = cache.insert("d", &[3; 100], 5, &uses).unwrap();
        assert!(matches!(got, Inserted::Cached(_)));
        assert_eq!(evicted, vec!["b".to_string()]);
        assert_eq!(cache.used().unwrap(), 300);
        // e, needed at 30, would have to evict a block needed sooner: not cached.
        let uses = next(&[("a", 20), ("c", 1), ("d", 5)]);
        let (got, evicted) = cache.insert("e", &[4; 100], 30, &uses).unwrap();
        assert!(matches!(got, Inserted::NoRoom) && evicted.is_empty());
        assert!(cache.used().unwrap() <= 300);
        // A corrupt block is deleted on lookup; a good one maps.
        let ok = cache.lookup("a", 100, |b| b.iter().all(|&x| x == 0)).unwrap();
        assert!(matches!(ok, Some(Ok(_))));
        std::fs::write(root.path().join("store/c.blk"), [9u8; 100]).unwrap();
        let bad = cache.lookup("c", 100, |b| b.iter().all(|&x| x == 2)).unwrap();
        assert!(matches!(bad, Some(Err(()))));
        assert!(!root.path().join("store/c.blk").exists());
        // A temporary file left by a dead writer is deleted by the next one.
        std::fs::write(root.path().join("store/.tmp-x"), [0u8; 50]).unwrap();
        assert_eq!(cache.used().unwrap(), 200);
        assert!(!root.path().join("store/.tmp-x").exists());
    }

    /// Two processes (two opens, two locks' holders, two ledger views) writing into one
    /// root: the limit holds by a listing after every write, the ledgers agree with the
    /// listing, and each evicts the other's blocks when they are needed last.
    #[test]
    fn two_caches_on_one_root_keep_its_limit_through_the_ledger() {
        let root = tempfile::tempdir().unwrap();
        let limit = 64 * 100;
        let a = Cache::open(root.path(), "one", "s3://b/1/", limit).unwrap();
        let b = Cache::open(root.path(), "two", "s3://b/2/", limit).unwrap();
        let never = |_: &str, _: &str| u64::MAX;
        for i in 0..400u64 {
            let (cache, name) = if i % 3 == 0 {
                (&b, format!("b{i}"))
            } else {
                (&a, format!("a{i}"))
            };
            let bytes = vec![i as u8; 50 + (i as usize * 7) % 100];
            let (got, _) = cache.insert(&name, &bytes, 0, never).unwrap();
            assert!(matches!(got, Inserted::Cached(_)), "{name}");
            let listed = a.used().unwrap();
            assert!(listed <= limit, "{listed} > {limit} after {name}");
            let counted = a.turn.lock().unwrap().used();
            assert_eq!(counted, listed, "the ledger drifted from the folder after {name}");
        }
        assert!(std::fs::read_dir(root.path().join("two")).unwrap().count() > 1);
        // A writer that died after recording a block and writing part of it, and one
        // that died mid-record: the next process to open the cache starts from a
        // listing, and the others follow its new ledger.
        let temp = root.path().join("one/.tmp-dead");
        std::fs::write(&temp, [0u8; 60]).unwrap();
        let mut ledger = File::options().append(true).open(root.path().join(".ledger")).unwrap();
        ledger.write_all(b"+ one dead 60\n+ one cut").unwrap();
        let c = Cache::open(root.path(), "one", "s3://b/1/", limit).unwrap();
        assert!(!temp.exists());
        let listed = c.used().unwrap();
        assert_eq!(c.turn.lock().unwrap().used(), listed);
        let (got, _) = a.insert("after", &[1; 80], 0, never).unwrap();
        assert!(matches!(got, Inserted::Cached(_)));
        let listed = a.used().unwrap();
        assert_eq!(a.turn.lock().unwrap().used(), listed);
    }
}
