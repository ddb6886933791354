//! Read-ahead and release-behind for a local store, from the known order.
//!
//! As the reads advance through the plan, the kernel is asked (`posix_fadvise(WILLNEED)`,
//! which starts the reads and returns) for the pages of the samples coming within
//! [`LOCAL_AHEAD_BYTES`]. A store larger than the page cache then has its next samples on
//! their way from the disk before a worker faults on them, instead of one small
//! synchronous read per fault.
//!
//! When the store is larger than the memory it may use ([`memory_budget`], against
//! [`RELEASE_FRACTION`] of it), the reader bypasses the page cache instead (`O_DIRECT`
//! into its own buffers, `direct.rs`). Where that is refused (a filesystem without
//! `O_DIRECT`, or `ShardReader::with_direct_reads(false)`), the pages already read are
//! given back
//! (`madvise(MADV_DONTNEED)` on the map, then `posix_fadvise(DONTNEED)`), a chunk of
//! [`RELEASE_CHUNK`] bytes of a shard as soon as every sample of the plan in it has been
//! read: each sample is read once an epoch, so they are the pages needed last. Left to
//! itself, the kernel would reclaim first the pages read ahead and not yet touched (they
//! sit on the inactive list), and the read-ahead would be read twice. Whole aligned
//! chunks, because the page cache holds a file in folios of up to 2 MiB, and a folio
//! partly outside the range is not dropped. A store that fits keeps its pages for the
//! next epoch. Samples outside the plan (another rank's) are not waited for: a rank that
//! shares the node re-reads what it had not mapped yet.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many bytes of upcoming samples are asked for ahead of the reads. Pages read ahead
/// but not yet used are the first the kernel reclaims under pressure, so more is not
/// better (bench/RESULTS.md).
pub const LOCAL_AHEAD_BYTES: u64 = 32 << 20;

/// A store whose shards take more than this fraction of [`memory_budget`] (in
/// hundredths) gives back the pages of the samples it has read.
pub const RELEASE_FRACTION: u64 = 75;

/// The unit of release: an aligned chunk of a shard, once all its planned samples are read.
pub const RELEASE_CHUNK: u64 = 2 << 20;

/// One local shard as the read-ahead sees it: its file and its map.
#[derive(Clone, Copy)]
pub(crate) struct Mapped<'a> {
    pub file: &'a File,
    pub map: &'a [u8],
}

/// The plan and how far it has been advised and released.
#[derive(Default)]
pub(crate) struct LocalAhead {
    state: Mutex<Option<Advised>>,
}

struct Advised {
    /// `(shard, offset, len)` of each position's payload.
    spans: Vec<(usize, u64, u64)>,
    /// Positions before this one were advised.
    next: usize,
    /// With release-behind, the planned samples not yet read in each chunk of each
    /// shard ([`RELEASE_CHUNK`]); `None` without.
    unread: Option<Vec<Vec<u32>>>,
    /// Positions before this one were counted as read.
    released: usize,
}

