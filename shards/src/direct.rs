//! A local store larger than memory, read around the page cache.
//!
//! When a store's files are larger than the memory it may use
//! ([`crate::ahead::memory_budget`], against [`crate::ahead::RELEASE_FRACTION`] of it),
//! every sample of an epoch is read from the disk anyway, and the page cache only costs:
//! each page is allocated, filled, mapped, faulted on, reclaimed or given back, and on a
//! machine whose cores all decode, that kernel time is taken from the workers. Such a
//! store is instead read with `O_DIRECT` into the reader's own aligned buffers, one
//! sample a read (into buffers recycled from a small pool), by fetcher threads that run ahead in the plan's order within
//! [`crate::ahead::LOCAL_AHEAD_BYTES`] ([`crate::planned`]). A buffer is dropped when
//! its sample has been read, so the reader holds the read-ahead window and no more. The
//! bytes are the map's bytes, checked against the same CRC-32C.
//!
//! Where `O_DIRECT` is refused (a filesystem without it), the map and release-behind
//! ([`crate::ahead`]) are used instead.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::planned::{BlockData, Planned, Source};

/// The alignment of an `O_DIRECT` read's offset, length and buffer: the largest logical
/// block size of the disks in use.
const ALIGN: usize = 4096;

/// Fetcher threads reading ahead: reads in flight at once.
pub(crate) const DIRECT_THREADS: usize = 4;

/// How many bytes of freed buffers are kept for the next reads: in steady state
/// buffers are freed as fast as they are taken, so a few suffice.
const POOL_BYTES: usize = 16 << 20;

/// Buffer sizes are rounded up to this, so that samples of similar sizes share them.
const GRAIN: usize = 64 << 10;

/// A buffer for `O_DIRECT` reads: an anonymous map of its own (page-aligned, zeroed
/// by the kernel), so that freeing it gives its memory back at once, whichever thread
/// frees it, rather than leaving it in an allocator's per-thread arena.
struct Buffer(memmap2::MmapMut);

impl Buffer {
    /// A buffer of at least `size` bytes.
    fn new(size: usize) -> Result<Self> {
        memmap2::MmapMut::map_anon(size.max(ALIGN))
            .map(Buffer)
            .map_err(crate::io_err(std::path::Path::new(
                "an anonymous map for O_DIRECT reads",
            )))
    }

    fn size(&self) -> usize {
        self.0.len()
    }
}

/// Freed buffers, for the next reads.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<Buffer>>,
}

impl Pool {
    /// A buffer of at least `size` bytes: a freed one, or a new one.
    fn take(&self, size: usize) -> Result<Buffer> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = free.iter().position(|b| b.size() >= size) {
            return Ok(free.swap_remove(i));
        }
        drop(free);
        Buffer::new(size.next_multiple_of(GRAIN))
    }

    /// Keeps `buffer` for a later read, within [`POOL_BYTES`].
    fn give(&self, buffer: Buffer) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = free.iter().map(Buffer::size).sum();
        if held + buffer.size() <= POOL_BYTES {
            free.push(buffer);
        }
    }
}

/// A block's bytes in a pooled buffer aligned for `O_DIRECT`; dereferences to the
/// block's bytes, and goes back to the pool when dropped.
pub(crate) struct Aligned {
    buffer: Option<Buffer>,
    pool: Arc<Pool>,
    skip: usize,
    len: usize,
}

impl std::ops::Deref for Aligned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // `skip + len` is within the buffer (set by `Direct::load` after the read).
        self.buffer
            .as_ref()
            .map_or(&[], |b| &b.0[self.skip..self.skip + self.len])
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.give(b);
        }
    }
}

/// The shard files opened with `O_DIRECT`, and the buffers read into.
pub(crate) struct Direct {
    files: Vec<File>,
    paths: Vec<PathBuf>,
    pool: Arc<Pool>,
}

impl Direct {
    /// Opens every shard with `O_DIRECT`, and reads the first bytes of each to learn
    /// that the filesystem takes such reads; `None` where it does not.
    pub fn open(paths: &[PathBuf]) -> Result<Option<Self>> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
                Err(e) => return Err(crate::io_err(path)(e)),
            };
            let mut probe = Buffer::new(ALIGN)?;
            match file.read_at(&mut probe.0, 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
                Err(e) => return Err(crate::io_err(path)(e)),
            }
            files.push(file);
        }
        Ok(Some(Direct {
            files,
            paths: paths.to_vec(),
            pool: Arc::default(),
        }))
    }
}

impl Source for Direct {
    /// Reads block `n`'s bytes, widened to aligned bounds, with `O_DIRECT`.
    fn load(&self, planned: &Planned<Self>, n: usize, _ahead: bool) -> Result<Arc<BlockData>> {
        use std::os::unix::fs::FileExt;
        let b = planned.blocks().all()[n];
        let (file, path) = (&self.files[b.shard], &self.paths[b.shard]);
        let start = b.start as usize / ALIGN * ALIGN;
        let end = (b.end as usize).div_ceil(ALIGN) * ALIGN;
        let mut buf = self.pool.take(end - start)?;
        let need = b.end as usize - start;
        let mut got = 0;
        while got < need {
            // Reads stay aligned: `got` is a multiple of ALIGN until the file's end.
            match file.read_at(&mut buf.0[got..end - start], (start + got) as u64) {
                Ok(0) => {
                    let reason = format!("ends at byte {}, before the sample's end at {}", start + got, b.end);
                    return Err(Error::Corrupt {
                        path: path.clone(),
                        reason,
                    });
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(crate::io_err(path)(e)),
            }
        }
        let block = Aligned {
            buffer: Some(buf),
            pool: self.pool.clone(),
            skip: b.start as usize - start,
            len: b.len() as usize,
        };
        Ok(Arc::new(BlockData::Direct(block)))
    }

    fn forked_error(&self) -> Error {
        let path = self.paths.first().cloned().unwrap_or_default();
        let source = std::io::Error::other("read ahead by threads of the process that opened the store, not this fork");
        Error::Io { path, source }
    }
}
