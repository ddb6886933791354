//! Corruption is caught: `verify` and the reader name the shard and the sample.

use std::path::Path;

use slotcon_shards::{Error, ShardReader};
use slotcon_tests::{bin, coco128, run, run_ok};

fn small_store(out: &Path) {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(coco128().join("images"))
        .arg("--out")
        .arg(out)
        .args(["--shard-size", "4MiB", "--quiet"]);
    run_ok(&mut cmd);
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_passes_on_a_sound_store() {
    let tmp = tempfile::tempdir().unwrap();
    small_store(tmp.path());
    let text = run_ok(bin("slotcon-ingest").arg("verify").arg(tmp.path()).arg("--quiet"));
    assert!(text.contains("128 images") && text.contains("OK"), "{text}");
}

#[test]
fn a_flipped_byte_in_an_image_is_named_by_shard_and_id() {
    let tmp = tempfile::tempdir().unwrap();
    small_store(tmp.path());
    // Find where id 40 lives and flip a byte in its middle.
    let (shard, offset) = {
        let r = ShardReader::open(tmp.path()).unwrap();
        let s = r.get(40).unwrap();
        let base = std::fs::read(r.shard_path(s.shard)).unwrap();
        let at = base.windows(64).position(|w| w == &s.bytes[1000..1064]).unwrap();
        (r.shard_path(s.shard).to_path_buf(), at)
    };
    flip(&shard, offset);
    let name = shard.file_name().unwrap().to_string_lossy().into_owned();

    let (code, _, err) = run(bin("slotcon-ingest").arg("verify").arg(tmp.path()).arg("--quiet"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{name} id 40")), "{err}");
    assert!(err.contains(&format!("{name}: checksum mismatch")), "{err}");

    let r = ShardReader::open(tmp.path()).unwrap();
    match r.get(40) {
        Err(e @ Error::SampleChecksum { id: 40, .. }) => {
            assert!(e.to_string().contains(&name), "{e}")
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(r.get(39).is_ok());
}

#[test]
fn a_flipped_byte_in_the_footer_or_index_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    small_store(tmp.path());
    let shard = tmp.path().join("shard-00001.parquet");
    let len = std::fs::metadata(&shard).unwrap().len() as usize;
    flip(&shard, len - 100);
    let (code, _, err) = run(bin("slotcon-ingest").arg("verify").arg(tmp.path()).arg("--quiet"));
    assert_eq!(code, 1);
    assert!(err.contains("shard-00001.parquet: checksum mismatch"), "{err}");

    let index = tmp.path().join("shard-00002.idx");
    flip(&index, 40);
    let (code, _, err) = run(bin("slotcon-ingest").arg("verify").arg(tmp.path()).arg("--quiet"));
    assert_eq!(code, 1);
    assert!(err.contains("shard-00002.idx"), "{err}");
    let open = ShardReader::open(tmp.path())
        .err()
        .expect("a corrupt index is refused at open");
    assert!(open.to_string().contains("shard-00002.idx"), "{open}");
}

#[test]
fn a_newer_format_version_is_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    small_store(tmp.path());
    let path = tmp.path().join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["version"] = 99.into();
    std::fs::write(&path, m.to_string()).unwrap();
    let err = ShardReader::open(tmp.path()).err().unwrap().to_string();
    assert!(
        err.contains("manifest.json") && err.contains("version 99 is newer"),
        "{err}"
    );
    let (code, _, err) = run(bin("slotcon-ingest").arg("verify").arg(tmp.path()));
    assert_ne!(code, 0);
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn an_index_rewritten_with_a_valid_footer_is_caught_by_its_manifest_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    small_store(tmp.path());
    let path = tmp.path().join("shard-00000.idx");
    let mut index = std::fs::read(&path).unwrap();
    // The manifest's checksum is the index's own footer, different for every shard.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("manifest.json")).unwrap()).unwrap();
    let footer = |b: &[u8]| u32::from_le_bytes(b[b.len() - 4..].try_into().unwrap());
    assert_eq!(
        m["shards"][0]["index_checksum"],
        format!("crc32c:{:08x}", footer(&index))
    );
    assert_ne!(m["shards"][0]["index_checksum"], m["shards"][1]["index_checksum"]);

    // Rename the first image's source path (`train2017/...` -> `Train2017/...`) and
    // write a footer that matches: the file is self-consistent, the manifest is not.
    let at = index.windows(9).position(|w| w == b"train2017").unwrap();
    index[at] = b'T';
    let body = index.len() - 4;
    let crc = slotcon_shards::crc32c(&index[..body]);
    index[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &index).unwrap();
    let (code, _, err) = run(bin("slotcon-ingest").arg("verify").arg(tmp.path()).arg("--quiet"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("shard-00000.idx: checksum mismatch"), "{err}");
}
