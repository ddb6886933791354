//! The one error type of the `eval` crate.

use std::path::PathBuf;

/// Why a finished run could not be loaded, evaluated, drawn or exported.
///
/// Every variant names the file (or image) first, then the cause.
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
