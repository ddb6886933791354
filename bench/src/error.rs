//! The one error type of the `bench` library.

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] slotcon_shards::Error),
    /// The loader or an op failed.
    #[error(transparent)]
    Augment(#[from] slotcon_augment::Error),
    /// The trainer failed.
    #[error(transparent)]
    Train(#[from] slotcon_train::Error),
    /// Ingest failed.
    #[error(transparent)]
    Ingest(#[from] slotcon_ingest::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The I/O error (a PNG encoding error is wrapped as one).
        #[source]
        source: std::io::Error,
    },
    /// The Python reference could not run or printed something unexpected.
    #[error("python reference {script}: {reason}")]
    Python {
        /// The script's name, under `bench/python/`.
        script: String,
        /// Why, in words.
        reason: String,
    },
    /// The data cannot give a measurement (for example fewer images than a batch).
    #[error("{0}")]
    Data(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
