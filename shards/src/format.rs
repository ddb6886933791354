//! The on-disk format, version 2, in one place.
//!
//! A store is a directory:
//!
//! ```text
//! manifest.json          written last; the store is complete when the files match it
//! shard-00000.parquet    Parquet, Hugging Face image convention (see below)
//! shard-00000.idx        the sidecar index: id -> (offset, len, crc, width, height, path)
//! shard-00001.parquet
//! ...
//! ```
//!
//! **Parquet schema** (one row per image, ids dense `0..N` in scan order):
//! `id: int64`, `image: struct<bytes: binary, path: string>`, `width: int32`,
//! `height: int32`, plus the `huggingface` key-value metadata so that `datasets`
//! decodes `image` as an `Image` feature. The `image.bytes` column is PLAIN, uncompressed
//! and has no statistics, with one row per data page, so each image's bytes lie
//! contiguously in the file and can be served as a slice of the memory map.
//! In the raw store, `image.bytes` holds `height × width × 3` RGB bytes (row-major,
//! interleaved) and the `huggingface` metadata declares `image` as a plain struct.
//!
//! **Index file** (`.idx`, little-endian):
//!
//! ```text
//! header  32 B   magic "SLCIDX\0\0", version u32, entry size u32 (=32), rows u64, first id u64
//! entries 32 B each: offset u64, len u32, crc32c u32, width u32, height u32,
//!                    path offset u32, path len u32   (path offsets are into the blob)
//! blob    UTF-8 relative source paths, concatenated
//! footer  4 B    crc32c of everything before it
//! ```
//!
//! **Versions.** 2 (this build): the manifest's `index_checksum` is the CRC-32C of the
//! index bytes before their 4-byte footer ([`index_checksum`]), so it ties the manifest
//! to that index. 1: it was the CRC-32C of the whole file, which for any file ending in
//! its own CRC is the same constant (`crc32c:48674bc7`, the CRC-32C residue) and so
//! checked nothing. Everything else is unchanged; version-1 stores are still read and
//! verified (their indexes by their own footer), and a version-1 build refuses a
//! version-2 store as newer instead of calling every index corrupt.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::{crc32c, format_checksum};
use crate::error::{io_err, Error, Result};

/// The store format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest store format version this build reads.
pub const OLDEST_VERSION: u32 = 1;
/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "slotcon-shards";
/// The manifest's file name inside a store directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The marker `slotcon-ingest` writes into a store folder before anything else:
/// `--force` deletes only in a folder that holds it (or a readable slotcon manifest, for a
/// store made before the marker).
pub const STORE_MARKER: &str = ".slotcon-store";
/// Magic bytes at the start of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"SLCIDX\0\0";
/// Size in bytes of the index header.
pub const INDEX_HEADER_LEN: usize = 32;
/// Size in bytes of one index entry.
pub const INDEX_ENTRY_LEN: usize = 32;

/// The Parquet file name of shard `n`: `shard-00042.parquet`.
pub fn shard_file_name(n: usize) -> String {
    format!("shard-{n:05}.parquet")
}

/// The index file name of shard `n`: `shard-00042.idx`.
pub fn index_file_name(n: usize) -> String {
    format!("shard-{n:05}.idx")
}

/// What `image.bytes` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Encoded image files (JPEG or PNG), the original bytes by default.
    #[default]
    Encoded,
    /// Decoded RGB pixels, `height × width × 3` bytes, no decoding needed to load.
    Raw,
}

/// One shard's line in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Parquet file name, relative to the store directory.
    pub file: String,
    /// Index file name, relative to the store directory.
    pub index: String,
    /// The id of the shard's first row.
    pub first_id: u64,
    /// Number of rows (images).
    pub rows: u64,
    /// Size of the Parquet file in bytes.
    pub bytes: u64,
    /// Checksum of the Parquet file, `crc32c:xxxxxxxx`.
    pub checksum: String,
    /// Size of the index file in bytes.
    pub index_bytes: u64,
    /// Checksum of the index file, `crc32c:xxxxxxxx`, as [`index_checksum`] computes it
    /// for the manifest's version.
    pub index_checksum: String,
    /// Sum of the image payload sizes (`image.bytes`) in this shard.
    pub image_bytes: u64,
}

/// `manifest.json`: the table of contents of a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format version that wrote the store.
    pub version: u32,
    /// What the `image.bytes` column holds.
    pub store: StoreKind,
    /// The settings the store was made with (owned by the producer, e.g. `slotcon-ingest`).
    pub ingest: serde_json::Value,
    /// The shards in id order.
    pub shards: Vec<ShardInfo>,
    /// Total number of images.
    pub total_rows: u64,
    /// Total size of the Parquet files.
    pub total_bytes: u64,
    /// Total image payload size.
    pub total_image_bytes: u64,
}

impl Manifest {
    /// A manifest for `shards`, with the totals computed.
    pub fn new(store: StoreKind, ingest: serde_json::Value, shards: Vec<ShardInfo>) -> Self {
        Manifest {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            store,
            ingest,
            total_rows: shards.iter().map(|s| s.rows).sum(),
            total_bytes: shards.iter().map(|s| s.bytes).sum(),
            total_image_bytes: shards.iter().map(|s| s.image_bytes).sum(),
            shards,
        }
    }