impl LocalAhead {
    /// A new plan: `spans[p]` is the payload of position `p`; `release` gives back the
    /// pages of the positions passed ([`releases`]).
    pub fn plan(&self, spans: Vec<(usize, u64, u64)>, release: bool, shards: &[Mapped<'_>]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let unread = release.then(|| count_chunks(&spans, shards));
        let a = st.insert(Advised {
            spans,
            next: 0,
            unread,
            released: 0,
        });
        advise(a, 0, shards);
    }

    /// The reads have reached `position`: release what lies before it (when the plan
    /// does) and advise what lies within the window past it.
    pub fn advance(&self, position: usize, shards: &[Mapped<'_>]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = st.as_mut() {
            release_before(a, position, shards);
            advise(a, position, shards);
        }
    }
}

/// True when a store of `store_bytes` should give back the pages it has read, within a
/// budget of `budget` bytes.
pub fn releases(store_bytes: u64, budget: u64) -> bool {
    store_bytes as u128 * 100 > budget as u128 * RELEASE_FRACTION as u128
}

fn advise(a: &mut Advised, position: usize, shards: &[Mapped<'_>]) {
    let end = a.spans.len();
    let mut ahead: u64 = a.spans[position.min(end)..a.next.max(position).min(end)]
        .iter()
        .map(|s| s.2)
        .sum();
    a.next = a.next.max(position);
    while a.next < end && ahead < LOCAL_AHEAD_BYTES {
        let (shard, offset, len) = a.spans[a.next];
        will_need(shards[shard].file, offset, len);
        ahead += len;
        a.next += 1;
    }
}

/// The planned samples in each chunk of each shard (a sample across a chunk boundary
/// counts in both).
fn count_chunks(spans: &[(usize, u64, u64)], shards: &[Mapped<'_>]) -> Vec<Vec<u32>> {
    let mut unread: Vec<Vec<u32>> = shards
        .iter()
        .map(|s| vec![0; (s.map.len() as u64).div_ceil(RELEASE_CHUNK) as usize])
        .collect();
    for &(shard, offset, len) in spans {
        for c in chunks(offset, len) {
            if let Some(n) = unread[shard].get_mut(c) {
                *n += 1;
            }
        }
    }
    unread
}

/// The chunks that bytes `offset..offset + len` touch.
fn chunks(offset: u64, len: u64) -> std::ops::Range<usize> {
    let first = offset / RELEASE_CHUNK;
    let last = (offset + len.max(1) - 1) / RELEASE_CHUNK;
    first as usize..last as usize + 1
}

/// Counts the positions before `position` as read, and gives back each chunk left with
/// no planned sample unread.
fn release_before(a: &mut Advised, position: usize, shards: &[Mapped<'_>]) {
    let Some(unread) = a.unread.as_mut() else { return };
    let end = position.min(a.spans.len());
    while a.released < end {
        let (shard, offset, len) = a.spans[a.released];
        for c in chunks(offset, len) {
            if let Some(n) = unread[shard].get_mut(c) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    release(shards[shard], c as u64 * RELEASE_CHUNK, RELEASE_CHUNK);
                }
            }
        }
        a.released += 1;
    }
}

#[cfg(target_os = "linux")]
fn will_need(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is open for the call; the advice reads no memory of ours. A failure
    // only loses the hint.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset as i64, len as i64, libc::POSIX_FADV_WILLNEED);
    }
}

/// Gives back the chunk-aligned range `offset..offset + len` of a shard (cut at its
/// end): out of this process's page tables, then out of the page cache.
#[cfg(target_os = "linux")]
fn release(shard: Mapped<'_>, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let end = (offset + len).min(shard.map.len() as u64);
    let Some(range) = shard.map.get(offset as usize..end as usize) else {
        return;
    };
    if range.is_empty() {
        return;
    }
    // SAFETY: the range lies within the map and starts on a page (the map does, and the
    // offset is a multiple of the chunk). The map is a read-only shared mapping of a file, so MADV_DONTNEED only drops
    // its page-table entries: a later read faults the same bytes in again from the page
    // cache or the file, so what any `&[u8]` into it reads does not change. A failure
    // only keeps the pages.
    unsafe {
        libc::madvise(range.as_ptr() as *mut libc::c_void, range.len(), libc::MADV_DONTNEED);
        libc::posix_fadvise(
            shard.file.as_raw_fd(),
            offset as i64,
            range.len() as i64,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn will_need(_file: &File, _offset: u64, _len: u64) {}

#[cfg(not(target_os = "linux"))]
fn release(_shard: Mapped<'_>, _offset: u64, _len: u64) {}

/// The memory this process may fill, in bytes: the least of the machine's memory and
/// the limits of its memory cgroup and the cgroup's ancestors (v2 `memory.max`, v1
/// `memory.limit_in_bytes`). The page cache of the files it reads counts against a
/// cgroup's limit.
pub fn memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_total(&t))
        .unwrap_or(u64::MAX);
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    total.min(cgroup_limit(&cgroups, Path::new("/sys/fs/cgroup")).unwrap_or(u64::MAX))
}

/// `MemTotal` of `/proc/meminfo`'s text, in bytes.
fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The least memory limit on the cgroups that `/proc/self/cgroup`'s text names, below
/// the cgroup mount `root`, each cgroup's ancestors included (inside a container the
/// path named may be the host's; its nearest existing ancestor is then the container's).
fn cgroup_limit(text: &str, root: &Path) -> Option<u64> {
    let mut least: Option<u64> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (mount, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir: PathBuf = mount.join(path.trim_start_matches('/'));
        loop {
            if let Some(limit) = read_limit(&dir.join(file)) {
                least = Some(least.map_or(limit, |l| l.min(limit)));
            }
            if dir == mount || !dir.pop() {
                break;
            }
        }
    }
    least
}

/// A limit file's value; `None` for "max" or an unreadable file.
fn read_limit(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_least_limit_on_the_cgroup_and_its_ancestors() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/memory.max"), "1000\n").unwrap();
        std::fs::write(r.join("a/b/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit("0::/a/b\n", r), Some(1000));
        std::fs::write(r.join("a/b/memory.max"), "400\n").unwrap();
        assert_eq!(cgroup_limit("0::/a/b\n", r), Some(400));
        // v1: the memory controller's hierarchy; a path from outside a container falls
        // back to the nearest folder that exists.
        std::fs::create_dir_all(r.join("memory/job")).unwrap();
        std::fs::write(r.join("memory/job/memory.limit_in_bytes"), "300\n").unwrap();
        assert_eq!(cgroup_limit("5:cpu,cpuacct:/x\n4:memory:/job\n", r), Some(300));
        assert_eq!(cgroup_limit("4:memory:/job/host/view\n", r), Some(300));
        assert_eq!(cgroup_limit("5:cpu:/job\n", r), None);
        assert_eq!(cgroup_limit("", r), None);
        assert_eq!(
            meminfo_total("MemTotal:       24576 kB\nMemFree: 1 kB\n"),
            Some(24576 * 1024)
        );
        assert!(memory_budget() > 0);
    }

    #[test]
    fn only_a_store_over_three_quarters_of_the_budget_is_released() {
        assert!(!releases(750, 1000));
        assert!(releases(751, 1000));
        assert!(!releases(u64::MAX / 2, u64::MAX));
        assert!(releases(u64::MAX, u64::MAX / 2));
    }
}
