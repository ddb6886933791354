//! `slotcon-bench loader`: the two-view loader's throughput over a shard store, with a
//! checksum of its first batches that proves the output does not depend on the worker
//! count.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use slotcon_augment::{LoaderBuilder, TwoViewBatch};
use slotcon_shards::{RemoteSettings, RemoteStats, ShardReader};

use crate::error::{Error, Result};

/// Settings of a loader run.
#[derive(Clone, Debug)]
pub struct LoaderRun {
    /// Worker threads.
    pub workers: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Wall time to run for (whole epochs are repeated as needed).
    pub seconds: f64,
    /// Seed of the order and the draws.
    pub seed: u64,
    /// Batches that go into the checksum.
    pub checksum_batches: usize,
    /// Run exactly this many whole epochs (each timed on its own) instead of `seconds`.
    pub epochs: Option<u64>,
    /// How a remote store is read (ignored for a folder).
    pub store: RemoteSettings,
    /// The epoch order.
    pub order: slotcon_augment::Order,
}

/// One epoch's figures, when the run counts epochs.
#[derive(Clone, Debug, Serialize)]
pub struct EpochFigure {
    /// The epoch.
    pub epoch: u64,
    /// Samples delivered.
    pub samples: u64,
    /// Wall time from building the epoch's loader to its last batch.
    pub seconds: f64,
    /// Samples per second.
    pub img_per_sec: f64,
    /// `img_per_sec / workers`.
    pub img_per_sec_per_core: f64,
    /// A remote store's counters over this epoch alone.
    pub remote: Option<RemoteStats>,
    /// When the epoch began, in seconds since the Unix epoch: how two stores' epochs
    /// interleaved (`--against`).
    pub started_unix: f64,
}

/// What a loader run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoaderBench {
    /// Always `"loader"`.
    pub bench: &'static str,
    /// `encoded` or `raw`.
    pub store: String,
    /// Images in the store.
    pub images: u64,
    /// Worker threads.
    pub workers: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// The epoch order (`Global`, or `Block` with its run and window).
    pub order: String,
    /// Two-view samples delivered.
    pub samples: u64,
    /// Wall time from the first batch request to the last batch.
    pub seconds: f64,
    /// Samples per second.
    pub img_per_sec: f64,
    /// `img_per_sec / workers`.
    pub img_per_sec_per_core: f64,
    /// Median time `next()` waited for a batch, ms.
    pub p50_batch_ms: f64,
    /// 99th percentile of that wait, ms.
    pub p99_batch_ms: f64,
    /// Peak resident memory of the process, MiB (`VmHWM`): the anonymous memory plus the
    /// shard pages the memory map has touched.
    pub peak_rss_mib: f64,
    /// Peak anonymous resident memory (`RssAnon`, sampled at every batch), MiB: the
    /// loader's own buffers, the workers' decode buffers and scratch, the index.
    pub peak_anon_mib: f64,
    /// Peak file-backed resident memory (`RssFile`), MiB: mostly the shard pages read
    /// through the memory map, which the kernel may drop at will (page cache).
    pub peak_mapped_mib: f64,
    /// The batch buffers the loader allocated, MiB.
    pub buffers_mib: f64,
    /// The loader's own bound on its memory (`Loader::memory_bytes`), MiB: the batch
    /// buffers and each worker's decode and resize buffers for the store's largest image.
    pub memory_bound_mib: f64,
    /// Anonymous resident memory before the first loader was built, MiB: the process
    /// and the store's index, which the loader's bound does not count.
    pub start_anon_mib: f64,
    /// DESIGN's bound on the loader's memory: the `prefetch + 2` batch buffers + 200 MB.
    pub anon_budget_mib: f64,
    /// `peak_anon_mib <= anon_budget_mib`.
    pub anon_within_budget: bool,
    /// `peak_anon_mib - start_anon_mib <= memory_bound_mib`: the loader kept to its own
    /// bound, whatever the store's images.
    pub anon_within_bound: bool,
    /// CRC-32C over ids, views, boxes and flips of the first batches of epoch 0.
    pub checksum: String,
    /// Samples skipped because they do not decode.
    pub skipped: usize,
    /// Each epoch's figures (with `--epochs`).
    pub epochs: Vec<EpochFigure>,
    /// A remote store's counters over the whole run (`None` for a folder): requests per
    /// sample, bytes fetched per byte used, cache hits, retries, the workers' wait.
    pub remote: Option<RemoteStats>,
}

