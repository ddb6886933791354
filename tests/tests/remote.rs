//! Stores in object storage, against a real S3 server on 127.0.0.1 (`slotcon-s3-server`:
//! s3s-fs): the loader's batches equal the local store's with the cache cold and warm,
//! on one and two ranks; the cache never exceeds its limit; faults are retried or are
//! clear errors within the deadline; a corrupt cached block is fetched again. The same
//! over `http://` and `https://`, against `rclone serve webdav`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slotcon_augment::{AugmentConfig, LoaderBuilder, Order};
use slotcon_shards::remote::upload_store;
use slotcon_shards::{crc32c, RemoteSettings, ShardReader};
use slotcon_tests::s3::S3Server;
use slotcon_tests::webdav::WebDav;
use slotcon_tests::{bin, coco128, run_ok};

/// The COCO sample ingested into `dir` in shards of 4 MiB (six shards).
fn coco_store(dir: &Path) {
    run_ok(
        bin("slotcon-ingest")
            .arg(coco128().join("images"))
            .arg("--out")
            .arg(dir)
            .args(["--quiet", "--shard-size", "4MiB"]),
    );
}

/// A server with the store of `local` uploaded to `s3://bucket/coco/`.
fn served(tmp: &Path, local: &Path, args: &[&str]) -> (S3Server, String) {
    let server = S3Server::start(&tmp.join("server"), args);
    let url = format!("{}/coco/", server.bucket("bucket"));
    let settings = settings(&server, &tmp.join("upload-cache"));
    upload_store(local, &url.parse().unwrap(), &settings, &mut |_, _| {}).unwrap();
    (server, url)
}

fn settings(server: &S3Server, cache: &Path) -> RemoteSettings {
    RemoteSettings {
        cache: Some(cache.to_path_buf()),
        block_bytes: 1 << 20,
        timeout_s: 20.0,
        storage_options: server.options(),
        ..RemoteSettings::default()
    }
}

/// One checksum per batch over its ids, both views, boxes and flips.
fn epoch_sums(
    reader: &Arc<ShardReader>,
    epoch: u64,
    rank: usize,
    world: usize,
    each: impl FnMut(&ShardReader),
) -> Vec<u32> {
    ordered_sums(reader, Order::Global, epoch, (rank, world), 0, each)
}

/// [`epoch_sums`] in `order`, from step `start` of the epoch.
fn ordered_sums(
    reader: &Arc<ShardReader>,
    order: Order,
    epoch: u64,
    (rank, world): (usize, usize),
    start: u64,
    mut each: impl FnMut(&ShardReader),
) -> Vec<u32> {
    let loader = LoaderBuilder::new(reader.clone())
        .order(order)
        .start_step(start)
        .augment(AugmentConfig {
            size: 64,
            ..AugmentConfig::slotcon()
        })
        .batch_size(8)
        .workers(2)
        .seed(5)
        .epoch(epoch)
        .distributed(rank, world)
        .build()
        .unwrap();
    loader
        .map(|b| {
            let b = b.unwrap();
            each(reader);
            let [v1, v2] = b.views();
            let meta = format!("{:?}{:?}{:?}", b.ids(), b.boxes(), b.flips());
            crc32c(&[v1, v2, meta.as_bytes()].concat())
        })
        .collect()
}

fn two_epochs(reader: &Arc<ShardReader>, rank: usize, world: usize) -> Vec<u32> {
    (0..2)
        .flat_map(|e| epoch_sums(reader, e, rank, world, |_| {}))
        .collect()
}

fn open(url: &str, settings: &RemoteSettings) -> Arc<ShardReader> {
    Arc::new(ShardReader::open_with(url, settings).unwrap())
}

