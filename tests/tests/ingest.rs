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
            &*s.bytes,
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
    // libjpeg-turbo set up as Pillow sets it up: the pixels are PIL's, byte for byte.
    let diffs: Value = serde_json::from_str(&python_script("compare_raw.py", &[&out, &src])).unwrap();
    for (path, d) in diffs.as_object().unwrap() {
        assert_eq!(d[0].as_i64(), Some(0), "{path}: {d}");
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

    // Odd-but-valid PNGs and JPEGs (CMYK too) are bit-exact with PIL's convert('RGB').
    let diffs: Value = serde_json::from_str(&python_script("compare_raw.py", &[&out, &src])).unwrap();
    for (path, d) in diffs.as_object().unwrap() {
        assert_eq!(d[0].as_i64(), Some(0), "{path}: {d} vs PIL");
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

/// `(max, mean)` absolute difference per folder prefix of `compare_raw.py`'s output
/// (every image of a folder has the same size, so the mean of means is the mean).
fn diff_by_folder(diffs: &Value) -> std::collections::BTreeMap<String, (i64, f64)> {
    let mut acc: std::collections::BTreeMap<String, (i64, f64, usize)> = Default::default();
    for (path, d) in diffs.as_object().unwrap() {
        let folder = path.split('/').next().unwrap().to_string();
        let e = acc.entry(folder).or_default();
        *e = (e.0.max(d[0].as_i64().unwrap()), e.1 + d[1].as_f64().unwrap(), e.2 + 1);
    }
    acc.into_iter()
        .map(|(k, (max, sum, n))| (k, (max, sum / n as f64)))
        .collect()
}

#[test]
fn pillow_quality_75_jpegs_decode_exactly_as_pil() {
    // Ordinary JPEGs (Pillow, 4:2:0, quality 75), where zune-jpeg differed from PIL by up
    // to 15 levels: 128 images at each of two sizes, byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("q75"), tmp.path().join("raw"));
    let made = python_script("make_q75.py", &[&coco128().join("images"), &src, Path::new("128")]);
    assert_eq!(made.trim(), "256");
    ingest(&src, &out, &["--store", "raw"]);
    let diffs: Value = serde_json::from_str(&python_script("compare_raw.py", &[&out, &src])).unwrap();
    let got = diff_by_folder(&diffs);
    assert_eq!(got["640x480"], (0, 0.0));
    assert_eq!(got["160x120"], (0, 0.0));
}

#[test]
fn every_kind_of_jpeg_decodes_as_pil_does_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("variants"), tmp.path().join("raw"));
    let made = python_script(
        "make_jpeg_variants.py",
        &[&coco128().join("images"), &src, Path::new("3")],
    );
    let made: usize = made.trim().parse().unwrap();
    assert_eq!(made, 3 * 5 * 13, "3 images, 5 sizes, 13 kinds");
    let report = ingest(&src, &out, &["--store", "raw"]);
    assert_eq!(report["written"], made, "{report}");
    let diffs: Value = serde_json::from_str(&python_script("compare_raw.py", &[&out, &src])).unwrap();
    let mut pil_failed = Vec::new();
    for (path, d) in diffs.as_object().unwrap() {
        match d[0].as_i64() {
            Some(max) => assert_eq!(max, 0, "{path}: {d} vs PIL"),
            None => pil_failed.push(path.clone()),
        }
    }
    // PIL cannot read some full-size arithmetic-coded files ("broken data stream": its
    // decoder feeds libjpeg in chunks, which arithmetic decoding cannot resume from);
    // we decode them. Every other file is compared above.
    assert!(
        pil_failed.iter().all(|p| p.contains("_arith")),
        "PIL failed on {pil_failed:?}"
    );
    assert!(
        pil_failed.len() <= 6,
        "at most the 3 full-size images' two arithmetic files: {pil_failed:?}"
    );
}

