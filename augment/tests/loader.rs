//! The multi-threaded loader on real shards: determinism, resume, distribution, bounded
//! work ahead of a slow consumer, corrupt entries, skipped images, shutdown.
//!
//! The stores are written with the library's `ShardWriter` from the shared COCO sample
//! (`$SLOTCON_COCO128`, else `shared/data/coco128` beside the checkout), keeping the JPEG
//! bytes as they are, as `slotcon-ingest` does by default; bad files are made here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use slotcon_augment::decode::{decode_rgb, Limits};
use slotcon_augment::{Error, LoaderBuilder, SampleFailure, TwoViewBatch};
use slotcon_shards::{Manifest, NewSample, ShardReader, ShardWriter, StoreKind};

/// Payload bytes after which a shard is closed, as `slotcon-ingest --shard-size 4MiB`.
const SHARD_BYTES: u64 = 4 << 20;

/// The shared COCO sample: `$SLOTCON_COCO128`, else `../shared/data/coco128` relative to
/// the workspace root.
fn coco128() -> PathBuf {
    let dir = std::env::var_os("SLOTCON_COCO128")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/coco128"));
    assert!(
        dir.join("images/train2017").is_dir(),
        "COCO sample not found at {} (set SLOTCON_COCO128)",
        dir.display()
    );
    dir
}

/// One source image: its path relative to `coco128/images`, bytes, width and height.
struct Image {
    path: String,
    bytes: Vec<u8>,
    width: u32,
    height: u32,
}

/// The 128 COCO images sorted by path (ingest's id order), each decoded once to check it
/// and to read its size.
fn coco_images() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = coco128().join("images/train2017");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".jpg"))
            .collect();
        names.sort();
        let mut rgb = Vec::new();
        let images: Vec<Image> = names
            .into_iter()
            .map(|name| {
                let bytes = std::fs::read(dir.join(&name)).unwrap();
                let info = decode_rgb(&bytes, Limits::default(), &mut rgb).unwrap_or_else(|e| panic!("{name}: {e}"));
                Image {
                    path: format!("train2017/{name}"),
                    bytes,
                    width: info.width,
                    height: info.height,
                }
            })
            .collect();
        assert_eq!(images.len(), 128, "the COCO sample should hold 128 JPEGs");
        images
    })
}

/// Writes an encoded store of `samples` into `dir`, closing a shard once it holds
/// `shard_bytes` of payload, and opens it.
fn write_store<'a>(dir: &Path, samples: impl IntoIterator<Item = NewSample<'a>>, shard_bytes: u64) -> Arc<ShardReader> {
    let (mut shards, mut writer, mut next_id) = (Vec::new(), None::<ShardWriter>, 0);
    for s in samples {
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(ShardWriter::create(dir, shards.len(), next_id, StoreKind::Encoded).unwrap()),
        };
        w.push(s).unwrap();
        next_id += 1;
        if w.image_bytes() >= shard_bytes {
            shards.push(writer.take().unwrap().finish().unwrap());
        }
    }
    if let Some(w) = writer {
        shards.push(w.finish().unwrap());
    }
    Manifest::new(StoreKind::Encoded, serde_json::json!({}), shards)
        .save(dir)
        .unwrap();
    Arc::new(ShardReader::open(dir).unwrap())
}

