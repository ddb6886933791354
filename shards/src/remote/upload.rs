//! Copying a local store into object storage: shards and indexes first, the manifest
//! last, so that a reader never sees half a store; an object already there with its
//! size is kept, so an interrupted copy resumes by sending only what is missing.

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
}

/// Writes a local store's files to a store URL, one object per file.
pub struct Uploader {
    client: Client,
}

impl Uploader {
    /// Connects to `url` (nothing is requested yet).
    pub fn new(url: &Url, settings: &RemoteSettings) -> Result<Self> {
        settings.validate()?;
        Ok(Uploader {
            client: Client::new(url, settings, Arc::new(Stats::default()))?,
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
        put_file(&self.client, dir, name)?;
        Ok(true)
    }
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
    put_file(&uploader.client, dir, MANIFEST_FILE)?;
    report.uploaded += 1;
    Ok(report)
}

fn put_file(client: &Client, dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(crate::io_err(&path))?;
    client.block_on(client.put(name, bytes.into()))
}
