//! The multi-threaded two-view loader over a shard store.
//!
//! ```text
//! consumer (Loader::next) ──tasks (slot, pos)──► workers ──(step, slot)──► consumer
//!        ▲                                        │ write views, boxes, flips
//!        └──────── free slots ◄── TwoViewBatch::drop   straight into the slot
//! ```
//!
//! - `prefetch + 2` batch buffers are allocated once and recycled; a worker renders each
//!   sample directly into its position of a buffer, so nothing is allocated per sample
//!   (the JPEG decoder's internal buffers aside).
//! - Work moves through crossbeam channels; the only shared state a worker touches per
//!   sample is its own positions and one atomic counter per batch.
//! - The order of an epoch depends on `(seed, epoch)` only, the draws of a sample on
//!   `(seed, epoch, id, view)` only, so batches are bit-identical for any worker count,
//!   and a loader started at `(epoch, step)` continues exactly.
//! - An image that does not decode is left out of its batch and listed in
//!   [`TwoViewBatch::skipped`]; a corrupt store entry or a worker panic makes `next()`
//!   return an [`Error::Sample`] naming the id and path. Dropping the loader stops and
//!   joins its threads.

mod batch;
mod column;
pub mod order;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};
use slotcon_shards::{ShardReader, StoreKind};

pub use batch::{SkippedSample, TwoViewBatch};
pub use order::Order;

use crate::error::{Error, Result};
use crate::view::AugmentConfig;
use batch::Slot;
use worker::Task;

/// State shared by the loader and its workers.
pub(crate) struct Shared {
    reader: Arc<ShardReader>,
    cfg: AugmentConfig,
    seed: u64,
    epoch: u64,
    batch: usize,
    /// This rank's sample ids for the epoch, in order.
    share: Vec<u64>,
    slots: Vec<Slot>,
    free: (Sender<usize>, Receiver<usize>),
    stop: AtomicBool,
    /// Samples the workers have finished (rendered, skipped or failed).
    rendered: AtomicU64,
}

/// Settings of a [`Loader`]; `build()` checks them and starts the workers.
#[derive(Clone)]
pub struct LoaderBuilder {
    reader: Arc<ShardReader>,
    cfg: AugmentConfig,
    batch_size: usize,
    workers: usize,
    seed: u64,
    epoch: u64,
    rank: usize,
    world_size: usize,
    prefetch: usize,
    start_step: u64,
    order: order::Order,
}

impl LoaderBuilder {
    /// A loader over `reader` with SlotCon's augmentation, batch 64, one worker per core,
    /// seed 0, epoch 0, a single rank, prefetch 2.
    pub fn new(reader: Arc<ShardReader>) -> Self {
        LoaderBuilder {
            reader,
            cfg: AugmentConfig::slotcon(),
            batch_size: 64,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 0,
            epoch: 0,
            rank: 0,
            world_size: 1,
            prefetch: 2,
            start_step: 0,
            order: order::Order::Global,
        }
    }

    /// How the epoch's samples are ordered (default [`Order::Global`]).
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// The augmentation.
    pub fn augment(mut self, cfg: AugmentConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Samples per batch (per rank).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The seed every draw derives from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The epoch (changes the order and every draw).
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// This process's rank among `world_size` (like `DistributedSampler`, drop-last).
    pub fn distributed(mut self, rank: usize, world_size: usize) -> Self {
        (self.rank, self.world_size) = (rank, world_size);
        self
    }

    /// Batches prepared ahead of the consumer; memory is `prefetch + 2` batches.
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// Starts at `step` of the epoch (to resume exactly after `step - 1`).
    pub fn start_step(mut self, step: u64) -> Self {
        self.start_step = step;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.workers == 0 {
            return bad(format!(
                "batch size {} and workers {} must be positive",
                self.batch_size, self.workers
            ));
        }
        let most = crate::threads::max_threads();
        if self.workers > most {
            return bad(format!(
                "{} workers: at most {most} (4 per core, never more than {})",
                self.workers,
                crate::threads::THREADS_CAP
            ));
        }
        if self.world_size == 0 || self.rank >= self.world_size {
            return bad(format!("rank {} is not in a world of {}", self.rank, self.world_size));
        }
        if self.cfg.size == 0 {
            return bad("view size must be positive".into());
        }
        let (lo, hi) = self.cfg.crop.scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return bad(format!(
                "crop scale ({lo}, {hi}): the smallest crop (min_scale) must be in (0, 1], the largest in [min_scale, 1]"
            ));
        }
        Ok(())
    }