    /// Reads and checks `DIR/manifest.json`; a newer version is refused.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = crate::read_bounded(&path, crate::input::MAX_JSON_FILE)?;
        Self::parse(&path, &bytes)
    }

    /// Parses and checks the bytes of a `manifest.json` read from `path` (a file or a
    /// URL); a newer version is refused.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(path, e))?;
        check_version(path, &value)?;
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(path, e))?;
        manifest.check_consistent(path)?;
        Ok(manifest)
    }

    /// Writes `DIR/manifest.json` atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("manifest serialises");
        text.push('\n');
        write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
    }

    fn check_consistent(&self, path: &Path) -> Result<()> {
        let mut next = 0;
        for s in &self.shards {
            if s.first_id != next {
                let reason = format!("{} starts at id {} instead of {next}", s.file, s.first_id);
                return Err(Error::Manifest {
                    path: path.into(),
                    reason,
                });
            }
            next = next.checked_add(s.rows).ok_or_else(|| Error::Manifest {
                path: path.into(),
                reason: format!("{} holds {} rows: the ids pass 2^64", s.file, s.rows),
            })?;
        }
        if next != self.total_rows {
            let reason = format!("shards hold {next} rows, total_rows says {}", self.total_rows);
            return Err(Error::Manifest {
                path: path.into(),
                reason,
            });
        }
        Ok(())
    }
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Manifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Checks the format name and version before the rest of the manifest is parsed, so
/// that a newer store gets the version message, not a schema error.
fn check_version(path: &Path, value: &serde_json::Value) -> Result<()> {
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(bad(path, format!("not a {FORMAT_NAME} manifest")));
    }
    let found = value.get("version").and_then(|v| v.as_u64());
    let found = found.ok_or_else(|| bad(path, "no integer \"version\""))? as u32;
    if found > FORMAT_VERSION {
        return Err(Error::NewerVersion {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    if found < OLDEST_VERSION {
        return Err(bad(path, format!("format version {found} does not exist")));
    }
    Ok(())
}

/// The manifest's `index_checksum` of the index file `index`, for a store of format
/// `version`: from version 2, the CRC-32C of the bytes before the 4-byte footer (which
/// therefore equals the footer); in version 1, of the whole file (always the CRC-32C
/// residue, `crc32c:48674bc7`).
pub fn index_checksum(version: u32, index: &[u8]) -> String {
    let body = match version {
        1 => index,
        _ => &index[..index.len().saturating_sub(4)],
    };
    format_checksum(crc32c(body))
}

/// The temporary name used while `path` is being written: `.NAME.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, then rename. Makes the
/// folder first if it is missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    rename_durable(&tmp, path)
}

/// Reads the JSON file `path` as a `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = crate::read_bounded(path, crate::input::MAX_JSON_FILE)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Renames `from` to `to` and fsyncs the parent directory so the rename survives a crash.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_err(to))?;
    if let Some(parent) = to.parent() {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// The `huggingface` key-value metadata: the `datasets` feature description.
pub fn huggingface_metadata(store: StoreKind) -> String {
    let image = match store {
        StoreKind::Encoded => serde_json::json!({"_type": "Image"}),
        StoreKind::Raw => serde_json::json!({
            "bytes": {"dtype": "binary", "_type": "Value"},
            "path": {"dtype": "string", "_type": "Value"}
        }),
    };
    let features = serde_json::json!({
        "id": {"dtype": "int64", "_type": "Value"},
        "image": image,
        "width": {"dtype": "int32", "_type": "Value"},
        "height": {"dtype": "int32", "_type": "Value"},
    });
    serde_json::json!({"info": {"features": features}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_version_is_refused_with_a_clear_message() {
        let dir = std::env::temp_dir().join(format!("slotcon-fmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Manifest::new(StoreKind::Encoded, serde_json::json!({}), vec![]);
        m.version = FORMAT_VERSION + 1;
        m.save(&dir).unwrap();
        let err = Manifest::load(&dir).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
        assert!(err.contains("newer"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn index_checksum_depends_on_the_index_from_version_2() {
        let with_footer = |body: &[u8]| [body, &crc32c(body).to_le_bytes()].concat();
        let (a, b) = (with_footer(b"one index"), with_footer(b"another index"));
        // Version 1: the whole file's CRC, the same residue for every file.
        assert_eq!(index_checksum(1, &a), "crc32c:48674bc7");
        assert_eq!(index_checksum(1, &a), index_checksum(1, &b));
        // Version 2: the body's CRC, which is the footer.
        assert_ne!(index_checksum(2, &a), index_checksum(2, &b));
        assert_eq!(index_checksum(2, &a), format_checksum(crc32c(b"one index")));
    }

    #[test]
    fn names_are_zero_padded() {
        assert_eq!(shard_file_name(3), "shard-00003.parquet");
        assert_eq!(index_file_name(12345), "shard-12345.idx");
        assert_eq!(temp_path(Path::new("/a/b.json")), Path::new("/a/.b.json.tmp"));
    }
}