/// Runs the loader over `shards` for about `run.seconds`, or for `run.epochs` whole
/// epochs; `progress` sees the seconds run so far and the rate.
pub fn bench_loader(shards: &Path, run: &LoaderRun, progress: &mut dyn FnMut(f64, f64)) -> Result<LoaderBench> {
    let mut session = Session::open(shards, run)?;
    while session.epoch(progress)? {}
    Ok(session.finish())
}

/// A loader run taken one epoch at a time, so that two stores' runs can alternate
/// epochs in one process (`slotcon-bench loader --against`): what slows the machine for
/// a while then slows both. Its clock counts only its own epochs.
pub struct Session<'r> {
    run: &'r LoaderRun,
    shards: std::path::PathBuf,
    reader: Arc<ShardReader>,
    builder: LoaderBuilder,
    next_epoch: u64,
    done: bool,
    /// The time run so far, from the first batch (thread start-up excluded, as in
    /// baseline.py), this session's epochs only.
    active: Duration,
    first: bool,
    previous: Option<slotcon_augment::Loader>,
    waits: Vec<f64>,
    samples: u64,
    skipped: usize,
    crc: u32,
    summed: usize,
    at_start: Resident,
    peak: Resident,
    buffers: usize,
    bound: u64,
    figures: Vec<EpochFigure>,
}

impl<'r> Session<'r> {
    /// Opens the store and builds nothing yet.
    pub fn open(shards: &Path, run: &'r LoaderRun) -> Result<Self> {
        // A wall time that is no duration is refused before any work.
        Duration::try_from_secs_f64(run.seconds)
            .map_err(|e| Error::Data(format!("{} seconds is not a duration to run for: {e}", run.seconds)))?;
        let reader = Arc::new(ShardReader::open_with(shards, &run.store)?);
        let builder = LoaderBuilder::new(Arc::clone(&reader))
            .workers(run.workers)
            .batch_size(run.batch_size)
            .order(run.order)
            .seed(run.seed);
        let at_start = Resident::now();
        Ok(Session {
            run,
            shards: shards.to_path_buf(),
            reader,
            builder,
            next_epoch: 0,
            done: false,
            active: Duration::ZERO,
            first: true,
            previous: None,
            waits: Vec::new(),
            samples: 0,
            skipped: 0,
            crc: 0,
            summed: 0,
            at_start,
            peak: at_start,
            buffers: 0,
            bound: 0,
            figures: Vec::new(),
        })
    }

    /// Runs the next epoch (or, without `run.epochs`, until the wall time is spent);
    /// false once the run is over, with nothing run.
    pub fn epoch(&mut self, progress: &mut dyn FnMut(f64, f64)) -> Result<bool> {
        let run = self.run;
        let epoch = self.next_epoch;
        if self.done || run.epochs.is_some_and(|n| epoch >= n) {
            return Ok(false);
        }
        self.next_epoch += 1;
        let budget = Duration::from_secs_f64(run.seconds);
        let (epoch_start, epoch_remote) = (Instant::now(), self.reader.remote_stats());
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut segment = epoch_start;
        let mut epoch_samples = 0;
        // Each epoch takes over the last one's buffers, as a trainer does.
        let mut loader = self.builder.clone().epoch(epoch).build_after(self.previous.take())?;
        if loader.steps_per_epoch() == 0 {
            return Err(Error::Data(format!(
                "{}: {} images make no batch of {}",
                self.shards.display(),
                self.reader.len(),
                run.batch_size
            )));
        }
        self.buffers = loader.buffer_bytes();
        self.bound = loader.memory_bytes();
        loop {
            let t = Instant::now();
            let Some(batch) = loader.next() else { break };
            self.peak = self.peak.max(Resident::now());
            self.waits.push(t.elapsed().as_secs_f64() * 1e3);
            let batch = batch?;
            if self.summed < run.checksum_batches {
                self.crc = checksum(self.crc, &batch);
                self.summed += 1;
            }
            self.skipped += batch.skipped().len();
            epoch_samples += batch.len() as u64;
            if std::mem::take(&mut self.first) {
                (segment, self.waits) = (Instant::now(), Vec::new());
                continue;
            }
            self.samples += batch.len() as u64;
            let elapsed = self.active + segment.elapsed();
            progress(elapsed.as_secs_f64(), self.samples as f64 / elapsed.as_secs_f64());
            if run.epochs.is_none() && elapsed >= budget && self.summed >= run.checksum_batches {
                self.done = true;
                break;
            }
        }
        self.active += segment.elapsed();
        let seconds = epoch_start.elapsed().as_secs_f64();
        self.figures.push(EpochFigure {
            epoch,
            samples: epoch_samples,
            seconds,
            img_per_sec: epoch_samples as f64 / seconds,
            img_per_sec_per_core: epoch_samples as f64 / seconds / run.workers as f64,
            remote: self
                .reader
                .remote_stats()
                .map(|now| now.since(&epoch_remote.unwrap_or_default())),
            started_unix,
        });
        self.previous = Some(loader);
        Ok(!self.done)
    }

