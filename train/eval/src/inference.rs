//! A finished run, for inference: its checkpoint loaded, images prepared the evaluation
//! way (short side resized, centre crop), and dense teacher outputs on the host.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use slotcon_augment::crop::round_half_even;
use slotcon_augment::ops::resize::{resize_bicubic, ResizeScratch};
use slotcon_augment::{Crop, ImageRef};
use slotcon_shards::format::read_json;
use slotcon_train::checkpoint::{checkpoints, first_non_finite, verify};
use slotcon_train::device::DeviceChoice;
use slotcon_train::model::heads::l2_normalize;
use slotcon_train::model::{Encoder, SlotConNet};
use slotcon_train::normalized;
use slotcon_train::trainer::Progress;
use slotcon_train::TrainConfig;

use crate::error::{Error, Result};

/// A run's checkpoint, loaded.
pub struct LoadedRun {
    /// The config the checkpoint was trained with.
    pub cfg: TrainConfig,
    /// Student, teacher and predictor.
    pub net: SlotConNet,
    /// Steps it had taken.
    pub step: u64,
    /// The checkpoint folder.
    pub dir: PathBuf,
}

/// The names of a run's checkpoints (`current`, `epoch-NNNN`), sorted.
pub fn checkpoint_names(run: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(checkpoints(run)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("progress.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The folder of checkpoint `name` of `run`, its files checked against `checkpoint.json`,
/// and its config; a missing checkpoint is an error listing the ones the run has. During
/// a checkpoint swap `current` is the sealed new checkpoint or the previous one
/// ([`slotcon_train::checkpoint::resolve`]), never missing.
pub fn open_checkpoint(run: &Path, name: &str) -> Result<(PathBuf, TrainConfig)> {
    let dir = slotcon_train::checkpoint::resolve(run, name);
    if !dir.join("progress.json").is_file() {
        let have = checkpoint_names(run);
        let have = if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        };
        return Err(Error::NoCheckpoint { path: dir, have });
    }
    verify(&dir)?;
    let cfg = TrainConfig::load(&dir.join("config.json"))?;
    Ok((dir, cfg))
}

/// Loads checkpoint `name` of `run` onto `device` (an inference device: BatchNorm then
/// uses its running statistics), after checking its files against `checkpoint.json`;
/// a checkpoint with a NaN or an infinity in any tensor is refused, so nothing
/// non-finite is ever exported.
pub fn load_run(run: &Path, name: &str, device: &Device) -> Result<LoadedRun> {
    let (dir, cfg) = open_checkpoint(run, name)?;
    let mut net = cfg.model.init(device);
    let path = dir.join("model.bpk");
    let mut store = BurnpackStore::from_file(&path);
    let mismatch = |reason: String| Error::Weights {
        path: path.clone(),
        reason: format!(
            "does not fit the checkpoint's config ({}, {} prototypes, dim {}): {reason}",
            cfg.model.arch.name(),
            cfg.model.num_prototypes,
            cfg.model.dim_out
        ),
    };
    let result = net.load_from(&mut store).map_err(|e| mismatch(e.to_string()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        let first = match result.errors.first() {
            Some(e) => e.to_string(),
            None => format!(
                "missing {}",
                result.missing.first().map_or("", |(name, _)| name.as_str())
            ),
        };
        return Err(mismatch(format!(
            "{} problems, first: {first}",
            result.errors.len() + result.missing.len()
        )));
    }
    if let Some(tensor) = first_non_finite(&net) {
        return Err(Error::Weights {
            path,
            reason: format!("{tensor} holds a NaN or an infinity; refusing to use it"),
        });
    }
    let progress: Progress = read_json(&dir.join("progress.json"))?;
    Ok(LoadedRun {
        cfg,
        net,
        step: progress.step,
        dir,
    })
}

/// Makes the inference device `choice` and loads checkpoint `name` of `run` there, in f32
/// (the weights a run keeps in either precision).
pub fn open_run(run: &Path, name: &str, choice: DeviceChoice) -> Result<(LoadedRun, Device)> {
    let device = choice.inference()?;
    Ok((load_run(run, name, &device)?, device))
}

/// Evaluation sizes (short side and crop) accepted: at least one cell of the backbone's
/// stride-32 feature map, at most 1024 px.
pub const SIZE: std::ops::RangeInclusive<usize> = 32..=1024;

/// The evaluation geometry: resize so the short side is `size` (torchvision's `Resize`:
/// the long side truncated), then a centred `size × size` crop (`CenterCrop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalGeometry {
    /// Size after resizing, `(w, h)`.
    pub resized: (usize, usize),
    /// The crop in the resized image.
    pub crop: Crop,
}

impl EvalGeometry {
    /// The geometry for a `w × h` image.
    pub fn new(w: usize, h: usize, size: usize) -> Self {
        let (short, long) = (w.min(h), w.max(h));
        let long_new = (size as f64 * long as f64 / short as f64) as usize;
        let resized = if w <= h { (size, long_new) } else { (long_new, size) };
        let x = round_half_even((resized.0 - size) as f64 / 2.0) as usize;
        let y = round_half_even((resized.1 - size) as f64 / 2.0) as usize;
        EvalGeometry {
            resized,
            crop: Crop::xywh(x, y, size, size),
        }
    }
}

/// The most pixels the evaluation resizes an image to before its centre crop: Pillow's
/// decompression-bomb limit, as for decoding. Only an image far more elongated than a
/// photo (100000 × 1, resized to a short side of 320: 10 G pixels) meets it.
pub const MAX_RESIZED_PIXELS: u64 = slotcon_augment::decode::PIL_MAX_IMAGE_PIXELS;

/// An RGB image resized (Pillow bicubic) and centre-cropped to `size × size`. An image
/// so elongated that the resized image would hold more than [`MAX_RESIZED_PIXELS`] is an
/// error, before anything is allocated.
pub fn center_view(img: ImageRef<'_>, size: usize, scratch: &mut ResizeScratch) -> slotcon_augment::Result<Vec<u8>> {
    let (w, h) = (img.width, img.height);
    let g = EvalGeometry::new(w, h, size);
    let pixels = (g.resized.0 as u128) * (g.resized.1 as u128);
    if pixels > MAX_RESIZED_PIXELS as u128 {
        return Err(slotcon_augment::Error::Geometry(format!(
            "a {w}x{h} image resized to a short side of {size} would be {}x{} ({pixels} pixels), more than \
             the {MAX_RESIZED_PIXELS} the evaluation resizes",
            g.resized.0, g.resized.1
        )));
    }
    let mut resized = vec![0u8; g.resized.0 * g.resized.1 * 3];
    resize_bicubic(img, Crop::full(w, h), &mut resized, g.resized.0, g.resized.1, scratch)?;
    let mut out = Vec::with_capacity(size * size * 3);
    for y in g.crop.top()..g.crop.bottom() {
        let row = &resized[(y * g.resized.0 + g.crop.left()) * 3..];
        out.extend_from_slice(&row[..size * 3]);
    }
    Ok(out)
}

/// A label map (one byte per pixel) resized with Pillow's nearest rule and cropped like
/// [`center_view`].
pub fn center_labels(mask: &[u8], w: usize, h: usize, size: usize) -> Vec<u8> {
    let g = EvalGeometry::new(w, h, size);
    let src_of = |dst: usize, n_in: usize, n_out: usize| {
        (((dst as f64 + 0.5) * n_in as f64 / n_out as f64) as usize).min(n_in - 1)
    };
    let mut out = Vec::with_capacity(size * size);
    for y in g.crop.top()..g.crop.bottom() {
        let sy = src_of(y, h, g.resized.1);
        for x in g.crop.left()..g.crop.right() {
            out.push(mask[sy * w + src_of(x, w, g.resized.0)]);
        }
    }
    out
}

/// Dense teacher outputs of a batch, on the host.
#[derive(Clone, Debug)]
pub struct Dense {
    /// L2-normalised projector features, `[n, d, h, w]`.
    pub features: Vec<f32>,
    /// Cosine scores against the prototypes, `[n, k, h, w]`.
    pub scores: Vec<f32>,
    /// `[n, d, k, h, w]`.
    pub dims: [usize; 5],
}

/// Runs `encoder` on `views` (`n` RGB `s × s` images, HWC bytes) normalised as in training.
pub fn dense(encoder: &Encoder, views: &[u8], n: usize, s: usize, device: &Device) -> Result<Dense> {
    let x = normalized(views.to_vec(), n, s, device);
    let feats = encoder.projector.forward(encoder.backbone.forward(x));
    let [_, d, h, w] = feats.dims();
    let feats = l2_normalize(feats.reshape([n, d, h * w]), 1);
    let protos = l2_normalize(encoder.grouping.prototypes(), 1);
    let k = protos.dims()[0];
    let scores = protos.unsqueeze_dim::<3>(0).expand([n, k, d]).matmul(feats.clone());
    let host = |t: Tensor<3>| {
        t.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Tensor(e.to_string()))
    };
    Ok(Dense {
        features: host(feats)?,
        scores: host(scores)?,
        dims: [n, d, k, h, w],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_too_elongated_to_resize_is_an_error_before_any_allocation() {
        let thin = vec![7u8; 100_000 * 3];
        let e = center_view(ImageRef::new(&thin, 100_000, 1), 320, &mut ResizeScratch::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a 100000x1 image resized to a short side of 320 would be 32000000x320"),
            "{e}"
        );
        let photo = vec![7u8; 640 * 480 * 3];
        let view = center_view(ImageRef::new(&photo, 640, 480), 224, &mut ResizeScratch::default()).unwrap();
        assert_eq!(view.len(), 224 * 224 * 3);
    }

    #[test]
    fn geometry_follows_torchvision_resize_and_center_crop() {
        // 640x427 -> Resize(320) = 479x320 (479.6 truncated); CenterCrop: round(79.5) = 80.
        let g = EvalGeometry::new(640, 427, 320);
        assert_eq!(g.resized, (479, 320));
        assert_eq!((g.crop.left(), g.crop.top()), (80, 0));
        // The portrait image.
        let g = EvalGeometry::new(427, 640, 320);
        assert_eq!(g.resized, (320, 479));
        assert_eq!((g.crop.left(), g.crop.top()), (0, 80));
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
    }

    #[test]
    fn labels_keep_their_values_and_size() {
        let (w, h) = (64, 48);
        let mask: Vec<u8> = (0..w * h).map(|i| ((i % w) / 16) as u8).collect();
        let out = center_labels(&mask, w, h, 32);
        assert_eq!(out.len(), 32 * 32);
        assert!(out.iter().all(|&v| v < 4));
        assert_eq!(out[0], 0);
        assert_eq!(out[31], 3);
    }
}
