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
        path: PathBuf,
        #[source]
        source: slotcon_augment::Error,
    },
    /// A label mask is not an 8-bit grayscale PNG of its image's size.
    #[error("{}: {reason}", path.display())]
    Mask { path: PathBuf, reason: String },
    /// A PNG could not be encoded.
    #[error("{}: {source}", path.display())]
    Png {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },
    /// A JSON input (COCO categories, metrics) is not what it should be.
    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },
    /// The checkpoint asked for does not exist.
    #[error("{}: no such checkpoint (this run has: {have})", path.display())]
    NoCheckpoint { path: PathBuf, have: String },
    /// Weights that do not fit the model, or tensors that cannot be exported.
    #[error("{}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },
    /// Nothing to evaluate or draw: no images, no labelled pair, too few pixels.
    #[error("{}: {reason}", path.display())]
    Empty { path: PathBuf, reason: String },
    /// The Python interpreter running a helper failed.
    #[error("{}: {reason}", python.display())]
    Python { python: PathBuf, reason: String },
    /// A setting out of its range (`size 0: must be in 32..=1024`), named as its field;
    /// checked before any work is done.
    #[error("{name} {value}: {reason}")]
    Setting {
        name: &'static str,
        value: String,
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
        path: PathBuf,
        #[source]
        err: Box<Error>,
    },
    /// An encoder whose blocks per stage are none of the backbones'.
    #[error(
        "the encoder has {stages:?} {} blocks per stage: not a resnet18, resnet34 or resnet50",
        block_kind(*.bottleneck)
    )]
    UnknownEncoder { stages: [usize; 4], bottleneck: bool },
    /// `args.optimizer` names neither optimiser.
    #[error("args.optimizer {name:?}: neither lars nor sgd")]
    UnknownOptimizer { name: String },
    /// A tensor every official checkpoint has is not there.
    #[error("{name}: missing (every official checkpoint has it)")]
    MissingTensor { name: String },
    /// `args.arch` is not the backbone the encoder's tensors make.
    #[error("args.arch is {args}, but the encoder's tensors are a {tensors}")]
    ArchMismatch { args: String, tensors: &'static str },
    /// The settings the checkpoint makes are out of range.
    #[error("the imported config: {0}")]
    ImportedConfig(#[source] slotcon_train::InvalidField),
    /// A tensor (official name) slotcon's network has no place for.
    #[error("{name}: no place for it in slotcon's SlotCon network")]
    NoPlace { name: String },
    /// A tensor (official name) that is not f32.
    #[error("{name}: {dtype:?}, not a float tensor")]
    NotFloat { name: String, dtype: safetensors::Dtype },
    /// The optimizer state is not of the config's optimiser (`None`: no state kind).
    #[error("the optimizer state is {state:?}, the config's optimizer {config}")]
    OptimizerMismatch {
        state: Option<String>,
        config: &'static str,
    },
    /// A momentum buffer for a teacher tensor (official name).
    #[error("{name}: the teacher has a momentum buffer, but it is not trained by gradients")]
    TeacherMomentum { name: String },
    /// A tensor holding a NaN or an infinity.
    #[error("{name}: holds {value}; a run cannot start from a non-finite tensor")]
    NonFinite { name: String, value: f32 },
    /// The run's length in steps overflows.
    #[error("{epochs} epochs of {steps_per_epoch} steps overflow a step count")]
    StepOverflow { epochs: u64, steps_per_epoch: u64 },
    /// The checkpoint's step (its scheduler's count, or epoch x steps per epoch) lies past
    /// the run's end.
    #[error(
        "the scheduler's last_epoch {scheduler_steps:?} / epoch {epoch:?} lies past the run's {total} steps ({epochs} epochs of {steps_per_epoch})"
    )]
    StepPastEnd {
        scheduler_steps: Option<u64>,
        epoch: Option<u64>,
        total: u64,
        epochs: u64,
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
