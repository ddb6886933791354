//! The augmentation against its reference: every op, and the whole view, compared with
//! Pillow + torchvision (run from Python) on real COCO crops with the same parameters.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use slotcon_augment::decode::{decode_rgb, decode_rgb_region, Limits};
use slotcon_augment::ops::{self, color};
use slotcon_augment::{
    draw_two_views, AugmentConfig, Crop, CropSampler, Draws, ImageRef, SampleKey, SampleRng, Scratch, ViewParams,
};
use slotcon_tests::{coco128, python_script};

const SIZE: usize = 224;

/// Decoded COCO images (the first `n` in sorted order).
fn coco_images(n: usize) -> Vec<(Vec<u8>, usize, usize)> {
    let dir = coco128().join("images/train2017");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .iter()
        .take(n)
        .map(|p| {
            let mut rgb = Vec::new();
            let info = decode_rgb(&std::fs::read(p).unwrap(), Limits::default(), &mut rgb).unwrap();
            (rgb, info.width as usize, info.height as usize)
        })
        .collect()
}

/// Cases for `parity_ops.py`: inputs and Rust outputs on disk plus `cases.json`.
struct Cases {
    dir: PathBuf,
    list: Vec<Value>,
    n: usize,
}

impl Cases {
    fn new(dir: &Path) -> Self {
        Cases {
            dir: dir.to_path_buf(),
            list: Vec::new(),
            n: 0,
        }
    }

    fn input(&mut self, rgb: &[u8]) -> String {
        self.n += 1;
        let name = format!("in{}.rgb", self.n);
        std::fs::write(self.dir.join(&name), rgb).unwrap();
        name
    }

    fn case(
        &mut self,
        op: &str,
        input: &str,
        (w, h): (usize, usize),
        params: Value,
        out: &[u8],
        (ow, oh): (usize, usize),
    ) {
        self.n += 1;
        let output = format!("out{}.bin", self.n);
        std::fs::write(self.dir.join(&output), out).unwrap();
        self.list.push(
            json!({"op": op, "input": input, "w": w, "h": h, "params": params, "output": output, "ow": ow, "oh": oh}),
        );
    }

    fn run(self) -> Value {
        std::fs::write(self.dir.join("cases.json"), serde_json::to_vec(&self.list).unwrap()).unwrap();
        serde_json::from_str(&python_script("parity_ops.py", &[&self.dir])).unwrap()
    }
}

fn assert_exact(stats: &Value, op: &str, min_cases: u64) {
    let s = &stats[op];
    assert!(s["cases"].as_u64().unwrap() >= min_cases, "{op}: too few cases: {s}");
    assert_eq!(s["exact"], s["cases"], "{op} is not bit-exact with the reference: {s}");
}

/// A view's parameters as the Python reference reads them (floats as exact doubles).
fn view_json(p: &ViewParams) -> Value {
    let c = p.crop;
    let jitter = p.jitter.map(|j| {
        json!({"order": j.order, "brightness": j.brightness as f64, "contrast": j.contrast as f64,
               "saturation": j.saturation as f64, "hue": j.hue as f64})
    });
    json!({"size": SIZE, "crop": {"i": c.i, "j": c.j, "h": c.h, "w": c.w}, "flip": p.flip, "jitter": jitter,
           "grayscale": p.grayscale, "blur_sigma": p.blur_sigma.map(|s| s as f64), "solarize": p.solarize})
}

