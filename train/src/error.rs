//! The one error type of the `train` crate.

use std::path::PathBuf;

/// Why training could not go on.
///
/// Every variant names the file, folder or device first, then the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights, optimizer or checkpoint file does not fit the model.
    #[error("{}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },
    /// The shard store could not be opened.
    #[error("{}: cannot open the shard store: {source}", path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: slotcon_shards::Error,
    },
    /// The shard store cannot feed this run (empty, or fewer images than a batch).
    #[error("{}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },
    /// A run folder has no checkpoint to resume from, or one made with other settings.
    #[error("{}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    /// A device that this build or machine cannot provide.
    #[error("{device}: {reason}")]
    Device { device: String, reason: String },
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss is {loss}; stopping (the last checkpoint is kept as it was)")]
    Diverged { step: u64, loss: f64 },
    /// A weight or BatchNorm statistic became NaN or infinite.
    #[error(
        "step {step}: {tensor} holds a NaN or an infinity; stopping without saving it (the last checkpoint is kept as it was)"
    )]
    NonFinite { step: u64, tensor: String },
    /// A distributed launch that cannot start (a bad variable, an unreachable rendezvous).
    #[error("{0}")]
    Distributed(String),
    /// A settings file (`--config`) that cannot be read as settings.
    #[error("{}: {source}", path.display())]
    Settings {
        path: PathBuf,
        #[source]
        source: crate::settings_file::SettingsError,
    },
    /// Settings that make no sense together.
    #[error("invalid settings: {0}")]
    Invalid(String),
    /// A file could not be read or written (`PATH: cause`), or the shard store failed.
    #[error(transparent)]
    Shards(#[from] slotcon_shards::Error),
    /// The loader could not make a batch (a corrupt sample, bad loader settings).
    #[error("loader: {0}")]
    Loader(#[from] slotcon_augment::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
