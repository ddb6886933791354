//! A mapped store file that shrinks under its reader fails loudly, never with a bare
//! signal.
//!
//! A read of a memory-mapped page past the end of its file raises SIGBUS, which kills the
//! process without a word (Python prints "Fatal Python error: Bus error"). A store's files
//! are never written once in place, so this only happens when something else truncates or
//! rewrites a shard while it is open. [`ShardReader::get`](crate::ShardReader::get)
//! checks the file's size (`fstat`) before it hands out a payload, which turns a change
//! made before the read into an error that names the shard. For a change that lands
//! during the read, every mapping of a [`ShardReader`](crate::ShardReader) is registered
//! here, and a SIGBUS handler that finds the faulting address in a registered mapping
//! prints the file's path and exits with status 1. A fault anywhere else goes to the
//! handler that was there before (or the default action), as if this one did not exist.
//!
//! The handler uses only async-signal-safe calls (`write`, `_exit`, `sigaction`) and reads
//! the registry through atomics: no lock, no allocation.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// How many mappings can be registered at once (two per shard: data and index). A
/// mapping beyond this is simply not guarded.
const SLOTS: usize = 16384;

/// One registered mapping: `[start, start + len)` and its path (a leaked-until-
/// unregistered C string). `start == 0` marks a free slot.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    path: AtomicPtr<libc::c_char>,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    path: AtomicPtr::new(std::ptr::null_mut()),
};

static REGISTRY: [Slot; SLOTS] = [FREE; SLOTS];

/// The SIGBUS action that was installed before ours.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

static INSTALL: Once = Once::new();

/// A registered mapping; unregisters itself when dropped (before its mapping is unmapped,
/// as it is declared and dropped first where it is held).
pub(crate) struct Guard {
    slot: Option<usize>,
    path: *mut libc::c_char,
}

// SAFETY: the raw pointer is an owned C string, only freed by `drop`.
unsafe impl Send for Guard {}
// SAFETY: as above; `Guard` has no `&self` methods that touch it.
unsafe impl Sync for Guard {}

impl Guard {
    /// Registers the mapping `bytes` of the file `path`.
    pub(crate) fn new(bytes: &[u8], path: &Path) -> Guard {
        INSTALL.call_once(install);
        let text = CString::new(path.display().to_string().replace('\0', "?")).unwrap_or_default();
        let path = text.into_raw();
        if bytes.is_empty() {
            return Guard { slot: None, path };
        }
        let slot = REGISTRY.iter().position(|s| {
            s.start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(i) = slot {
            REGISTRY[i].len.store(bytes.len(), Ordering::Release);
            REGISTRY[i].path.store(path, Ordering::Release);
            REGISTRY[i].start.store(bytes.as_ptr() as usize, Ordering::Release);
        }
        Guard { slot, path }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            REGISTRY[i].start.store(usize::MAX, Ordering::Release);
            REGISTRY[i].path.store(std::ptr::null_mut(), Ordering::Release);
            REGISTRY[i].start.store(0, Ordering::Release);
        }
        // SAFETY: made by `CString::into_raw` in `new`, freed once; no slot points to it now.
        drop(unsafe { CString::from_raw(self.path) });
    }
}

/// Installs the handler, keeping the previous action for faults outside the registry.
fn install() {
    // SAFETY: a zeroed sigaction is a valid "no flags, default" value; the handler has
    // the SA_SIGINFO signature; `old` receives the previous action, leaked for the handler.
    unsafe {
        let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, old) == 0 {
            PREVIOUS.store(old, Ordering::Release);
        }
    }
}

/// The registered path whose mapping holds `addr`, if any.
fn owner(addr: usize) -> Option<*const libc::c_char> {
    REGISTRY.iter().find_map(|s| {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        let path = s.path.load(Ordering::Acquire);
        let inside = start != 0 && start != usize::MAX && addr >= start && addr - start < len;
        (inside && !path.is_null()).then_some(path as *const _)
    })
}

/// Writes `bytes` to standard error (async-signal-safe).
fn say(bytes: &[u8]) {
    // SAFETY: write(2) on fd 2 with a live buffer; a failed write is ignored.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(path) = owner(addr) {
        say(b"error: ");
        // SAFETY: a NUL-terminated string owned by a live Guard (its mapping is being read).
        say(unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes());
        say(
            b": the store file shrank or changed while it was being read (a store's files \
must not be modified while a reader has them open); run `slotcon-ingest verify` on the store\n",
        );
        // SAFETY: _exit is async-signal-safe; nothing else is safe to run here.
        unsafe { libc::_exit(1) };
    }
    // Not ours: put the previous action back and return; the access faults again and
    // meets it (the default action kills the process, as it would have without us).
    let previous = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `previous` is null or the action saved by `install`; sigaction is
    // async-signal-safe.
    unsafe {
        if previous.is_null() {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &dfl, std::ptr::null_mut());
        } else {
            libc::sigaction(signal, previous, std::ptr::null_mut());
        }
    }
}