    /// The most bytes one worker's buffers can grow to for one image: the decoded region
    /// (the store's largest image at most, 4 bytes a pixel for a CMYK JPEG, 3 for the
    /// rest: a JPEG or a PNG, interlaced or not, is decoded in part; a raw store is
    /// borrowed, not decoded) and the resize's scratch ([`ops::resize::scratch_bytes`]:
    /// one band of a crop transposed, and the crop's rows resized across).
    fn decode_bytes(&self) -> u64 {
        let e = self.reader.extent();
        let resize = crate::ops::resize::scratch_bytes(e.width, e.height, self.cfg.size as u64);
        match self.reader.store() {
            StoreKind::Raw => resize,
            StoreKind::Encoded => e.pixels.saturating_mul(4).saturating_add(resize),
        }
    }

    /// The bytes of the `prefetch + 2` batch buffers, refused (before anything is
    /// allocated) when they overflow or when they and the workers' decode buffers
    /// ([`decode_bytes`](Self::decode_bytes) each) exceed the memory this machine has
    /// available.
    fn buffer_bytes(&self) -> Result<usize> {
        let size = self.cfg.size as usize;
        let bytes = self.prefetch.checked_add(2).and_then(|buffers| {
            Slot::bytes_per_sample(size)?
                .checked_mul(self.batch_size)?
                .checked_mul(buffers)
        });
        let what = || {
            format!(
                "batch size {} at {size}x{size} px needs {} batch buffers (prefetch {} + 2)",
                self.batch_size,
                self.prefetch.saturating_add(2),
                self.prefetch
            )
        };
        let Some(bytes) = bytes.filter(|&b| b <= isize::MAX as usize) else {
            return Err(Error::Config(format!("{} larger than the address space", what())));
        };
        let decode = self.decode_bytes().saturating_mul(self.workers as u64);
        if let Some(available) = available_memory() {
            if (bytes as u64).saturating_add(decode) > available {
                return Err(Error::Config(format!(
                    "{} of {:.1} GiB in all, and {} workers decoding images of up to {} pixels {:.1} GiB \
                     more, but only {:.1} GiB of memory is available",
                    what(),
                    bytes as f64 / GIB,
                    self.workers,
                    self.reader.max_pixels(),
                    decode as f64 / GIB,
                    available as f64 / GIB
                )));
            }
        }
        Ok(bytes)
    }

    /// Checks the settings (the batch against the store and the memory), allocates the
    /// batch buffers and starts the workers.
    pub fn build(self) -> Result<Loader> {
        self.build_with(None)
    }

    /// [`build`](Self::build) for the next epoch (or any other settings) after
    /// `previous` (if any), which is stopped first: its batch buffers are taken over when
    /// they fit (same batch size, view size and count) and none of its batches is still
    /// held, so that epochs follow one another without allocating and touching fresh
    /// memory, as PyTorch's `persistent_workers` do; otherwise fresh buffers are allocated.
    pub fn build_after(self, previous: Option<Loader>) -> Result<Loader> {
        let size = self.cfg.size as usize;
        let slots = previous
            .and_then(Loader::into_slots)
            .filter(|slots| slots.len() == self.prefetch + 2 && slots.iter().all(|s| s.fits(self.batch_size, size)));
        self.build_with(slots)
    }