#[test]
fn remote_batches_equal_the_local_stores_cold_and_warm_on_one_and_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    coco_store(&local);
    let (server, url) = served(tmp.path(), &local, &[]);
    let local_reader = Arc::new(ShardReader::open(&local).unwrap());
    let want = two_epochs(&local_reader, 0, 1);
    let want_ranks: Vec<Vec<u32>> = (0..2).map(|r| two_epochs(&local_reader, r, 2)).collect();

    let cache = tmp.path().join("cache");
    let s = settings(&server, &cache);
    let cold = open(&url, &s);
    assert!(cold.is_remote());
    assert_eq!(cold.len(), local_reader.len());
    assert_eq!(two_epochs(&cold, 0, 1), want, "cold cache, then warm in epoch 2");
    let stats = cold.remote_stats().unwrap();
    let store_bytes = local_reader.manifest().total_bytes;
    // Epoch 1 fetched every block once (the cache holds the store), epoch 2 none.
    assert!(
        stats.blocks_fetched > 0 && stats.bytes_fetched <= store_bytes + (1 << 20),
        "{stats:?}"
    );
    assert!(stats.requests_per_sample() < 0.2, "{stats:?}");
    drop(cold);

    // A second process's view: the cache is warm, nothing is fetched.
    let warm = open(&url, &s);
    assert_eq!(two_epochs(&warm, 0, 1), want, "warm cache");
    let stats = warm.remote_stats().unwrap();
    assert_eq!(stats.blocks_fetched, 0, "{stats:?}");
    assert!(stats.cache_hits > 0, "{stats:?}");
    // Two ranks sharing the warm cache, each its own reader.
    for (rank, want) in want_ranks.iter().enumerate() {
        assert_eq!(&two_epochs(&open(&url, &s), rank, 2), want, "rank {rank} of 2");
    }
    // A mid-epoch resume from a remote store on another number of ranks: the share and
    // the start step are the loader's; the batches are the local store's.
    let resumed = |reader: &Arc<ShardReader>, rank| ordered_sums(reader, Order::Global, 1, (rank, 2), 2, |_| {});
    for rank in 0..2 {
        assert_eq!(
            resumed(&open(&url, &s), rank),
            resumed(&local_reader, rank),
            "resumed rank {rank}"
        );
    }
    // Two ranks with a cold cache each.
    for (rank, want) in want_ranks.iter().enumerate() {
        let s = settings(&server, &tmp.path().join(format!("cache-rank{rank}")));
        assert_eq!(&two_epochs(&open(&url, &s), rank, 2), want, "rank {rank} of 2, cold");
    }
}

#[test]
fn stores_over_http_and_https_give_the_local_stores_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let local = served.join("coco");
    coco_store(&local);
    let local_reader = Arc::new(ShardReader::open(&local).unwrap());
    let want = two_epochs(&local_reader, 0, 1);
    let want_rank1 = two_epochs(&local_reader, 1, 2);
    for tls in [false, true] {
        let server = WebDav::start(&served, tls);
        let url = format!("{}coco/", server.url);
        assert!(url.starts_with(if tls { "https://" } else { "http://" }), "{url}");
        let mut s = RemoteSettings {
            cache: Some(tmp.path().join(format!("cache-{tls}"))),
            block_bytes: 1 << 20,
            timeout_s: 20.0,
            ..RemoteSettings::default()
        };
        if tls {
            // A self-signed certificate is refused, within the deadline, naming the URL...
            let quick = RemoteSettings {
                timeout_s: 2.0,
                ..s.clone()
            };
            let start = Instant::now();
            let err = ShardReader::open_with(&url, &quick)
                .err()
                .expect("an untrusted certificate was accepted");
            assert!(err.to_string().contains("127.0.0.1"), "{err}");
            assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
            // ... unless the client is told to accept it.
            s.storage_options
                .insert("allow_invalid_certificates".into(), "true".into());
        }
        let cold = open(&url, &s);
        assert_eq!(two_epochs(&cold, 0, 1), want, "{url}: cold cache, then warm in epoch 2");
        let stats = cold.remote_stats().unwrap();
        assert!(stats.blocks_fetched > 0 && stats.retries == 0, "{stats:?}");
        drop(cold);
        let warm = open(&url, &s);
        assert_eq!(two_epochs(&warm, 0, 1), want, "{url}: warm cache");
        assert_eq!(warm.remote_stats().unwrap().blocks_fetched, 0);
        assert_eq!(two_epochs(&open(&url, &s), 1, 2), want_rank1, "{url}: rank 1 of 2");
    }
}

