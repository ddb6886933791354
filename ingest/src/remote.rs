//! `slotcon-ingest FOLDER --out s3://bucket/prefix/`: the store is written in a local
//! staging folder (which holds the journal, so a killed ingest resumes there), and each
//! shard is uploaded as soon as it is committed; the manifest goes last, so a reader
//! never sees half a store. A resumed ingest uploads only the objects that are missing.
//!
//! The lock that keeps two ingests apart is the staging folder's (local): two machines
//! ingesting into one URL are not kept apart.

use std::path::{Path, PathBuf};

use slotcon_shards::remote::{upload_store, UploadReport, Uploader};
use slotcon_shards::RemoteSettings;
use url::Url;

use crate::run::{ingest_with, IngestReport};
use crate::{IngestConfig, Progress, Result};

/// The staging folder of an ingest into `url` when none is named: below the cache root,
/// one per URL.
pub fn default_staging(url: &Url, store: &RemoteSettings) -> PathBuf {
    let key = slotcon_shards::crc32c(url.as_str().trim_end_matches('/').as_bytes());
    store.cache_root().join("ingest").join(format!("{key:08x}"))
}

/// Ingests `src` into the store at `url`, staging in `staging`; returns the ingest's
/// report and the upload's.
pub fn ingest_to_url(
    src: &Path,
    url: &Url,
    staging: &Path,
    cfg: &IngestConfig,
    store: &RemoteSettings,
    force: bool,
    progress: Progress<'_>,
) -> Result<(IngestReport, UploadReport)> {
    let uploader = Uploader::new(url, store)?;
    let (mut sent, mut sent_bytes) = (0u64, 0u64);
    let mut on_shard = |s: &slotcon_shards::ShardInfo| -> Result<()> {
        for (name, size) in [(&s.file, s.bytes), (&s.index, s.index_bytes)] {
            if uploader.put_file(staging, name)? {
                sent += 1;
                sent_bytes += size;
            }
        }
        Ok(())
    };
    // A staging folder that holds the whole store already reports so; the upload below
    // then finishes what a killed run left.
    let report = ingest_with(src, staging, cfg, force, progress, &mut on_shard)?;
    let mut upload = upload_store(staging, url, store, &mut |_, _| {})?;
    // The shards sent while ingesting count as uploaded, not as kept.
    upload.kept = upload.kept.saturating_sub(sent);
    upload.uploaded += sent;
    upload.bytes += sent_bytes;
    upload.retries += uploader.retries();
    Ok((report, upload))
}
