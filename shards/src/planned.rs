//! Planned block reads: the engine shared by a remote store and a local store read
//! around the page cache (`direct.rs`).
//!
//! A store's samples are grouped into [blocks](crate::blocks). The reader is told the
//! order in which samples will be asked for ([`Planned::set_plan`]) and how far the
//! asking has come ([`Planned::advance`]); fetcher threads then load the blocks coming
//! next in that order, within a bounded number of bytes, and each block is held while
//! the plan still needs it. Where a block comes from (a ranged GET and the cache, or an
//! `O_DIRECT` read) is the [`Source`]'s business.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memmap2::Mmap;

use crate::blocks::Blocks;
use crate::error::{Error, Result};

/// A block's bytes as the reader holds them: mapped from a remote store's cache, in
/// memory, or read around the page cache into an aligned buffer.
pub(crate) enum BlockData {
    Mapped(Mmap),
    Memory(bytes::Bytes),
    Direct(crate::direct::Aligned),
}

impl std::ops::Deref for BlockData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BlockData::Mapped(m) => m,
            BlockData::Memory(b) => b,
            BlockData::Direct(a) => a,
        }
    }
}

/// Where blocks come from.
pub(crate) trait Source: Send + Sync + Sized + 'static {
    /// Block `n`'s bytes; `ahead` when a fetcher thread, not a reader, asks. `planned`
    /// tells when blocks are needed next (for a cache's eviction).
    fn load(&self, planned: &Planned<Self>, n: usize, ahead: bool) -> Result<Arc<BlockData>>;

    /// The error for a read refused in a child forked after the store was opened.
    fn forked_error(&self) -> Error;

    /// Counts the time a reader waited for a block.
    fn count_wait(&self, _waited: Duration) {}
}

/// The order the samples will be asked in: each position's block, and each block's
/// positions (ascending).
struct Plan {
    at: Vec<u32>,
    uses: Vec<Vec<u32>>,
}

/// What the reader holds: blocks loaded, and those being loaded.
#[derive(Default)]
struct State {
    resident: HashMap<usize, Arc<BlockData>>,
    fetching: HashSet<usize>,
    /// With a plan, the reads served from each block: a block is dropped once they are
    /// as many as the plan's uses of it.
    served: HashMap<usize, u32>,
    /// Without a plan, the most recent blocks, oldest first (a few are kept).
    recent: VecDeque<usize>,
}

/// Without a plan, how many blocks stay resident.
const RECENT_BLOCKS: usize = 4;

/// A store's planned reading state, shared by readers and fetcher threads.
pub(crate) struct Planned<S> {
    pub source: S,
    blocks: Blocks,
    state: Mutex<State>,
    changed: Condvar,
    plan: RwLock<Option<Arc<Plan>>>,
    position: AtomicUsize,
    ahead_bytes: u64,
    /// How long a reader waits for a block another thread is loading before it loads
    /// the block itself.
    patience: Duration,
    stop: AtomicBool,
    /// The process that opened the store: its threads do not survive a `fork`, so a
    /// child must open the store again.
    pid: u32,
}

/// The reader's handle: the state, and the fetcher threads it stops when dropped.
pub(crate) struct Handle<S: Source> {
    pub planned: Arc<Planned<S>>,
    fetchers: Vec<JoinHandle<()>>,
}

impl<S: Source> Handle<S> {
    /// Starts `threads` fetcher threads (named `name-i`) over `blocks` of `source`, each
    /// loading ahead within `ahead_bytes`.
    pub fn start(
        source: S,
        blocks: Blocks,
        ahead_bytes: u64,
        patience: Duration,
        threads: usize,
        name: &str,
    ) -> Result<Self> {
        let planned = Arc::new(Planned {
            source,
            blocks,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            plan: RwLock::new(None),
            position: AtomicUsize::new(0),
            ahead_bytes,
            patience,
            stop: AtomicBool::new(false),
            pid: std::process::id(),
        });
        let mut handle = Handle {
            planned,
            fetchers: Vec::new(),
        };
        for i in 0..threads {
            let p = handle.planned.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || p.fetch_ahead())
                .map_err(crate::io_err(Path::new("fetcher thread")))?;
            handle.fetchers.push(thread);
        }
        Ok(handle)
    }
}

impl<S: Source> Drop for Handle<S> {
    fn drop(&mut self) {
        self.planned.stop.store(true, Ordering::SeqCst);
        self.planned.changed.notify_all();
        if self.planned.forked() {
            // A forked child: the fetcher threads are the parent's; there is nothing to join.
            std::mem::forget(std::mem::take(&mut self.fetchers));
            return;
        }
        // A fetcher waiting on the network (a request retried until its deadline) is
        // not waited for beyond JOIN_PATIENCE: dropping its handle detaches it, and it
        // ends after that request, holding nothing but its share of the engine.
        let deadline = Instant::now() + JOIN_PATIENCE;
        for f in self.fetchers.drain(..) {
            while !f.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if f.is_finished() {
                let _ = f.join();
            }
        }
    }
}

/// How long dropping a [`Handle`] waits for its fetchers to finish the read each has
/// under way.
const JOIN_PATIENCE: Duration = Duration::from_secs(2);

impl<S: Source> Planned<S> {
    /// The blocks.
    pub fn blocks(&self) -> &Blocks {
        &self.blocks
    }

    /// The number of the block holding row `row` of shard `shard`, and its first byte.
    pub fn block_of(&self, shard: usize, row: u64) -> (usize, u64) {
        let n = self.blocks.of(shard, row);
        (n, self.blocks.all()[n].start)
    }