#[test]
fn every_op_is_bit_exact_with_pillow_and_torchvision() {
    let tmp = tempfile::tempdir().unwrap();
    let images = coco_images(20);
    let sampler = CropSampler::default();
    let mut cases = Cases::new(tmp.path());
    let mut rng = SampleRng::new(2024, 0, 0, 0);
    let mut rows = ops::ResizeScratch::default();
    for draw in 0..200u64 {
        let (rgb, w, h) = &images[draw as usize % images.len()];
        let src = ImageRef::new(rgb, *w, *h);
        // A real SlotCon crop of a real image, resized: the input of every other op.
        let crop = sampler.sample(&mut rng, *w as u32, *h as u32);
        let mut base = vec![0u8; SIZE * SIZE * 3];
        ops::resize_bicubic(src, crop, &mut base, SIZE, SIZE, &mut rows).unwrap();
        if draw < 60 {
            let full = cases.input(rgb);
            let p = json!({"i": crop.i, "j": crop.j, "h": crop.h, "w": crop.w, "size": SIZE});
            cases.case("resize", &full, (*w, *h), p, &base, (SIZE, SIZE));
        }
        let input = cases.input(&base);
        one_input_cases(&mut cases, &input, &base, draw, &mut rng);
    }
    // Resize also on crops drawn from every image size, upscaling included.
    for draw in 60..200u64 {
        let (rgb, w, h) = &images[draw as usize % images.len()];
        let crop = CropSampler {
            scale: (0.005, 1.0),
            ..sampler
        }
        .sample(&mut rng, *w as u32, *h as u32);
        let mut out = vec![0u8; SIZE * SIZE * 3];
        ops::resize_bicubic(ImageRef::new(rgb, *w, *h), crop, &mut out, SIZE, SIZE, &mut rows).unwrap();
        let full = cases.input(rgb);
        cases.case(
            "resize",
            &full,
            (*w, *h),
            json!({"i": crop.i, "j": crop.j, "h": crop.h, "w": crop.w, "size": SIZE}),
            &out,
            (SIZE, SIZE),
        );
    }
    let stats = cases.run();
    for op in [
        "resize",
        "hflip",
        "brightness",
        "contrast",
        "saturation",
        "hue",
        "grayscale",
        "blur",
        "solarize",
        "normalize",
    ] {
        assert_exact(&stats, op, 200);
    }
}

/// All single-op cases on one input view.
fn one_input_cases(cases: &mut Cases, input: &str, base: &[u8], draw: u64, rng: &mut SampleRng) {
    let sz = (SIZE, SIZE);
    let edge = |d: u64, lo: f64, hi: f64, rng: &mut SampleRng| match d {
        0 => lo,
        1 => hi,
        2 => 1.0,
        _ => rng.uniform(lo, hi),
    };
    let mut run = |op: &str, params: Value, f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = base.to_vec();
        f(&mut out);
        cases.case(op, input, sz, params, &out, sz);
    };
    run("hflip", json!({}), &|v| ops::hflip(v, SIZE));
    for (op, lo, hi) in [
        ("brightness", 0.6, 1.4),
        ("contrast", 0.6, 1.4),
        ("saturation", 0.8, 1.2),
    ] {
        let f = edge(draw, lo, hi, rng) as f32;
        run(op, json!({"factor": f as f64}), &|v| match op {
            "brightness" => color::adjust_brightness(v, f),
            "contrast" => color::adjust_contrast(v, f),
            _ => color::adjust_saturation(v, f),
        });
    }
    let hue: f32 = match draw {
        0 => -0.5,
        1 => 0.5,
        2 => 0.0,
        _ => rng.uniform(-0.1, 0.1) as f32,
    };
    run("hue", json!({"factor": hue as f64}), &|v| color::adjust_hue(v, hue));
    run("grayscale", json!({}), &|v| color::grayscale(v));
    let sigma = rng.uniform(0.1, 2.0) as f32;
    run("blur", json!({"sigma": sigma as f64}), &|v| {
        ops::gaussian_blur(v, SIZE, SIZE, sigma, &mut ops::BlurScratch::default())
    });
    run("solarize", json!({"threshold": 128}), &|v| color::solarize(v, 128));
    for device in normalize_devices() {
        cases.case("normalize", input, sz, json!({}), &normalized_bytes(base, &device), sz);
    }
}

