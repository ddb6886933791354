//! The two views of SlotCon's `CustomDataAugmentation`: settings, the parameters drawn
//! for one view, and applying them.

use serde::{Deserialize, Serialize};

use crate::crop::{overlap_boxes, Crop, CropSampler, NormBox};
use crate::decode::{sample_region, Limits};
use crate::error::Error;
use crate::image::ImageRef;
use crate::ops::{self, color};
use crate::rng::{Draws, SampleKey};
use slotcon_shards::{Sample, StoreKind};

/// The photometric settings of one view.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewConfig {
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Probability of applying colour jitter.
    pub jitter_p: f64,
    /// Brightness factor range `[1 - b, 1 + b]`.
    pub brightness: f64,
    /// Contrast factor range `[1 - c, 1 + c]`.
    pub contrast: f64,
    /// Saturation factor range `[1 - s, 1 + s]`.
    pub saturation: f64,
    /// Hue shift range `[-h, h]` (fraction of the hue circle).
    pub hue: f64,
    /// Probability of converting to grayscale.
    pub grayscale_p: f64,
    /// Probability of a Gaussian blur.
    pub blur_p: f64,
    /// Range of the blur's sigma (PIL's `radius`).
    pub blur_sigma: (f64, f64),
    /// Probability of solarizing.
    pub solarize_p: f64,
    /// Values at or above this are inverted by solarize.
    pub solarize_threshold: u8,
}

/// Everything the two-view augmentation does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Output side in pixels (views are square).
    pub size: u32,
    /// Crop sampling.
    pub crop: CropSampler,
    /// View 2's crop must overlap view 1's (SlotCon: true).
    pub condition_overlap: bool,
    /// View 1 and view 2, which differ in blur and solarize.
    pub views: [ViewConfig; 2],
}

impl AugmentConfig {
    /// SlotCon's `CustomDataAugmentation(size=224, min_scale=0.08)`.
    pub fn slotcon() -> Self {
        let view = ViewConfig {
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 1.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
            solarize_threshold: 128,
        };
        let view2 = ViewConfig {
            blur_p: 0.1,
            solarize_p: 0.2,
            ..view
        };
        AugmentConfig {
            size: 224,
            crop: CropSampler::default(),
            condition_overlap: true,
            views: [view, view2],
        }
    }

    /// Sets the smallest crop area fraction (SlotCon's `--min-scale`).
    pub fn with_min_scale(mut self, min_scale: f64) -> Self {
        self.crop.scale.0 = min_scale;
        self
    }

    /// Sets the output side.
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self::slotcon()
    }
}

/// What a training run asks of the loader: the batch and the views (the `data` part of
/// `slotcon_train::TrainConfig`, whose settings files name these fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Batch size over all ranks.
    pub batch_size: usize,
    /// Side of the views.
    pub image_size: u32,
    /// Smallest crop area fraction.
    pub min_scale: f64,
    /// The epoch order: `global` (uniform over the store), or `block` (locality-aware,
    /// for stores in object storage or larger than memory; see [`crate::Order`]).
    #[serde(default)]
    pub order: OrderKind,
    /// With `order = "block"`: consecutive ids of one shard per run.
    #[serde(default = "default_order_block")]
    pub order_block: u64,
    /// With `order = "block"`: runs whose ids are shuffled together.
    #[serde(default = "default_order_window")]
    pub order_window: u64,
}

/// The epoch order's kind, as settings name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderKind {
    /// Uniform over the store.
    #[default]
    Global,
    /// Runs of consecutive ids, shuffled, mixed within windows.
    Block,
}

/// The default run of the block order: 64 ids (about 10 MB of COCO JPEGs).
pub const DEFAULT_ORDER_BLOCK: u64 = 64;
/// The default window of the block order: 16 runs (1024 samples mixed together).
pub const DEFAULT_ORDER_WINDOW: u64 = 16;

fn default_order_block() -> u64 {
    DEFAULT_ORDER_BLOCK
}

fn default_order_window() -> u64 {
    DEFAULT_ORDER_WINDOW
}

impl DataConfig {
    /// The loader's order these settings give.
    pub fn order(&self) -> crate::Order {
        match self.order {
            OrderKind::Global => crate::Order::Global,
            OrderKind::Block => crate::Order::Block {
                samples: self.order_block,
                window: self.order_window,
            },
        }
    }

    /// SlotCon's augmentation ([`AugmentConfig::slotcon`]) at these views' size and
    /// smallest crop: the one place these settings become the loader's.
    pub fn augment(&self) -> AugmentConfig {
        AugmentConfig::slotcon()
            .with_size(self.image_size)
            .with_min_scale(self.min_scale)
    }
}

/// The four jitter operations, numbered as torchvision's `ColorJitter` numbers them.
pub const JITTER_OPS: [&str; 4] = ["brightness", "contrast", "saturation", "hue"];

