//! Copying a local store into object storage: shards and indexes first, the manifest
//! last, so that a reader never sees half a store; an object already there with its
//! size is kept, so an interrupted copy resumes by sending only what is missing.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use url::Url;

use super::client::Client;
use super::stats::Stats;
use super::RemoteSettings;
use crate::error::Result;
use crate::format::{Manifest, MANIFEST_FILE};

/// What [`upload_store`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UploadReport {
    /// Objects written.
    pub uploaded: u64,
    /// Objects already there with their size, kept.
    pub kept: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Requests retried after a transient failure (5xx, reset, timeout).
    pub retries: u64,
}

/// Writes a local store's files to a store URL, one object per file.
pub struct Uploader {
    client: Client,
    part_bytes: u64,
}

impl Uploader {
    /// Connects to `url` (nothing is requested yet).
    pub fn new(url: &Url, settings: &RemoteSettings) -> Result<Self> {
        settings.validate()?;
        Ok(Uploader {
            client: Client::new(url, settings, Arc::new(Stats::default()))?,
            part_bytes: settings.part_bytes,
        })
    }

    /// True when object `name` exists with `size` bytes (a PUT, single or multipart,
    /// appears whole or not at all, so it is a finished upload).
    pub fn has(&self, name: &str, size: u64) -> bool {
        let there = self.client.block_on(self.client.head(name));
        there.is_ok_and(|meta| meta.size == size)
    }

    /// Uploads the file `dir/name` as object `name`, unless it is there already with its
    /// size; returns whether it was sent.
    pub fn put_file(&self, dir: &Path, name: &str) -> Result<bool> {
        let path = dir.join(name);
        let size = std::fs::metadata(&path).map_err(crate::io_err(&path))?.len();
        if self.has(name, size) {
            return Ok(false);
        }
        self.send(dir, name)?;
        Ok(true)
    }

    /// Requests this uploader retried after a transient failure.
    pub fn retries(&self) -> u64 {
        self.client.stats.snapshot().retries
    }

    /// Sends the file `dir/name` as object `name`, read a part at a time
    /// ([`Client::put_from`]): memory holds a few parts, never the whole file.
    fn send(&self, dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(name);
        let file = File::open(&path).map_err(crate::io_err(&path))?;
        let size = file.metadata().map_err(crate::io_err(&path))?.len();
        let read = |range: Range<u64>| read_at(&file, &path, range);
        let client = &self.client;
        client.block_on(client.put_from(name, size, self.part_bytes, read))
    }
}

/// Bytes `range` of the open file `path`.
fn read_at(file: &File, path: &Path, range: Range<u64>) -> Result<bytes::Bytes> {
    let mut buf = vec![0; (range.end - range.start) as usize];
    file.read_exact_at(&mut buf, range.start).map_err(crate::io_err(path))?;
    Ok(buf.into())
}

/// Copies the store in `dir` (checked first: sizes and index checksums) to `url`.
/// `progress(done, total)` is called with the bytes handled so far.
pub fn upload_store(
    dir: &Path,
    url: &Url,
    settings: &RemoteSettings,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<UploadReport> {
    let manifest = Manifest::load(dir)?;
    if let Some(p) = crate::check_files(dir, &manifest).into_iter().next() {
        return Err(crate::Error::Corrupt {
            path: dir.join(&p.file),
            reason: p.reason,
        });
    }
    let uploader = Uploader::new(url, settings)?;
    let files: Vec<(&str, u64)> = manifest
        .shards
        .iter()
        .flat_map(|s| [(s.file.as_str(), s.bytes), (s.index.as_str(), s.index_bytes)])
        .collect();
    let total: u64 = files.iter().map(|f| f.1).sum();
    let mut report = UploadReport::default();
    let mut done = 0;
    for (name, size) in files {
        if uploader.put_file(dir, name)? {
            report.uploaded += 1;
            report.bytes += size;
        } else {
            report.kept += 1;
        }
        done += size;
        progress(done, total);
    }
    // Last: the manifest makes the store visible.
    uploader.send(dir, MANIFEST_FILE)?;
    report.uploaded += 1;
    report.retries = uploader.retries();
    Ok(report)
}
