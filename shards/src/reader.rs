//! `ShardReader`: memory-mapped, zero-copy random access to a store.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::checksum::crc32c;
use crate::error::{io_err, Error, Result};
use crate::format::{Manifest, ShardInfo, StoreKind};
use crate::guard::Guard;
use crate::index::{Entry, IndexView};

/// Memory-maps a whole file read-only.
///
/// The file must not be modified or truncated while the map is alive; a store's files
/// never are once written.
pub fn map_file(path: &Path) -> Result<Mmap> {
    map_open(&File::open(path).map_err(io_err(path))?, path)
}

/// Memory-maps the whole open `file` (at `path`) read-only; see [`map_file`].
fn map_open(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the slices handed out from the map would change
    // (or fault) if the file were modified or truncated while mapped. slotcon never does
    // that: shards and indexes are written under temporary names, synced, and renamed into
    // place, then never written again (the writer maps its temporary file only after
    // finishing it). Modifying a store's files while it is open is outside the contract
    // stated on this function and on `ShardReader`.
    unsafe { Mmap::map(file) }.map_err(io_err(path))
}

/// One image as stored: a zero-copy slice of the shard's memory map plus its metadata.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// Dense id, `0..len`.
    pub id: u64,
    /// The payload: an encoded JPEG/PNG, or raw `height × width × 3` RGB.
    pub bytes: &'a [u8],
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
    path: PathBuf,
    /// The open shard file, whose size [`ShardReader::get`] checks before each read.
    file: File,
    // The guards unregister the mappings before they are unmapped (fields drop in order).
    _guards: [Guard; 2],
    data: Mmap,
    index: Mmap,
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
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// The largest image sizes in the store.
    extent: Extent,
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
    /// Opens the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
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
        })
    }

    /// The store directory.
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
        s.check_size()?;
        // In bounds: `check_index` checked every entry against the file's size at open.
        let bytes = &s.data[entry.offset as usize..][..entry.len as usize];
        let actual = crc32c(bytes);
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
    fn check_size(&self) -> Result<()> {
        let now = self.file.metadata().map_err(io_err(&self.path))?.len();
        if now != self.data.len() as u64 {
            let reason = format!(
                "the file is now {now} bytes, {} when the store was opened: it changed \
                 while open (a store's files must not be modified while it is read)",
                self.data.len()
            );
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason,
            });
        }
        Ok(())
    }
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
    let _guards = [Guard::new(&data, &path), Guard::new(&index, &index_path)];
    let shard = Shard {
        path,
        file,
        _guards,
        data,
        index,
    };
    Ok((shard, extent))
}

/// Checks the index against the manifest and every entry against the file; returns the
/// most pixels of its images.
fn check_index(path: &Path, info: &ShardInfo, view: &IndexView<'_>, file_len: u64) -> Result<Extent> {
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