/// The colour-jitter parameters of one call: the order and the four factors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Jitter {
    /// The order of the operations, indices into [`JITTER_OPS`].
    pub order: [u8; 4],
    /// Brightness factor.
    pub brightness: f32,
    /// Contrast factor.
    pub contrast: f32,
    /// Saturation factor.
    pub saturation: f32,
    /// Hue shift in `[-0.5, 0.5]`.
    pub hue: f32,
}

/// Every parameter of one view: with these, [`apply_view`] is deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewParams {
    /// The crop in source pixels.
    pub crop: Crop,
    /// Flipped horizontally after resizing.
    pub flip: bool,
    /// Colour jitter, if applied.
    pub jitter: Option<Jitter>,
    /// Converted to grayscale.
    pub grayscale: bool,
    /// Gaussian blur sigma, if blurred.
    pub blur_sigma: Option<f32>,
    /// Solarized (at the config's threshold).
    pub solarize: bool,
}

fn factor(d: &mut impl Draws, spread: f64) -> f32 {
    d.uniform((1.0 - spread).max(0.0), 1.0 + spread) as f32
}

/// Draws a view's photometric parameters (everything but the crop).
pub fn draw_view(d: &mut impl Draws, cfg: &ViewConfig, crop: Crop) -> ViewParams {
    let flip = d.chance(cfg.flip_p);
    let jitter = d.chance(cfg.jitter_p).then(|| Jitter {
        order: d.permutation4(),
        brightness: factor(d, cfg.brightness),
        contrast: factor(d, cfg.contrast),
        saturation: factor(d, cfg.saturation),
        hue: d.uniform(-cfg.hue, cfg.hue) as f32,
    });
    let grayscale = d.chance(cfg.grayscale_p);
    let blur_sigma = d
        .chance(cfg.blur_p)
        .then(|| d.uniform(cfg.blur_sigma.0, cfg.blur_sigma.1) as f32);
    let solarize = d.chance(cfg.solarize_p);
    ViewParams {
        crop,
        flip,
        jitter,
        grayscale,
        blur_sigma,
        solarize,
    }
}

/// Reusable buffers for [`apply_view`].
#[derive(Default)]
pub struct Scratch {
    rows: ops::ResizeScratch,
    blur: ops::BlurScratch,
}

/// Applies `p` to `src`, writing the `size × size` RGB view into `out`:
/// crop and bicubic resize, flip, jitter in its order, grayscale, blur, solarize.
pub fn apply_view(
    src: ImageRef<'_>,
    p: &ViewParams,
    size: usize,
    threshold: u8,
    out: &mut [u8],
    s: &mut Scratch,
) -> crate::Result<()> {
    apply_view_timed(src, p, size, threshold, out, s, &mut StageTimes::default())
}

/// Time spent in each stage of [`apply_view`], summed over calls (for profiling).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Drawing both views' parameters ([`render_sample`]).
    pub draw: std::time::Duration,
    /// Decoding the region that holds both crops ([`render_sample`]).
    pub decode: std::time::Duration,
    /// Crop and bicubic resize.
    pub resize: std::time::Duration,
    /// Horizontal flip.
    pub flip: std::time::Duration,
    /// Colour jitter (all four ops).
    pub jitter: std::time::Duration,
    /// Grayscale.
    pub grayscale: std::time::Duration,
    /// Gaussian blur.
    pub blur: std::time::Duration,
    /// Solarize.
    pub solarize: std::time::Duration,
}

/// [`apply_view`], adding each stage's duration to `t`.
pub fn apply_view_timed(
    src: ImageRef<'_>,
    p: &ViewParams,
    size: usize,
    threshold: u8,
    out: &mut [u8],
    s: &mut Scratch,
    t: &mut StageTimes,
) -> crate::Result<()> {
    let mut clock = std::time::Instant::now();
    let mut lap = |slot: &mut std::time::Duration| {
        let now = std::time::Instant::now();
        *slot += now - clock;
        clock = now;
    };
    ops::resize_bicubic(src, p.crop, out, size, size, &mut s.rows)?;
    lap(&mut t.resize);
    if p.flip {
        ops::hflip(out, size);
        lap(&mut t.flip);
    }
    if let Some(j) = &p.jitter {
        apply_jitter(out, j);
        lap(&mut t.jitter);
    }
    if p.grayscale {
        ops::grayscale(out);
        lap(&mut t.grayscale);
    }
    if let Some(sigma) = p.blur_sigma {
        ops::gaussian_blur(out, size, size, sigma, &mut s.blur);
        lap(&mut t.blur);
    }
    if p.solarize {
        ops::solarize(out, threshold);
        lap(&mut t.solarize);
    }
    Ok(())
}