/// The devices the trainer's normalisation is checked on: flex, and LibTorch CPU in a
/// `tch` build.
fn normalize_devices() -> Vec<burn::prelude::Device> {
    #[allow(unused_mut)]
    let mut devices = vec![burn::prelude::Device::flex()];
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    devices.push(burn::prelude::Device::libtorch());
    devices
}

/// One view through the trainer's normalisation (`[1, 3, s, s]` float32), as bytes.
fn normalized_bytes(view: &[u8], device: &burn::prelude::Device) -> Vec<u8> {
    let x = slotcon_train::normalized(view.to_vec(), 1, SIZE, device);
    let floats: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    floats.iter().flat_map(|f| f.to_le_bytes()).collect()
}

#[test]
fn hue_is_exact_on_every_rgb_colour() {
    let tmp = tempfile::tempdir().unwrap();
    // 4096 x 4096 pixels: all 2^24 colours once.
    let all: Vec<u8> = (0u32..1 << 24)
        .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
        .collect();
    let mut cases = Cases::new(tmp.path());
    let input = cases.input(&all);
    for hue in [-0.1f32, 0.0371, 0.1, -0.5] {
        let mut out = all.clone();
        color::adjust_hue(&mut out, hue);
        cases.case(
            "hue",
            &input,
            (4096, 4096),
            json!({"factor": hue as f64}),
            &out,
            (4096, 4096),
        );
    }
    assert_exact(&cases.run(), "hue", 4);
}

#[test]
fn whole_views_match_the_reference_pipeline_with_injected_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let images = coco_images(40);
    let cfg = AugmentConfig::slotcon();
    let mut cases = Cases::new(tmp.path());
    let mut scratch = Scratch::default();
    for (index, (rgb, w, h)) in images.iter().enumerate() {
        let src = ImageRef::new(rgb, *w, *h);
        let input = cases.input(rgb);
        for epoch in 0..3u64 {
            let mut d = [
                SampleRng::new(7, epoch, index as u64, 0),
                SampleRng::new(7, epoch, index as u64, 1),
            ];
            let [d1, d2] = &mut d;
            let meta = draw_two_views(&cfg, *w as u32, *h as u32, [d1, d2]);
            for (p, v) in meta.params.iter().zip(&cfg.views) {
                let mut out = vec![0u8; SIZE * SIZE * 3];
                slotcon_augment::apply_view(src, p, SIZE, v.solarize_threshold, &mut out, &mut scratch).unwrap();
                cases.case("view", &input, (*w, *h), view_json(p), &out, (SIZE, SIZE));
            }
        }
    }
    assert_exact(&cases.run(), "view", 240);
}

/// The rectangles to decode in part from a `w × h` image: the union of the loader's two
/// crops for 48 samples, 16 random rectangles, and the corners, edges and single pixels
/// where partial decoding is hardest.
fn regions(w: usize, h: usize, file: u64) -> Vec<Crop> {
    let cfg = AugmentConfig::slotcon();
    let mut out: Vec<Crop> = (0..48)
        .map(|k| slotcon_augment::draw_sample(&cfg, w as u32, h as u32, SampleKey::new(k, 0, file)).bounds())
        .collect();
    let mut d = SampleRng::new(17, 0, file, 0);
    for _ in 0..16 {
        let (x, y) = (d.randint(0, w as u32 - 1) as usize, d.randint(0, h as u32 - 1) as usize);
        let (rw, rh) = (d.randint(1, (w - x) as u32), d.randint(1, (h - y) as u32));
        out.push(Crop::xywh(x, y, rw as usize, rh as usize));
    }
    let one = |x: usize, y: usize| Crop::xywh(x, y, 1, 1);
    out.extend([
        one(0, 0),
        one(w - 1, 0),
        one(0, h - 1),
        one(w - 1, h - 1),
        one(w / 2, h / 2),
    ]);
    out.extend([
        Crop::xywh(w / 3, 0, w - w / 3, h),
        Crop::xywh(0, h / 3, w, h / 2 + 1 - h / 3),
    ]);
    out
}

