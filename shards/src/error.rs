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
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet writer failed.
    #[cfg(feature = "write")]
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// The Parquet library's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow refused to build a record batch.
    #[cfg(feature = "write")]
    #[error("{}: arrow: {source}", path.display())]
    Arrow {
        /// The shard being written.
        path: PathBuf,
        /// Arrow's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A JSON file is not valid JSON for what it should hold.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// `manifest.json` is missing, unreadable JSON, or inconsistent.
    #[error("{}: bad manifest: {reason}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The store was written by a newer version of slotcon.
    #[error(
        "{}: store format version {found} is newer than the {supported} this build reads; \
         upgrade slotcon or re-ingest the images",
        path.display()
    )]
    NewerVersion {
        /// The manifest.
        path: PathBuf,
        /// The format version the manifest records.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },
    /// A shard or index file does not have the expected size, magic or layout.
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt {
        /// The shard or index file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A whole-file checksum does not match the manifest.
    #[error("{}: checksum mismatch: manifest says {expected}, file has {actual}", path.display())]
    FileChecksum {
        /// The file.
        path: PathBuf,
        /// The checksum the manifest records (`crc32c:...`).
        expected: String,
        /// The file's checksum, in the same form.
        actual: String,
    },
    /// One sample's bytes do not match the checksum recorded at ingest.
    #[error("{} id {id}: sample checksum mismatch (stored {expected:08x}, read {actual:08x})", path.display())]
    SampleChecksum {
        /// The shard file.
        path: PathBuf,
        /// The sample id.
        id: u64,
        /// The CRC-32C recorded at ingest.
        expected: u32,
        /// The CRC-32C of the bytes read.
        actual: u32,
    },
    /// A sample id outside `0..len`.
    #[error("{}: sample id {id} is out of range (the store holds {len})", path.display())]
    OutOfRange {
        /// The store's folder.
        path: PathBuf,
        /// The sample id.
        id: u64,
        /// The number of samples the store holds.
        len: u64,
    },
    /// Another process holds the folder's lock ([`crate::lock`]).
    #[error(
        "{}: another {tool} ({}) is writing this {what}; wait for it or stop it",
        path.display(),
        match pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() }
    )]
    Locked {
        /// The folder.
        path: PathBuf,
        /// The program that writes the folder (`slotcon-ingest`).
        tool: &'static str,
        /// What the folder is (`store`, `run`).
        what: &'static str,
        /// The holder's PID, if its lock file could be read.
        pid: Option<u32>,
    },
    /// A store URL that slotcon cannot read (its form, or its scheme).
    #[error("{url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why, in words.
        reason: String,
    },
    /// A request to a remote store failed for good (a missing bucket or object, refused
    /// credentials).
    #[error("{url}: {source}")]
    Remote {
        /// The object's URL.
        url: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// A remote store gave no good answer within the deadline (its retries included).
    #[error("{url}: no good answer after {attempts} attempts in {seconds:.1} s: {last}")]
    Unreachable {
        /// The object's URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds spent.
        seconds: f64,
        /// The last failure, in words.
        last: String,
    },
    /// A remote object changed since the store was ingested or opened (its size, its
    /// ETag, or a sample's bytes).
    #[error("{url}: changed since the store was opened: {reason}")]
    Changed {
        /// The object's URL.
        url: String,
        /// What differs.
        reason: String,
    },
    /// A setting outside its range.
    #[error("setting {field}: {reason}")]
    Settings {
        /// The setting.
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// The caller broke a writer invariant (for example an empty image).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file, or the sample's source path.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
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
