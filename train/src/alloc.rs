//! glibc malloc settings for a training process.
//!
//! LibTorch allocates every activation and gradient with `malloc`. With glibc's defaults a
//! freed block of a few MiB goes back to the kernel (an `munmap`, or a heap trim) and the
//! next step's allocation of the same size page-faults it in again, zeroed: about a tenth
//! of a CPU step went to the kernel that way. [`retain_freed_memory`] raises the
//! thresholds so that freed blocks stay in the heap for the next step. The same settings
//! as environment variables ([`env`](fn@env)) give a child process (the PyTorch reference of
//! `slotcon-train-bench`) the same allocator.

use std::ffi::c_int;

/// `(glibc environment variable, mallopt parameter, value)`: blocks up to 32 MiB (glibc's
/// maximum for this setting) come from the heap, the heap is trimmed only above 1 GiB
/// free, and grows 64 MiB at a time.
pub const SETTINGS: [(&str, c_int, c_int); 3] = [
    ("MALLOC_MMAP_THRESHOLD_", -3, 32 << 20),
    ("MALLOC_TRIM_THRESHOLD_", -1, 1 << 30),
    ("MALLOC_TOP_PAD_", -2, 64 << 20),
];

/// [`SETTINGS`] as environment variables for a child process.
pub fn env() -> impl Iterator<Item = (&'static str, String)> {
    SETTINGS.iter().map(|&(name, _, value)| (name, value.to_string()))
}

/// Applies [`SETTINGS`] to this process; false where the C library is not glibc (nothing
/// changes there) or refused a value.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        SETTINGS.iter().all(|&(_, param, value)| {
            // SAFETY: glibc's mallopt takes any parameter and value, is thread-safe, and
            // returns 0 for one it refuses; it touches no memory of ours.
            unsafe { mallopt(param, value) == 1 }
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_every_setting() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(super::retain_freed_memory());
        }
    }
}