/// Colour jitter in the drawn order.
pub fn apply_jitter(rgb: &mut [u8], j: &Jitter) {
    for &op in &j.order {
        match op {
            0 => color::adjust_brightness(rgb, j.brightness),
            1 => color::adjust_contrast(rgb, j.contrast),
            2 => color::adjust_saturation(rgb, j.saturation),
            _ => color::adjust_hue(rgb, j.hue),
        }
    }
}

/// The geometry and parameters of a two-view sample (the pixels live elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoViewMeta {
    /// Each view's parameters, including its crop and flip.
    pub params: [ViewParams; 2],
    /// The crops' overlap in each view's normalised frame, `[x1, y1, x2, y2]`, after flips.
    pub boxes: [NormBox; 2],
    /// View 2's crop came from the unconditioned fallback (its box may be empty).
    pub fallback: bool,
}

impl TwoViewMeta {
    /// The crops of both views.
    pub fn crops(&self) -> [Crop; 2] {
        [self.params[0].crop, self.params[1].crop]
    }

    /// The flips of both views.
    pub fn flips(&self) -> [bool; 2] {
        [self.params[0].flip, self.params[1].flip]
    }

    /// The smallest rectangle holding both crops: the pixels the views are made of.
    pub fn bounds(&self) -> Crop {
        let [a, b] = self.crops();
        let (x, y) = (a.left().min(b.left()), a.top().min(b.top()));
        Crop::xywh(x, y, a.right().max(b.right()) - x, a.bottom().max(b.bottom()) - y)
    }
}

/// Draws both views' parameters for a `width × height` image.
pub fn draw_two_views(cfg: &AugmentConfig, width: u32, height: u32, d: [&mut impl Draws; 2]) -> TwoViewMeta {
    let [d1, d2] = d;
    let crop1 = cfg.crop.sample(d1, width, height);
    let (crop2, fallback) = if cfg.condition_overlap {
        cfg.crop.sample_overlapping(d2, width, height, &crop1)
    } else {
        (cfg.crop.sample(d2, width, height), false)
    };
    let p1 = draw_view(d1, &cfg.views[0], crop1);
    let p2 = draw_view(d2, &cfg.views[1], crop2);
    let mut boxes = overlap_boxes(&crop1, &crop2);
    for (b, p) in boxes.iter_mut().zip([&p1, &p2]) {
        if p.flip {
            *b = b.flip();
        }
    }
    TwoViewMeta {
        params: [p1, p2],
        boxes,
        fallback,
    }
}

/// One sample's two views, as owned buffers (see [`two_views_into`] for the hot path).
#[derive(Clone, Debug, PartialEq)]
pub struct TwoViewSample {
    /// Both views, `size × size × 3` RGB u8.
    pub views: [Vec<u8>; 2],
    /// Side of the views.
    pub size: u32,
    /// Parameters and geometry.
    pub meta: TwoViewMeta,
}

/// Draws and renders both views of `src` for sample `index` of `epoch`, into `outs`.
pub fn two_views_into(
    src: ImageRef<'_>,
    cfg: &AugmentConfig,
    key: SampleKey,
    outs: [&mut [u8]; 2],
    s: &mut Scratch,
) -> crate::Result<TwoViewMeta> {
    let meta = draw_sample(cfg, src.width as u32, src.height as u32, key);
    let all = Crop::full(src.width, src.height);
    render_two_views(src, all, &meta, cfg, outs, s, &mut StageTimes::default())?;
    Ok(meta)
}

/// [`draw_two_views`] with the sample's own draws: `key` and the view.
pub fn draw_sample(cfg: &AugmentConfig, width: u32, height: u32, key: SampleKey) -> TwoViewMeta {
    let (mut d1, mut d2) = (key.rng(0), key.rng(1));
    draw_two_views(cfg, width, height, [&mut d1, &mut d2])
}

/// Why [`render_sample`] made no views.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The stored image does not decode: a bad image, to skip and report.
    #[error(transparent)]
    Decode(Error),
    /// The stored payload does not match its index ([`Error::Payload`]: a corrupt entry),
    /// or the views could not be rendered from the decoded pixels.
    #[error(transparent)]
    Render(Error),
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Decode(e) | RenderError::Render(e) => e,
        }
    }
}

/// What [`render_sample`] reuses from one sample to the next.
#[derive(Default)]
pub struct SampleBuffers {
    /// The decoded region's pixels.
    rgb: Vec<u8>,
    /// The ops' scratch.
    scratch: Scratch,
}

