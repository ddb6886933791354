//! Whole-store verification of the bytes: file checksums, index checksums, and every
//! sample's CRC. Decoding the images is the caller's part (`slotcon-ingest verify`).

use std::path::Path;

use crate::checksum::{crc32c, format_checksum};
use crate::error::{Error, Result};
use crate::format::{Manifest, ShardInfo};
use crate::index::IndexView;
use crate::reader::map_file;

/// One thing wrong with a store: which file, which sample if known, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file name, relative to the store directory.
    pub file: String,
    /// The sample id, when the problem is one sample's.
    pub id: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} id {id}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Checks every file checksum in the manifest and every sample's CRC.
///
/// Fails only when the manifest itself cannot be read; everything else is a [`Problem`].
pub fn verify_checksums(dir: &Path) -> Result<Vec<Problem>> {
    let manifest = Manifest::load(dir)?;
    let mut problems = Vec::new();
    for info in &manifest.shards {
        problems.extend(verify_shard(dir, info));
    }
    Ok(problems)
}

fn verify_shard(dir: &Path, info: &ShardInfo) -> Vec<Problem> {
    let problem = |file: &str, id, reason: String| Problem {
        file: file.to_string(),
        id,
        reason,
    };
    let mut out = Vec::new();
    let index = match checked_file(dir, &info.index, info.index_bytes, &info.index_checksum) {
        Ok(map) => Some(map),
        Err(reason) => {
            out.push(problem(&info.index, None, reason));
            None
        }
    };
    let data = match checked_file(dir, &info.file, info.bytes, &info.checksum) {
        Ok(map) => Some(map),
        Err(reason) => {
            out.push(problem(&info.file, None, reason));
            map_file(&dir.join(&info.file)).ok()
        }
    };
    if let (Some(index), Some(data)) = (index, data) {
        match IndexView::parse(&dir.join(&info.index), &index) {
            Ok(view) => out.extend(
                bad_samples(&view, &data)
                    .into_iter()
                    .map(|(id, r)| problem(&info.file, Some(id), r)),
            ),
            Err(e) => out.push(problem(&info.index, None, e.to_string())),
        }
    }
    out
}

/// Maps `name` and checks its size and checksum against the manifest.
fn checked_file(dir: &Path, name: &str, bytes: u64, checksum: &str) -> std::result::Result<memmap2::Mmap, String> {
    let map = map_file(&dir.join(name)).map_err(|e| match e {
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    })?;
    if map.len() as u64 != bytes {
        return Err(format!("size is {} bytes, manifest says {bytes}", map.len()));
    }
    let actual = format_checksum(crc32c(&map));
    if actual != checksum {
        return Err(format!(
            "checksum mismatch: manifest says {checksum}, file has {actual}"
        ));
    }
    Ok(map)
}

fn bad_samples(view: &IndexView<'_>, data: &[u8]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for row in 0..view.rows() {
        let e = view.entry(row);
        let id = view.first_id() + row;
        let Some(bytes) = data.get(e.offset as usize..(e.offset + e.len as u64) as usize) else {
            out.push((id, "payload lies past the end of the file".to_string()));
            continue;
        };
        let actual = crc32c(bytes);
        if actual != e.crc {
            out.push((
                id,
                format!("sample checksum mismatch (stored {:08x}, read {actual:08x})", e.crc),
            ));
        }
    }
    out
}
