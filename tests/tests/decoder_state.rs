//! One bad JPEG never costs the good ones after it: files that fail in libjpeg-turbo's
//! header or table parsing (`slotcon_tests::poisoned_jpegs`), each followed by good files
//! on the same decoding thread, in the decoder, ingest, `verify` and the loader, at one and
//! two threads. (A TurboJPEG handle reused after such an error failed every later file
//! with the bad file's error: ingest wrote 8 of 128 images and exited 0.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use slotcon_augment::decode::{decode_rgb, decode_rgb_region, Limits};
use slotcon_augment::{Crop, LoaderBuilder};
use slotcon_shards::{Manifest, NewSample, ShardReader, ShardWriter, StoreKind};
use slotcon_tests::{bin, coco128, poisoned_jpegs, run, run_ok};

/// The COCO sample's JPEGs, sorted by name, as (name, bytes).
fn coco_jpegs() -> Vec<(String, Vec<u8>)> {
    let dir = coco128().join("images/train2017");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// The COCO JPEGs with every poisoning file after each 16th one (named after it, so that
/// it sorts right behind it), as (name, bytes, poisoned).
fn corpus() -> Vec<(String, Vec<u8>, bool)> {
    let good = coco_jpegs();
    let poison = poisoned_jpegs(&good[0].1);
    let mut out = Vec::new();
    for (i, (name, bytes)) in good.into_iter().enumerate() {
        out.push((name.clone(), bytes, false));
        if i % 16 == 0 {
            for (kind, bad) in &poison {
                out.push((
                    format!("{}-{kind}.jpg", name.trim_end_matches(".jpg")),
                    bad.clone(),
                    true,
                ));
            }
        }
    }
    out
}

#[test]
fn a_jpeg_that_fails_in_its_tables_does_not_break_the_decoder_for_the_next_image() {
    let good = coco_jpegs();
    let (good, next) = (&good[0].1, &good[1].1);
    let (mut want, mut got) = (Vec::new(), Vec::new());
    decode_rgb(next, Limits::default(), &mut want).unwrap();
    let region = Crop::xywh(40, 30, 100, 80);
    let mut want_region = Vec::new();
    let (_, kept) = decode_rgb_region(next, Limits::default(), region, &mut want_region).unwrap();
    for (kind, bad) in poisoned_jpegs(good) {
        let e = decode_rgb(&bad, Limits::default(), &mut got).expect_err(kind);
        assert!(e.to_string().contains("JPEG"), "{kind}: {e}");
        decode_rgb(next, Limits::default(), &mut got).unwrap_or_else(|e| panic!("after {kind}: {e}"));
        assert!(got == want, "after {kind} the next image decodes to other pixels");
        decode_rgb_region(&bad, Limits::default(), region, &mut got).expect_err(kind);
        let (_, r) = decode_rgb_region(next, Limits::default(), region, &mut got)
            .unwrap_or_else(|e| panic!("after {kind}: {e}"));
        assert!(r == kept && got == want_region, "after {kind} the next region differs");
    }
}

#[test]
fn one_bad_jpeg_costs_ingest_no_good_image_at_one_or_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let corpus = corpus();
    for (name, bytes, _) in &corpus {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    let mut bad: Vec<&str> = corpus.iter().filter(|c| c.2).map(|c| c.0.as_str()).collect();
    bad.sort();
    for threads in ["1", "2"] {
        let out = tmp.path().join(format!("shards{threads}"));
        let mut cmd = bin("slotcon-ingest");
        cmd.arg(&src)
            .arg("--out")
            .arg(&out)
            .args(["--json", "-q", "--threads", threads]);
        let report: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
        let skipped: Vec<&str> = report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap())
            .collect();
        assert_eq!(skipped, bad, "threads {threads}: {report}");
        assert_eq!(
            ShardReader::open(&out).unwrap().len(),
            128,
            "threads {threads}: {report}"
        );
    }
}

/// A store of `corpus` in `dir` (the bad files too, as a store made by an older ingest
/// or another tool could hold them), in shards of 4 MiB.
fn store_with_poison(dir: &Path, corpus: &[(String, Vec<u8>, bool)]) -> Arc<ShardReader> {
    let (mut shards, mut writer, mut next) = (Vec::new(), None::<ShardWriter>, 0);
    let mut rgb = Vec::new();
    for (name, bytes, poisoned) in corpus {
        // A bad file gets the size of a COCO image; nothing reads it before decoding.
        let (width, height) = match poisoned {
            true => (640, 480),
            false => {
                let info = decode_rgb(bytes, Limits::default(), &mut rgb).unwrap();
                (info.width, info.height)
            }
        };
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(ShardWriter::create(dir, shards.len(), next, StoreKind::Encoded).unwrap()),
        };
        w.push(NewSample {
            bytes,
            path: name,
            width,
            height,
        })
        .unwrap();
        next += 1;
        if w.image_bytes() >= 4 << 20 {
            shards.push(writer.take().unwrap().finish().unwrap());
        }
    }
    shards.extend(writer.map(|w| w.finish().unwrap()));
    Manifest::new(StoreKind::Encoded, serde_json::json!({}), shards)
        .save(dir)
        .unwrap();
    Arc::new(ShardReader::open(dir).unwrap())
}

/// The ids of the bad files in `corpus`.
fn bad_ids(corpus: &[(String, Vec<u8>, bool)]) -> Vec<u64> {
    (0..corpus.len() as u64).filter(|&i| corpus[i as usize].2).collect()
}

#[test]
fn one_bad_jpeg_costs_verify_and_the_loader_no_good_image_at_one_or_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let corpus = corpus();
    let reader = store_with_poison(&dir, &corpus);
    let bad = bad_ids(&corpus);
    for threads in ["1", "2"] {
        let (code, stdout, stderr) =
            run(bin("slotcon-ingest")
                .arg("verify")
                .arg(&dir)
                .args(["--json", "-q", "--threads", threads]));
        assert_eq!(code, 1, "{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        let mut ids: Vec<u64> = report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, bad, "verify --threads {threads}: {report}");
    }
    for workers in [1, 2] {
        let loader = LoaderBuilder::new(reader.clone())
            .batch_size(8)
            .workers(workers)
            .build()
            .unwrap();
        let (mut delivered, mut skipped) = (Vec::new(), Vec::new());
        for b in loader {
            let b = b.unwrap();
            delivered.extend_from_slice(b.ids());
            skipped.extend(b.skipped().iter().map(|s| s.id));
        }
        skipped.sort();
        // drop_last may leave the last few of the shuffled epoch out: every one seen is right.
        assert!(
            skipped.iter().all(|id| bad.contains(id)),
            "workers {workers}: {skipped:?}"
        );
        assert!(delivered.iter().all(|id| !bad.contains(id)), "workers {workers}");
        assert!(
            delivered.len() + skipped.len() + 8 > corpus.len(),
            "workers {workers}: {} delivered, {} skipped of {}",
            delivered.len(),
            skipped.len(),
            corpus.len()
        );
        assert!(
            delivered.len() + 8 > 128,
            "workers {workers}: {} good images delivered",
            delivered.len()
        );
    }
}