/// One stored sample's two views, the one way from a store entry to views (the loader's
/// workers, `slotcon-bench dump` and `profile`): both views' parameters are drawn from
/// `key` and the size the index records, the region that holds both crops is decoded
/// ([`sample_region`]; a raw payload is borrowed whole), and the views are rendered into
/// `outs`. Each stage's duration is added to `t`.
pub fn render_sample(
    store: StoreKind,
    sample: &Sample<'_>,
    cfg: &AugmentConfig,
    key: SampleKey,
    outs: [&mut [u8]; 2],
    bufs: &mut SampleBuffers,
    t: &mut StageTimes,
) -> std::result::Result<TwoViewMeta, RenderError> {
    let clock = std::time::Instant::now();
    let meta = draw_sample(cfg, sample.width, sample.height, key);
    t.draw += clock.elapsed();
    let clock = std::time::Instant::now();
    let (img, at) = match sample_region(store, sample, Limits::default(), meta.bounds(), &mut bufs.rgb) {
        Ok(decoded) => decoded,
        Err(e @ Error::Payload(_)) => return Err(RenderError::Render(e)),
        Err(e) => return Err(RenderError::Decode(e)),
    };
    t.decode += clock.elapsed();
    render_two_views(img, at, &meta, cfg, outs, &mut bufs.scratch, t).map_err(RenderError::Render)?;
    Ok(meta)
}

/// Renders both views of `meta` into `outs` from `src`, the part of the image at `at`
/// (which must hold [`TwoViewMeta::bounds`]: a partial decode's region, or the whole),
/// adding each stage's duration to `t`.
pub fn render_two_views(
    src: ImageRef<'_>,
    at: Crop,
    meta: &TwoViewMeta,
    cfg: &AugmentConfig,
    outs: [&mut [u8]; 2],
    s: &mut Scratch,
    t: &mut StageTimes,
) -> crate::Result<()> {
    for ((p, v), out) in meta.params.iter().zip(&cfg.views).zip(outs) {
        let local = ViewParams {
            crop: local_crop(p.crop, at)?,
            ..*p
        };
        apply_view_timed(src, &local, cfg.size as usize, v.solarize_threshold, out, s, t)?;
    }
    Ok(())
}

/// `crop`, given in the image, relative to the part of it at `at`.
fn local_crop(crop: Crop, at: Crop) -> crate::Result<Crop> {
    if crop.j < at.j || crop.i < at.i || crop.right() > at.right() || crop.bottom() > at.bottom() {
        return Err(crate::Error::Geometry(format!(
            "crop {crop:?} lies outside the decoded part {at:?}"
        )));
    }
    Ok(Crop {
        i: crop.i - at.i,
        j: crop.j - at.j,
        ..crop
    })
}

/// [`two_views_into`] with freshly allocated views.
pub fn two_views(src: ImageRef<'_>, cfg: &AugmentConfig, key: SampleKey) -> crate::Result<TwoViewSample> {
    let n = cfg.size as usize * cfg.size as usize * 3;
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    let meta = two_views_into(src, cfg, key, [&mut a, &mut b], &mut Scratch::default())?;
    Ok(TwoViewSample {
        views: [a, b],
        size: cfg.size,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SampleRng;

    fn image(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3).map(|i| ((i * 7) ^ (i / 3)) as u8).collect()
    }

    #[test]
    fn same_key_same_sample_other_key_other_sample() {
        let data = image(96, 64);
        let src = ImageRef::new(&data, 96, 64);
        let cfg = AugmentConfig::slotcon().with_size(32);
        let key = SampleKey::new(1, 2, 3);
        let a = two_views(src, &cfg, key).unwrap();
        assert_eq!(a, two_views(src, &cfg, key).unwrap());
        let next = SampleKey { index: 4, ..key };
        assert_ne!(a.meta, two_views(src, &cfg, next).unwrap().meta);
    }

    #[test]
    fn view_one_always_blurs_and_never_solarizes() {
        let cfg = AugmentConfig::slotcon();
        for index in 0..500 {
            let mut d = [SampleRng::new(0, 0, index, 0), SampleRng::new(0, 0, index, 1)];
            let [d1, d2] = &mut d;
            let m = draw_two_views(&cfg, 640, 480, [d1, d2]);
            assert!(m.params[0].blur_sigma.is_some() && !m.params[0].solarize);
            let sigma = m.params[0].blur_sigma.unwrap();
            assert!((0.1..=2.0).contains(&sigma));
        }
    }

    #[test]
    fn boxes_lie_in_the_unit_square_when_crops_overlap() {
        let cfg = AugmentConfig::slotcon();
        for index in 0..3000 {
            let mut d = [SampleRng::new(5, 1, index, 0), SampleRng::new(5, 1, index, 1)];
            let [d1, d2] = &mut d;
            let m = draw_two_views(&cfg, 500, 375, [d1, d2]);
            if crate::crop::intersection(&m.params[0].crop, &m.params[1].crop) > 0 {
                for b in m.boxes {
                    assert!(
                        b.iter().all(|v| (0.0..=1.0).contains(v)) && b[0] < b[2] && b[1] < b[3],
                        "{b:?}"
                    );
                }
            }
        }
    }
}