#[test]
fn the_cache_never_exceeds_its_limit_and_a_corrupt_block_is_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    coco_store(&local);
    let (server, url) = served(tmp.path(), &local, &[]);
    let local_reader = Arc::new(ShardReader::open(&local).unwrap());
    let store_bytes = local_reader.manifest().total_bytes;
    let limit = store_bytes / 4;
    let cache = tmp.path().join("cache");
    let s = RemoteSettings {
        cache_limit: Some(limit),
        ..settings(&server, &cache)
    };
    let reader = open(&url, &s);
    let mut most = 0;
    for epoch in 0..3 {
        let want = epoch_sums(&local_reader, epoch, 0, 1, |_| {});
        let got = epoch_sums(&reader, epoch, 0, 1, |r| {
            let (_, used, cap) = r.cache_usage().unwrap().unwrap();
            assert!(used <= cap, "the cache holds {used} bytes, over its limit {cap}");
            most = most.max(used);
        });
        assert_eq!(got, want, "epoch {epoch}, a quarter of the store cached");
    }
    let stats = reader.remote_stats().unwrap();
    eprintln!(
        "cache limit {limit} of {store_bytes} bytes, most held {most}; fetched {:.2}x the store over 3 epochs; {stats:?}",
        stats.bytes_fetched as f64 / store_bytes as f64
    );
    assert!(most > 0 && stats.evictions > 0, "{stats:?}");
    let global_refetched = stats.bytes_fetched;
    drop(reader);

    // The block order (runs of 8 samples, windows of 2 runs) with the same limit: each
    // epoch fetches about the store once.
    let block = Order::Block { samples: 8, window: 2 };
    let s = RemoteSettings {
        cache_limit: Some(limit),
        ..settings(&server, &tmp.path().join("cache-block"))
    };
    let reader = open(&url, &s);
    let mut per_epoch = Vec::new();
    for epoch in 0..3 {
        let want = ordered_sums(&local_reader, block, epoch, (0, 1), 0, |_| {});
        let before = reader.remote_stats().unwrap();
        let got = ordered_sums(&reader, block, epoch, (0, 1), 0, |r| {
            let (_, used, cap) = r.cache_usage().unwrap().unwrap();
            assert!(
                used <= cap,
                "block order: the cache holds {used} bytes, over its limit {cap}"
            );
        });
        assert_eq!(got, want, "block order, epoch {epoch}");
        per_epoch.push(reader.remote_stats().unwrap().since(&before).bytes_fetched as f64 / store_bytes as f64);
    }
    let stats = reader.remote_stats().unwrap();
    eprintln!("block order, cache a quarter of the store: fetched {per_epoch:.2?} x the store per epoch; {stats:?}");
    assert!(
        stats.bytes_fetched < global_refetched,
        "block {} >= global {global_refetched}",
        stats.bytes_fetched
    );
    assert!(per_epoch.iter().all(|&x| x < 1.5), "{per_epoch:?}");
    drop(reader);

    // A warm cache with one block corrupted, and one truncated: both are fetched again.
    let s = settings(&server, &tmp.path().join("cache2"));
    let want = epoch_sums(&local_reader, 0, 0, 1, |_| {});
    assert_eq!(epoch_sums(&open(&url, &s), 0, 0, 1, |_| {}), want);
    let blocks = block_files(&tmp.path().join("cache2"));
    assert!(blocks.len() > 2, "{blocks:?}");
    let mut bytes = std::fs::read(&blocks[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blocks[0], &bytes).unwrap();
    std::fs::write(&blocks[1], &std::fs::read(&blocks[1]).unwrap()[..100]).unwrap();
    let reader = open(&url, &s);
    assert_eq!(epoch_sums(&reader, 0, 0, 1, |_| {}), want, "after corrupting the cache");
    let stats = reader.remote_stats().unwrap();
    assert!(stats.cache_corrupt >= 2 && stats.blocks_fetched >= 2, "{stats:?}");
}

fn block_files(cache: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "blk"))
        .collect();
    out.sort();
    out
}

#[test]
fn transient_faults_are_retried_and_the_batches_do_not_change() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    coco_store(&local);
    let faults = ["--fail-every", "3", "--reset-every", "5", "--truncate-every", "7"];
    let (server, url) = served(tmp.path(), &local, &faults);
    let local_reader = Arc::new(ShardReader::open(&local).unwrap());
    let want = epoch_sums(&local_reader, 0, 0, 1, |_| {});
    let reader = open(&url, &settings(&server, &tmp.path().join("cache")));
    assert_eq!(epoch_sums(&reader, 0, 0, 1, |_| {}), want);
    let stats = reader.remote_stats().unwrap();
    assert!(stats.retries >= 3, "{stats:?}");
}

