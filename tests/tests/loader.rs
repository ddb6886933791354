//! The multi-threaded loader on real shards: determinism, resume, distribution, bounded
//! work ahead of a slow consumer, corrupt entries, skipped images, shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slotcon_augment::{Error, LoaderBuilder, TwoViewBatch};
use slotcon_shards::{Manifest, NewSample, ShardReader, ShardWriter, StoreKind};
use slotcon_tests::{bin, coco128, run_ok};

fn coco_store(dir: &Path) -> Arc<ShardReader> {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(coco128().join("images"))
        .arg("--out")
        .arg(dir)
        .args(["--quiet", "--shard-size", "4MiB"]);
    run_ok(&mut cmd);
    Arc::new(ShardReader::open(dir).unwrap())
}

/// A fingerprint of a batch: its ids plus a CRC of everything it carries.
fn fingerprint(b: &TwoViewBatch) -> (Vec<u64>, u32) {
    let mut crc = 0u32;
    for v in b.views() {
        crc = slotcon_shards::crc32c(v) ^ crc.rotate_left(1);
    }
    let geometry: Vec<u8> = b
        .boxes()
        .iter()
        .flatten()
        .flatten()
        .flat_map(|f| f.to_le_bytes())
        .chain(b.flips().iter().flatten().map(|&f| f as u8))
        .collect();
    (b.ids().to_vec(), crc ^ slotcon_shards::crc32c(&geometry))
}

fn epoch(builder: LoaderBuilder) -> Vec<(Vec<u64>, u32)> {
    builder.build().unwrap().map(|b| fingerprint(&b.unwrap())).collect()
}

#[test]
fn batches_are_identical_for_any_worker_count_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let base = LoaderBuilder::new(reader).batch_size(12).seed(5).epoch(1);
    let one = epoch(base.clone().workers(1));
    assert_eq!(one.len(), 128 / 12);
    assert_eq!(epoch(base.clone().workers(2)), one);
    assert_eq!(epoch(base.clone().workers(8).prefetch(5)), one);
    assert_eq!(epoch(base.clone().workers(2)), one, "a second run differs");
    // Resume at step 4: exactly the rest of the epoch.
    assert_eq!(epoch(base.clone().workers(3).start_step(4)), one[4..]);
    // Another epoch or seed gives other batches.
    assert_ne!(epoch(base.clone().epoch(2)), one);
    // Every id of the epoch appears once.
    let mut ids: Vec<u64> = one.iter().flat_map(|(i, _)| i.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10 * 12);
}

#[test]
fn ranks_are_disjoint_and_cover_the_dataset_with_drop_last() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let mut all = Vec::new();
    for rank in 0..3 {
        let b = LoaderBuilder::new(Arc::clone(&reader))
            .batch_size(6)
            .workers(2)
            .distributed(rank, 3);
        let ids: Vec<u64> = epoch(b).into_iter().flat_map(|(i, _)| i).collect();
        assert_eq!(ids.len(), 42, "rank {rank}: 128 / 3 = 42 samples, 7 batches of 6");
        all.extend(ids);
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (126, 126), "ranks overlap");
    assert!(LoaderBuilder::new(reader).distributed(3, 3).build().is_err());
}

#[test]
fn workers_stay_within_the_buffers_ahead_of_a_slow_consumer() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let mut loader = LoaderBuilder::new(reader)
        .batch_size(4)
        .workers(2)
        .prefetch(1)
        .build()
        .unwrap();
    assert_eq!(loader.buffers(), 3);
    for taken in 1..=6u64 {
        let batch = loader.next().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(300)); // far longer than a batch takes
        let ahead = loader.rendered() as i64 - (taken * 4) as i64;
        assert!(
            ahead <= 4 * 2,
            "workers rendered {ahead} samples beyond the {taken} batches taken"
        );
        drop(batch);
    }
    // Holding every buffer is an error, not a hang.
    let mut loader = LoaderBuilder::new(Arc::new(ShardReader::open(tmp.path()).unwrap()))
        .batch_size(4)
        .prefetch(0)
        .build()
        .unwrap();
    let (a, b) = (loader.next().unwrap().unwrap(), loader.next().unwrap().unwrap());
    let err = loader.next().unwrap().unwrap_err().to_string();
    assert!(err.contains("held by the caller"), "{err}");
    drop((a, b));
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(secs)).expect("the loader hung")
}