    /// The run's figures.
    pub fn finish(mut self) -> LoaderBench {
        let run = self.run;
        let seconds = self.active.as_secs_f64();
        let budget_mib = (self.buffers as f64 + LOADER_OVERHEAD_BYTES) / MIB;
        let bound_mib = self.bound as f64 / MIB;
        LoaderBench {
            bench: "loader",
            store: format!("{:?}", self.reader.store()).to_lowercase(),
            images: self.reader.len(),
            workers: run.workers,
            batch_size: run.batch_size,
            order: format!("{:?}", run.order),
            samples: self.samples,
            seconds,
            img_per_sec: self.samples as f64 / seconds,
            img_per_sec_per_core: self.samples as f64 / seconds / run.workers as f64,
            p50_batch_ms: percentile(&mut self.waits, 0.5),
            p99_batch_ms: percentile(&mut self.waits, 0.99),
            peak_rss_mib: peak_rss_mib(),
            peak_anon_mib: self.peak.anon_mib,
            peak_mapped_mib: self.peak.file_mib,
            buffers_mib: self.buffers as f64 / MIB,
            memory_bound_mib: bound_mib,
            start_anon_mib: self.at_start.anon_mib,
            anon_budget_mib: budget_mib,
            anon_within_budget: self.peak.anon_mib <= budget_mib,
            anon_within_bound: self.peak.anon_mib - self.at_start.anon_mib <= bound_mib,
            checksum: format!("{:08x}", self.crc),
            skipped: self.skipped,
            epochs: if run.epochs.is_some() { self.figures } else { Vec::new() },
            remote: self.reader.remote_stats(),
        }
    }
}

/// Folds a batch's ids, views, boxes and flips into a running CRC-32C.
pub fn checksum(crc: u32, b: &TwoViewBatch) -> u32 {
    let mut crc = crc;
    for id in b.ids() {
        crc = crc32c::crc32c_append(crc, &id.to_le_bytes());
    }
    for v in b.views() {
        crc = crc32c::crc32c_append(crc, v);
    }
    for pair in b.boxes() {
        for v in pair.iter().flatten() {
            crc = crc32c::crc32c_append(crc, &v.to_le_bytes());
        }
    }
    for f in b.flips() {
        crc = crc32c::crc32c_append(crc, &[f[0] as u8, f[1] as u8]);
    }
    crc
}

fn percentile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

const MIB: f64 = 1024.0 * 1024.0;

/// DESIGN's allowance for everything but the batch buffers: 200 MB.
const LOADER_OVERHEAD_BYTES: f64 = 200e6;

/// The process's resident memory by kind, from `/proc/self/status` (zeros where it is
/// missing).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resident {
    /// `RssAnon` + `RssShmem`, MiB.
    pub anon_mib: f64,
    /// `RssFile`, MiB: file pages mapped in, such as the shards'.
    pub file_mib: f64,
}

impl Resident {
    /// The process's resident memory now.
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| status_kib(&status, key).unwrap_or(0.0) / 1024.0;
        Resident {
            anon_mib: kib("RssAnon:") + kib("RssShmem:"),
            file_mib: kib("RssFile:"),
        }
    }

    /// The larger of each kind.
    pub fn max(self, other: Self) -> Self {
        Resident {
            anon_mib: self.anon_mib.max(other.anon_mib),
            file_mib: self.file_mib.max(other.file_mib),
        }
    }
}

/// The value of `key` (e.g. `VmHWM:`) in `/proc/self/status` text, in kB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    let value = status.lines().find_map(|l| l.strip_prefix(key))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The process's peak resident set (`VmHWM`), in MiB; 0 where /proc is missing.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_kib(&status, "VmHWM:").unwrap_or(0.0) / 1024.0
}
