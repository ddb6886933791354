//! The resume journal: `OUT/.ingest-partial/` records each committed shard, so that a
//! rerun after a kill continues after the last one and writes the same bytes.
//!
//! A shard is committed when its journal line `shard-NNNNN.json` is renamed into place,
//! after the shard and its index. Anything newer is a leftover and is removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slotcon_shards::format::{index_file_name, read_json, shard_file_name, write_atomic};
use slotcon_shards::ShardInfo;

use slotcon_shards::io_err;

use crate::error::{Error, Result};
use crate::scan::{Skipped, SourceFile};

/// Name of the journal folder inside the output.
pub const PARTIAL_DIR: &str = ".ingest-partial";

/// What a run is: same settings and same source listing means the same output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    /// The ingest settings (as in the manifest).
    pub settings: serde_json::Value,
    /// Number of candidate files found.
    pub files: usize,
    /// CRC-32C over the sorted relative paths and sizes.
    pub listing: String,
}

impl RunKey {
    /// The key of ingesting `files` with `settings`.
    pub fn new(settings: serde_json::Value, files: &[SourceFile]) -> Self {
        let mut text = String::new();
        for f in files {
            let size = std::fs::metadata(&f.abs).map(|m| m.len()).unwrap_or(0);
            text.push_str(&format!("{}\0{size}\n", f.rel));
        }
        RunKey {
            settings,
            files: files.len(),
            listing: slotcon_shards::format_checksum(slotcon_shards::crc32c(text.as_bytes())),
        }
    }
}

/// One committed shard and the part of the source it covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The shard's manifest line.
    pub shard: ShardInfo,
    /// Index (in the sorted listing) of the first source file after this shard.
    pub next_source: usize,
    /// Files skipped since the previous shard.
    pub skipped: Vec<Skipped>,
    /// Bytes of the source files stored in this shard.
    pub bytes_in: u64,
}

/// The journal of one output directory.
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (or starts) the journal in `out` for `key` and returns the committed shards.
    /// A journal for a different key is a conflict.
    pub fn open(out: &Path, key: &RunKey) -> Result<(Self, Vec<Committed>)> {
        let dir = out.join(PARTIAL_DIR);
        let journal = Journal { dir };
        let state = journal.dir.join("state.json");
        let committed = if state.exists() {
            let old: RunKey = read_json(&state)?;
            if &old != key {
                let reason = "holds a partial ingest made with other settings or other source files; \
                              rerun the same command, or pass --force to start over"
                    .to_string();
                return Err(Error::Conflict {
                    path: out.to_path_buf(),
                    reason,
                });
            }
            journal.committed(out)?
        } else {
            std::fs::create_dir_all(&journal.dir).map_err(io_err(&journal.dir))?;
            write_atomic(&state, &serde_json::to_vec_pretty(key).expect("json"))?;
            Vec::new()
        };
        remove_leftovers(out, committed.len())?;
        Ok((journal, committed))
    }

    /// The committed shards, in order, whose files are intact.
    fn committed(&self, out: &Path) -> Result<Vec<Committed>> {
        let mut all = Vec::new();
        loop {
            let line = self.dir.join(format!("shard-{:05}.json", all.len()));
            if !line.exists() {
                return Ok(all);
            }
            let c: Committed = read_json(&line)?;
            if !intact(out, &c.shard) {
                return Ok(all);
            }
            all.push(c);
        }
    }

    /// Records shard `n` as committed.
    pub fn commit(&self, n: usize, c: &Committed) -> Result<()> {
        let line = self.dir.join(format!("shard-{n:05}.json"));
        Ok(write_atomic(&line, &serde_json::to_vec_pretty(c).expect("json"))?)
    }

    /// Removes the journal once the manifest is in place.
    pub fn remove(self) -> Result<()> {
        Ok(std::fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir))?)
    }
}

/// The shard's files are the committed ones: sizes and both checksums (mapped, not read
/// into memory: a shard can be hundreds of MiB). Journals are this build's own format.
fn intact(out: &Path, s: &ShardInfo) -> bool {
    slotcon_shards::check_shard_files(out, s, slotcon_shards::FORMAT_VERSION, true).is_empty()
}

/// Deletes shard files numbered `from` and up, and any temporary file, in `out`.
pub fn remove_leftovers(out: &Path, from: usize) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(io_err(out))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_temp = name.starts_with('.') && name.ends_with(".tmp");
        if stale_temp || shard_number(&name).is_some_and(|n| n >= from) {
            std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    Ok(())
}

fn shard_number(name: &str) -> Option<usize> {
    let n: usize = name.strip_prefix("shard-")?.get(..5)?.parse().ok()?;
    (name == shard_file_name(n) || name == index_file_name(n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_numbers_only_for_our_names() {
        assert_eq!(shard_number("shard-00012.parquet"), Some(12));
        assert_eq!(shard_number("shard-00012.idx"), Some(12));
        assert_eq!(shard_number("shard-00012.parquet.bak"), None);
        assert_eq!(shard_number("manifest.json"), None);
    }
}
