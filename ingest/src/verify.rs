//! `slotcon-ingest verify`: every checksum, and every image decodes to its recorded size.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use slotcon_augment::decode::{sample_rgb, Limits};
use slotcon_shards::{verify_checksums, Location, Problem, RemoteSettings, ShardReader};

use crate::error::{Error, Result};
use crate::Progress;

/// The outcome of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Images in the store.
    pub images: u64,
    /// Shards in the store.
    pub shards: usize,
    /// Everything found wrong; empty means the store is sound.
    pub problems: Vec<Problem>,
}

/// Verifies the store in `dir` with `threads` decoding threads (0 = every core).
///
/// A remote store (`dir` a URL, read with `store`) is checked sample by sample: every
/// payload against its CRC-32C and every image decoded, after the indexes were checked
/// at opening; the whole-file checksums of its shards are not recomputed (that would
/// fetch the Parquet pages that hold no payload too).
pub fn verify(dir: &Path, store: &RemoteSettings, threads: usize, progress: Progress<'_>) -> Result<VerifyReport> {
    if let Location::Remote(_) = Location::parse(dir)? {
        let reader = ShardReader::open_with(dir, store)?;
        return check_samples(reader, Vec::new(), threads, progress);
    }
    let mut problems = verify_checksums(dir)?;
    let reader = match ShardReader::open(dir) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem {
                file: slotcon_shards::format::MANIFEST_FILE.into(),
                id: None,
                reason: format!("cannot open: {e}"),
            });
            let m = slotcon_shards::Manifest::load(dir)?;
            return Ok(VerifyReport {
                images: m.total_rows,
                shards: m.shards.len(),
                problems,
            });
        }
    };
    check_samples(reader, problems, threads, progress)
}

/// Reads and decodes every sample not already among `problems`.
fn check_samples(
    reader: ShardReader,
    mut problems: Vec<Problem>,
    threads: usize,
    progress: Progress<'_>,
) -> Result<VerifyReport> {
    let known: HashSet<u64> = problems.iter().filter_map(|p| p.id).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Threads(e.to_string()))?;
    let done = AtomicU64::new(0);
    let decoded: Vec<Problem> = pool.install(|| {
        (0..reader.len())
            .into_par_iter()
            .filter(|id| !known.contains(id))
            .map_init(Vec::new, |buf, id| {
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, reader.len());
                check_sample(&reader, id, buf)
            })
            .flatten()
            .collect()
    });
    problems.extend(decoded);
    let m = reader.manifest();
    Ok(VerifyReport {
        images: m.total_rows,
        shards: m.shards.len(),
        problems,
    })
}

fn check_sample(reader: &ShardReader, id: u64, buf: &mut Vec<u8>) -> Option<Problem> {
    let sample = match reader.get(id) {
        Ok(s) => s,
        Err(e) => {
            return Some(Problem {
                file: String::new(),
                id: Some(id),
                reason: e.to_string(),
            })
        }
    };
    let file = reader.manifest().shards[sample.shard].file.clone();
    // The full decode, whatever its size: the store was ingested under its own limit.
    let limits = Limits { max_pixels: u64::MAX };
    let reason = sample_rgb(reader.store(), &sample, limits, buf).err()?;
    Some(Problem {
        file,
        id: Some(id),
        reason: format!("{reason} ({})", sample.path),
    })
}
