//! Pictures of what the slots learned: the prototype retrieval grid (the paper's
//! Fig. 3), per-image slot overlays, training curves and confusion matrices, drawn on a
//! small RGB [`canvas::Canvas`] and written as PNG.

pub mod canvas;
pub mod confusion;
pub mod curves;
mod font;
pub mod overlay;
pub mod prototypes;

use std::path::Path;

use burn::prelude::Device;
use slotcon_augment::decode::{decode_rgb, sample_rgb, Limits};
use slotcon_augment::ops::resize::ResizeScratch;
use slotcon_augment::ImageRef;
use slotcon_shards::ShardReader;
use slotcon_train::model::Encoder;

use crate::error::{in_range, Error, Result};
use crate::inference::{center_view, dense, SIZE};
use crate::segment::upsample::upsample_argmax;
use canvas::Canvas;
use prototypes::{grid_png, retrieve, sample_prototypes, Row};

/// Settings of [`prototype_grid`].
#[derive(Clone, Debug)]
pub struct GridOptions {
    /// Side the images are resized (short side) and cropped to for the teacher.
    pub size: usize,
    /// Side of a tile in the grid.
    pub tile: usize,
    /// Images per prototype.
    pub topk: usize,
    /// Prototypes shown.
    pub sample: usize,
    /// Seed of the prototype sample.
    pub seed: u64,
    /// Images per forward pass.
    pub batch: usize,
    /// Look at the first this many images of the store only.
    pub max_images: Option<u64>,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            size: 224,
            tile: 96,
            topk: 5,
            sample: 20,
            seed: 0,
            batch: 8,
            max_images: None,
        }
    }
}

impl GridOptions {
    /// Images per prototype accepted.
    pub const TOPK: std::ops::RangeInclusive<usize> = 1..=20;
    /// Prototypes shown accepted.
    pub const SAMPLE: std::ops::RangeInclusive<usize> = 1..=100;
    /// Tile sides accepted (with the two above, the grid is at most 4600 x 22804 px).
    pub const TILE: std::ops::RangeInclusive<usize> = 8..=224;

    /// Checks every number: `size` in [`crate::inference::SIZE`], `tile`, `topk` and
    /// `sample` in their ranges, `batch` 1 to 256, `max_images` at least 1.
    pub fn check(&self) -> Result<()> {
        in_range("size", self.size, SIZE)?;
        in_range("tile", self.tile, Self::TILE)?;
        in_range("topk", self.topk, Self::TOPK)?;
        in_range("sample", self.sample, Self::SAMPLE)?;
        in_range("batch", self.batch, 1..=256)?;
        in_range("max_images", self.max_images.unwrap_or(1), 1..=u64::MAX)
    }
}

/// Image `id` of the store, resized and centre-cropped to `size` for the teacher.
fn store_view(
    reader: &ShardReader,
    id: u64,
    size: usize,
    buf: &mut Vec<u8>,
    scratch: &mut ResizeScratch,
) -> Result<Vec<u8>> {
    let s = reader.get(id)?;
    let image_err = |source| Error::Image {
        path: reader.dir().join(s.path),
        source,
    };
    let img = sample_rgb(reader.store(), &s, Limits::default(), buf).map_err(image_err)?;
    center_view(img, size, scratch).map_err(image_err)
}

/// The teacher's score maps of every image of the store (`[n, k, h·w]`) and the ids they
/// belong to; undecodable images are left out.
fn store_scores(
    reader: &ShardReader,
    encoder: &Encoder,
    device: &Device,
    opts: &GridOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<f32>, Vec<u64>, [usize; 3])> {
    let n = opts.max_images.map_or(reader.len(), |m| m.min(reader.len()));
    let (mut scores, mut ids, mut dims) = (Vec::new(), Vec::new(), [0; 3]);
    let (mut rgb, mut scratch) = (Vec::new(), ResizeScratch::default());
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(opts.batch.max(1)) {
        let mut views = Vec::new();
        let mut batch_ids = Vec::new();
        for &id in chunk {
            if let Ok(view) = store_view(reader, id, opts.size, &mut rgb, &mut scratch) {
                views.extend(view);
                batch_ids.push(id);
            }
        }
        if !batch_ids.is_empty() {
            let out = dense(encoder, &views, batch_ids.len(), opts.size, device)?;
            let [_, _, k, h, w] = out.dims;
            dims = [k, h, w];
            scores.extend(out.scores);
            ids.extend(batch_ids);
        }
        progress(chunk[chunk.len() - 1] + 1, n);
    }
    if ids.is_empty() {
        return Err(Error::Empty {
            path: reader.dir().to_path_buf(),
            reason: "no image could be read".into(),
        });
    }
    Ok((scores, ids, dims))
}

/// The prototype grid of `encoder` (the teacher, on an inference device) over the store,
/// and the prototypes it shows.
pub fn prototype_grid(
    reader: &ShardReader,
    encoder: &Encoder,
    device: &Device,
    opts: &GridOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Canvas, Vec<usize>)> {
    opts.check()?;
    let (scores, ids, [k, h, w]) = store_scores(reader, encoder, device, opts, progress)?;
    let hits = retrieve(&scores, ids.len(), k, h * w, opts.topk);
    let chosen = sample_prototypes(&hits, opts.sample, opts.seed);
    let (mut rgb, mut scratch) = (Vec::new(), ResizeScratch::default());
    let mut assign = vec![0u16; opts.tile * opts.tile];
    let mut rows: Vec<Row> = Vec::new();
    for &proto in &chosen {
        let mut tiles = Vec::new();
        for hit in &hits[proto] {
            let view = store_view(reader, ids[hit.image], opts.tile, &mut rgb, &mut scratch)?;
            let maps = &scores[hit.image * k * h * w..][..k * h * w];
            upsample_argmax(maps, [k, h, w], &mut assign, opts.tile, opts.tile);
            tiles.push((view, assign.iter().map(|&a| a as usize == proto).collect()));
        }
        rows.push((proto, tiles));
    }
    Ok((grid_png(&rows, opts.tile, opts.topk), chosen))
}

/// The slot overlay of one image file at `size` (short side resized, centre crop).
pub fn image_overlay(path: &Path, encoder: &Encoder, device: &Device, size: usize) -> Result<Canvas> {
    in_range("size", size, SIZE)?;
    let bytes = slotcon_shards::read_bounded(path, slotcon_shards::input::MAX_IMAGE_FILE)?;
    let image_err = |source| Error::Image {
        path: path.to_path_buf(),
        source,
    };
    let mut rgb = Vec::new();
    let info = decode_rgb(&bytes, Limits::default(), &mut rgb).map_err(image_err)?;
    let img = ImageRef::new(&rgb, info.width as usize, info.height as usize);
    let view = center_view(img, size, &mut ResizeScratch::default()).map_err(image_err)?;
    let out = dense(encoder, &view, 1, size, device)?;
    let [_, _, k, h, w] = out.dims;
    let mut assign = vec![0u16; size * size];
    upsample_argmax(&out.scores, [k, h, w], &mut assign, size, size);
    Ok(overlay::overlay_png(&view, size, &assign))
}
