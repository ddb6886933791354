//! `slotcon-bench dump`: the views the loader makes for the first samples, as PNGs plus
//! every parameter of each view in `samples.json`, for people and outside tools to
//! inspect, and to re-render each view with PIL + torchvision from the stored bytes
//! (`tests/python/check_dump.py` does, and finds them equal byte for byte).

use std::path::Path;

use serde::Serialize;
use slotcon_augment::{render_sample, AugmentConfig, NormBox, SampleBuffers, SampleKey, StageTimes, ViewParams};
use slotcon_shards::{RemoteSettings, ShardReader};

use crate::error::{Error, Result};

/// One dumped sample, as written to `samples.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Dumped {
    /// Sample id.
    pub id: u64,
    /// Source path.
    pub path: String,
    /// Source width.
    pub width: u32,
    /// Source height.
    pub height: u32,
    /// `[[i, j, h, w], [i, j, h, w]]` in source pixels.
    pub crops: [[u32; 4]; 2],
    /// `[[x1, y1, x2, y2], ...]` in each view's normalised frame, after flips.
    pub boxes: [NormBox; 2],
    /// Horizontal flips.
    pub flips: [bool; 2],
    /// The side of each (square) view in pixels.
    pub size: u32,
    /// Every parameter of each view, in the order the pipeline applies them: the crop,
    /// the flip, the colour jitter (its order, indices into brightness, contrast,
    /// saturation, hue, and its four factors), grayscale, the blur sigma, solarize (at
    /// 128). Floats are the f32 values the pipeline used, written as the shortest
    /// decimal that reads back as that f32.
    pub params: [ViewParams; 2],
}

/// Writes `OUT/<id>_v1.png`, `OUT/<id>_v2.png` for ids `0..n` (epoch 0 of `seed`, the
/// loader's own draws) and `OUT/samples.json`.
pub fn dump(shards: &Path, store: &RemoteSettings, n: u64, seed: u64, out: &Path) -> Result<Vec<Dumped>> {
    let reader = ShardReader::open_with(shards, store)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let cfg = AugmentConfig::slotcon();
    let (mut bufs, mut all) = (SampleBuffers::default(), Vec::new());
    let n_px = cfg.size as usize * cfg.size as usize * 3;
    let mut views = [vec![0u8; n_px], vec![0u8; n_px]];
    for id in 0..n.min(reader.len()) {
        let s = reader.get(id)?;
        let [a, b] = &mut views;
        let key = SampleKey::new(seed, 0, id);
        let times = &mut StageTimes::default();
        let meta = render_sample(reader.store(), &s, &cfg, key, [a, b], &mut bufs, times)
            .map_err(slotcon_augment::Error::from)?;
        for (v, pixels) in views.iter().enumerate() {
            write_png(&out.join(format!("{id}_v{}.png", v + 1)), pixels, cfg.size)?;
        }
        let c = meta.crops().map(|c| [c.i, c.j, c.h, c.w]);
        all.push(Dumped {
            id,
            path: s.path.into(),
            width: s.width,
            height: s.height,
            crops: c,
            boxes: meta.boxes,
            flips: meta.flips(),
            size: cfg.size,
            params: meta.params,
        });
    }
    let json = out.join("samples.json");
    let text = serde_json::to_vec_pretty(&all).expect("json");
    std::fs::write(&json, text).map_err(|source| Error::Io { path: json, source })?;
    Ok(all)
}

fn write_png(path: &Path, rgb: &[u8], size: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let mut enc = png::Encoder::new(file, size, size);
    enc.set_color(png::ColorType::Rgb);
    let png_err = |e: png::EncodingError| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    enc.write_header()
        .map_err(png_err)?
        .write_image_data(rgb)
        .map_err(png_err)
}
