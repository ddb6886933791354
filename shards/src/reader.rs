//! `ShardReader`: memory-mapped, zero-copy random access to a store.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::checksum::crc32c;
use crate::direct::Direct;
use crate::error::{io_err, Error, Result};
use crate::format::{Manifest, ShardInfo, StoreKind};
use crate::guard::Guard;
use crate::index::{Entry, IndexView};
use crate::planned::{BlockData, Handle, Planned, Source};
use crate::remote::{self, Location, RemoteHandle, RemoteSettings, RemoteStats};

/// Memory-maps a whole file read-only.
///
/// The file must not be modified or truncated while the map is alive; a store's files
/// never are once written.
pub fn map_file(path: &Path) -> Result<Mmap> {
    map_open(&File::open(path).map_err(io_err(path))?, path)
}

/// Memory-maps the whole open `file` (at `path`) read-only; see [`map_file`].
pub(crate) fn map_open(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the slices handed out from the map would change
    // (or fault) if the file were modified or truncated while mapped. slotcon never does
    // that: shards and indexes are written under temporary names, synced, and renamed into
    // place, then never written again (the writer maps its temporary file only after
    // finishing it). Modifying a store's files while it is open is outside the contract
    // stated on this function and on `ShardReader`.
    unsafe { Mmap::map(file) }.map_err(io_err(path))
}

/// A sample's payload, zero-copy: a slice of a local shard's memory map, or of a remote
/// store's block (mapped from the cache, or held in memory), which it keeps alive.
/// Dereferences to the bytes.
#[derive(Clone)]
pub struct Payload<'a>(Repr<'a>);

#[derive(Clone)]
enum Repr<'a> {
    Mapped(&'a [u8]),
    Block(Arc<BlockData>, usize, usize),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Mapped(b) => b,
            Repr::Block(block, at, len) => &block[*at..*at + *len],
        }
    }
}

impl std::fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

/// One image as stored: its payload (zero-copy) plus its metadata.
#[derive(Clone, Debug)]
pub struct Sample<'a> {
    /// Dense id, `0..len`.
    pub id: u64,
    /// The payload: an encoded JPEG/PNG, or raw `height × width × 3` RGB.
    pub bytes: Payload<'a>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The source path, relative to the ingested folder.
    pub path: &'a str,
    /// Which shard (position in the manifest) holds it.
    pub shard: usize,
}

struct Shard {
    /// The shard file's path, or its URL.
    path: PathBuf,
    // The guards unregister the mappings before they are unmapped (fields drop in order).
    _guards: Vec<Guard>,
    /// A local shard's file and map; `None` for a remote one.
    local: Option<LocalData>,
    index: IndexBytes,
}

struct LocalData {
    /// The open shard file, whose size [`ShardReader::get`] checks before each read.
    file: File,
    data: Mmap,
}

/// An index file's bytes: mapped, or fetched from a remote store.
enum IndexBytes {
    Mapped(Mmap),
    Fetched(Arc<Vec<u8>>),
}

impl std::ops::Deref for IndexBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IndexBytes::Mapped(m) => m,
            IndexBytes::Fetched(v) => v,
        }
    }
}

/// Read-only access to a store directory. Cheap to share between threads (`Sync`).
///
/// The store's files are memory-mapped: they must not be modified or truncated while a
/// reader has them open. If one is, the reader fails loudly rather than with a bare
/// signal: [`get`](Self::get) returns [`Error::Corrupt`] naming the shard when its file no
/// longer has the size it was opened with, and a read that the change overtakes ends the
/// process with a message that names the file and exit status 1 ([`crate::guard`]).
///
/// Opening reads `manifest.json`, maps every shard and its index, and checks each
/// index's checksum and bounds; no Parquet decoding happens, at open or per sample.
pub struct ShardReader {
    /// The folder, or the URL.
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// The largest image sizes in the store.
    extent: Extent,
    /// A remote store's fetching state (`None` for a local store).
    remote: Option<RemoteHandle>,
    /// A local store's read-ahead and release-behind in the planned order.
    ahead: crate::ahead::LocalAhead,
    /// The memory the store's pages may take; `None`: [`crate::ahead::memory_budget`].
    memory_budget: Option<u64>,
    /// Whether a local store larger than memory is read with `O_DIRECT` (`direct.rs`).
    direct_reads: bool,
    /// That reading, started by the first plan that needs it; `None` inside where the
    /// filesystem refuses `O_DIRECT`.
    direct: std::sync::OnceLock<Option<Handle<Direct>>>,
}

