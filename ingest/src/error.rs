//! The one error type of the `ingest` crate. A bad *image* is never an error: it is
//! skipped and reported. These are the failures that stop a run.

use std::path::PathBuf;

/// Why an ingest or verify run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store layer or the file system failed (I/O on the output and the resume
    /// state, Parquet writer, manifest).
    #[error(transparent)]
    Shards(#[from] slotcon_shards::Error),
    /// The source is not a readable directory.
    #[error("{}: not a readable directory: {reason}", path.display())]
    Source { path: PathBuf, reason: String },
    /// A finished store or a partial ingest in the output was made differently.
    #[error("{}: {reason}", path.display())]
    Conflict { path: PathBuf, reason: String },
    /// Every candidate file was skipped, or there were none.
    #[error("{}: no image could be written ({found} candidate files, {skipped} skipped)", path.display())]
    NothingWritten {
        path: PathBuf,
        found: usize,
        skipped: usize,
    },
    /// The worker thread pool could not start.
    #[error("thread pool: {0}")]
    Threads(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