/// The COCO sample as a store in `dir`, in shards of about 4 MiB.
fn coco_store(dir: &Path) -> Arc<ShardReader> {
    let samples = coco_images().iter().map(|i| NewSample {
        bytes: &i.bytes,
        path: &i.path,
        width: i.width,
        height: i.height,
    });
    let reader = write_store(dir, samples, SHARD_BYTES);
    assert!(
        reader.manifest().shards.len() > 1,
        "the store should span several shards"
    );
    reader
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
    // The next epoch built after this one (its buffers taken over, even mid-epoch or with
    // other settings) is that epoch's batches, as if built afresh.
    let mut first = base.clone().workers(2).epoch(0).build().unwrap();
    let _ = first.next();
    let after = base.clone().workers(3).build_after(Some(first)).unwrap();
    let again: Vec<_> = after.map(|b| fingerprint(&b.unwrap())).collect();
    assert_eq!(again, one);
    // A batch still held, or buffers of another size: fresh buffers, the same batches.
    let mut busy = base.clone().epoch(0).build().unwrap();
    let held = busy.next().unwrap().unwrap();
    let rest: Vec<_> = base
        .clone()
        .build_after(Some(busy))
        .unwrap()
        .map(|b| fingerprint(&b.unwrap()))
        .collect();
    assert_eq!(rest, one);
    drop(held);
    let small = base
        .clone()
        .batch_size(7)
        .build_after(Some(base.clone().build().unwrap()))
        .unwrap();
    let small: Vec<_> = small.map(|b| fingerprint(&b.unwrap())).collect();
    assert_eq!(small, epoch(base.clone().batch_size(7)));
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
        Error::Sample { id, path: p, cause } => {
            assert_eq!((*id, p.as_str()), (victim, path.as_str()));
            // The store's own error, kept as the cause.
            assert!(
                matches!(
                    **cause,
                    SampleFailure::Store(slotcon_shards::Error::SampleChecksum { .. })
                ),
                "{cause}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(result.last().unwrap().is_err(), "iteration goes on after the error");
}

#[test]
fn undecodable_images_are_skipped_and_reported_and_the_epoch_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let good = &coco_images()[0];
    let paths: Vec<String> = (0..22)
        .map(|i| {
            if i % 7 == 3 {
                format!("bad{i}.jpg")
            } else {
                format!("good{i}.jpg")
            }
        })
        .collect();
    let samples = paths.iter().map(|path| NewSample {
        bytes: if path.starts_with("bad") {
            b"not an image at all"
        } else {
            &good.bytes
        },
        path,
        width: good.width,
        height: good.height,
    });
    let reader = write_store(tmp.path(), samples, u64::MAX);
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
fn batches_larger_than_the_store_or_the_memory_are_refused_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let n = reader.len();
    let refused = |b: LoaderBuilder| match b.build() {
        Err(Error::Config(m)) => m,
        Err(e) => panic!("not a settings error: {e}"),
        Ok(_) => panic!("built"),
    };
    let m = refused(LoaderBuilder::new(Arc::clone(&reader)).batch_size(1_000_000));
    assert_eq!(
        m,
        format!("batch size 1000000 is larger than the {n} images of the store: no batch can be made")
    );
    let m = refused(
        LoaderBuilder::new(Arc::clone(&reader))
            .batch_size(n as usize / 2 + 1)
            .distributed(1, 2),
    );
    assert!(m.contains("rank 1's share"), "{m}");
    // 8 views of 60000² px: 173 GB, more than this machine (or any test machine) has.
    let big = slotcon_augment::AugmentConfig::slotcon().with_size(60_000);
    let m = refused(LoaderBuilder::new(Arc::clone(&reader)).batch_size(2).augment(big));
    assert!(m.contains("memory is available"), "{m}");
    let m = refused(
        LoaderBuilder::new(Arc::clone(&reader))
            .batch_size(2)
            .prefetch(usize::MAX),
    );
    assert!(m.contains("address space"), "{m}");
    // The whole store as one batch is fine.
    let batches: Vec<_> = LoaderBuilder::new(reader)
        .batch_size(n as usize)
        .workers(2)
        .build()
        .unwrap()
        .collect();
    assert_eq!(batches.len(), 1);
}

#[test]
fn the_memory_bound_counts_each_workers_decode_of_the_largest_image() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = coco_store(tmp.path());
    let images = coco_images();
    let largest = images.iter().map(|i| i.width as u64 * i.height as u64).max().unwrap();
    let widest = images.iter().map(|i| i.width as u64).max().unwrap();
    let tallest = images.iter().map(|i| i.height as u64).max().unwrap();
    assert_eq!(reader.max_pixels(), largest);
    let e = reader.extent();
    assert_eq!((e.pixels, e.width, e.height), (largest, widest, tallest));
    let loader = LoaderBuilder::new(reader).batch_size(8).workers(3).build().unwrap();
    // Per worker: the decoded region (4 bytes a pixel at most, a CMYK JPEG), one band of
    // a crop transposed and filtered, and the crop's rows resized to 224 columns.
    let band = 2 * widest * 64 * 3;
    let per_worker = 4 * largest + band + 224 * tallest * 3;
    assert_eq!(loader.memory_bytes(), loader.buffer_bytes() as u64 + 3 * per_worker);
}
