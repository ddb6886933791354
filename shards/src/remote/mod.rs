//! Stores in object storage (DESIGN §11): `s3://`, `gs://`, `az://`, `http(s)://`.
//!
//! The format does not change. Opening fetches `manifest.json` and every index once and
//! checks them as a local store's are (sizes, checksums, bounds), and asks each shard
//! object's size and ETag. A payload is then a byte range of its shard object: the
//! samples are grouped into [blocks](crate::blocks) (runs of consecutive samples), and a
//! block is one ranged GET, verified sample by sample against the index's CRC-32C, kept
//! in the local cache (`cache.rs`) and mapped from there like a local shard.
//!
//! The reader can be told the order in which samples will be asked for
//! ([`ShardReader::plan`](crate::ShardReader::plan)) and how far the asking has come
//! ([`advance`](crate::ShardReader::advance)). Then fetcher threads read ahead in that
//! order, within a bounded number of bytes and requests, and the cache evicts the block
//! needed last.

mod cache;
mod client;
mod ledger;
mod stats;
mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use cache::parse_size;
pub use stats::RemoteStats;
pub use upload::{upload_store, UploadReport, Uploader};

use crate::blocks::{Block, Blocks, DEFAULT_BLOCK_BYTES};
use crate::checksum::crc32c;
use crate::error::{Error, Result};
use crate::index::IndexView;
use crate::planned::{BlockData, Handle, Planned, Source};
use cache::{Cache, Inserted};
use client::Client;
use stats::Stats;

/// How a remote store is read: the cache, the block size, the deadline and the
/// read-ahead. Part of every config that opens a store (`[store]` in a settings file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteSettings {
    /// The cache folder, shared by every process (and store) that names it. Unset:
    /// `$SLOTCON_CACHE`, else `$XDG_CACHE_HOME/slotcon`, else `~/.cache/slotcon`.
    pub cache: Option<PathBuf>,
    /// The most bytes the cache folder holds. Unset: the store's size, at most three
    /// quarters of the space free where the cache is.
    pub cache_limit: Option<u64>,
    /// The most bytes one block (one request) spans.
    pub block_bytes: u64,
    /// Seconds one request may take, its retries included, before it is an error that
    /// names the URL.
    pub timeout_s: f64,
    /// How many times a transient failure (5xx, a reset, a timeout, a short body) is
    /// retried, with backoff, within the deadline.
    pub retries: u32,
    /// The most bytes the read-ahead fetches ahead of the readers.
    pub ahead_bytes: u64,
    /// The most requests in flight at once (read-ahead fetcher threads).
    pub ahead_requests: usize,
    /// The size of a multipart upload's parts (S3's minimum is 5 MiB): a file larger
    /// than this is uploaded in parts, a few at a time, and smaller ones in one PUT.
    pub part_bytes: u64,
    /// object_store's options for the store's kind, applied over its environment
    /// variables: for S3 `endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `allow_http`; the GCS and Azure keys likewise (fsspec's `storage_options`).
    pub storage_options: std::collections::BTreeMap<String, String>,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings {
            cache: None,
            cache_limit: None,
            block_bytes: DEFAULT_BLOCK_BYTES,
            timeout_s: 60.0,
            retries: 8,
            ahead_bytes: 256 << 20,
            ahead_requests: 8,
            part_bytes: 32 << 20,
            storage_options: Default::default(),
        }
    }
}

impl RemoteSettings {
    /// Checks the values that have a valid range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Settings { field, reason });
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0 && self.timeout_s <= 86400.0) {
            return bad("timeout_s", format!("{} is not in (0, 86400] seconds", self.timeout_s));
        }
        if !(1 << 10..=1 << 32).contains(&self.block_bytes) {
            return bad(
                "block_bytes",
                format!("{} is not between 1 KiB and 4 GiB", self.block_bytes),
            );
        }
        if !(1..=256).contains(&self.ahead_requests) {
            return bad("ahead_requests", format!("{} is not in 1..=256", self.ahead_requests));
        }
        if !(5 << 20..=5 << 30).contains(&self.part_bytes) {
            return bad(
                "part_bytes",
                format!("{} is not between 5 MiB and 5 GiB (S3's limits)", self.part_bytes),
            );
        }
        if self.cache_limit == Some(0) {
            return bad("cache_limit", "0 bytes: a cache must hold something".into());
        }
        Ok(())
    }

    /// The cache folder these settings name, or the default one.
    pub fn cache_root(&self) -> PathBuf {
        if let Some(dir) = &self.cache {
            return dir.clone();
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        env("SLOTCON_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("slotcon")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/slotcon")))
            .unwrap_or_else(|| std::env::temp_dir().join("slotcon-cache"))
    }
}

