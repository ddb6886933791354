//! A store file changed under its reader fails loudly: a truncated shard is an error that
//! names it, a read that the truncation overtakes ends the process with a message naming
//! it and status 1 (not a bare SIGBUS), and crafted index arithmetic is refused at open.

use std::path::{Path, PathBuf};
use std::process::Command;

use slotcon_shards::{crc32c, Error, Manifest, NewSample, ShardReader, ShardWriter, StoreKind};

/// A one-shard store of 64 payloads of 64 KiB in `dir`; returns the shard's path.
fn store(dir: &Path) -> PathBuf {
    let mut w = ShardWriter::create(dir, 0, 0, StoreKind::Encoded).unwrap();
    let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..64 {
        let path = format!("img{i}.jpg");
        w.push(NewSample {
            bytes: &payload,
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
    file
}

#[test]
fn a_shard_truncated_under_an_open_reader_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = store(tmp.path());
    let reader = ShardReader::open(tmp.path()).unwrap();
    reader.get(63).unwrap();
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    for id in [0, 63] {
        match reader.get(id) {
            Err(Error::Corrupt { path, reason }) => {
                assert_eq!(path, shard);
                assert!(reason.contains("changed while open"), "{reason}");
            }
            other => panic!("id {id}: {other:?}"),
        }
    }
}

/// The child's half of the next test: reads a payload after truncating its shard.
#[test]
fn child_reads_a_payload_whose_shard_was_truncated() {
    let Some(dir) = std::env::var_os("SLOTCON_GUARD_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let reader = ShardReader::open(&dir).unwrap();
    let sample = reader.get(63).unwrap();
    let shard = reader.shard_path(0).to_path_buf();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(0)
        .unwrap();
    // The pages are gone with the file's end: this read faults.
    let sum: u64 = sample.bytes.iter().map(|&b| b as u64).sum();
    println!("read {sum} without a fault");
}

#[test]
fn a_read_overtaken_by_a_truncation_exits_1_naming_the_shard_not_by_sigbus() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = store(tmp.path());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reads_a_payload_whose_shard_was_truncated",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env("SLOTCON_GUARD_CHILD", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains(&format!("error: {}: the store file shrank", shard.display())),
        "{stderr}"
    );
}

/// Rewrites the index of shard 0 with `edit` applied to its body, and a valid checksum.
fn craft_index(dir: &Path, edit: impl FnOnce(&mut [u8])) {
    let m = Manifest::load(dir).unwrap();
    let path = dir.join(&m.shards[0].index);
    let mut bytes = std::fs::read(&path).unwrap();
    let body = bytes.len() - 4;
    edit(&mut bytes[..body]);
    let crc = crc32c(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

/// A named edit of an index's bytes.
type Edit = (&'static str, fn(&mut [u8]));

#[test]
fn an_index_entry_whose_offset_plus_length_wraps_is_refused_at_open() {
    // Header: magic (8), version (4), entry size (4), rows (8), first id (8); then
    // entries of offset (8), len (4), ...
    let cases: [Edit; 3] = [
        ("offset wraps", |b| {
            b[32..40].copy_from_slice(&(u64::MAX - 100).to_le_bytes())
        }),
        ("rows overflow", |b| {
            b[16..24].copy_from_slice(&(u64::MAX / 4).to_le_bytes())
        }),
        ("ids overflow", |b| {
            b[24..32].copy_from_slice(&(u64::MAX - 1).to_le_bytes())
        }),
    ];
    for (what, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        store(tmp.path());
        craft_index(tmp.path(), edit);
        match ShardReader::open(tmp.path()) {
            Err(Error::Corrupt { path, reason }) => {
                assert!(path.starts_with(tmp.path()), "{what}: {}", path.display());
                assert!(!reason.is_empty(), "{what}");
            }
            Err(other) => panic!("{what}: {other}"),
            Ok(_) => panic!("{what}: opened"),
        }
    }
}
