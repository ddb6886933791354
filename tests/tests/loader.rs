//! The bench tool on the loader: `slotcon-bench dump` writes what the loader yields, and
//! `slotcon-bench loader` does not depend on the worker count. The loader's own tests
//! (determinism, resume, distribution, bounded buffers, corrupt entries, skipped images,
//! shutdown) live with it, in `augment/tests/loader.rs`.

use std::path::Path;
use std::sync::Arc;

use slotcon_augment::LoaderBuilder;
use slotcon_shards::ShardReader;
use slotcon_tests::{bin, coco128, python_script, run_ok};

fn coco_store(dir: &Path) -> Arc<ShardReader> {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(coco128().join("images"))
        .arg("--out")
        .arg(dir)
        .args(["--quiet", "--shard-size", "4MiB"]);
    run_ok(&mut cmd);
    Arc::new(ShardReader::open(dir).unwrap())
}

#[test]
fn dump_writes_the_loaders_views_and_geometry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let reader = coco_store(&store);
    let out = tmp.path().join("dump");
    run_ok(
        bin("slotcon-bench")
            .args(["dump", "--n", "5", "--seed", "3", "--shards"])
            .arg(&store)
            .arg("--out")
            .arg(&out),
    );
    let samples: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("samples.json")).unwrap()).unwrap();
    assert_eq!(samples.as_array().unwrap().len(), 5);
    let s0 = &samples[0];
    for key in [
        "id", "path", "width", "height", "crops", "boxes", "flips", "size", "params",
    ] {
        assert!(s0.get(key).is_some(), "samples.json lacks {key}: {s0}");
    }
    // The PNGs hold exactly what the loader yields for the same seed, epoch 0.
    let batch = LoaderBuilder::new(reader)
        .batch_size(128)
        .seed(3)
        .workers(2)
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let pos = batch.ids().iter().position(|&i| i == 2).unwrap();
    for v in 0..2 {
        let png = std::fs::read(out.join(format!("2_v{}.png", v + 1))).unwrap();
        let mut rgb = Vec::new();
        slotcon_augment::decode::decode_rgb(&png, Default::default(), &mut rgb).unwrap();
        let n = 224 * 224 * 3;
        assert!(
            rgb == batch.views()[v][pos * n..(pos + 1) * n],
            "view {v} of id 2 differs from the loader's"
        );
    }
    assert_eq!(samples[2]["flips"], serde_json::json!(batch.flips()[pos]));
}

/// Dumps every sample of `store` and re-renders each view with PIL + torchvision from the
/// stored bytes and the recorded parameters; returns `(views, exact, files PIL cannot
/// decode)`.
fn rerender(store: &Path, out: &Path, n: &str) -> (u64, u64, Vec<String>) {
    run_ok(
        bin("slotcon-bench")
            .args(["dump", "--n", n, "--seed", "11", "--shards"])
            .arg(store)
            .arg("--out")
            .arg(out),
    );
    let got: serde_json::Value = serde_json::from_str(&python_script("check_dump.py", &[store, out])).unwrap();
    assert_eq!(got["max_abs"], 0, "{got}");
    let failed = got["pil_failed"].as_array().unwrap().iter();
    let failed = failed.map(|p| p.as_str().unwrap().to_string()).collect();
    (got["views"].as_u64().unwrap(), got["exact"].as_u64().unwrap(), failed)
}

#[test]
fn every_dumped_view_re_renders_exactly_with_pil_and_torchvision_from_the_stored_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    // The COCO sample: 256 views.
    let store = tmp.path().join("coco");
    coco_store(&store);
    assert_eq!(
        rerender(&store, &tmp.path().join("coco-dump"), "128"),
        (256, 256, vec![])
    );
    // JPEGs of every kind (subsamplings, progressive, restart markers, gray, CMYK,
    // arithmetic, tiny sizes): 300 views, less those of the full-size arithmetic files
    // that PIL cannot read (docs/differences.md).
    let src = tmp.path().join("variants");
    python_script(
        "make_jpeg_variants.py",
        &[&coco128().join("images"), &src, Path::new("3")],
    );
    let store = tmp.path().join("variants-store");
    run_ok(bin("slotcon-ingest").arg(&src).arg("--out").arg(&store).arg("--quiet"));
    let (views, exact, pil_failed) = rerender(&store, &tmp.path().join("variants-dump"), "150");
    assert!(pil_failed.iter().all(|p| p.contains("_arith")), "{pil_failed:?}");
    assert_eq!(views + 2 * pil_failed.len() as u64, 300);
    assert!(views >= 288, "{views}");
    assert_eq!(exact, views);
}

