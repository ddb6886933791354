//! Whole-store verification of the bytes: file checksums, index checksums, and every
//! sample's CRC. Decoding the images is the caller's part (`slotcon-ingest verify`).

use std::path::Path;

use crate::checksum::{crc32c, format_checksum};
use crate::error::{Error, Result};
use crate::format::{index_checksum, Manifest, ShardInfo};
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

/// Why one file fails its check against the manifest: the cause alone, since a
/// [`Problem`] already names the file (its `reason` is this rendered).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FileProblem {
    /// The file does not exist.
    #[error("missing")]
    Missing,
    /// The file's size is not the one the manifest records.
    #[error("size is {actual} bytes, manifest says {expected}")]
    Size {
        /// The file's size in bytes.
        actual: u64,
        /// The size the manifest records.
        expected: u64,
    },
    /// The file's checksum is not the one the manifest records.
    #[error("checksum mismatch: manifest says {expected}, file has {actual}")]
    Checksum {
        /// The checksum the manifest records.
        expected: String,
        /// The file's checksum.
        actual: String,
    },
    /// Any other error (an operating system's, a mapping's), as it renders: the errors
    /// themselves are not `Clone`.
    #[error("{0}")]
    Other(String),
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
        problems.extend(verify_shard(dir, info, manifest.version));
    }
    Ok(problems)
}

/// The cheap check that a store's files are the ones its manifest lists: every shard
/// file exists with its recorded size, and every index file with its recorded size and
/// checksum. Shard contents are not read (that is [`verify_checksums`]): they can be
/// hundreds of MiB, an index is 32 bytes per image.
pub fn check_files(dir: &Path, manifest: &Manifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    for info in &manifest.shards {
        problems.extend(check_shard_files(dir, info, manifest.version, false));
    }
    problems
}

/// Checks shard `info`'s two files against its manifest line (store format `version`):
/// sizes, the index checksum, and with `data_checksum` the Parquet file's checksum too
/// (which reads the whole file).
pub fn check_shard_files(dir: &Path, info: &ShardInfo, version: u32, data_checksum: bool) -> Vec<Problem> {
    let index = checked_file(dir, &info.index, info.index_bytes, |b| {
        check_sum(&info.index_checksum, index_checksum(version, b))
    });
    let data = if data_checksum {
        checked_file(dir, &info.file, info.bytes, |b| data_sum(info, b)).map(drop)
    } else {
        check_size(dir, &info.file, info.bytes)
    };
    let problem = |file: &str, reason: FileProblem| Problem {
        file: file.to_string(),
        id: None,
        reason: reason.to_string(),
    };
    let mut out = Vec::new();
    out.extend(index.err().map(|r| problem(&info.index, r)));
    out.extend(data.err().map(|r| problem(&info.file, r)));
    out
}

