//! Unsupervised semantic segmentation on the COCO-Stuff-27 protocol: teacher features
//! and prototype scores per pixel, (a) K-means with 27 clusters matched to the classes by
//! the Hungarian method (PiCIE), (b) each prototype mapped to its majority class.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::Serialize;
use slotcon_augment::decode::{decode_rgb, Limits};
use slotcon_augment::ops::resize::ResizeScratch;
use slotcon_augment::ImageRef;

use super::kmeans::kmeans;
use super::upsample::upsample_argmax;
use super::{Coco27, Confusion, Scores};
use slotcon_train::model::Encoder;

use slotcon_shards::io_err;

use crate::error::{in_range, Error, Result};
use crate::inference::{center_labels, center_view, dense, Dense};

/// Where the data is and how to evaluate.
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    /// Image folder (`.jpg`, `.jpeg`, `.png`).
    pub images: PathBuf,
    /// Label folder: `<image stem>.png`, one byte per pixel, COCO panoptic category ids.
    pub masks: PathBuf,
    /// A COCO panoptic JSON with the `categories` (and their `supercategory`).
    pub categories: PathBuf,
    /// Short side after resizing, and the side of the centre crop (320).
    pub size: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// K-means iterations (at most).
    pub kmeans_iterations: usize,
    /// Seed of the K-means initialisation.
    pub seed: u64,
}

impl SegmentOptions {
    /// The protocol's defaults for these folders: 320 px, batch 8, 50 iterations, seed 0.
    pub fn new(images: PathBuf, masks: PathBuf, categories: PathBuf) -> Self {
        SegmentOptions {
            images,
            masks,
            categories,
            size: 320,
            batch: 8,
            kmeans_iterations: 50,
            seed: 0,
        }
    }

    /// Checks the numbers: `size` in [`crate::inference::SIZE`], `batch` 1 to 256,
    /// `kmeans_iterations` 1 to 10000.
    pub fn check(&self) -> Result<()> {
        in_range("size", self.size, crate::inference::SIZE)?;
        in_range("batch", self.batch, 1..=256)?;
        in_range("kmeans_iterations", self.kmeans_iterations, 1..=10_000)
    }
}

/// The result, with the confusion matrices behind it.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentReport {
    /// Images evaluated.
    pub images: usize,
    /// Images skipped, with the reason (`path: reason`).
    pub skipped: Vec<String>,
    /// The 27 class names.
    pub classes: Vec<String>,
    /// Labelled pixels counted.
    pub pixels: u64,
    /// K-means (27) + Hungarian matching.
    pub hungarian: Scores,
    /// Prototypes mapped to their majority class.
    pub majority: Scores,
    /// Prototypes that won at least one pixel.
    pub prototypes_used: usize,
    /// `[27 × 27]` label × predicted class counts after the Hungarian mapping.
    #[serde(skip)]
    pub hungarian_confusion: Vec<u64>,
    /// The same after the majority mapping.
    #[serde(skip)]
    pub majority_confusion: Vec<u64>,
}

/// Image files of `images` that have a `masks/<stem>.png`, sorted, as pairs.
pub fn labelled_pairs(images: &Path, masks: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(images)
        .map_err(io_err(images))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png")
        })
        .collect();
    if files.is_empty() {
        return Err(Error::Empty {
            path: images.to_path_buf(),
            reason: "no images (.jpg, .jpeg, .png)".into(),
        });
    }
    files.sort();
    let pairs: Vec<(PathBuf, PathBuf)> = files
        .into_iter()
        .filter_map(|img| {
            let mask = masks.join(img.file_stem()?).with_extension("png");
            mask.is_file().then_some((img, mask))
        })
        .collect();
    if pairs.is_empty() {
        return Err(Error::Empty {
            path: images.to_path_buf(),
            reason: format!("no image has a mask in {} (<stem>.png)", masks.display()),
        });
    }
    Ok(pairs)
}

/// A single-channel 8-bit PNG: (bytes, width, height).
pub fn read_mask(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let bad = |reason: String| Error::Mask {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = slotcon_shards::read_bounded(path, slotcon_shards::input::MAX_IMAGE_FILE)?;
    let mut reader = png::Decoder::new(Cursor::new(bytes))
        .read_info()
        .map_err(|e| bad(e.to_string()))?;
    let info = reader.info();
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!(
            "a mask must be 8-bit grayscale, this is {:?} {:?}",
            info.color_type, info.bit_depth
        )));
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| bad("too large".into()))?];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        out.extend_from_slice(&buf[y * frame.line_size..][..w]);
    }
    Ok((out, w, h))
}

/// One image and its labels, prepared.
struct Prepared {
    view: Vec<u8>,
    labels: Vec<u16>,
}

fn prepare(img: &Path, mask: &Path, coco: &Coco27, size: usize, scratch: &mut ResizeScratch) -> Result<Prepared> {
    let bytes = slotcon_shards::read_bounded(img, slotcon_shards::input::MAX_IMAGE_FILE)?;
    let mut rgb = Vec::new();
    let info = decode_rgb(&bytes, Limits::default(), &mut rgb).map_err(|source| Error::Image {
        path: img.to_path_buf(),
        source,
    })?;
    let (w, h) = (info.width as usize, info.height as usize);
    let (m, mw, mh) = read_mask(mask)?;
    if (mw, mh) != (w, h) {
        return Err(Error::Mask {
            path: mask.to_path_buf(),
            reason: format!("mask is {mw}x{mh}, the image {w}x{h}"),
        });
    }
    Ok(Prepared {
        view: center_view(ImageRef::new(&rgb, w, h), size, scratch).map_err(|source| Error::Image {
            path: img.to_path_buf(),
            source,
        })?,
        labels: coco.map_mask(&center_labels(&m, w, h, size)),
    })
}

