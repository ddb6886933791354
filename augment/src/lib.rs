//! SlotCon's two-view augmentation, bit-exact with its Pillow/torchvision reference, with
//! the crop and flip geometry as first-class output. No burn dependency: this crate knows
//! pixels, not tensors.
//!
//! - [`decode::decode_rgb`]: JPEG/PNG bytes to RGB as PIL's `convert('RGB')` does;
//! - [`crop`]: the crop samplers (view 1 torchvision's, view 2 conditioned on view 1),
//!   overlap boxes and flips;
//! - [`decode::sample_rgb`]: a stored sample (raw or encoded) as RGB, the one way from
//!   the store to pixels;
//! - [`ops`]: Pillow-exact pixel operations (bicubic resize, flip, colour, blur,
//!   solarize) and the normalisation constants (the trainer normalises on the device);
//! - [`two_views`] / [`two_views_into`]: one sample's two views and their [`TwoViewMeta`],
//!   with every draw from [`SampleRng`]`(seed, epoch, index, view)` (a [`SampleKey`] and
//!   the view);
//! - [`render_sample`]: a store entry's two views (draw, decode the crops' region, render),
//!   as the loader's workers and the benchmarks make them;
//! - [`apply_view`]: the deterministic half, taking injected [`ViewParams`].
//!
//! ```
//! use slotcon_augment::{two_views, AugmentConfig, ImageRef, SampleKey};
//!
//! // A synthetic 320x240 image; real callers decode with `decode::decode_rgb`.
//! let pixels: Vec<u8> = (0..320 * 240 * 3).map(|i| (i % 251) as u8).collect();
//! let img = ImageRef::new(&pixels, 320, 240);
//!
//! let cfg = AugmentConfig::slotcon(); // 224x224, min scale 0.08, SlotCon's probabilities
//! let sample = two_views(img, &cfg, SampleKey::new(0, 0, 42))?; // seed, epoch, sample index
//! assert_eq!(sample.views[0].len(), 224 * 224 * 3);
//! let [b1, b2] = sample.meta.boxes; // the shared region in each view's frame
//! assert!(b1[2] <= 1.0 && b2[2] <= 1.0);
//! # Ok::<(), slotcon_augment::Error>(())
//! ```

pub mod crop;
pub mod decode;
mod error;
mod image;
mod jpeg;
pub mod loader;
pub mod ops;
pub mod rng;
pub mod threads;
mod view;

pub use crop::{Crop, CropSampler, NormBox};
pub use error::{Error, Result, SampleFailure};
pub use image::ImageRef;
pub use loader::{Loader, LoaderBuilder, Order, SkippedSample, TwoViewBatch};
pub use rng::{Draws, Replay, SampleKey, SampleRng};
pub use view::{
    apply_jitter, apply_view, apply_view_timed, draw_sample, draw_two_views, draw_view, render_sample,
    render_two_views, two_views, two_views_into, AugmentConfig, DataConfig, Jitter, OrderKind, RenderError,
    SampleBuffers, Scratch, StageTimes, TwoViewMeta, TwoViewSample, ViewConfig, ViewParams, DEFAULT_ORDER_BLOCK,
    DEFAULT_ORDER_WINDOW, JITTER_OPS,
};