#[test]
fn unreachable_missing_and_refused_stores_are_clear_errors_within_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    coco_store(&local);
    let (server, url) = served(tmp.path(), &local, &[]);
    let quick = |options: Vec<(&str, String)>| {
        let mut s = settings(&server, &tmp.path().join("cache"));
        s.timeout_s = 2.0;
        for (k, v) in options {
            s.storage_options.insert(k.into(), v);
        }
        s
    };
    let fails_quickly = |url: &str, s: &RemoteSettings, says: &[&str]| {
        let start = Instant::now();
        let e = ShardReader::open_with(url, s).err().expect("an error").to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}: {e}", start.elapsed());
        assert!(e.contains(url.trim_end_matches('/')), "{e}");
        for s in says {
            assert!(e.contains(s), "{e} (expected {s:?})");
        }
    };
    // Nothing listens on the port: retried with backoff until the deadline.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let s = quick(vec![("endpoint", format!("http://127.0.0.1:{port}"))]);
    fails_quickly(&url, &s, &["no good answer", "attempts"]);
    // A bucket that does not exist, and a prefix that holds no store.
    fails_quickly("s3://no-such-bucket/coco/", &quick(vec![]), &[]);
    fails_quickly(&url.replace("coco", "nothing"), &quick(vec![]), &[]);
    // Refused credentials.
    let s = quick(vec![("secret_access_key", "wrong".into())]);
    fails_quickly(&url, &s, &[]);
    // A server that answers nothing within the deadline: each attempt times out.
    let slow = S3Server::start(&tmp.path().join("slow"), &["--latency-ms", "30000"]);
    let s = quick(vec![("endpoint", slow.endpoint())]);
    fails_quickly(&url, &s, &["no good answer", "no answer within"]);
    // A scheme slotcon does not read.
    let e = ShardReader::open("ftp://host/x").err().unwrap().to_string();
    assert!(e.contains("unsupported scheme ftp://"), "{e}");
}

/// A reader dropped while its fetchers retry against a failing server (every block read
/// answered 503, retried for up to a minute) is gone within seconds: its fetchers are
/// waited for briefly, then left to end after their request, not joined for the deadline.
#[test]
fn a_reader_dropped_while_its_fetchers_retry_does_not_wait_for_their_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    coco_store(&local);
    let (server, url) = served(tmp.path(), &local, &["--fail-every", "1"]);
    let mut s = settings(&server, &tmp.path().join("cache"));
    (s.timeout_s, s.retries) = (60.0, 1000);
    let reader = ShardReader::open_with(&url, &s).unwrap();
    reader.plan(&(0..reader.len()).collect::<Vec<_>>());
    let start = Instant::now();
    while reader.remote_stats().unwrap().retries < 4 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        reader.remote_stats().unwrap().retries >= 4,
        "the fetchers are not retrying"
    );
    let start = Instant::now();
    drop(reader);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(15), "the drop took {took:?}");
}

#[test]
fn a_store_changed_after_opening_is_an_error_naming_the_shard_and_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    coco_store(&local);
    let (server, url) = served(tmp.path(), &local, &[]);
    let s = settings(&server, &tmp.path().join("cache"));
    let local_reader = ShardReader::open(&local).unwrap();
    let last = local_reader.manifest().shards[0].rows - 1;
    let payload = local_reader.get(last).unwrap().bytes.to_vec();
    let reader = open(&url, &s);
    // The bytes of shard 0's last sample change under the server, its ETag not: the
    // CRC-32C catches it.
    let shard = server.root.join("bucket/coco/shard-00000.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    // The middle of the payload: entropy-coded data, found once (headers repeat).
    let mid = payload.len() / 2;
    let at = bytes.windows(256).position(|w| w == &payload[mid..mid + 256]).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
    let e = reader.get(last).expect_err("the change is noticed").to_string();
    assert!(
        e.contains("shard-00000.parquet") && e.contains("changed since the store was opened"),
        "{e}"
    );
    assert!(e.contains(&format!("sample {last} (")) && e.contains("CRC-32C"), "{e}");
    // The samples before it still read (their block may be another).
    assert!(reader.get(0).is_ok());

    // Shard 1 rewritten with a new ETag (s3s-fs computes it again once its record is
    // gone): an error naming the object, before any byte is used.
    let shard = server.root.join("bucket/coco/shard-00001.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    for e in std::fs::read_dir(&server.root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".internal.json") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let first = local_reader.manifest().shards[1].first_id;
    let e = reader.get(first).expect_err("the new ETag is noticed").to_string();
    assert!(e.contains("shard-00001.parquet") && e.contains("ETag"), "{e}");
}
