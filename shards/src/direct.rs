//! A local store larger than memory, read around the page cache.
//!
//! When a store's files are larger than the memory it may use
//! ([`crate::ahead::memory_budget`], against [`crate::ahead::RELEASE_FRACTION`] of it),
//! every sample of an epoch is read from the disk anyway, and the page cache only costs:
//! each page is allocated, filled, mapped, faulted on, reclaimed or given back, and on a
//! machine whose cores all decode, that kernel time is taken from the workers. Such a
//! store is instead read with `O_DIRECT` into the reader's own aligned buffers, one
//! sample a read, by fetcher threads that run ahead in the plan's order within
//! [`crate::ahead::LOCAL_AHEAD_BYTES`] ([`crate::planned`]). A buffer is dropped when
//! its sample has been read, so the reader holds the read-ahead window and no more. The
//! bytes are the map's bytes, checked against the same CRC-32C.
//!
//! Where `O_DIRECT` is refused (a filesystem without it), the map and release-behind
//! ([`crate::ahead`]) are used instead.

use std::alloc::Layout;
use std::fs::File;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::planned::{BlockData, Planned, Source};

/// The alignment of an `O_DIRECT` read's offset, length and buffer: the largest logical
/// block size of the disks in use.
const ALIGN: usize = 4096;

/// Fetcher threads reading ahead: reads in flight at once.
pub(crate) const DIRECT_THREADS: usize = 4;

/// A block's bytes in a buffer aligned for `O_DIRECT`; dereferences to the block's
/// bytes (the aligned read around them is kept whole).
pub(crate) struct Aligned {
    ptr: NonNull<u8>,
    layout: Layout,
    skip: usize,
    len: usize,
}

// SAFETY: `Aligned` owns its allocation, which nothing else points to; it is only read
// through `&self` once filled.
unsafe impl Send for Aligned {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for Aligned {}

impl Aligned {
    /// A zeroed buffer of `size` bytes (a multiple of [`ALIGN`], at least one).
    fn zeroed(size: usize) -> Self {
        let layout = Layout::from_size_align(size.max(ALIGN), ALIGN).expect("a valid layout");
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Aligned {
            ptr,
            layout,
            skip: 0,
            len: 0,
        }
    }

    fn whole(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `layout.size()` bytes, initialised, owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `skip + len <= layout.size()` (set by `Direct::load`), and the bytes
        // are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.skip), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The shard files opened with `O_DIRECT`.
pub(crate) struct Direct {
    files: Vec<File>,
    paths: Vec<PathBuf>,
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
            let mut probe = Aligned::zeroed(ALIGN);
            match file.read_at(probe.whole(), 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
                Err(e) => return Err(crate::io_err(path)(e)),
            }
            files.push(file);
        }
        Ok(Some(Direct {
            files,
            paths: paths.to_vec(),
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
        let mut buf = Aligned::zeroed(end - start);
        let need = b.end as usize - start;
        let mut got = 0;
        while got < need {
            // Reads stay aligned: `got` is a multiple of ALIGN until the file's end.
            match file.read_at(&mut buf.whole()[got..], (start + got) as u64) {
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
        buf.skip = b.start as usize - start;
        buf.len = b.len() as usize;
        Ok(Arc::new(BlockData::Direct(buf)))
    }

    fn forked_error(&self) -> Error {
        let path = self.paths.first().cloned().unwrap_or_default();
        let source = std::io::Error::other("read ahead by threads of the process that opened the store, not this fork");
        Error::Io { path, source }
    }
}