#[test]
fn bench_loader_checksum_does_not_depend_on_workers_and_baseline_runs() {
    let tmp = tempfile::tempdir().unwrap();
    coco_store(tmp.path());
    let run = |workers: &str| -> serde_json::Value {
        let out = run_ok(
            bin("slotcon-bench")
                .args([
                    "loader",
                    "--seconds",
                    "1",
                    "--batch-size",
                    "8",
                    "--json",
                    "--workers",
                    workers,
                    "--shards",
                ])
                .arg(tmp.path()),
        );
        serde_json::from_str(&out).unwrap()
    };
    let (a, b) = (run("1"), run("3"));
    for key in [
        "img_per_sec",
        "img_per_sec_per_core",
        "p50_batch_ms",
        "p99_batch_ms",
        "peak_rss_mib",
        "peak_anon_mib",
        "peak_mapped_mib",
        "checksum",
        "samples",
    ] {
        assert!(a.get(key).is_some(), "loader JSON lacks {key}: {a}");
    }
    // DESIGN's memory bound, on the memory the loader owns (not the shard pages mapped in).
    for r in [&a, &b] {
        assert_eq!(r["anon_within_budget"], true, "{r}");
        let (anon, rss) = (
            r["peak_anon_mib"].as_f64().unwrap(),
            r["peak_rss_mib"].as_f64().unwrap(),
        );
        assert!(anon > 0.0 && anon <= rss, "{r}");
    }
    assert_eq!(a["checksum"], b["checksum"], "output depends on the worker count");
    assert!(a["samples"].as_u64().unwrap() > 0);

    let images = coco128().join("images");
    let out = run_ok(
        bin("slotcon-bench")
            .args([
                "baseline",
                "--seconds",
                "2",
                "--batch-size",
                "8",
                "--workers",
                "1",
                "--json",
                "--images",
            ])
            .arg(&images),
    );
    let base: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(base["images"], 128);
    assert!(base["img_per_sec"].as_f64().unwrap() > 0.0, "{base}");
}

/// Two 6000 x 6000 PNGs among the COCO images, one of them Adam7-interlaced: before, a
/// PNG was decoded whole (an interlaced one still was, frame and image) and the resize
/// copied each crop whole, which took the loader past its own bound
/// (`Loader::memory_bytes`). The bench's peak anonymous memory, less what the process
/// held before the loader was built (LibTorch's own), stays within that bound.
#[test]
fn huge_pngs_interlaced_or_not_keep_the_loader_within_its_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for e in std::fs::read_dir(coco128().join("images/train2017")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, images.join(p.file_name().unwrap())).unwrap();
    }
    let side: u64 = 6000;
    let side_arg = side.to_string();
    python_script("make_huge_png.py", &[&images.join("huge.png"), Path::new(&side_arg)]);
    let interlaced = images.join("huge_interlaced.png");
    python_script(
        "make_huge_png.py",
        &[&interlaced, Path::new(&side_arg), Path::new("interlaced")],
    );
    let store = tmp.path().join("store");
    run_ok(
        bin("slotcon-ingest")
            .arg(&images)
            .arg("--out")
            .arg(&store)
            .arg("--quiet"),
    );
    let out = run_ok(
        bin("slotcon-bench")
            .args([
                "loader",
                "--seconds",
                "6",
                "--batch-size",
                "32",
                "--workers",
                "1",
                "--json",
                "--shards",
            ])
            .arg(&store),
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k}: {r}"));
    let loader = f("peak_anon_mib") - f("start_anon_mib");
    let region = (side * side * 3) as f64 / (1 << 20) as f64;
    // Every epoch decodes both PNGs (two of 130 images, 128 an epoch, so each in most
    // epochs), so the peak holds a region of one; the bound counts 4 bytes a pixel for
    // it, plus the batches.
    assert!(r["samples"].as_u64().unwrap() >= 256, "{r}");
    assert!(loader <= f("memory_bound_mib"), "the loader took {loader:.0} MiB: {r}");
    assert_eq!(r["anon_within_bound"], true, "{r}");
    assert!(f("memory_bound_mib") >= f("buffers_mib") + region, "{r}");
}
