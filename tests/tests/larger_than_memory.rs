//! A store larger than memory: the loader in a memory cgroup whose limit is under half
//! the store (raw RGB, 750 MB) (the page cache of the mapped shards counts against it) reads it in the
//! block order without being killed, and gives the batches it gives without the limit.
//! The throughput figures, block order against global and against a store that fits,
//! are measured by `scripts/bench-stores.sh` (bench/RESULTS.md), not here.

use std::path::Path;

use slotcon_tests::cgroup::{evict_from_page_cache, MemoryCgroup};
use slotcon_tests::{bin, coco128, run_ok};

/// A folder of `copies` hard-linked copies of the COCO sample (`copies` x 128 images).
fn replicated(dir: &Path, copies: usize) {
    let images = coco128().join("images/train2017");
    for c in 0..copies {
        let sub = dir.join(format!("copy{c:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for e in std::fs::read_dir(&images).unwrap().flatten() {
            let to = sub.join(e.file_name());
            if std::fs::hard_link(e.path(), &to).is_err() {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
    }
}

#[test]
fn the_block_order_reads_a_store_over_twice_the_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    // Raw RGB (920 KB an image): 896 images make 750 MB, read at the loader's pace.
    replicated(&src, 7);
    run_ok(bin("slotcon-ingest").arg(&src).arg("--out").arg(&store).args([
        "-q",
        "--store",
        "raw",
        "--shard-size",
        "64MiB",
    ]));
    let bytes: u64 = slotcon_shards::Manifest::load(&store).unwrap().total_bytes;
    // The process holds about 210 MiB of its own (LibTorch's libraries, linked into the
    // bench, and the batch buffers): some 100 MiB are left for the store's pages.
    let limit = 320u64 << 20;
    assert!(bytes >= 2 * limit, "the store ({bytes} bytes) is not twice the limit");
    let cg = MemoryCgroup::new("slotcon-ltm", limit).unwrap_or_else(|e| panic!("a memory cgroup is needed: {e}"));
    let bench = |order: &str| {
        let mut cmd = bin("slotcon-bench");
        cmd.args(["loader", "--shards"]).arg(&store).args([
            "--order",
            order,
            "--epochs",
            "1",
            "--workers",
            "2",
            "--batch-size",
            "32",
            "--json",
        ]);
        cmd
    };
    evict_from_page_cache(&store);
    let inside: serde_json::Value = serde_json::from_str(run_ok(&mut cg.wrap(&bench("block"))).trim()).unwrap();
    assert_eq!(cg.oom_kills(), 0, "killed for memory");
    if let Some(peak) = cg.peak_bytes() {
        assert!(peak <= limit, "the cgroup held {peak} bytes, over {limit}");
        eprintln!(
            "cgroup peak {:.0} MiB of {:.0} MiB; store {:.0} MiB",
            peak as f64 / 1048576.0,
            limit as f64 / 1048576.0,
            bytes as f64 / 1048576.0
        );
    }
    assert_eq!(inside["samples"].as_u64().unwrap() + 32, 896, "{inside}");
    let outside: serde_json::Value = serde_json::from_str(run_ok(&mut bench("block")).trim()).unwrap();
    assert_eq!(inside["checksum"], outside["checksum"]);
}
