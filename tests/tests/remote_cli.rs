//! The binaries on a store in object storage, against a real S3 server on 127.0.0.1:
//! `slotcon-ingest --out s3://` (killed and resumed), `slotcon-ingest verify`,
//! `slotcon-bench loader --against`, and `slotcon-train --shards s3://`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use slotcon_tests::s3::S3Server;
use slotcon_tests::{bin, coco128, run, run_ok, snapshot, step_losses};

fn ingest(server: &S3Server, out: &str, staging: &Path) -> Command {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(coco128().join("images"))
        .arg("--out")
        .arg(out)
        .arg("--staging")
        .arg(staging)
        .args(["--shard-size", "4MiB", "-q"]);
    server.env(&mut cmd);
    cmd
}

#[test]
fn an_ingest_into_s3_killed_and_resumed_ends_with_the_local_ingests_store() {
    let tmp = tempfile::tempdir().unwrap();
    // Each request waits 150 ms: the ingest is still uploading when it is killed.
    let server = S3Server::start(&tmp.path().join("root"), &["--latency-ms", "150"]);
    let url = format!("{}/coco/", server.bucket("bucket"));
    let staging = tmp.path().join("staging");
    let prefix = server.root.join("bucket/coco");
    let mut child = ingest(&server, &url, &staging).stdout(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !prefix.join("shard-00000.idx").exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        prefix.join("shard-00000.parquet").exists(),
        "no shard was uploaded before the kill"
    );
    assert!(
        !prefix.join("manifest.json").exists(),
        "a reader would see half a store"
    );
    let out = run_ok(ingest(&server, &url, &staging).arg("--json"));
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(report["upload"]["kept"].as_u64().unwrap() >= 2, "{report}");
    // The same store as a local ingest, file for file.
    let local = tmp.path().join("local");
    run_ok(
        bin("slotcon-ingest")
            .arg(coco128().join("images"))
            .arg("--out")
            .arg(&local)
            .args(["--shard-size", "4MiB", "-q"]),
    );
    let store = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        // The store's files as the server holds them, s3s-fs's own files aside.
        snapshot(dir)
            .into_iter()
            .filter(|(n, _)| n.starts_with("shard-") || n == "manifest.json")
            .collect()
    };
    let (remote, local) = (store(&prefix), store(&local));
    assert_eq!(
        remote.iter().map(|f| &f.0).collect::<Vec<_>>(),
        local.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(remote == local, "the uploaded store differs from the local ingest's");
    // Verified from the bucket: every sample's CRC-32C and every decode.
    let mut verify = bin("slotcon-ingest");
    verify
        .args(["verify", &url, "--json", "--cache"])
        .arg(tmp.path().join("cache"));
    let report: serde_json::Value = serde_json::from_str(run_ok(server.env(&mut verify)).trim()).unwrap();
    assert_eq!(report["images"], 128, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
}

#[test]
fn the_loader_bench_reads_s3_against_the_local_store_and_training_follows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("root"), &["--latency-ms", "5"]);
    let url = format!("{}/coco/", server.bucket("bucket"));
    let staging = tmp.path().join("staging");
    run_ok(&mut ingest(&server, &url, &staging));
    let mut bench = bin("slotcon-bench");
    bench
        .args(["loader", "--shards", &url, "--against"])
        .arg(&staging)
        .args([
            "--epochs",
            "2",
            "--workers",
            "1",
            "--batch-size",
            "16",
            "--json",
            "--cache",
        ])
        .arg(tmp.path().join("cache"));
    let out: serde_json::Value = serde_json::from_str(run_ok(server.env(&mut bench)).trim()).unwrap();
    let (ours, base) = (&out["store"], &out["against"]);
    assert_eq!(ours["checksum"], base["checksum"], "the batches differ");
    assert_eq!(out["ratio_per_epoch"].as_array().unwrap().len(), 2);
    // The two runs take turns: against's epoch 1, then the store's epochs 1 and 2, then
    // against's epoch 2.
    let starts = |r: &serde_json::Value| -> Vec<f64> {
        let epochs = r["epochs"].as_array().unwrap();
        epochs.iter().map(|e| e["started_unix"].as_f64().unwrap()).collect()
    };
    let (o, b) = (starts(ours), starts(base));
    assert!(b[0] < o[0] && o[0] < o[1] && o[1] < b[1], "not in turns: {out}");
    let epochs = ours["epochs"].as_array().unwrap();
    // Epoch 1 fetches the store once (the cache holds it); epoch 2 fetches nothing.
    assert!(epochs[0]["remote"]["blocks_fetched"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(epochs[1]["remote"]["blocks_fetched"], 0, "{out}");
    assert!(epochs[1]["remote"]["cache_hits"].as_u64().unwrap() > 0, "{out}");
    assert!(base["remote"].is_null());
    for key in [
        "requests",
        "bytes_fetched",
        "bytes_used",
        "cache_hits",
        "retries",
        "wait_seconds",
    ] {
        assert!(ours["remote"].get(key).is_some(), "{key} missing: {out}");
    }

    // Two training steps from the bucket lose what two from the local store lose.
    let train = |shards: &str, out: &Path| {
        let mut cmd = bin("slotcon-train");
        cmd.args(["--shards", shards, "--out"])
            .arg(out)
            .args([
                "--image-size",
                "64",
                "--batch-size",
                "16",
                "--max-steps",
                "2",
                "-q",
                "--cache",
            ])
            .arg(tmp.path().join("cache"));
        run_ok(server.env(&mut cmd));
    };
    let (from_s3, from_disk) = (tmp.path().join("run-s3"), tmp.path().join("run-local"));
    train(&url, &from_s3);
    train(staging.to_str().unwrap(), &from_disk);
    assert_eq!(step_losses(&from_s3), step_losses(&from_disk));
    let metrics = std::fs::read_to_string(from_s3.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["remote"]["samples"].as_u64().unwrap() > 0, "{last}");
    let local_metrics = std::fs::read_to_string(from_disk.join("metrics.jsonl")).unwrap();
    assert!(!local_metrics.contains("\"remote\""));
    // slotcon-viz retrieves from the bucket as from the folder: the same picture.
    let grid = |shards: &str, png: &Path| {
        let mut cmd = bin("slotcon-viz");
        cmd.args(["prototypes", "--run"])
            .arg(&from_s3)
            .args(["--shards", shards, "--topk", "2", "--sample", "3", "--size", "64"])
            .args(["--tile", "16", "--max-images", "16", "--cache"])
            .arg(tmp.path().join("cache"))
            .arg("--out")
            .arg(png);
        run_ok(server.env(&mut cmd));
        std::fs::read(png).unwrap()
    };
    let (png_s3, png_local) = (tmp.path().join("s3.png"), tmp.path().join("local.png"));
    assert!(grid(&url, &png_s3) == grid(staging.to_str().unwrap(), &png_local));
    // A bad URL is a clear error, not a hang or a panic.
    let mut cmd = bin("slotcon-train");
    cmd.args(["--shards", "s3://bucket/missing/", "--out"])
        .arg(tmp.path().join("run-missing"))
        .args(["--remote-timeout", "5", "-q"]);
    let (code, _, err) = run(server.env(&mut cmd));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("s3://bucket/missing/manifest.json") && err.contains("no slotcon store"),
        "{err}"
    );
}

