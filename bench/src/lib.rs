//! Throughput benchmarks for slotcon, reported as rates and as ratios to a baseline
//! measured in the same run.
//!
//! - [`bench_ingest`]: `slotcon-ingest`'s decode-validate-and-write throughput.
//!
//! ```no_run
//! let r = slotcon_bench::bench_ingest("../shared/data/coco128/images".as_ref(), 0, 3)?;
//! println!("{:.0} img/s, {:.0} per core", r.img_per_sec, r.img_per_sec_per_core);
//! # Ok::<(), slotcon_ingest::Error>(())
//! ```

pub mod dump;
mod error;
pub mod loader;
pub mod ops;
pub mod profile;

pub use error::{Error, Result};

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use slotcon_ingest::{ingest, IngestConfig};

/// The result of an ingest benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct IngestBench {
    /// What was measured.
    pub bench: &'static str,
    /// Images written per run.
    pub images: u64,
    /// Source bytes per run.
    pub bytes_in: u64,
    /// Worker threads used.
    pub threads: usize,
    /// Seconds of every run, in order (each run rebuilds the store from scratch).
    pub runs: Vec<f64>,
    /// Median images per second over the runs.
    pub img_per_sec: f64,
    /// `img_per_sec / threads`.
    pub img_per_sec_per_core: f64,
    /// Median source megabytes per second.
    pub mb_per_sec: f64,
}

/// Ingests `src` into a scratch store `repeat` times with `threads` threads (0 = every
/// core) and reports the median rate. The store is deleted afterwards.
pub fn bench_ingest(src: &Path, threads: usize, repeat: usize) -> slotcon_ingest::Result<IngestBench> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let scratch = std::env::temp_dir().join(format!("slotcon-bench-ingest-{}", std::process::id()));
    let cfg = IngestConfig::default().with_threads(threads);
    let mut runs = Vec::new();
    let (mut images, mut bytes_in) = (0, 0);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let report = ingest(src, &scratch, &cfg, true, &|_, _| {})?;
        runs.push(start.elapsed().as_secs_f64());
        (images, bytes_in) = (report.written, report.bytes_in);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let median = median(&runs);
    Ok(IngestBench {
        bench: "ingest",
        images,
        bytes_in,
        threads,
        img_per_sec: images as f64 / median,
        img_per_sec_per_core: images as f64 / median / threads as f64,
        mb_per_sec: bytes_in as f64 / 1e6 / median,
        runs,
    })
}

/// The median of `xs` (NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `bench/python/SCRIPT ARGS...` with the project's Python (`--python`'s rules:
/// `$SLOTCON_PYTHON`, else `.venv/bin/python` here or above, see [`slotcon_cli::python`])
/// and parses the JSON it prints.
pub fn run_python(script: &str, args: &[String]) -> Result<serde_json::Value> {
    let err = |reason: String| Error::Python {
        script: script.to_string(),
        reason,
    };
    let py = slotcon_cli::python(None).map_err(|e| err(format!("{e:#}")))?;
    let out = std::process::Command::new(&py)
        .arg(python_script(script))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .output();
    let out = out.map_err(|e| err(format!("cannot run {}: {e}", py.display())))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| err(format!("unexpected output ({e})")))
}

/// A script in `bench/python/`: of the checkout in the current folder when there is one
/// (a binary copied to another machine with a copy of the tree), else of the checkout this
/// binary was built in.
fn python_script(name: &str) -> std::path::PathBuf {
    let here = Path::new("bench").join("python").join(name);
    if here.is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