/// The largest image sizes in a store, as its index records them: what bounds one
/// decode's and one resize's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// The most pixels (`width x height`) of any image.
    pub pixels: u64,
    /// The widest image's width.
    pub width: u64,
    /// The tallest image's height.
    pub height: u64,
}

impl Extent {
    fn max(self, other: Extent) -> Extent {
        Extent {
            pixels: self.pixels.max(other.pixels),
            width: self.width.max(other.width),
            height: self.height.max(other.height),
        }
    }
}

impl ShardReader {
    /// Opens the store in the folder `dir`, or at the URL `dir` names
    /// ([`Location::parse`]) with the default [`RemoteSettings`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, &RemoteSettings::default())
    }

    /// Opens the store in the folder or at the URL `store`; `settings` apply to a URL.
    pub fn open_with(store: impl AsRef<Path>, settings: &RemoteSettings) -> Result<Self> {
        match Location::parse(store.as_ref())? {
            Location::Local(dir) => Self::open_local(dir),
            Location::Remote(url) => Self::open_remote(&url, settings),
        }
    }

    fn open_remote(url: &url::Url, settings: &RemoteSettings) -> Result<Self> {
        let opened = remote::open(url, settings)?;
        let mut extent = Extent::default();
        let mut shards = Vec::with_capacity(opened.shards.len());
        for (info, s) in opened.manifest.shards.iter().zip(&opened.shards) {
            let path = PathBuf::from(format!("{}{}", opened.base, info.file));
            let view = IndexView::parse(&path, &s.index)?;
            extent = extent.max(check_index(&path, info, &view, info.bytes)?);
            shards.push(Shard {
                path,
                _guards: Vec::new(),
                local: None,
                index: IndexBytes::Fetched(s.index.clone()),
            });
        }
        Ok(ShardReader {
            dir: PathBuf::from(opened.base),
            manifest: opened.manifest,
            shards,
            extent,
            remote: Some(opened.handle),
            ahead: Default::default(),
            memory_budget: None,
            direct_reads: true,
            direct: std::sync::OnceLock::new(),
        })
    }

    fn open_local(dir: PathBuf) -> Result<Self> {
        let manifest = Manifest::load(&dir)?;
        let mut extent = Extent::default();
        let shards = manifest
            .shards
            .iter()
            .map(|info| {
                let (shard, largest) = open_shard(&dir, info)?;
                extent = extent.max(largest);
                Ok(shard)
            })
            .collect::<Result<_>>()?;
        Ok(ShardReader {
            dir,
            manifest,
            shards,
            extent,
            remote: None,
            ahead: Default::default(),
            memory_budget: None,
            direct_reads: true,
            direct: std::sync::OnceLock::new(),
        })
    }

    /// Sets the memory a local store's pages may take, in bytes, in place of the
    /// machine's or the memory cgroup's ([`crate::ahead::memory_budget`]): a store
    /// larger than [`crate::ahead::RELEASE_FRACTION`] of it gives back the pages of the
    /// samples read in a [`plan`](Self::plan).
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Whether a local store larger than its memory budget is read with `O_DIRECT` into
    /// the reader's own buffers (the default, where the filesystem allows it), or through
    /// the map with release-behind ([`crate::ahead`]). Set before the first
    /// [`plan`](Self::plan).
    pub fn with_direct_reads(mut self, on: bool) -> Self {
        self.direct_reads = on;
        self
    }

    /// True for a store in object storage.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Tells the reader the order in which ids will be asked for from now on (a loader's
    /// epoch): a remote store then reads ahead in that order and evicts from its cache
    /// the block needed last; a local store asks the kernel for the pages of the next
    /// samples, and gives back those it has read when the store is larger than memory
    /// ([`crate::ahead`]).
    pub fn plan(&self, ids: &[u64]) {
        match &self.remote {
            Some(r) => r.planned.set_plan(ids, |id| self.shard_row(id)),
            None => {
                if let Some(direct) = self.direct_plan() {
                    direct.planned.set_plan(ids, |id| self.shard_row(id));
                    return;
                }
                let spans = ids
                    .iter()
                    .filter(|&&id| id < self.len())
                    .map(|&id| {
                        let (shard, row) = self.shard_row(id);
                        let e = self.view(shard).entry(row);
                        (shard, e.offset, e.len as u64)
                    })
                    .collect();
                let bytes = self.manifest.total_bytes;
                let budget = self.memory_budget.unwrap_or_else(crate::ahead::memory_budget);
                let release = crate::ahead::releases(bytes, budget);
                self.ahead.plan(spans, release, &self.local_maps());
            }
        }
    }

    /// The reads have reached `position` in the order given to [`plan`](Self::plan).
    pub fn advance(&self, position: usize) {
        match &self.remote {
            Some(r) => r.planned.advance(position),
            None => match self.direct_now() {
                Some(direct) => direct.planned.advance(position),
                None => self.ahead.advance(position, &self.local_maps()),
            },
        }
    }

    /// A local store's direct reading, started here when the store is larger than its
    /// memory budget and direct reads are on; `None` otherwise, or where the
    /// filesystem refuses `O_DIRECT` (or cannot start it: the map still reads).
    fn direct_plan(&self) -> Option<&Handle<Direct>> {
        if !self.direct_reads || self.remote.is_some() {
            return None;
        }
        let budget = self.memory_budget.unwrap_or_else(crate::ahead::memory_budget);
        if self.direct.get().is_none() && !crate::ahead::releases(self.manifest.total_bytes, budget) {
            return None;
        }
        self.direct
            .get_or_init(|| {
                let paths: Vec<PathBuf> = self.shards.iter().map(|s| s.path.clone()).collect();
                let views: Vec<IndexView<'_>> = (0..self.shards.len()).map(|n| self.view(n)).collect();
                // One sample a block: a buffer is dropped as soon as its sample is read.
                let blocks = crate::blocks::Blocks::new(&views, 1);
                let direct = Direct::open(&paths).ok()??;
                let patience = std::time::Duration::from_secs(30);
                let ahead = crate::ahead::LOCAL_AHEAD_BYTES;
                Handle::start(
                    direct,
                    blocks,
                    ahead,
                    patience,
                    crate::direct::DIRECT_THREADS,
                    "slotcon-read",
                )
                .ok()
            })
            .as_ref()
    }

    /// The direct reading, if a plan started it and this process (not a fork) runs it.
    fn direct_now(&self) -> Option<&Handle<Direct>> {
        self.direct.get()?.as_ref().filter(|d| !d.planned.forked())
    }

    fn local_maps(&self) -> Vec<crate::ahead::Mapped<'_>> {
        self.shards
            .iter()
            .filter_map(|s| {
                s.local.as_ref().map(|l| crate::ahead::Mapped {
                    file: &l.file,
                    map: &l.data,
                })
            })
            .collect()
    }

    /// A remote store's counters so far (`None` for a local store).
    pub fn remote_stats(&self) -> Option<RemoteStats> {
        self.remote.as_ref().map(|r| r.planned.source.stats())
    }

    /// A remote store's cache: its folder, the bytes its files hold now (every store's in
    /// it) and its limit.
    pub fn cache_usage(&self) -> Option<Result<(PathBuf, u64, u64)>> {
        let r = &self.remote.as_ref()?.planned.source;
        Some(
            r.cache_used()
                .map(|used| (r.cache_root().to_path_buf(), used, r.cache_limit())),
        )
    }

    fn shard_row(&self, id: u64) -> (usize, u64) {
        let infos = &self.manifest.shards;
        let shard = infos.partition_point(|s| s.first_id + s.rows <= id);
        (shard, id - infos[shard].first_id)
    }

    /// The store directory (for a remote store, its URL).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest the store was opened with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the payloads are (encoded files or raw RGB).
    pub fn store(&self) -> StoreKind {
        self.manifest.store
    }

    /// Number of images.
    pub fn len(&self) -> u64 {
        self.manifest.total_rows
    }

    /// The most pixels (`width x height`, as the index records) of any image in the store:
    /// what bounds one decode's memory.
    pub fn max_pixels(&self) -> u64 {
        self.extent.pixels
    }

    /// The largest pixel count, width and height of the store's images (each the most
    /// of any image, not necessarily of the same one).
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// True when the store holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `id`, with its payload checked against the CRC recorded at ingest.
    pub fn get(&self, id: u64) -> Result<Sample<'_>> {
        let (shard, entry) = self.locate(id)?;
        let s = &self.shards[shard];
        let row = id - self.manifest.shards[shard].first_id;
        let bytes = match (&s.local, &self.remote) {
            (Some(local), _) => {
                s.check_size(local)?;
                match self.direct_now() {
                    Some(direct) => from_block(&direct.planned, shard, row, &entry)?,
                    // In bounds: `check_index` checked every entry against the file's size.
                    None => Payload(Repr::Mapped(&local.data[entry.offset as usize..][..entry.len as usize])),
                }
            }
            (None, Some(r)) => {
                let payload = from_block(&r.planned, shard, row, &entry)?;
                r.planned.source.count_use(entry.len as u64);
                payload
            }
            (None, None) => unreachable!("a shard is local or its store remote"),
        };
        let actual = crc32c(&bytes);
        if actual != entry.crc {
            return Err(Error::SampleChecksum {
                path: s.path.clone(),
                id,
                expected: entry.crc,
                actual,
            });
        }
        let path = self.view(shard).path(&entry);
        Ok(Sample {
            id,
            bytes,
            width: entry.width,
            height: entry.height,
            path,
            shard,
        })
    }

    /// The source path of sample `id`, without reading its payload.
    pub fn path(&self, id: u64) -> Result<&str> {
        let (shard, entry) = self.locate(id)?;
        Ok(self.view(shard).path(&entry))
    }

    /// The path of the Parquet file of shard `n`.
    pub fn shard_path(&self, n: usize) -> &Path {
        &self.shards[n].path
    }

    fn locate(&self, id: u64) -> Result<(usize, Entry)> {
        if id >= self.len() {
            return Err(Error::OutOfRange {
                path: self.dir.clone(),
                id,
                len: self.len(),
            });
        }
        let infos = &self.manifest.shards;
        let shard = infos.partition_point(|s| s.first_id + s.rows <= id);
        Ok((shard, self.view(shard).entry(id - infos[shard].first_id)))
    }

    fn view(&self, shard: usize) -> IndexView<'_> {
        // Checked in `open_shard`; this only slices the header.
        IndexView::reslice(&self.shards[shard].index)
    }
}