#[test]
fn a_folder_of_only_bad_files_prints_the_reasons_writes_the_report_and_leaves_nothing_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("shards"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("zero.jpg"), b"").unwrap();
    std::fs::write(src.join("text.png"), b"not a picture\n").unwrap();
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(&src).arg("--out").arg(&out).arg("--quiet");
    let (code, _, err) = slotcon_tests::run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no image could be written (2 candidate files, 2 skipped"),
        "{err}"
    );
    assert!(err.contains("skipped text.png: not a JPEG or PNG file"), "{err}");
    assert!(err.contains("skipped zero.jpg: empty file"), "{err}");

    let saved: Value = serde_json::from_slice(&std::fs::read(out.join("ingest-report.json")).unwrap()).unwrap();
    assert_eq!(saved["written"], 0, "{saved}");
    assert_eq!(saved["skipped"].as_array().unwrap().len(), 2, "{saved}");
    let names: Vec<String> = slotcon_tests::snapshot(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [".slotcon-store", "ingest-report.json"],
        "only the marker and the report are left"
    );

    // --json prints the same report on stdout, and still exits 1.
    let (code, stdout, _) = slotcon_tests::run(cmd.arg("--json"));
    assert_eq!(code, 1);
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["skipped"], saved["skipped"]);
}

#[test]
fn a_rerun_names_a_truncated_or_missing_file_and_force_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shards");
    let args = ["--shard-size", "4MiB"];
    ingest(&coco128().join("images"), &out, &args);
    let shard = out.join("shard-00001.parquet");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::remove_file(out.join("shard-00002.idx")).unwrap();

    let mut again = bin("slotcon-ingest");
    again
        .arg(coco128().join("images"))
        .arg("--out")
        .arg(&out)
        .args(args)
        .arg("--quiet");
    let (code, stdout, err) = slotcon_tests::run(&mut again);
    assert_eq!(code, 1, "{stdout}{err}");
    let size = format!("shard-00001.parquet: size is {} bytes, manifest says {len}", len / 2);
    assert!(err.contains("the store is incomplete") && err.contains(&size), "{err}");
    assert!(err.contains("shard-00002.idx: missing"), "{err}");
    assert!(err.contains("pass --force to rebuild it"), "{err}");

    let report = ingest(&coco128().join("images"), &out, &["--shard-size", "4MiB", "--force"]);
    assert_eq!(report["written"], 128);
    run_ok(bin("slotcon-ingest").arg("verify").arg(&out).arg("--quiet"));
}

/// `slotcon-ingest SRC --out OUT --threads 1 -q [extra]`, not yet run.
fn slow_ingest(src: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(src)
        .arg("--out")
        .arg(out)
        .args(["--threads", "1", "--shard-size", "1MiB", "-q"])
        .args(extra);
    cmd
}

#[test]
fn a_second_ingest_into_a_folder_being_written_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    // The COCO sample three times over (symlinked folders): long enough to overlap.
    let (src, out) = (tmp.path().join("src"), tmp.path().join("shards"));
    std::fs::create_dir_all(&src).unwrap();
    for copy in ["a", "b", "c"] {
        std::os::unix::fs::symlink(coco128().join("images"), src.join(copy)).unwrap();
    }
    let mut first = slow_ingest(&src, &out, &[])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".ingest.lock");
    let holder = first.id().to_string();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |t| t.trim() != holder) {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first ingest ended without a lock file"
        );
        assert!(start.elapsed().as_secs() < 60, "the first ingest never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Both a plain rerun and --force (which would delete the first one's shards).
    for extra in [&[][..], &["--force"][..]] {
        let (code, _, err) = slotcon_tests::run(&mut slow_ingest(&src, &out, extra));
        assert_eq!(code, 1, "{extra:?}: {err}");
        let want = format!(
            "{}: another slotcon-ingest (pid {holder}) is writing this store; wait for it or stop it",
            out.display()
        );
        assert!(err.contains(&want), "{extra:?}: {err}");
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first ingest ended too soon to prove anything"
    );
    assert!(first.wait().unwrap().success());
    let text = run_ok(bin("slotcon-ingest").arg("verify").arg(&out).arg("--quiet"));
    assert!(text.contains("384 images") && text.contains("OK"), "{text}");
    assert!(!lock.exists(), "the lock file is removed at the end");
}

