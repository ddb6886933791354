//! Per-op timings of the augmentation on one real image, and the same ops in Pillow.
//!
//! The op list is shared by the criterion benches (`benches/ops.rs`) and by
//! `slotcon-bench ops`, which also runs `bench/python/pil_ops.py` on the same image with
//! the same crop and factors and reports the speed-up of each op.

use std::time::Instant;

use serde::Serialize;
use slotcon_augment::decode::{decode_rgb, Limits};
use slotcon_augment::ops::{self, color};
use slotcon_augment::{two_views_into, AugmentConfig, Crop, ImageRef, SampleKey, Scratch};

/// Side of the benchmarked views.
pub const SIZE: usize = 224;
/// The crop every op's input view is cut from (and that `pil_ops.py` uses too).
pub const CROP: Crop = Crop {
    i: 40,
    j: 60,
    h: 300,
    w: 400,
};

/// A named operation to time, owning its buffers.
pub struct OpBench {
    /// The op's name (the same in `pil_ops.py`).
    pub name: &'static str,
    /// One run of the op.
    pub run: Box<dyn FnMut()>,
}

fn on_view(name: &'static str, view: &[u8], mut f: impl FnMut(&mut [u8]) + 'static) -> OpBench {
    let (view, mut out) = (view.to_vec(), view.to_vec());
    OpBench {
        name,
        run: Box::new(move || {
            out.copy_from_slice(&view);
            f(std::hint::black_box(&mut out));
        }),
    }
}

/// Every op on a 224x224 view cut from `jpeg`, plus decoding and the whole sample.
pub fn op_benches(jpeg: &[u8]) -> Result<Vec<OpBench>, slotcon_augment::Error> {
    let mut rgb = Vec::new();
    let info = decode_rgb(jpeg, Limits::default(), &mut rgb)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut view = vec![0u8; SIZE * SIZE * 3];
    ops::resize_bicubic(
        ImageRef::new(&rgb, w, h),
        CROP,
        &mut view,
        SIZE,
        SIZE,
        &mut ops::ResizeScratch::default(),
    )?;
    let jpeg = jpeg.to_vec();
    let mut decoded = Vec::new();
    let mut list = vec![OpBench {
        name: "decode",
        run: Box::new(move || drop(decode_rgb(&jpeg, Limits::default(), &mut decoded))),
    }];
    let (src, mut out, mut rows) = (rgb.clone(), vec![0u8; SIZE * SIZE * 3], ops::ResizeScratch::default());
    list.push(OpBench {
        name: "resize",
        run: Box::new(move || {
            drop(ops::resize_bicubic(
                ImageRef::new(&src, w, h),
                CROP,
                &mut out,
                SIZE,
                SIZE,
                &mut rows,
            ))
        }),
    });
    list.push(on_view("hflip", &view, |v| ops::hflip(v, SIZE)));
    list.push(on_view("brightness", &view, |v| color::adjust_brightness(v, 1.3)));
    list.push(on_view("contrast", &view, |v| color::adjust_contrast(v, 0.7)));
    list.push(on_view("saturation", &view, |v| color::adjust_saturation(v, 1.1)));
    list.push(on_view("hue", &view, |v| color::adjust_hue(v, 0.05)));
    list.push(on_view("grayscale", &view, color::grayscale));
    let mut blur = ops::BlurScratch::default();
    list.push(on_view("blur", &view, move |v| {
        ops::gaussian_blur(v, SIZE, SIZE, 1.0, &mut blur)
    }));
    list.push(on_view("solarize", &view, |v| color::solarize(v, 128)));
    let v2 = view.clone();
    let device = burn_device();
    list.push(OpBench {
        name: "normalize",
        run: Box::new(move || {
            let x = slotcon_train::normalized(v2.clone(), 1, SIZE, &device);
            drop(x.into_data());
        }),
    });
    list.push(two_views_bench(rgb, w, h));
    Ok(list)
}

/// The trainer's normalisation runs on a device; the benchmark uses flex (CPU).
fn burn_device() -> slotcon_train::burn::prelude::Device {
    slotcon_train::burn::prelude::Device::flex()
}

fn two_views_bench(rgb: Vec<u8>, w: usize, h: usize) -> OpBench {
    let cfg = AugmentConfig::slotcon();
    let (mut v1, mut v2) = (vec![0u8; SIZE * SIZE * 3], vec![0u8; SIZE * SIZE * 3]);
    let (mut scratch, mut index) = (Scratch::default(), 0u64);
    OpBench {
        name: "two_views",
        run: Box::new(move || {
            index += 1;
            let src = ImageRef::new(&rgb, w, h);
            drop(two_views_into(
                src,
                &cfg,
                SampleKey::new(0, 0, index),
                [&mut v1, &mut v2],
                &mut scratch,
            ));
        }),
    }
}

/// One op's timing.
#[derive(Clone, Debug, Serialize)]
pub struct OpTiming {
    /// The op.
    pub op: String,
    /// Median microseconds per call.
    pub us: f64,
}

/// Times each op: batches of calls for about `seconds` in all, median per call. A
/// budget that is not a finite number of seconds from 0 to an hour is taken as the
/// nearest such (0 for NaN), so the time spent is always bounded.
pub fn time_ops(benches: Vec<OpBench>, seconds: f64) -> Vec<OpTiming> {
    let seconds = if seconds.is_nan() {
        0.0
    } else {
        seconds.clamp(0.0, 3600.0)
    };
    benches
        .into_iter()
        .map(|mut b| OpTiming {
            op: b.name.to_string(),
            us: time_one(&mut b.run, seconds),
        })
        .collect()
}

fn time_one(f: &mut dyn FnMut(), seconds: f64) -> f64 {
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let per_batch = ((seconds / 10.0 / once) as usize).max(1);
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() / per_batch as f64 * 1e6);
    }
    crate::median(&samples)
}
