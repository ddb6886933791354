//! A local store larger than its memory budget is read around the page cache
//! (`O_DIRECT`), or, through the map, gives back the pages of the samples it has read in
//! a plan, a chunk as soon as all its planned samples are read; a store within its
//! budget keeps them. Residency is what `mincore` says of the shard's pages.

use std::path::{Path, PathBuf};

use slotcon_shards::ahead::RELEASE_CHUNK;
use slotcon_shards::{Manifest, NewSample, ShardReader, ShardWriter, StoreKind};

const SAMPLES: u64 = 96;

/// Sample `i`'s bytes: 64 KiB plus a few, so that samples straddle pages.
fn payload(i: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15 ^ (i + 1);
    (0..65536 + 300 * i)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A one-shard store in `dir`, on disk; returns the shard's path.
fn store(dir: &Path) -> PathBuf {
    let mut w = ShardWriter::create(dir, 0, 0, StoreKind::Encoded).unwrap();
    for i in 0..SAMPLES {
        let path = format!("img{i}.jpg");
        w.push(NewSample {
            bytes: &payload(i),
            path: &path,
            width: 8,
            height: 8,
        })
        .unwrap();
    }
    let shard = w.finish().unwrap();
    let file = dir.join(&shard.file);
    Manifest::new(StoreKind::Encoded, serde_json::json!({}), vec![shard])
        .save(dir)
        .unwrap();
    // Written pages are dirty until written back; only clean pages can be dropped.
    std::fs::File::open(&file).unwrap().sync_all().unwrap();
    file
}

/// For each page of the file `path`, whether it is in the page cache. The map is never
/// read, so it maps no page itself.
fn resident(path: &Path) -> Vec<bool> {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only map of a file nothing writes, never read.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let mut v = vec![0u8; map.len().div_ceil(4096)];
    // SAFETY: `map` is live and page-aligned; `v` has a byte per page.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), v.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    v.iter().map(|b| b & 1 == 1).collect()
}

/// Where each sample's payload lies in the shard's bytes.
fn offsets(bytes: &[u8]) -> Vec<(u64, u64)> {
    (0..SAMPLES)
        .map(|i| {
            let p = payload(i);
            let at = bytes
                .windows(64)
                .position(|w| w == &p[..64])
                .expect("payload in the shard");
            assert!(bytes[at..at + p.len()] == p[..], "sample {i} is not whole at {at}");
            (at as u64, p.len() as u64)
        })
        .collect()
}

/// The plan: the first half of the ids shuffled among themselves, then the second half.
fn order() -> Vec<u64> {
    let half = SAMPLES / 2;
    (0..half)
        .map(|p| (p * 7 + 3) % half)
        .chain((0..half).map(|p| half + (p * 5 + 1) % half))
        .collect()
}

/// Reads the first half of the plan with `budget` (through the map, or with `O_DIRECT`
/// when `direct`), checking every payload; returns the reader.
fn read_half(dir: &Path, budget: u64, direct: bool) -> ShardReader {
    let reader = ShardReader::open(dir)
        .unwrap()
        .with_memory_budget(budget)
        .with_direct_reads(direct);
    let order = order();
    reader.plan(&order);
    for (p, &id) in order.iter().enumerate().take(SAMPLES as usize / 2) {
        assert!(*reader.get(id).unwrap().bytes == payload(id)[..], "sample {id}");
        reader.advance(p + 1);
    }
    reader
}

#[test]
fn a_store_over_its_budget_gives_back_the_chunks_it_has_read() {
    // On disk: a tmpfs's pages cannot be given back.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shard = store(tmp.path());
    let bytes: u64 = Manifest::load(tmp.path()).unwrap().total_bytes;
    let spans = offsets(&std::fs::read(&shard).unwrap());
    // The chunks all of whose samples are in the half read: what must be given back.
    let chunk = RELEASE_CHUNK;
    let chunks = (bytes.div_ceil(chunk)) as usize;
    let mut done: Vec<Option<bool>> = vec![None; chunks];
    for (id, &(offset, len)) in spans.iter().enumerate() {
        for c in offset / chunk..=(offset + len - 1) / chunk {
            let read = (id as u64) < SAMPLES / 2;
            done[c as usize] = Some(done[c as usize].unwrap_or(true) && read);
        }
    }
    let released: Vec<usize> = (0..chunks).filter(|&c| done[c] == Some(true)).collect();
    assert!(
        !released.is_empty(),
        "the test's store has no chunk read whole: {done:?}"
    );
    let pages = |c: usize| c * (chunk as usize / 4096)..((c + 1) * (chunk as usize / 4096));

    // Within budget (the control): every page read stays resident.
    let reader = read_half(tmp.path(), bytes * 10, true);
    let kept = resident(&shard);
    for &c in &released {
        let p = pages(c);
        assert!(
            kept[p.start..p.end.min(kept.len())].iter().all(|&r| r),
            "chunk {c} not resident"
        );
    }
    drop(reader);

    // Over budget, through the map: those chunks are out of the page cache, and the
    // rest is not.
    let reader = read_half(tmp.path(), bytes, false);
    let left = resident(&shard);
    for c in 0..chunks {
        let p = pages(c);
        let r = &left[p.start..p.end.min(left.len())];
        if released.contains(&c) {
            assert!(r.iter().all(|&r| !r), "chunk {c} still resident: {r:?}");
        } else {
            assert!(r.iter().any(|&r| r), "chunk {c}, with samples unread, was given back");
        }
    }
    // What was given back reads the same bytes again.
    for id in 0..SAMPLES / 2 {
        assert!(*reader.get(id).unwrap().bytes == payload(id)[..], "sample {id}");
    }
}

/// Drops the file's clean pages from the page cache.
fn drop_pages(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: `fd` is open for the call; the advice reads no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[test]
fn a_store_over_its_budget_is_read_around_the_page_cache() {
    // On disk: a tmpfs has no page cache to read around.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shard = store(tmp.path());
    let bytes: u64 = Manifest::load(tmp.path()).unwrap().total_bytes;
    // The control: within budget, the same reads through the map leave pages resident.
    drop_pages(&shard);
    let reader = read_half(tmp.path(), bytes * 10, true);
    let through_map = resident(&shard).iter().filter(|&&r| r).count();
    assert!(through_map > 0, "the control read no page through the cache");
    drop(reader);
    // Over budget, direct: the same payloads (checked in `read_half`, and all of them
    // below, planned or not), and not one page of the shard enters the page cache.
    drop_pages(&shard);
    assert!(
        resident(&shard).iter().all(|&r| !r),
        "pages left before the direct reads"
    );
    let reader = read_half(tmp.path(), bytes, true);
    for id in 0..SAMPLES {
        assert!(*reader.get(id).unwrap().bytes == payload(id)[..], "sample {id}");
    }
    let direct = resident(&shard).iter().filter(|&&r| r).count();
    assert_eq!(
        direct, 0,
        "{direct} pages of the shard went through the page cache (the map: {through_map})"
    );
    // A new plan (the next epoch) reads the same bytes again.
    let order = order();
    reader.plan(&order);
    for (p, &id) in order.iter().enumerate() {
        assert!(
            *reader.get(id).unwrap().bytes == payload(id)[..],
            "epoch 2, sample {id}"
        );
        reader.advance(p + 1);
    }
}
