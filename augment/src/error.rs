//! The one error type of the `augment` crate.

/// Why an image could not be decoded or processed.
///
/// Decoding works on bytes, so these carry no path; callers that know the path or the
/// sample id put it first when they report (`ingest`, the loader).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes start with neither the JPEG nor the PNG signature.
    #[error("not a JPEG or PNG file (starts with {0})")]
    UnknownFormat(String),
    /// The file is empty.
    #[error("empty file (0 bytes)")]
    Empty,
    /// The decoder rejected the data (truncated, corrupt, ...).
    #[error("{format} decode failed: {reason}")]
    Decode {
        /// The format (`JPEG`, `PNG`).
        format: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// A colour model we do not convert (for example CMYK JPEG).
    #[error("unsupported {format} colour type: {what}")]
    Unsupported {
        /// The format (`JPEG`, `PNG`).
        format: &'static str,
        /// The colour type, in words.
        what: String,
    },
    /// More pixels than the decompression-bomb limit.
    #[error("{width}x{height} = {pixels} pixels exceeds the limit of {limit} (possible decompression bomb)")]
    TooManyPixels {
        /// The image width, in pixels.
        width: u32,
        /// The image height, in pixels.
        height: u32,
        /// The number of pixels, `width * height`.
        pixels: u64,
        /// The most pixels allowed.
        limit: u64,
    },
    /// A stored payload that does not match the size its index records (a corrupt entry).
    #[error("stored payload does not match its index: {0}")]
    Payload(String),
    /// A buffer or rectangle that does not fit.
    #[error("{0}")]
    Geometry(String),
    /// The loader could not produce a sample: a corrupt store entry or a worker panic.
    #[error("sample {id} ({path}): {cause}")]
    Sample {
        /// The sample id.
        id: u64,
        /// Its source path.
        path: String,
        /// Why it could not be produced.
        #[source]
        cause: Box<SampleFailure>,
    },
    /// Loader settings that make no sense.
    #[error("loader settings: {0}")]
    Config(String),
    /// The loader's worker threads are gone.
    #[error("loader workers exited unexpectedly")]
    Disconnected,
}

/// Why the loader could not produce a sample (the cause of an [`Error::Sample`]).
#[derive(Debug, thiserror::Error)]
pub enum SampleFailure {
    /// The store could not give the sample: a checksum or index mismatch, a read error.
    #[error(transparent)]
    Store(#[from] slotcon_shards::Error),
    /// A stored payload that does not match its index, or views that could not be
    /// rendered from a decoded image.
    #[error(transparent)]
    Image(Box<Error>),
    /// A worker panicked on this sample (the loader goes on with a fresh worker state).
    #[error("worker panicked: {0}")]
    Panic(String),
    /// The loader was stopping when the sample's turn came.
    #[error("loader stopped")]
    Stopped,
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