impl Shard {
    /// The shard file still has the size it was mapped with (one `fstat`): a file that
    /// something truncated or rewrote under the reader is an error naming it, not a SIGBUS.
    fn check_size(&self, local: &LocalData) -> Result<()> {
        let now = local.file.metadata().map_err(io_err(&self.path))?.len();
        if now != local.data.len() as u64 {
            let reason = format!(
                "the file is now {now} bytes, {} when the store was opened: it changed \
                 while open (a store's files must not be modified while it is read)",
                local.data.len()
            );
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason,
            });
        }
        Ok(())
    }
}

/// Row `row` of shard `shard` (index entry `entry`) as a slice of its block, loaded or
/// held by `planned`.
fn from_block<'a, S: Source>(planned: &Planned<S>, shard: usize, row: u64, entry: &Entry) -> Result<Payload<'a>> {
    let (n, start) = planned.block_of(shard, row);
    let block = planned.block(n)?;
    Ok(Payload(Repr::Block(
        block,
        (entry.offset - start) as usize,
        entry.len as usize,
    )))
}

/// Opens one shard; returns it with the most pixels of its images.
fn open_shard(dir: &Path, info: &ShardInfo) -> Result<(Shard, Extent)> {
    let path = dir.join(&info.file);
    let file = File::open(&path).map_err(io_err(&path))?;
    let data = map_open(&file, &path)?;
    if data.len() as u64 != info.bytes {
        let reason = format!("{} bytes, manifest says {}", data.len(), info.bytes);
        return Err(Error::Corrupt { path, reason });
    }
    let index_path = dir.join(&info.index);
    let index = map_file(&index_path)?;
    let view = IndexView::parse(&index_path, &index)?;
    let extent = check_index(&path, info, &view, data.len() as u64)?;
    let _guards = vec![Guard::new(&data, &path), Guard::new(&index, &index_path)];
    let shard = Shard {
        path,
        _guards,
        local: Some(LocalData { file, data }),
        index: IndexBytes::Mapped(index),
    };
    Ok((shard, extent))
}

/// Checks the index against the manifest and every entry against the file; returns the
/// most pixels of its images.
pub(crate) fn check_index(path: &Path, info: &ShardInfo, view: &IndexView<'_>, file_len: u64) -> Result<Extent> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if view.rows() != info.rows || view.first_id() != info.first_id {
        return Err(corrupt(format!(
            "index holds ids {}+{}, manifest {}+{}",
            view.first_id(),
            view.rows(),
            info.first_id,
            info.rows
        )));
    }
    let mut extent = Extent::default();
    for row in 0..view.rows() {
        let e = view.entry(row);
        let (width, height) = (e.width as u64, e.height as u64);
        extent = extent.max(Extent {
            pixels: width * height,
            width,
            height,
        });
        if e.offset.checked_add(e.len as u64).is_none_or(|end| end > file_len) {
            return Err(corrupt(format!(
                "id {}: payload lies past the end of the file",
                info.first_id + row
            )));
        }
    }
    Ok(extent)
}