/// A shard larger than a part goes up as a multipart upload read from the staged file a
/// few parts at a time, each part retried on its own: in a memory cgroup of half the
/// shard's size, with every third PUT answered 503, and the server named by
/// `--storage-option` flags alone, the bucket ends with the staged store, file for file.
#[test]
fn a_shard_larger_than_the_memory_limit_is_uploaded_in_retried_parts() {
    use slotcon_tests::cgroup::MemoryCgroup;
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("root"), &["--fail-put-every", "3"]);
    let url = format!("{}/raw/", server.bucket("bucket"));
    let staging = tmp.path().join("staging");
    let args = ["--store", "raw", "--shard-size", "1GiB", "-q"];
    // Staged first, outside the cgroup: one shard of decoded pixels (about 100 MiB).
    run_ok(
        bin("slotcon-ingest")
            .arg(coco128().join("images"))
            .arg("--out")
            .arg(&staging)
            .args(args),
    );
    let shard = std::fs::metadata(staging.join("shard-00000.parquet")).unwrap().len();
    let limit = shard / 2;
    let cg = MemoryCgroup::new("slotcon-upload", limit).unwrap_or_else(|e| panic!("a memory cgroup is needed: {e}"));
    let mut upload = bin("slotcon-ingest");
    upload
        .arg(coco128().join("images"))
        .arg("--out")
        .arg(&url)
        .arg("--staging")
        .arg(&staging)
        .args(args)
        .args(["--part-size", "5MiB", "--json"]);
    for (k, v) in server.options() {
        upload.arg("--storage-option").arg(format!("{k}={v}"));
    }
    // Nothing from the environment: the flags alone name the server.
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        upload.env_remove(var);
    }
    let (code, out, err) = run(&mut cg.wrap(&upload));
    assert_eq!(cg.oom_kills(), 0, "the upload was killed for memory: {err}");
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["upload"]["uploaded"], 3, "{report}");
    assert!(report["upload"]["retries"].as_u64().unwrap() >= 6, "{report}");
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let names = |n: &String| n.starts_with("shard-") || n == "manifest.json";
        snapshot(dir).into_iter().filter(|(n, _)| names(n)).collect()
    };
    let (remote, staged) = (files(&server.root.join("bucket/raw")), files(&staging));
    assert_eq!(
        remote.iter().map(|f| &f.0).collect::<Vec<_>>(),
        staged.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(remote == staged, "the uploaded store differs from the staged one");
    // A part size S3 refuses is a usage error, before anything starts.
    let (code, _, err) = run(bin("slotcon-ingest").args(["x", "--out", &url, "--part-size", "1MiB"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("5MiB..=5GiB"), "{err}");
}