#[test]
fn a_lock_file_left_by_a_killed_ingest_does_not_block() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shards");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".ingest.lock"), "4194304\n").unwrap();
    let report = ingest(&coco128().join("images"), &out, &[]);
    assert_eq!(report["written"], 128);
    assert!(!out.join(".ingest.lock").exists());
}

#[test]
fn a_rerun_after_the_source_files_changed_is_refused_unless_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("shards"));
    std::fs::create_dir(&src).unwrap();
    let mut coco: Vec<_> = std::fs::read_dir(coco128().join("images/train2017"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    coco.sort();
    for p in &coco[..6] {
        std::fs::copy(p, src.join(p.file_name().unwrap())).unwrap();
    }
    ingest(&src, &out, &[]);
    assert_eq!(ingest(&src, &out, &[])["already_complete"], true);
    let refused = |what: &str| {
        let mut cmd = bin("slotcon-ingest");
        cmd.arg(&src).arg("--out").arg(&out).arg("-q");
        let (code, _, err) = slotcon_tests::run(&mut cmd);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains("made from other source files"), "{what}: {err}");
    };
    // A file added.
    std::fs::copy(&coco[6], src.join("added.jpg")).unwrap();
    refused("a file added");
    std::fs::remove_file(src.join("added.jpg")).unwrap();
    assert_eq!(ingest(&src, &out, &[])["already_complete"], true);
    // A file replaced by another of another size.
    let first = src.join(coco[0].file_name().unwrap());
    std::fs::copy(&coco[7], &first).unwrap();
    refused("a file changed");
    let report = ingest(&src, &out, &["--force"]);
    assert_eq!(
        (report["written"].as_u64(), &report["already_complete"]),
        (Some(6), &Value::Bool(false))
    );
    assert_eq!(ingest(&src, &out, &[])["already_complete"], true);
}

/// `dir/src` holding one COCO image, `a.jpg`.
fn one_image_source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(coco128().join("images/train2017/000000000009.jpg"), src.join("a.jpg")).unwrap();
    src
}

#[test]
fn force_refuses_a_folder_that_slotcon_did_not_make_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (one_image_source(tmp.path()), tmp.path().join("project"));
    std::fs::create_dir_all(&out).unwrap();
    // Another tool's folder that happens to use slotcon's names.
    std::fs::write(out.join("manifest.json"), r#"{"name": "my dataset"}"#).unwrap();
    std::fs::write(out.join("shard-00000.parquet"), b"someone else's data").unwrap();
    let before = slotcon_tests::snapshot(&out);
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(&src).arg("--out").arg(&out).args(["--force", "-q"]);
    let (code, _, err) = slotcon_tests::run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no .slotcon-store marker or slotcon manifest"), "{err}");
    assert!(
        slotcon_tests::snapshot(&out) == before,
        "a refused --force changed the folder"
    );
    // A store slotcon made is rebuilt by --force.
    let store = tmp.path().join("shards");
    ingest(&src, &store, &[]);
    assert_eq!(ingest(&src, &store, &["--force"])["written"], 1);
}

#[test]
fn a_fifo_or_a_device_among_the_images_is_skipped_without_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (one_image_source(tmp.path()), tmp.path().join("shards"));
    let status = std::process::Command::new("mkfifo")
        .arg(src.join("pipe.jpg"))
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink("/dev/zero", src.join("zero.png")).unwrap();
    let start = std::time::Instant::now();
    let report = ingest(&src, &out, &[]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(report["written"], 1, "{report}");
    let reasons: Vec<String> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}: {}", s["path"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert!(
        reasons.iter().any(|r| r == "pipe.jpg: not a regular file (a FIFO)"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "zero.png: not a regular file (a device)"),
        "{reasons:?}"
    );
}
