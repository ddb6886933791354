//! The one error type of the `ingest` crate. A bad *image* is never an error: it is
//! skipped and reported. These are the failures that stop a run.

use std::path::PathBuf;

use slotcon_shards::Problem;

use crate::run::IngestReport;

/// Skipped files or problems named in one message; the rest are counted.
const LISTED: usize = 20;

/// Why an ingest or verify run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store layer or the file system failed (I/O on the output and the resume
    /// state, Parquet writer, manifest).
    #[error(transparent)]
    Shards(#[from] slotcon_shards::Error),
    /// The source is not a readable directory.
    #[error("{}: not a readable directory: {reason}", path.display())]
    Source {
        /// The source folder.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A finished store or a partial ingest in the output was made differently.
    #[error("{}: {reason}", path.display())]
    Conflict {
        /// The output folder, or the report in it that could not be read.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The output has a manifest, but its files are not the ones the manifest lists.
    #[error(
        "{}: the store is incomplete: {}; pass --force to rebuild it",
        path.display(),
        listed(problems.iter().map(Problem::to_string), "; ")
    )]
    Incomplete {
        /// The output folder.
        path: PathBuf,
        /// What is wrong with its files.
        problems: Vec<Problem>,
    },
    /// Every candidate file was skipped, or there were none. The report (`report`, saved
    /// in the output as `ingest-report.json`) lists each skipped file and why.
    #[error(
        "{}: no image could be written ({found} candidate files, {} skipped; report in {}){}",
        path.display(),
        report.skipped.len(),
        path.join(crate::REPORT_FILE).display(),
        skip_reasons(report)
    )]
    NothingWritten {
        /// The output folder.
        path: PathBuf,
        /// The number of candidate files found.
        found: usize,
        /// The run's report, with each skipped file and why.
        report: Box<IngestReport>,
    },
    /// A setting outside what it accepts (named by its `slotcon-ingest` flag).
    #[error("{flag} {value} is outside {allowed}")]
    Setting {
        /// The flag (`--quality`).
        flag: &'static str,
        /// The value given.
        value: String,
        /// The values accepted, in words (`1..=100`).
        allowed: &'static str,
    },
    /// The worker thread pool could not start.
    #[error("thread pool: {0}")]
    Threads(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `: ` and one line per skipped file, or nothing.
fn skip_reasons(report: &IngestReport) -> String {
    if report.skipped.is_empty() {
        return String::new();
    }
    let lines = report
        .skipped
        .iter()
        .map(|s| format!("skipped {}: {}", s.path, s.reason));
    format!(":\n  {}", listed(lines, "\n  "))
}

/// The first [`LISTED`] items joined by `sep`, then how many more there are.
fn listed(items: impl ExactSizeIterator<Item = String>, sep: &str) -> String {
    let more = items.len().saturating_sub(LISTED);
    let mut items: Vec<String> = items.take(LISTED).collect();
    if more > 0 {
        items.push(format!("and {more} more"));
    }
    items.join(sep)
}