/// What pass 1 keeps per image: its features at feature resolution and its labels.
struct Kept {
    features: Vec<f32>,
    labels: Vec<u16>,
}

/// Evaluates `encoder` (the teacher, on an inference device). `progress(done, total)`
/// is called after each batch.
pub fn segment(
    encoder: &Encoder,
    device: &Device,
    opts: &SegmentOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SegmentReport> {
    opts.check()?;
    let pairs = labelled_pairs(&opts.images, &opts.masks)?;
    let coco = Coco27::from_panoptic_json(&opts.categories)?;
    let classes = coco.classes.len();
    let (size, mut scratch) = (opts.size, ResizeScratch::default());
    let mut skipped = Vec::new();
    let mut kept: Vec<Kept> = Vec::new();
    let mut proto_conf: Option<Confusion> = None;
    let mut pred = vec![0u16; size * size];
    let mut dims = [0usize; 5];
    for (done, chunk) in pairs.chunks(opts.batch.max(1)).enumerate() {
        let mut batch: Vec<Prepared> = Vec::new();
        for (img, mask) in chunk {
            match prepare(img, mask, &coco, size, &mut scratch) {
                Ok(p) => batch.push(p),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        if !batch.is_empty() {
            let views: Vec<u8> = batch.iter().flat_map(|p| p.view.iter().copied()).collect();
            let out: Dense = dense(encoder, &views, batch.len(), size, device)?;
            let [_, d, k, h, w] = out.dims;
            dims = out.dims;
            let conf = proto_conf.get_or_insert_with(|| Confusion::new(k, classes));
            for (i, p) in batch.into_iter().enumerate() {
                upsample_argmax(
                    &out.scores[i * k * h * w..][..k * h * w],
                    [k, h, w],
                    &mut pred,
                    size,
                    size,
                );
                conf.add(&pred, &p.labels);
                kept.push(Kept {
                    features: out.features[i * d * h * w..][..d * h * w].to_vec(),
                    labels: p.labels,
                });
            }
        }
        progress(((done + 1) * opts.batch).min(pairs.len()), pairs.len());
    }
    let proto_conf = proto_conf.ok_or_else(|| Error::Empty {
        path: opts.images.clone(),
        reason: format!("no image could be evaluated ({})", skipped.join("; ")),
    })?;
    let cluster_conf = cluster(&kept, dims, classes, opts)?;
    let used = (0..proto_conf.clusters)
        .filter(|&k| proto_conf.counts[k * classes..(k + 1) * classes].iter().any(|&c| c > 0))
        .count();
    let (hungarian_map, majority_map) = (cluster_conf.hungarian_mapping(), proto_conf.majority_mapping());
    Ok(SegmentReport {
        images: kept.len(),
        skipped,
        classes: coco.classes.clone(),
        pixels: proto_conf.counts.iter().sum(),
        hungarian_confusion: cluster_conf.mapped(&hungarian_map),
        majority_confusion: proto_conf.mapped(&majority_map),
        hungarian: cluster_conf.scores(hungarian_map),
        majority: proto_conf.scores(majority_map),
        prototypes_used: used,
    })
}

/// Pixels as rows `[n·h·w, d]` from per-image `[d, h, w]` features.
fn pixel_rows(kept: &[Kept], d: usize, hw: usize) -> Vec<f32> {
    let mut rows = Vec::with_capacity(kept.len() * hw * d);
    for k in kept {
        for p in 0..hw {
            rows.extend((0..d).map(|c| k.features[c * hw + p]));
        }
    }
    rows
}

/// K-means on every pixel's feature, then each pixel's cluster after bilinear upsampling
/// of the cluster scores `2·x·c − ‖c‖²` (the negative squared distance up to a per-pixel
/// constant), counted against the labels.
fn cluster(kept: &[Kept], [_, d, _, h, w]: [usize; 5], classes: usize, opts: &SegmentOptions) -> Result<Confusion> {
    let rows = pixel_rows(kept, d, h * w);
    if rows.len() / d < classes {
        return Err(Error::Empty {
            path: opts.images.clone(),
            reason: format!("{} pixels of features cannot make {classes} clusters", rows.len() / d),
        });
    }
    let centroids = kmeans(&rows, d, classes, opts.kmeans_iterations, opts.seed);
    let norms: Vec<f32> = centroids
        .chunks_exact(d)
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect();
    let mut conf = Confusion::new(classes, classes);
    let (mut maps, mut pred) = (vec![0f32; classes * h * w], vec![0u16; opts.size * opts.size]);
    for (i, k) in kept.iter().enumerate() {
        let img = &rows[i * h * w * d..][..h * w * d];
        for (c, centre) in centroids.chunks_exact(d).enumerate() {
            for (p, x) in img.chunks_exact(d).enumerate() {
                let dot: f32 = x.iter().zip(centre).map(|(a, b)| a * b).sum();
                maps[c * h * w + p] = 2.0 * dot - norms[c];
            }
        }
        upsample_argmax(&maps, [classes, h, w], &mut pred, opts.size, opts.size);
        conf.add(&pred, &k.labels);
    }
    Ok(conf)
}
