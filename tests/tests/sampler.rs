//! The crop samplers against torchvision's `RandomResizedCrop.get_params` and the
//! conditioned sampler of DESIGN §4: same crops for the same injected draws, same
//! distributions for free draws; and the geometry's properties.

use serde_json::{json, Value};
use slotcon_augment::crop::{intersection, overlap_boxes};
use slotcon_augment::{draw_two_views, AugmentConfig, Crop, CropSampler, Draws, NormBox, Replay, SampleRng};
use slotcon_tests::python_script;

/// Passes draws through from a generator and records them.
struct Recorder {
    inner: SampleRng,
    randoms: Vec<f64>,
    ints: Vec<u32>,
}

impl Draws for Recorder {
    fn random(&mut self) -> f64 {
        let v = self.inner.random();
        self.randoms.push(v);
        v
    }

    fn randint(&mut self, lo: u32, hi: u32) -> u32 {
        let v = self.inner.randint(lo, hi);
        self.ints.push(v);
        v
    }
}

fn crop_json(c: &Crop) -> Value {
    json!([c.i, c.j, c.h, c.w])
}

fn injected_cases() -> Vec<Value> {
    let s = CropSampler::default();
    let sizes = [
        (640, 480),
        (480, 640),
        (640, 427),
        (500, 375),
        (2000, 100),
        (100, 2000),
        (37, 1000),
        (224, 224),
        (1, 1),
        (3, 2),
    ];
    let mut cases = Vec::new();
    for index in 0..3000u64 {
        let (w, h) = sizes[index as usize % sizes.len()];
        let mut rec = Recorder {
            inner: SampleRng::new(11, 0, index, 0),
            randoms: Vec::new(),
            ints: Vec::new(),
        };
        let first = s.sample(&mut rec, w, h);
        // The same draws replayed through the same code give the same crop.
        assert_eq!(
            s.sample(&mut Replay::new(rec.randoms.clone(), rec.ints.clone()), w, h),
            first
        );
        cases.push(json!({"kind": "plain", "width": w, "height": h, "randoms": rec.randoms, "ints": rec.ints, "expect": crop_json(&first)}));

        let mut rec = Recorder {
            inner: SampleRng::new(11, 0, index, 1),
            randoms: Vec::new(),
            ints: Vec::new(),
        };
        let (second, _) = s.sample_overlapping(&mut rec, w, h, &first);
        cases.push(
            json!({"kind": "overlap", "width": w, "height": h, "first": crop_json(&first),
                          "randoms": rec.randoms, "ints": rec.ints, "expect": crop_json(&second)}),
        );
    }
    cases
}

fn distribution_spec(n: u64) -> Value {
    let s = CropSampler::default();
    let (w, h) = (640, 480);
    let view1: Vec<Value> = (0..n)
        .map(|i| crop_json(&s.sample(&mut SampleRng::new(3, 0, i, 0), w, h)))
        .collect();
    let (mut firsts, mut seconds, mut fallback) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let first = s.sample(&mut SampleRng::new(4, 0, i, 0), w, h);
        let (second, fell) = s.sample_overlapping(&mut SampleRng::new(4, 0, i, 1), w, h, &first);
        firsts.push(crop_json(&first));
        seconds.push(crop_json(&second));
        fallback.push(fell as u8);
    }
    json!({"width": w, "height": h, "view1": view1, "pair_first": firsts, "pair_second": seconds, "fallback": fallback})
}

#[test]
fn samplers_match_torchvision_and_design_for_injected_and_free_draws() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("injected.json"),
        serde_json::to_vec(&injected_cases()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("dist.json"),
        serde_json::to_vec(&distribution_spec(100_000)).unwrap(),
    )
    .unwrap();
    let out: Value = serde_json::from_str(&python_script("parity_sampler.py", &[tmp.path()])).unwrap();

    let inj = &out["injected"];
    assert_eq!(inj["cases"], 6000);
    assert_eq!(inj["equal"], inj["cases"], "crops differ from the reference: {inj}");
    let d = &out["dist"];
    for key in ["scale", "log_ratio", "view2_scale", "view2_log_ratio", "view2_overlap"] {
        let p = d[key]["p"].as_f64().unwrap();
        assert!(p > 1e-3, "{key}: KS rejects the reference distribution: {}", d[key]);
    }
    let z = d["fallback"]["z"].as_f64().unwrap();
    assert!(z.abs() < 3.3, "fallback rates differ: {}", d["fallback"]);
    let rate = d["fallback"]["ours"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 0.2, "implausible fallback rate {rate}");
}

/// Maps a box in a view's frame back to source pixels (un-flipping first).
fn to_source(b: NormBox, c: &Crop, flipped: bool) -> [f64; 4] {
    let b = if flipped { b.flip() } else { b };
    let (x, y, w, h) = (c.j as f64, c.i as f64, c.w as f64, c.h as f64);
    [
        x + b[0] as f64 * w,
        y + b[1] as f64 * h,
        x + b[2] as f64 * w,
        y + b[3] as f64 * h,
    ]
}

#[test]
fn both_boxes_cover_the_same_source_rectangle() {
    let cfg = AugmentConfig::slotcon();
    let mut overlapping = 0;
    for index in 0..20_000u64 {
        let (w, h) = [(640, 480), (427, 640), (300, 1000)][index as usize % 3];
        let mut d = [SampleRng::new(9, 2, index, 0), SampleRng::new(9, 2, index, 1)];
        let [d1, d2] = &mut d;
        let m = draw_two_views(&cfg, w, h, [d1, d2]);
        let [c1, c2] = m.crops();
        let [f1, f2] = m.flips();
        // Flipping is an involution and the un-flipped boxes are `overlap_boxes`.
        let raw = overlap_boxes(&c1, &c2);
        // (In float32, as in the reference, 1 - (1 - x) is x within an ulp.)
        let twice = m.boxes[0].flip().flip();
        assert!(
            twice.iter().zip(&m.boxes[0]).all(|(a, b)| (a - b).abs() <= 1e-7),
            "{twice:?}"
        );
        let unflip = |b: NormBox, f| if f { b.flip() } else { b };
        for (got, want) in [(unflip(m.boxes[0], f1), raw[0]), (unflip(m.boxes[1], f2), raw[1])] {
            for k in 0..4 {
                assert!((got[k] - want[k]).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        if intersection(&c1, &c2) == 0 {
            continue;
        }
        overlapping += 1;
        let (s1, s2) = (to_source(m.boxes[0], &c1, f1), to_source(m.boxes[1], &c2, f2));
        for k in 0..4 {
            assert!(
                (s1[k] - s2[k]).abs() < 1e-3,
                "view boxes map to different source rectangles: {s1:?} {s2:?}"
            );
        }
        let want = [
            c1.j.max(c2.j),
            c1.i.max(c2.i),
            (c1.j + c1.w).min(c2.j + c2.w),
            (c1.i + c1.h).min(c2.i + c2.h),
        ];
        for k in 0..4 {
            assert!(
                (s1[k] - want[k] as f64).abs() < 1e-3,
                "{s1:?} is not the intersection {want:?}"
            );
        }
    }
    assert!(overlapping > 19_000, "{overlapping}");
}
