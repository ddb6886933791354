//! Read-ahead for a local store from the known order: as the reads advance through the
//! plan, the kernel is asked (`posix_fadvise(WILLNEED)`, which starts the reads and
//! returns) for the pages of the samples coming within [`LOCAL_AHEAD_BYTES`]. A store
//! larger than the page cache then has its next samples on their way from the disk
//! before a worker faults on them, instead of one small synchronous read per fault.

use std::fs::File;
use std::sync::Mutex;

/// How many bytes of upcoming samples are asked for ahead of the reads. Pages read ahead
/// but not yet used are the first the kernel reclaims under pressure, so more is not
/// better: in a 320 MiB cgroup on a 1.8 GB raw store, 128 MiB ahead was slower than none,
/// 16 to 32 MiB the fastest (bench/RESULTS.md).
pub const LOCAL_AHEAD_BYTES: u64 = 32 << 20;

/// The plan and how far it has been advised.
#[derive(Default)]
pub(crate) struct LocalAhead {
    state: Mutex<Option<Advised>>,
}

struct Advised {
    /// `(shard, offset, len)` of each position's payload.
    spans: Vec<(usize, u64, u64)>,
    /// Positions before this one were advised.
    next: usize,
}

impl LocalAhead {
    /// A new plan: `spans[p]` is the payload of position `p`.
    pub fn plan(&self, spans: Vec<(usize, u64, u64)>, files: &[&File]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *st = Some(Advised { spans, next: 0 });
        advise(st.as_mut().expect("just set"), 0, files);
    }

    /// The reads have reached `position`: advise what lies within the window past it.
    pub fn advance(&self, position: usize, files: &[&File]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = st.as_mut() {
            advise(a, position, files);
        }
    }
}

fn advise(a: &mut Advised, position: usize, files: &[&File]) {
    let mut ahead: u64 = a.spans[position.min(a.spans.len())..a.next.max(position).min(a.spans.len())]
        .iter()
        .map(|s| s.2)
        .sum();
    a.next = a.next.max(position);
    while a.next < a.spans.len() && ahead < LOCAL_AHEAD_BYTES {
        let (shard, offset, len) = a.spans[a.next];
        will_need(files[shard], offset, len);
        ahead += len;
        a.next += 1;
    }
}

#[cfg(target_os = "linux")]
fn will_need(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is open for the call; the advice reads no memory of ours. A failure
    // only loses the hint.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset as i64, len as i64, libc::POSIX_FADV_WILLNEED);
    }
}

#[cfg(not(target_os = "linux"))]
fn will_need(_file: &File, _offset: u64, _len: u64) {}
