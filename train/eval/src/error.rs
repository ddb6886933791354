//! The one error type of the `eval` crate.

use std::path::PathBuf;

/// Why a finished run could not be loaded, evaluated, drawn or exported.
///
/// Every variant names the file (or image) first, then the cause; the reasons below
/// [`Error::WithPath`], found in an official checkpoint's tensors and settings, reach the
/// caller inside it ([`Error::with_path`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image could not be decoded or resized.
    #[error("{}: {source}", path.display())]
    Image {
        /// The image's path.
        path: PathBuf,
        /// Why it could not be decoded or resized.
        #[source]
        source: slotcon_augment::Error,
    },
    /// A label mask is not an 8-bit grayscale PNG of its image's size.
    #[error("{}: {reason}", path.display())]
    Mask {
        /// The mask file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A PNG could not be encoded.
    #[error("{}: {source}", path.display())]
    Png {
        /// The PNG being written.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: png::EncodingError,
    },
    /// A JSON input (COCO categories, metrics) is not what it should be.
    #[error("{}: {reason}", path.display())]
    Data {
        /// The JSON file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The checkpoint asked for does not exist.
    #[error("{}: no such checkpoint (this run has: {have})", path.display())]
    NoCheckpoint {
        /// The checkpoint's folder.
        path: PathBuf,
        /// The checkpoints the run has, comma-separated (`none` if it has none).
        have: String,
    },
    /// Weights that do not fit the model, or tensors that cannot be exported.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The weights file (`<memory>` for bytes not read from one).
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// Nothing to evaluate or draw: no images, no labelled pair, too few pixels.
    #[error("{}: {reason}", path.display())]
    Empty {
        /// The folder or file that gave nothing to use.
        path: PathBuf,
        /// What was missing, in words.
        reason: String,
    },
    /// The Python interpreter running a helper failed.
    #[error("{}: {reason}", python.display())]
    Python {
        /// The Python interpreter.
        python: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A setting out of its range (`size 0: must be in 32..=1024`), named as its field;
    /// checked before any work is done.
    #[error("{name} {value}: {reason}")]
    Setting {
        /// The setting, named as its field (`size`).
        name: &'static str,
        /// The value given.
        value: String,
        /// What it must be, in words (`must be in 32..=1024`).
        reason: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading a tensor back from the device: {0}")]
    Tensor(String),
    /// Loading the run's config or building its device failed.
    #[error(transparent)]
    Train(#[from] slotcon_train::Error),
    /// A file could not be read or written, or the shard store failed.
    #[error(transparent)]
    Store(#[from] slotcon_shards::Error),
    /// Another error, with the file it concerns (`PATH: cause`).
    #[error("{}: {err}", path.display())]
    WithPath {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        err: Box<Error>,
    },
    /// An encoder whose blocks per stage are none of the backbones'.
    #[error(
        "the encoder has {stages:?} {} blocks per stage: not a resnet18, resnet34 or resnet50",
        block_kind(*.bottleneck)
    )]
    UnknownEncoder {
        /// The number of blocks in each of the four stages.
        stages: [usize; 4],
        /// Whether the blocks are bottlenecks.
        bottleneck: bool,
    },
    /// `args.optimizer` names neither optimiser.
    #[error("args.optimizer {name:?}: neither lars nor sgd")]
    UnknownOptimizer {
        /// The name `args.optimizer` gives.
        name: String,
    },
    /// A tensor every official checkpoint has is not there.
    #[error("{name}: missing (every official checkpoint has it)")]
    MissingTensor {
        /// The tensor's official name.
        name: String,
    },
    /// `args.arch` is not the backbone the encoder's tensors make.
    #[error("args.arch is {args}, but the encoder's tensors are a {tensors}")]
    ArchMismatch {
        /// The backbone `args.arch` names.
        args: String,
        /// The backbone the encoder's tensors make (`resnet50`).
        tensors: &'static str,
    },
    /// The settings the checkpoint makes are out of range.
    #[error("the imported config: {0}")]
    ImportedConfig(#[source] slotcon_train::InvalidField),
    /// A tensor (official name) slotcon's network has no place for.
    #[error("{name}: no place for it in slotcon's SlotCon network")]
    NoPlace {
        /// The tensor's official name.
        name: String,
    },
    /// A tensor (official name) that is not f32.
    #[error("{name}: {dtype:?}, not a float tensor")]
    NotFloat {
        /// The tensor's official name.
        name: String,
        /// Its dtype.
        dtype: safetensors::Dtype,
    },
    /// The optimizer state is not of the config's optimiser (`None`: no state kind).
    #[error("the optimizer state is {state:?}, the config's optimizer {config}")]
    OptimizerMismatch {
        /// The optimiser the state records, if any.
        state: Option<String>,
        /// The config's optimiser (`lars`, `sgd`).
        config: &'static str,
    },
    /// A momentum buffer for a teacher tensor (official name).
    #[error("{name}: the teacher has a momentum buffer, but it is not trained by gradients")]
    TeacherMomentum {
        /// The tensor's official name.
        name: String,
    },
    /// A tensor holding a NaN or an infinity.
    #[error("{name}: holds {value}; a run cannot start from a non-finite tensor")]
    NonFinite {
        /// The tensor's official name.
        name: String,
        /// The first non-finite value in it.
        value: f32,
    },
    /// The run's length in steps overflows.
    #[error("{epochs} epochs of {steps_per_epoch} steps overflow a step count")]
    StepOverflow {
        /// The run's epochs.
        epochs: u64,
        /// The steps of one epoch.
        steps_per_epoch: u64,
    },
    /// The checkpoint's step (its scheduler's count, or epoch x steps per epoch) lies past
    /// the run's end.
    #[error(
        "the scheduler's last_epoch {scheduler_steps:?} / epoch {epoch:?} lies past the run's {total} steps ({epochs} epochs of {steps_per_epoch})"
    )]
    StepPastEnd {
        /// The scheduler's `last_epoch` (its step count), if the checkpoint has one.
        scheduler_steps: Option<u64>,
        /// The checkpoint's epoch, if it has one.
        epoch: Option<u64>,
        /// The run's length in steps, `epochs * steps_per_epoch`.
        total: u64,
        /// The run's epochs.
        epochs: u64,
        /// The steps of one epoch.
        steps_per_epoch: u64,
    },
}

impl Error {
    /// This error with the file it concerns: `PATH: cause`.
    pub fn with_path(self, path: impl Into<PathBuf>) -> Error {
        Error::WithPath {
            path: path.into(),
            err: Box::new(self),
        }
    }
}

/// `bottleneck` or `basic`, for [`Error::UnknownEncoder`].
fn block_kind(bottleneck: bool) -> &'static str {
    if bottleneck {
        "bottleneck"
    } else {
        "basic"
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Ok` when `value` lies in `range`, else [`Error::Setting`] naming it.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(Error::Setting {
        name,
        reason: format!("must be in {}..={}", range.start(), range.end()),
        value: value.to_string(),
    })
}