#[test]
fn a_corrupt_entry_is_an_error_naming_its_id_and_path_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let (victim, path, shard, at) = {
        let s = reader.get(77).unwrap();
        let file = std::fs::read(reader.shard_path(s.shard)).unwrap();
        let at = file.windows(64).position(|w| w == &s.bytes[500..564]).unwrap();
        (s.id, s.path.to_string(), reader.shard_path(s.shard).to_path_buf(), at)
    };
    drop(reader);
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    let dir = tmp.path().to_path_buf();
    let result = within(60, move || {
        let reader = Arc::new(ShardReader::open(&dir).unwrap());
        let loader = LoaderBuilder::new(reader).batch_size(8).workers(4).build().unwrap();
        loader.map(|b| b.map(|_| ())).collect::<Vec<_>>()
    });
    let err = result
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("the corrupt sample was not reported");
    match err {
        Error::Sample { id, path: p, reason } => {
            assert_eq!((*id, p.as_str()), (victim, path.as_str()));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(result.last().unwrap().is_err(), "iteration goes on after the error");
}

#[test]
fn undecodable_images_are_skipped_and_reported_and_the_epoch_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::create(tmp.path(), 0, 0, StoreKind::Encoded).unwrap();
    let good = std::fs::read(coco128().join("images/train2017/000000000009.jpg")).unwrap();
    for i in 0..22 {
        let (bytes, path) = if i % 7 == 3 {
            (&b"not an image at all"[..], format!("bad{i}.jpg"))
        } else {
            (&good[..], format!("good{i}.jpg"))
        };
        w.push(NewSample {
            bytes,
            path: &path,
            width: 640,
            height: 480,
        })
        .unwrap();
    }
    Manifest::new(StoreKind::Encoded, serde_json::json!({}), vec![w.finish().unwrap()])
        .save(tmp.path())
        .unwrap();
    let reader = Arc::new(ShardReader::open(tmp.path()).unwrap());
    let (mut delivered, mut skipped) = (0, Vec::new());
    for b in LoaderBuilder::new(reader).batch_size(4).workers(3).build().unwrap() {
        let b = b.unwrap();
        assert_eq!(b.len() + b.skipped().len(), 4);
        assert_eq!(b.ids().len(), b.len());
        assert_eq!(b.views()[0].len(), b.len() * 224 * 224 * 3);
        delivered += b.len();
        skipped.extend(b.skipped().to_vec());
    }
    assert_eq!(delivered + skipped.len(), 20, "5 batches of 4");
    assert!(!skipped.is_empty());
    for s in &skipped {
        assert!(
            s.path.starts_with("bad") && s.reason.contains("not a JPEG or PNG"),
            "{s:?}"
        );
    }
}

#[test]
fn dropping_a_busy_loader_stops_and_joins_its_threads_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let elapsed = within(60, move || {
        let mut loader = LoaderBuilder::new(reader)
            .batch_size(32)
            .workers(6)
            .prefetch(4)
            .build()
            .unwrap();
        let first = loader.next().unwrap().unwrap();
        let start = Instant::now();
        drop(loader); // workers are busy with the prefetched batches
        let e = start.elapsed();
        drop(first); // the batch outlives its loader safely
        e
    });
    assert!(elapsed < Duration::from_secs(10), "shutdown took {elapsed:?}");
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
    for key in ["id", "path", "width", "height", "crops", "boxes", "flips"] {
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
        "checksum",
        "samples",
    ] {
        assert!(a.get(key).is_some(), "loader JSON lacks {key}: {a}");
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