    /// Sets the order of the reads to come (ids), from position 0.
    pub fn set_plan(&self, ids: &[u64], locate: impl Fn(u64) -> (usize, u64)) {
        if self.forked() {
            // A fetcher of the parent may have held these locks at the fork; the child's
            // reads are refused anyway ([`Planned::block`]).
            return;
        }
        let mut uses = vec![Vec::new(); self.blocks.len()];
        let at: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                let (shard, row) = locate(id);
                let n = self.blocks.of(shard, row);
                uses[n].push(p as u32);
                n as u32
            })
            .collect();
        *self.plan.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Plan { at, uses }));
        self.position.store(0, Ordering::SeqCst);
        let mut st = self.state();
        st.resident.clear();
        st.served.clear();
        drop(st);
        self.changed.notify_all();
    }

    /// The reads have reached `position` of the plan.
    pub fn advance(&self, position: usize) {
        if self.forked() {
            return;
        }
        self.position.store(position, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plan_now(&self) -> Option<Arc<Plan>> {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The position at which block `n` is next needed (`u64::MAX`: not again); without
    /// a plan, now.
    pub fn next_use_now(&self, n: usize) -> u64 {
        self.next_use(self.plan_now().as_deref(), n)
    }

    fn next_use(&self, plan: Option<&Plan>, n: usize) -> u64 {
        let Some(plan) = plan else { return 0 };
        let pos = self.position.load(Ordering::SeqCst) as u32;
        let uses = &plan.uses[n];
        let i = uses.partition_point(|&p| p < pos);
        uses.get(i).map_or(u64::MAX, |&p| p as u64)
    }

    /// Drops blocks from those held (a cache evicted them).
    pub fn forget(&self, blocks: impl IntoIterator<Item = usize>) {
        let mut st = self.state();
        for n in blocks {
            st.resident.remove(&n);
        }
    }

    /// True in a child forked after the store was opened.
    pub fn forked(&self) -> bool {
        std::process::id() != self.pid
    }

    /// Block `n`'s bytes: resident, or loaded here (waiting for a fetcher that is
    /// already on it).
    pub fn block(&self, n: usize) -> Result<Arc<BlockData>> {
        if self.forked() {
            return Err(self.source.forked_error());
        }
        let start = Instant::now();
        let mut waited = false;
        let mut st = self.state();
        loop {
            if let Some(d) = st.resident.get(&n).cloned() {
                if waited {
                    self.source.count_wait(start.elapsed());
                }
                self.served(&mut st, n);
                return Ok(d);
            }
            if !st.fetching.contains(&n) || start.elapsed() > self.patience {
                break;
            }
            waited = true;
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.fetching.insert(n);
        drop(st);
        let loaded = self.source.load(self, n, false);
        let mut st = self.state();
        st.fetching.remove(&n);
        let out = loaded.inspect(|d| {
            self.keep(&mut st, n, d);
            self.served(&mut st, n);
        });
        drop(st);
        self.changed.notify_all();
        self.source.count_wait(start.elapsed());
        out
    }

    /// Counts a read served from block `n`: the block is dropped once every planned read
    /// of it is served.
    fn served(&self, st: &mut State, n: usize) {
        let Some(plan) = self.plan_now() else { return };
        let count = st.served.entry(n).or_insert(0);
        *count += 1;
        if *count as usize >= plan.uses[n].len() {
            st.resident.remove(&n);
        }
    }

    /// Makes block `n` resident, and drops the blocks not needed again (with a plan) or
    /// beyond the few most recent (without).
    fn keep(&self, st: &mut State, n: usize, d: &Arc<BlockData>) {
        st.resident.insert(n, d.clone());
        match self.plan_now() {
            Some(plan) => st
                .resident
                .retain(|&b, _| b == n || self.next_use(Some(&plan), b) != u64::MAX),
            None => {
                st.recent.retain(|&b| b != n);
                st.recent.push_back(n);
                while st.recent.len() > RECENT_BLOCKS {
                    if let Some(old) = st.recent.pop_front() {
                        st.resident.remove(&old);
                    }
                }
            }
        }
    }

    /// A fetcher thread: takes the next block the plan needs within the read-ahead
    /// window that nobody holds or loads, loads it, and repeats until stopped.
    fn fetch_ahead(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let Some(n) = self.next_to_fetch() else {
                let st = self.state();
                let _ = self.changed.wait_timeout(st, Duration::from_millis(50));
                continue;
            };
            let loaded = self.source.load(&self, n, true);
            let mut st = self.state();
            st.fetching.remove(&n);
            if let Ok(d) = &loaded {
                self.keep(&mut st, n, d);
            }
            // A failure is left to the reader that needs the block: it loads it again and
            // reports the error itself.
            drop(st);
            self.changed.notify_all();
            if loaded.is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The first block, in the plan's order from the current position and within the
    /// read-ahead window, that is neither resident nor being loaded; marked as loaded.
    fn next_to_fetch(&self) -> Option<usize> {
        let plan = self.plan_now()?;
        let pos = self.position.load(Ordering::SeqCst);
        let mut st = self.state();
        let mut window = 0u64;
        let mut seen = HashSet::new();
        for &n in plan.at.get(pos..)? {
            let n = n as usize;
            let done = st.served.get(&n).is_some_and(|&c| c as usize >= plan.uses[n].len());
            if !seen.insert(n) || done {
                continue;
            }
            // Blocks held or being read count, so the window bounds what is held ahead.
            window += self.blocks.all()[n].len();
            if window > self.ahead_bytes && seen.len() > 1 {
                return None;
            }
            if !st.resident.contains_key(&n) && !st.fetching.contains(&n) {
                st.fetching.insert(n);
                return Some(n);
            }
        }
        None
    }
}