fn verify_shard(dir: &Path, info: &ShardInfo, version: u32) -> Vec<Problem> {
    let problem = |file: &str, id, reason: String| Problem {
        file: file.to_string(),
        id,
        reason,
    };
    let mut out = Vec::new();
    let index_sum = |b: &[u8]| check_sum(&info.index_checksum, index_checksum(version, b));
    let index = match checked_file(dir, &info.index, info.index_bytes, index_sum) {
        Ok(map) => Some(map),
        Err(reason) => {
            out.push(problem(&info.index, None, reason.to_string()));
            None
        }
    };
    let data = match checked_file(dir, &info.file, info.bytes, |b| data_sum(info, b)) {
        Ok(map) => Some(map),
        Err(reason) => {
            out.push(problem(&info.file, None, reason.to_string()));
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

fn data_sum(info: &ShardInfo, bytes: &[u8]) -> Result<(), FileProblem> {
    check_sum(&info.checksum, format_checksum(crc32c(bytes)))
}

fn check_sum(expected: &str, actual: String) -> Result<(), FileProblem> {
    if actual == expected {
        return Ok(());
    }
    Err(FileProblem::Checksum {
        expected: expected.to_string(),
        actual,
    })
}

/// Maps `name` and checks its size, then its contents with `check`.
fn checked_file(
    dir: &Path,
    name: &str,
    bytes: u64,
    check: impl FnOnce(&[u8]) -> Result<(), FileProblem>,
) -> Result<memmap2::Mmap, FileProblem> {
    check_size(dir, name, bytes)?;
    let map = map_file(&dir.join(name)).map_err(reason)?;
    check(&map)?;
    Ok(map)
}

/// Checks that `name` is a file of `bytes` bytes, without reading it.
fn check_size(dir: &Path, name: &str, bytes: u64) -> Result<(), FileProblem> {
    let path = dir.join(name);
    let len = std::fs::metadata(&path).map_err(|e| io_reason(&e))?.len();
    if len != bytes {
        return Err(FileProblem::Size {
            actual: len,
            expected: bytes,
        });
    }
    Ok(())
}

/// The cause alone: a [`Problem`] already names the file.
fn reason(e: Error) -> FileProblem {
    match e {
        Error::Io { source, .. } => io_reason(&source),
        other => FileProblem::Other(other.to_string()),
    }
}

fn io_reason(e: &std::io::Error) -> FileProblem {
    match e.kind() {
        std::io::ErrorKind::NotFound => FileProblem::Missing,
        _ => FileProblem::Other(e.to_string()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FORMAT_VERSION;
    use crate::{NewSample, ShardReader, ShardWriter, StoreKind};

    /// A store of one shard per path, each holding `payload` once, in a fresh folder.
    fn store(name: &str, paths: &[&str], payload: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("slotcon-verify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut shards = Vec::new();
        for (n, path) in paths.iter().enumerate() {
            let mut w = ShardWriter::create(&dir, n, n as u64, StoreKind::Encoded).unwrap();
            let (width, height) = (2, 1);
            w.push(NewSample {
                bytes: payload,
                path,
                width,
                height,
            })
            .unwrap();
            shards.push(w.finish().unwrap());
        }
        Manifest::new(StoreKind::Encoded, serde_json::json!({}), shards)
            .save(&dir)
            .unwrap();
        dir
    }

    fn files(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(|p| format!("{p}")).collect()
    }

    #[test]
    fn file_problems_render_as_the_cause_alone() {
        assert_eq!(FileProblem::Missing.to_string(), "missing");
        let size = FileProblem::Size { actual: 3, expected: 5 };
        assert_eq!(size.to_string(), "size is 3 bytes, manifest says 5");
        let sum = check_sum("crc32c:00000001", "crc32c:00000002".to_string()).unwrap_err();
        assert_eq!(
            sum.to_string(),
            "checksum mismatch: manifest says crc32c:00000001, file has crc32c:00000002"
        );
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_eq!(io_reason(&denied).to_string(), denied.to_string());
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(io_reason(&gone), FileProblem::Missing);
    }

    #[test]
    fn check_files_names_a_missing_or_truncated_file() {
        let dir = store("missing", &["a.jpg", "b.jpg"], b"payload");
        let m = Manifest::load(&dir).unwrap();
        assert!(check_files(&dir, &m).is_empty());
        let shard = dir.join("shard-00001.parquet");
        let len = std::fs::metadata(&shard).unwrap().len();
        std::fs::File::options()
            .write(true)
            .open(&shard)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        std::fs::remove_file(dir.join("shard-00000.idx")).unwrap();
        let got = files(&check_files(&dir, &m));
        assert_eq!(
            got,
            [
                "shard-00000.idx: missing".to_string(),
                format!("shard-00001.parquet: size is {} bytes, manifest says {len}", len - 10),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_index_swapped_for_another_valid_one_is_caught() {
        // Same payload and path length: only the recorded path differs.
        let a = store("swap-a", &["a.jpg"], b"payload");
        let b = store("swap-b", &["b.jpg"], b"payload");
        std::fs::copy(b.join("shard-00000.idx"), a.join("shard-00000.idx")).unwrap();
        let m = Manifest::load(&a).unwrap();
        for problems in [check_files(&a, &m), verify_checksums(&a).unwrap()] {
            let got = files(&problems);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(got[0].starts_with("shard-00000.idx: checksum mismatch"), "{got:?}");
        }
        assert!(check_shard_files(&a, &m.shards[0], FORMAT_VERSION, true).len() == 1);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn version_1_stores_are_read_and_verified() {
        let dir = store("v1", &["a.jpg", "b.jpg"], b"payload");
        let mut m = Manifest::load(&dir).unwrap();
        m.version = 1;
        for s in &mut m.shards {
            let index = std::fs::read(dir.join(&s.index)).unwrap();
            s.index_checksum = index_checksum(1, &index);
            assert_eq!(s.index_checksum, "crc32c:48674bc7");
        }
        m.save(&dir).unwrap();
        let m = Manifest::load(&dir).unwrap();
        assert_eq!(m.version, 1);
        assert!(check_files(&dir, &m).is_empty());
        assert!(verify_checksums(&dir).unwrap().is_empty());
        assert_eq!(ShardReader::open(&dir).unwrap().get(1).unwrap().path, "b.jpg");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
