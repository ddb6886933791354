//! The one error type of the `train` crate.

use std::path::PathBuf;

/// Why training could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON for [`TrainConfig`](crate::TrainConfig).
    #[error("{}: bad config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// A weights file does not fit the model.
    #[error("{}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss is {loss}; stopping (the last checkpoint is kept as it was)")]
    Diverged { step: u64, loss: f64 },
    /// Reading or writing through the shard store's file helpers failed.
    #[error(transparent)]
    Store(#[from] slotcon_shards::Error),
    /// Settings that make no sense together.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