    fn build_with(self, reuse: Option<Vec<Slot>>) -> Result<Loader> {
        self.validate()?;
        let shards: Vec<(u64, u64)> = self
            .reader
            .manifest()
            .shards
            .iter()
            .map(|s| (s.first_id, s.rows))
            .collect();
        let order = self.order.epoch(&shards, self.seed, self.epoch);
        let share = order::rank_share(&order, self.rank, self.world_size);
        if self.batch_size > share.len() {
            let whose = if self.world_size == 1 {
                format!("the {} images of the store", self.reader.len())
            } else {
                format!(
                    "the {} images of rank {}'s share of the store ({} images, {} ranks)",
                    share.len(),
                    self.rank,
                    self.reader.len(),
                    self.world_size
                )
            };
            return Err(Error::Config(format!(
                "batch size {} is larger than {whose}: no batch can be made",
                self.batch_size
            )));
        }
        let bytes = self.buffer_bytes()?;
        let decode_bytes = self.decode_bytes();
        let steps = order::steps_per_epoch(share.len(), self.batch_size);
        let buffers = self.prefetch + 2;
        let free = unbounded();
        for slot in 0..buffers {
            free.0.send(slot).expect("receiver is alive");
        }
        let fresh = || {
            (0..buffers)
                .map(|_| Slot::new(self.batch_size, self.cfg.size as usize))
                .collect::<std::result::Result<Vec<_>, _>>()
        };
        let slots = reuse.map_or_else(fresh, Ok).map_err(|e| {
            Error::Config(format!(
                "cannot allocate the {buffers} batch buffers ({:.1} GiB): {e}",
                bytes as f64 / GIB
            ))
        })?;
        let shared = Arc::new(Shared {
            reader: self.reader,
            cfg: self.cfg,
            seed: self.seed,
            epoch: self.epoch,
            batch: self.batch_size,
            share,
            slots,
            free,
            stop: AtomicBool::new(false),
            rendered: AtomicU64::new(0),
        });
        let (tasks, task_rx) = unbounded();
        let (done_tx, done) = unbounded();
        let workers = (0..self.workers)
            .map(|n| spawn_worker(n, &shared, &task_rx, &done_tx))
            .collect::<std::io::Result<_>>();
        let workers = workers.map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
        let start = self.start_step.min(steps);
        // A remote store reads ahead in this order (a local one ignores it).
        let first = (start as usize * self.batch_size).min(shared.share.len());
        shared.reader.plan(&shared.share[first..]);
        Ok(Loader {
            plan_start: start,
            shared,
            decode_bytes,
            tasks: Some(tasks),
            done,
            workers,
            next_feed: start,
            next_out: start,
            steps,
            ready: BTreeMap::new(),
            finished: false,
        })
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// `MemAvailable` of `/proc/meminfo` in bytes; `None` where there is no such file.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

fn spawn_worker(
    n: usize,
    shared: &Arc<Shared>,
    tasks: &Receiver<Task>,
    done: &Sender<(u64, usize)>,
) -> std::io::Result<JoinHandle<()>> {
    let (shared, tasks, done) = (Arc::clone(shared), tasks.clone(), done.clone());
    std::thread::Builder::new()
        .name(format!("slotcon-loader-{n}"))
        .spawn(move || worker::run(shared, tasks, done))
}

/// Yields the epoch's batches in order, as `Result<TwoViewBatch>`. See the module docs.
pub struct Loader {
    shared: Arc<Shared>,
    /// The most one worker's decode buffer holds (`LoaderBuilder::decode_bytes`).
    decode_bytes: u64,
    tasks: Option<Sender<Task>>,
    done: Receiver<(u64, usize)>,
    workers: Vec<JoinHandle<()>>,
    next_feed: u64,
    next_out: u64,
    /// The step the reader's plan starts at ([`ShardReader::plan`]).
    plan_start: u64,
    steps: u64,
    ready: BTreeMap<u64, usize>,
    finished: bool,
}

impl Loader {
    /// Full batches in this epoch for this rank.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps
    }

    /// Samples the workers have finished so far; never more than `prefetch + 2` batches
    /// ahead of what the consumer has taken.
    pub fn rendered(&self) -> u64 {
        self.shared.rendered.load(Ordering::Relaxed)
    }

    /// The number of batch buffers (`prefetch + 2`): the loader's memory in batches.
    pub fn buffers(&self) -> usize {
        self.shared.slots.len()
    }

    /// The bytes of the batch buffers, allocated once when the loader was built: the
    /// loader's own memory, besides each worker's decode buffer and scratch.
    pub fn buffer_bytes(&self) -> usize {
        let per_sample = Slot::bytes_per_sample(self.shared.cfg.size as usize).expect("checked when built");
        per_sample * self.shared.batch * self.shared.slots.len()
    }

    /// The most memory the loader's own buffers take: its batch buffers plus each
    /// worker's decode and resize buffers at their largest (`decode_bytes`: the decoded
    /// region of the store's largest image and the resize's scratch). The allocator's
    /// own overhead comes on top (docs/reliability.md: measured).
    pub fn memory_bytes(&self) -> u64 {
        self.buffer_bytes() as u64 + self.decode_bytes * self.workers.len() as u64
    }

    /// The step the next batch will have.
    pub fn next_step(&self) -> u64 {
        self.next_out
    }

    /// Schedules every free buffer for the next steps.
    fn feed(&mut self) {
        let Some(tasks) = &self.tasks else { return };
        let position = (self.next_out - self.plan_start) as usize * self.shared.batch;
        self.shared.reader.advance(position);
        while self.next_feed < self.steps {
            let Ok(slot) = self.shared.free.1.try_recv() else {
                return;
            };
            let s = &self.shared.slots[slot];
            s.step.store(self.next_feed, Ordering::Release);
            s.remaining.store(self.shared.batch, Ordering::Release);
            for pos in 0..self.shared.batch {
                if tasks.send(Task { slot, pos }).is_err() {
                    return;
                }
            }
            self.next_feed += 1;
        }
    }

    /// Waits for the buffer of the next step.
    fn wait(&mut self) -> Result<usize> {
        loop {
            if let Some(slot) = self.ready.remove(&self.next_out) {
                return Ok(slot);
            }
            let (step, slot) = self.done.recv().map_err(|_| Error::Disconnected)?;
            self.ready.insert(step, slot);
        }
    }

    fn next_batch(&mut self) -> Result<TwoViewBatch> {
        self.feed();
        if self.next_feed <= self.next_out {
            let n = self.shared.slots.len();
            return Err(Error::Config(format!(
                "all {n} batch buffers are held by the caller; drop batches before asking for more"
            )));
        }
        let slot = self.wait()?;
        // SAFETY: `wait` returned this slot because the worker that brought its
        // `remaining` counter to zero sent it through `done`: every task of the batch has
        // finished, and the `AcqRel` decrements plus the channel make all their writes
        // visible here. No worker touches the slot again until it is freed and fed anew,
        // and it is not lent as a batch yet, so this consumer has it to itself.
        let (len, skipped, failed) = unsafe { self.shared.slots[slot].settle(self.shared.batch) };
        let step = self.next_out;
        self.next_out += 1;
        if let Some((id, path, cause)) = failed {
            let _ = self.shared.free.0.send(slot);
            return Err(Error::Sample {
                id,
                path,
                cause: Box::new(cause),
            });
        }
        Ok(TwoViewBatch {
            shared: Arc::clone(&self.shared),
            slot,
            len,
            epoch: self.shared.epoch,
            step,
            skipped,
        })
    }
}

impl Iterator for Loader {
    type Item = Result<TwoViewBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.next_out >= self.steps {
            return None;
        }
        let item = self.next_batch();
        self.finished = item.is_err();
        Some(item)
    }
}

impl Loader {
    /// Stops the workers and joins them.
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.tasks = None; // workers see the channel close once the queue is drained
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Stops the loader and hands back its batch buffers, unless a batch still holds them.
    fn into_slots(mut self) -> Option<Vec<Slot>> {
        self.stop();
        let shared = Arc::clone(&self.shared);
        drop(self);
        Arc::try_unwrap(shared).ok().map(|s| s.slots)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}
