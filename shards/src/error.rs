//! The one error type of the `shards` crate.

use std::path::PathBuf;

/// Everything that can go wrong while writing, opening, reading or verifying a store.
///
/// Every variant names the file (and where it applies the sample id) first, then the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Parquet writer failed.
    #[cfg(feature = "write")]
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow refused to build a record batch.
    #[cfg(feature = "write")]
    #[error("{}: arrow: {source}", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A JSON file is not valid JSON for what it should hold.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `manifest.json` is missing, unreadable JSON, or inconsistent.
    #[error("{}: bad manifest: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    /// The store was written by a newer version of slotcon.
    #[error(
        "{}: store format version {found} is newer than the {supported} this build reads; \
         upgrade slotcon or re-ingest the images",
        path.display()
    )]
    NewerVersion { path: PathBuf, found: u32, supported: u32 },
    /// A shard or index file does not have the expected size, magic or layout.
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A whole-file checksum does not match the manifest.
    #[error("{}: checksum mismatch: manifest says {expected}, file has {actual}", path.display())]
    FileChecksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// One sample's bytes do not match the checksum recorded at ingest.
    #[error("{} id {id}: sample checksum mismatch (stored {expected:08x}, read {actual:08x})", path.display())]
    SampleChecksum {
        path: PathBuf,
        id: u64,
        expected: u32,
        actual: u32,
    },
    /// A sample id outside `0..len`.
    #[error("{}: sample id {id} is out of range (the store holds {len})", path.display())]
    OutOfRange { path: PathBuf, id: u64, len: u64 },
    /// Another process holds the folder's lock ([`crate::lock`]).
    #[error(
        "{}: another {tool} ({}) is writing this {what}; wait for it or stop it",
        path.display(),
        match pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() }
    )]
    Locked {
        path: PathBuf,
        tool: &'static str,
        what: &'static str,
        pid: Option<u32>,
    },
    /// The caller broke a writer invariant (for example an empty image).
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error: `.map_err(io_err(&path))?`. The crates above use it
/// too, so that every I/O error reads `PATH: cause` ([`Error::Io`], converted by `?`).
pub fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
