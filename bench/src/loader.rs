//! `slotcon-bench loader`: the two-view loader's throughput over a shard store, with a
//! checksum of its first batches that proves the output does not depend on the worker
//! count.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use slotcon_augment::{LoaderBuilder, TwoViewBatch};
use slotcon_shards::ShardReader;

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
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// CRC-32C over ids, views, boxes and flips of the first batches of epoch 0.
    pub checksum: String,
    /// Samples skipped because they do not decode.
    pub skipped: usize,
}

/// Runs the loader over `shards` for about `run.seconds`; `progress` sees the seconds
/// run so far and the rate.
pub fn bench_loader(shards: &Path, run: &LoaderRun, progress: &mut dyn FnMut(f64, f64)) -> Result<LoaderBench> {
    let reader = Arc::new(ShardReader::open(shards)?);
    let builder = LoaderBuilder::new(Arc::clone(&reader))
        .workers(run.workers)
        .batch_size(run.batch_size)
        .seed(run.seed);
    let (mut waits, mut samples, mut skipped, mut crc, mut summed) = (Vec::new(), 0u64, 0, 0u32, 0);
    let budget = Duration::try_from_secs_f64(run.seconds)
        .map_err(|e| Error::Data(format!("{} seconds is not a duration to run for: {e}", run.seconds)))?;
    // The clock starts at the first batch (thread start-up excluded), as in baseline.py.
    let mut start = Instant::now();
    let mut first = true;
    'epochs: for epoch in 0.. {
        let mut loader = builder.clone().epoch(epoch).build()?;
        if loader.steps_per_epoch() == 0 {
            return Err(Error::Data(format!(
                "{}: {} images make no batch of {}",
                shards.display(),
                reader.len(),
                run.batch_size
            )));
        }
        loop {
            let t = Instant::now();
            let Some(batch) = loader.next() else { break };
            waits.push(t.elapsed().as_secs_f64() * 1e3);
            let batch = batch?;
            if summed < run.checksum_batches {
                crc = checksum(crc, &batch);
                summed += 1;
            }
            skipped += batch.skipped().len();
            if std::mem::take(&mut first) {
                (start, waits) = (Instant::now(), Vec::new());
                continue;
            }
            samples += batch.len() as u64;
            let elapsed = start.elapsed().as_secs_f64();
            progress(elapsed, samples as f64 / elapsed);
            if start.elapsed() >= budget && summed >= run.checksum_batches {
                break 'epochs;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(LoaderBench {
        bench: "loader",
        store: format!("{:?}", reader.store()).to_lowercase(),
        images: reader.len(),
        workers: run.workers,
        batch_size: run.batch_size,
        samples,
        seconds,
        img_per_sec: samples as f64 / seconds,
        img_per_sec_per_core: samples as f64 / seconds / run.workers as f64,
        p50_batch_ms: percentile(&mut waits, 0.5),
        p99_batch_ms: percentile(&mut waits, 0.99),
        peak_rss_mib: peak_rss_mib(),
        checksum: format!("{crc:08x}"),
        skipped,
    })
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

/// The process's peak resident set (`VmHWM`), in MiB; 0 where /proc is missing.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}