/// `region`'s rows of the full decode `full` (`width` wide) equal `part`.
fn same_region(full: &[u8], width: usize, region: Crop, part: &[u8]) -> bool {
    let n = region.width() * 3;
    (0..region.height()).all(|r| {
        let row = (region.top() + r) * width + region.left();
        full[row * 3..row * 3 + n] == part[r * n..(r + 1) * n]
    })
}

/// libjpeg-turbo's partial decoding has had bugs (libjpeg-turbo #195, #456, #611, #915);
/// the loader decodes only the two crops' region, so every kind of file and subsampling
/// is checked here against a full decode on thousands of regions, most of them the
/// loader's own crop pairs.
#[test]
fn jpeg_regions_equal_the_same_region_of_a_full_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("variants");
    python_script(
        "make_jpeg_variants.py",
        &[&coco128().join("images"), &src, Path::new("3")],
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut full, mut part, mut checked, mut partial) = (Vec::new(), Vec::new(), 0, 0);
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let info = decode_rgb(&bytes, Limits::default(), &mut full).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        for want in regions(w, h, i as u64) {
            let (_, got) = decode_rgb_region(&bytes, Limits::default(), want, &mut part).unwrap();
            let holds = got.left() <= want.left() && got.top() <= want.top() && got.right() >= want.right();
            assert!(
                holds && got.bottom() >= want.bottom(),
                "{path:?}: {got:?} misses {want:?}"
            );
            assert!(
                same_region(&full, w, got, &part),
                "{path:?}: region {got:?} for {want:?}"
            );
            checked += 1;
            partial += usize::from(got != Crop::full(w, h));
        }
    }
    assert_eq!(files.len(), 3 * 5 * 13);
    assert!(checked >= 195 * 71, "{checked} regions");
    // The full-size and 161x121 files of every kind but the odd sampling (and lossless,
    // which the variants do not hold) are decoded in part for most regions.
    assert!(
        partial >= 3 * 2 * 12 * 40,
        "only {partial} of {checked} regions were partial decodes"
    );
}

/// A PNG is decoded row by row into the region, an interlaced one pass row by pass row
/// (its frame is never held): every PNG of the ingest corpus, interlaced or not, of every
/// colour type and depth, gives for each region the same pixels as its full decode
/// (which `ingest::bad_and_odd_files_are_skipped_or_converted_as_pil_does` holds equal
/// to PIL's), the region clipped to the image and nothing more.
#[test]
fn png_regions_equal_the_same_region_of_a_full_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    let good = coco128().join("images/train2017/000000000009.jpg");
    let expect: Value = serde_json::from_str(&python_script("make_corpus.py", &[&src, &good])).unwrap();
    let (mut full, mut part, mut interlaced) = (Vec::new(), Vec::new(), 0);
    for (i, (name, want)) in expect.as_object().unwrap().iter().enumerate() {
        if !name.to_lowercase().ends_with(".png") || want.get("ok").is_none() {
            continue;
        }
        let bytes = std::fs::read(src.join(name)).unwrap();
        interlaced += usize::from(bytes[28] == 1); // IHDR's interlace method
        let info = decode_rgb(&bytes, Limits::default(), &mut full).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        for want in regions(w, h, i as u64) {
            let (_, got) = decode_rgb_region(&bytes, Limits::default(), want, &mut part).unwrap();
            let (x1, y1) = (want.right().min(w), want.bottom().min(h));
            let clipped = Crop::xywh(want.left(), want.top(), x1 - want.left(), y1 - want.top());
            assert_eq!(got, clipped, "{name}: {want:?}");
            assert!(same_region(&full, w, got, &part), "{name}: region {got:?}");
        }
    }
    assert_eq!(interlaced, 5, "the corpus's interlaced PNGs");
}
