//! The one error type of the `train` crate.

use std::path::PathBuf;

/// Why training could not go on.
///
/// Every variant names the file, folder or device first, then the cause; the reasons
/// below [`Error::WithPath`], which need no path or get it from their caller, reach a
/// file's reader inside it ([`Error::with_path`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights, optimizer or checkpoint file does not fit the model.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The file or checkpoint folder.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The shard store could not be opened.
    #[error("{}: cannot open the shard store: {source}", path.display())]
    OpenStore {
        /// The store's folder.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: slotcon_shards::Error,
    },
    /// The shard store cannot feed this run (empty, or fewer images than a batch).
    #[error("{}: {reason}", path.display())]
    Store {
        /// The store's folder.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A run folder has no checkpoint to resume from, or one made with other settings.
    #[error("{}: {reason}", path.display())]
    Checkpoint {
        /// The run folder, or the checkpoint file at fault.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A device that this build or machine cannot provide.
    #[error("{device}: {reason}")]
    Device {
        /// The device, as named.
        device: String,
        /// Why, in words.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss is {loss}; stopping (the last checkpoint is kept as it was)")]
    Diverged {
        /// The step.
        step: u64,
        /// The loss.
        loss: f64,
    },
    /// An fp16 run's gradients overflowed at every step of a long row: lowering the loss
    /// scale does not help, so the forward pass itself overflows (or the run diverged).
    #[error(
        "step {step}: the gradients overflowed at {skipped} steps in a row (loss scale now {scale:e}); stopping (the last checkpoint is kept as it was)"
    )]
    Overflowing {
        /// The step.
        step: u64,
        /// Steps skipped in a row.
        skipped: u64,
        /// The loss scale after them.
        scale: f32,
    },
    /// A weight or BatchNorm statistic became NaN or infinite.
    #[error(
        "step {step}: {tensor} holds a NaN or an infinity; stopping without saving it (the last checkpoint is kept as it was)"
    )]
    NonFinite {
        /// The step.
        step: u64,
        /// The first tensor that holds one, by its path in the network.
        tensor: String,
    },
    /// The operator and memory observer (`observe::Observer`) could not begin or end.
    #[error("observing LibTorch: {0}")]
    Observe(String),
    /// A distributed launch that cannot start (a bad variable, an unreachable rendezvous).
    #[error("{0}")]
    Distributed(String),
    /// Slurm's host list (`SLURM_JOB_NODELIST`) cannot be read, and `MASTER_ADDR` is unset.
    #[error("SLURM_JOB_NODELIST: {0}")]
    NodeList(#[from] crate::dist::slurm::NodeListError),
    /// A settings file (`--config`) that cannot be read as settings.
    #[error("{}: {source}", path.display())]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// Why it cannot be read as settings.
        #[source]
        source: crate::settings_file::SettingsError,
    },
    /// A setting out of its range (the field, its value and what it should be).
    #[error("invalid settings: {0}")]
    Invalid(#[from] crate::config::InvalidField),
    /// A global batch that does not split evenly over the ranks.
    #[error(
        "invalid settings: a batch of {batch} does not split evenly over {world} ranks; choose a multiple of {world}"
    )]
    UnevenBatch {
        /// The global batch.
        batch: usize,
        /// The number of ranks.
        world: usize,
    },
    /// A file could not be read or written (`PATH: cause`), or the shard store failed.
    #[error(transparent)]
    Shards(#[from] slotcon_shards::Error),
    /// The loader could not make a batch (a corrupt sample, bad loader settings).
    #[error("loader: {0}")]
    Loader(#[from] slotcon_augment::Error),
    /// A name (`--arch`, `--precision`, `--device`, `--dist-backend`) that names nothing
    /// this build offers.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Another error, with the file or folder it concerns (`PATH: cause`).
    #[error("{}: {err}", path.display())]
    WithPath {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        err: Box<Error>,
    },
    /// A saved centre with another number of prototypes than the config.
    #[error("the centre has {have} prototypes, the config {want}")]
    CentreSize {
        /// The saved centre's number of prototypes.
        have: usize,
        /// The config's number of prototypes.
        want: usize,
    },
    /// The centre could not be read back from the device.
    #[error("reading the centre: {0}")]
    CentreData(#[source] burn::tensor::DataError),
    /// Tensors that do not fit the network: names it has no place for, other shapes,
    /// missing ones; the first of them is named.
    #[error("{count} problems, first: {first}")]
    Tensors {
        /// The number of problems.
        count: usize,
        /// The first problem, in words.
        first: String,
    },
    /// Tensors could not be written or read as safetensors.
    #[error(transparent)]
    Safetensors(#[from] burn::store::SafetensorsStoreError),
    /// The optimiser's state could not be written or read back.
    #[error(transparent)]
    OptimizerRecord(#[from] burn::store::RecordError),
    /// The optimiser's state (a burnpack record) could not be read.
    #[error(transparent)]
    OptimizerPack(#[from] burn_pack::Error),
    /// The optimiser holds a state other than momentum buffers.
    #[error("unexpected optimiser state {name}")]
    OptimizerState {
        /// The state's tensor name.
        name: String,
    },
}

impl Error {
    /// This error with the file or folder it concerns: `PATH: cause`.
    pub fn with_path(self, path: impl Into<PathBuf>) -> Error {
        Error::WithPath {
            path: path.into(),
            err: Box::new(self),
        }
    }
}

/// A name on a command line (an architecture, a precision, a device, a distributed
/// backend) that names nothing this build offers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// None of the names accepted (`unknown precision "f16" (f32, bf16, fp16)`).
    #[error("unknown {what} {name:?} ({accepted})")]
    Unknown {
        /// What was being named (`architecture`).
        what: &'static str,
        /// The name given.
        name: String,
        /// The names accepted, as the message lists them.
        accepted: &'static str,
    },
    /// A LibTorch device, named in a build without LibTorch.
    #[error("{name}: this build has no LibTorch; rebuild with `cargo build --release --features tch`")]
    NoLibtorch {
        /// The device given.
        name: String,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