/// Where a store is: a local folder, or a URL of object storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A folder on a local (or mounted) filesystem.
    Local(PathBuf),
    /// `s3://bucket/prefix/`, `gs://`, `az://`, `http(s)://`.
    Remote(Url),
}

/// The URL schemes a remote store may have.
pub const SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "http", "https",
];

impl Location {
    /// A store argument as given: a URL when it starts with `SCHEME://`, else a path
    /// (`file://` URLs are paths too).
    pub fn parse(arg: &Path) -> Result<Location> {
        let Some(text) = arg.to_str().filter(|t| looks_like_url(t)) else {
            return Ok(Location::Local(arg.to_path_buf()));
        };
        let bad = |reason: String| Error::Url {
            url: text.to_string(),
            reason,
        };
        let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|()| bad("not a local path".into()))?;
            return Ok(Location::Local(path));
        }
        if !SCHEMES.contains(&url.scheme()) {
            return Err(bad(format!(
                "unsupported scheme {}:// (a store is a folder or a URL of {})",
                url.scheme(),
                SCHEMES.join(", ")
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no bucket or host after the scheme".into()));
        }
        Ok(Location::Remote(url))
    }
}

fn looks_like_url(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// A remote store's source of blocks: the client and the cache.
pub(crate) struct Remote {
    client: Client,
    cache: Cache,
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    shards: Vec<RemoteShard>,
}

/// One shard object as opened.
#[derive(Clone)]
pub(crate) struct RemoteShard {
    pub file: String,
    pub etag: Option<String>,
    pub index: Arc<Vec<u8>>,
    pub first_id: u64,
}

/// The reader's handle on a remote store: its planned reads and fetcher threads.
pub(crate) type RemoteHandle = Handle<Remote>;

/// What opening a remote store yields for the reader.
pub(crate) struct Opened {
    pub manifest: crate::Manifest,
    pub shards: Vec<RemoteShard>,
    pub handle: RemoteHandle,
    pub base: String,
}

/// Opens the store at `url`: the manifest, every index (checked), every shard's size
/// and ETag; then the cache and the fetcher threads.
pub(crate) fn open(url: &Url, settings: &RemoteSettings) -> Result<Opened> {
    settings.validate()?;
    let stats = Arc::new(Stats::default());
    let client = Client::new(url, settings, stats)?;
    let manifest_name = crate::format::MANIFEST_FILE;
    let manifest_bytes = match client.block_on(client.get_all(manifest_name, crate::input::MAX_JSON_FILE)) {
        Err(Error::Remote {
            url,
            source: object_store::Error::NotFound { .. },
        }) => {
            let reason = "not found: no slotcon store at this URL (check the bucket and the prefix; \
                          slotcon-ingest --out URL makes one)"
                .to_string();
            return Err(Error::Url { url, reason });
        }
        other => other?,
    };
    let manifest = crate::Manifest::parse(Path::new(&client.url_of(manifest_name)), &manifest_bytes)?;
    let shards = client.block_on(open_shards(&client, &manifest))?;
    let views = shards
        .iter()
        .map(|s| IndexView::parse(Path::new(&client.url_of(&s.file)), &s.index))
        .collect::<Result<Vec<_>>>()?;
    let blocks = Blocks::new(&views, settings.block_bytes);
    drop(views);
    let names: Vec<String> = blocks
        .all()
        .iter()
        .map(|b| block_name(&shards[b.shard].file, b))
        .collect();
    let by_name = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
    let root = settings.cache_root();
    let key = format!(
        "{:08x}{:08x}",
        crc32c(client.base().as_bytes()),
        crc32c(&manifest_bytes)
    );
    std::fs::create_dir_all(&root).map_err(crate::io_err(&root))?;
    let limit = settings
        .cache_limit
        .unwrap_or_else(|| default_limit(&root, manifest.total_bytes));
    let cache = Cache::open(&root, &key, client.base(), limit)?;
    let base = client.base().to_string();
    let ahead = settings.ahead_bytes.min(limit / 2);
    let patience = client.timeout() * 2;
    let remote = Remote {
        client,
        cache,
        names,
        by_name,
        shards: shards.clone(),
    };
    let handle = Handle::start(
        remote,
        blocks,
        ahead,
        patience,
        settings.ahead_requests,
        "slotcon-fetch",
    )?;
    Ok(Opened {
        manifest,
        shards,
        handle,
        base,
    })
}

/// Every shard's index (fetched and checked against the manifest) and object size.
async fn open_shards(client: &Client, manifest: &crate::Manifest) -> Result<Vec<RemoteShard>> {
    use futures::stream::{StreamExt, TryStreamExt};
    let version = manifest.version;
    futures::stream::iter(manifest.shards.iter())
        .map(|info| async move {
            let index = client.get_all(&info.index, info.index_bytes.max(1)).await?;
            let index_url = client.url_of(&info.index);
            let actual = crate::format::index_checksum(version, &index);
            if index.len() as u64 != info.index_bytes || actual != info.index_checksum {
                return Err(Error::FileChecksum {
                    path: index_url.into(),
                    expected: format!("{} bytes, {}", info.index_bytes, info.index_checksum),
                    actual: format!("{} bytes, {actual}", index.len()),
                });
            }
            let view = IndexView::parse(Path::new(&index_url), &index)?;
            crate::reader::check_index(Path::new(&client.url_of(&info.file)), info, &view, info.bytes)?;
            let meta = client.head(&info.file).await?;
            if meta.size != info.bytes {
                let reason = format!("{} bytes, the manifest says {}", meta.size, info.bytes);
                return Err(client.changed(&info.file, reason));
            }
            Ok(RemoteShard {
                file: info.file.clone(),
                etag: meta.e_tag,
                index: Arc::new(index),
                first_id: info.first_id,
            })
        })
        .buffered(16)
        .try_collect()
        .await
}

/// A block's file name in the cache: the shard's name and the byte range.
fn block_name(file: &str, b: &Block) -> String {
    let stem = file.rsplit('/').next().unwrap_or(file);
    format!("{stem}.{:x}-{:x}", b.start, b.end)
}

/// The default cache limit: the store's size, at most 3/4 of the free space at `root`.
fn default_limit(root: &Path, store_bytes: u64) -> u64 {
    let free = free_space(root).unwrap_or(u64::MAX);
    store_bytes.min(free / 4 * 3).max(1)
}

fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` writes one struct through the pointer; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

impl Remote {
    /// The stats so far.
    pub fn stats(&self) -> RemoteStats {
        self.client.stats.snapshot()
    }

    /// The bytes the cache folder holds now (all stores in it).
    pub fn cache_used(&self) -> Result<u64> {
        self.cache.used()
    }

    /// The cache's limit.
    pub fn cache_limit(&self) -> u64 {
        self.cache.limit()
    }

    /// The cache's folder.
    pub fn cache_root(&self) -> &Path {
        self.cache.root()
    }

    /// Counts one sample read of `len` bytes.
    pub fn count_use(&self, len: u64) {
        Stats::add(&self.client.stats.samples, 1);
        Stats::add(&self.client.stats.bytes_used, len);
    }

    /// Fetches block `b` and checks every sample in it; a sample that fails is fetched
    /// once more, then is [`Error::Changed`] naming the shard and the sample.
    fn fetch(&self, b: &Block) -> Result<bytes::Bytes> {
        let shard = &self.shards[b.shard];
        let mut tries = 0;
        loop {
            let bytes = self.client.block_on(self.client.get_range(
                &shard.file,
                b.start..b.end,
                shard.etag.as_deref(),
            ))?;
            let Some((row, expected, actual)) = self.first_bad(b, &bytes) else {
                return Ok(bytes);
            };
            tries += 1;
            if tries >= 2 {
                let view = IndexView::reslice(&shard.index);
                let path = view.path(&view.entry(row));
                let reason = format!(
                    "sample {} ({path}) has CRC-32C {actual:08x}, the index says {expected:08x}",
                    shard.first_id + row
                );
                return Err(self.client.changed(&shard.file, reason));
            }
            Stats::add(&self.client.stats.retries, 1);
        }
    }

    /// The first sample of block `b` whose bytes in `bytes` fail their CRC-32C:
    /// `(row, expected, actual)`.
    fn first_bad(&self, b: &Block, bytes: &[u8]) -> Option<(u64, u32, u32)> {
        let view = IndexView::reslice(&self.shards[b.shard].index);
        (b.first_row..b.first_row + b.rows).find_map(|row| {
            let e = view.entry(row);
            let at = (e.offset - b.start) as usize;
            let actual = crc32c(bytes.get(at..at + e.len as usize)?);
            (actual != e.crc).then_some((row, e.crc, actual))
        })
    }
}

impl Source for Remote {
    /// Block `n` from the cache (verified), else fetched, verified and cached.
    fn load(&self, planned: &Planned<Self>, n: usize, ahead: bool) -> Result<Arc<BlockData>> {
        let b = planned.blocks().all()[n];
        let name = &self.names[n];
        let stats = &self.client.stats;
        match self
            .cache
            .lookup(name, b.len(), |bytes| self.first_bad(&b, bytes).is_none())?
        {
            Some(Ok(map)) => {
                Stats::add(&stats.cache_hits, 1);
                return Ok(Arc::new(BlockData::Mapped(map)));
            }
            Some(Err(())) => Stats::add(&stats.cache_corrupt, 1),
            None => {}
        }
        let bytes = self.fetch(&b)?;
        Stats::add(&stats.blocks_fetched, 1);
        if ahead {
            Stats::add(&stats.blocks_ahead, 1);
        }
        let need = planned.next_use_now(n);
        let own = self.cache.key();
        let next_use = |key: &str, name: &str| match self.by_name.get(name) {
            Some(&m) if key == own => planned.next_use_now(m),
            _ => u64::MAX,
        };
        let (inserted, evicted) = self.cache.insert(name, &bytes, need, next_use)?;
        if !evicted.is_empty() {
            Stats::add(&stats.evictions, evicted.len() as u64);
            planned.forget(evicted.iter().filter_map(|e| self.by_name.get(e).copied()));
        }
        Ok(Arc::new(match inserted {
            Inserted::Cached(map) => BlockData::Mapped(map),
            Inserted::NoRoom => {
                Stats::add(&stats.uncached, 1);
                BlockData::Memory(bytes)
            }
        }))
    }

    fn forked_error(&self) -> Error {
        Error::Url {
            url: self.client.base().to_string(),
            reason: "this remote store was opened before fork(): its connections and \
                     fetcher threads stay in the parent; open it again in the child"
                .into(),
        }
    }

    fn count_wait(&self, waited: Duration) {
        Stats::add(&self.client.stats.wait_ns, waited.as_nanos() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_arguments_are_folders_or_urls_of_the_known_schemes() {
        let remote = |s: &str| matches!(Location::parse(Path::new(s)), Ok(Location::Remote(_)));
        for url in [
            "s3://b/p/",
            "s3://b",
            "gs://b/p",
            "az://c/p",
            "abfss://c@a.dfs.core.windows.net/p",
            "https://h/p/",
        ] {
            assert!(remote(url), "{url}");
        }
        for path in ["shards", "/data/shards", "./a:b", "weird://name"] {
            let got = Location::parse(Path::new(path));
            if path == "weird://name" {
                let e = got.expect_err("an unknown scheme").to_string();
                assert!(e.contains("unsupported scheme weird://"), "{e}");
            } else {
                assert_eq!(got.unwrap(), Location::Local(PathBuf::from(path)), "{path}");
            }
        }
        assert_eq!(
            Location::parse(Path::new("file:///data/s")).unwrap(),
            Location::Local("/data/s".into())
        );
        let e = Location::parse(Path::new("s3://")).unwrap_err().to_string();
        assert!(e.contains("s3://"), "{e}");
    }

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let bad = |f: fn(&mut RemoteSettings)| {
            let mut s = RemoteSettings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.timeout_s = 0.0).contains("timeout_s"));
        assert!(bad(|s| s.timeout_s = f64::NAN).contains("timeout_s"));
        assert!(bad(|s| s.block_bytes = 10).contains("block_bytes"));
        assert!(bad(|s| s.ahead_requests = 0).contains("ahead_requests"));
        assert!(bad(|s| s.cache_limit = Some(0)).contains("cache_limit"));
        assert!(bad(|s| s.part_bytes = 1 << 20).contains("part_bytes"));
        assert!(RemoteSettings::default().validate().is_ok());
    }
}
