//! `slotcon-ingest` on the COCO sample and on a corpus of bad and odd files.

use std::path::Path;

use serde_json::Value;
use slotcon_shards::ShardReader;
use slotcon_tests::{bin, coco128, python_script, run_ok};

fn ingest(src: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(src)
        .arg("--out")
        .arg(out)
        .args(["--json", "--quiet"])
        .args(extra);
    serde_json::from_str(&run_ok(&mut cmd)).expect("one JSON report")
}

#[test]
fn coco128_store_matches_pil_and_the_source_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (coco128().join("images"), tmp.path().join("shards"));
    let report = ingest(&src, &out, &[]);
    assert_eq!(report["written"], 128, "{report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), 0, "{report}");
    // The saved report is the printed one.
    let saved: Value = serde_json::from_slice(&std::fs::read(out.join("ingest-report.json")).unwrap()).unwrap();
    assert_eq!(saved, report);

    // Rust side: zero-copy reads equal the source files byte for byte.
    let store = ShardReader::open(&out).unwrap();
    assert_eq!(store.len(), 128);
    for id in 0..store.len() {
        let s = store.get(id).unwrap();
        assert_eq!(
            s.bytes,
            &std::fs::read(src.join(s.path)).unwrap()[..],
            "id {id} {}",
            s.path
        );
    }
    // Python side: pyarrow, DuckDB, datasets, PIL sizes and bytes.
    let ok = python_script("check_store.py", &[&out, &src]);
    assert_eq!(ok.trim(), "ok 128");
}

#[test]
fn raw_store_holds_the_decoded_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (coco128().join("images"), tmp.path().join("raw"));
    ingest(&src, &out, &["--store", "raw"]);
    let ok = python_script("check_store.py", &[&out, &src, Path::new("--raw")]);
    assert_eq!(ok.trim(), "ok 128");
    // zune-jpeg is not libjpeg-turbo: the README names this difference; keep it small.
    let diffs: Value = serde_json::from_str(&python_script("compare_raw.py", &[&out, &src])).unwrap();
    for (path, d) in diffs.as_object().unwrap() {
        assert!(
            d[0].as_i64().unwrap() <= 4 && d[1].as_f64().unwrap() < 0.05,
            "{path}: {d}"
        );
    }
}

#[test]
fn bad_and_odd_files_are_skipped_or_converted_as_pil_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("corpus"), tmp.path().join("shards"));
    let good = coco128().join("images/train2017/000000000009.jpg");
    let expect: Value = serde_json::from_str(&python_script("make_corpus.py", &[&src, &good])).unwrap();
    let report = ingest(&src, &out, &["--store", "raw"]);

    let skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let store = ShardReader::open(&out).unwrap();
    let written: Vec<String> = (0..store.len())
        .map(|id| store.get(id).unwrap().path.to_string())
        .collect();
    for (file, want) in expect.as_object().unwrap() {
        if let Some(reason) = want.get("skip").and_then(Value::as_str) {
            let hit = skipped.iter().find(|(p, _)| p == file);
            let (_, got) = hit.unwrap_or_else(|| panic!("{file} was not reported as skipped: {skipped:?}"));
            assert!(got.contains(reason), "{file}: reason {got:?} lacks {reason:?}");
        } else {
            assert!(written.contains(file), "{file} is missing from the store: {written:?}");
        }
    }
    assert_eq!(
        skipped.len() + written.len(),
        expect.as_object().unwrap().len(),
        "{skipped:?} {written:?}"
    );

    // Odd-but-valid PNGs are bit-exact with PIL's convert('RGB'); JPEGs within decoder noise.
    let diffs: Value = serde_json::from_str(&python_script("compare_raw.py", &[&out, &src])).unwrap();
    for (path, d) in diffs.as_object().unwrap() {
        let max = d[0].as_i64().unwrap();
        let limit = if path.to_lowercase().ends_with(".png") { 0 } else { 4 };
        assert!(max <= limit, "{path}: max abs diff {max} vs PIL");
    }
}

#[test]
fn max_side_resizes_like_pillow_bicubic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = coco128().join("images");
    let (full, small) = (tmp.path().join("full"), tmp.path().join("small"));
    ingest(&src, &full, &["--store", "raw"]);
    ingest(&src, &small, &["--store", "raw", "--max-side", "333"]);
    let ok = python_script("check_resize.py", &[&full, &small]);
    assert!(ok.starts_with("ok 128 (128 resized)"), "{ok}");

    // Encoded: only larger images are re-encoded (JPEG), at the requested size.
    let enc = tmp.path().join("enc");
    ingest(&src, &enc, &["--max-side", "500", "--quality", "80"]);
    let store = ShardReader::open(&enc).unwrap();
    for id in 0..store.len() {
        let s = store.get(id).unwrap();
        assert!(s.width.max(s.height) <= 500, "{}: {}x{}", s.path, s.width, s.height);
        assert_eq!(&s.bytes[..3], &[0xFF, 0xD8, 0xFF], "{}", s.path);
    }
}
