//! The remote store's counters: what the loader fetched, from where, and how long its
//! workers waited for it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a remote store's counters since it was opened (one process).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RemoteStats {
    /// GET requests answered (ranged reads of blocks, plus the manifest and indexes).
    pub requests: u64,
    /// Bytes those requests returned.
    pub bytes_fetched: u64,
    /// Payload bytes handed to readers (each sample's length, at each read).
    pub bytes_used: u64,
    /// Samples read.
    pub samples: u64,
    /// Blocks fetched from the store.
    pub blocks_fetched: u64,
    /// Of those, fetched ahead by the read-ahead before a worker asked.
    pub blocks_ahead: u64,
    /// Blocks found in the local cache, verified and mapped.
    pub cache_hits: u64,
    /// Cached blocks that failed verification (short, or a sample's CRC-32C), deleted and
    /// fetched again.
    pub cache_corrupt: u64,
    /// Blocks this process evicted from the cache to make room.
    pub evictions: u64,
    /// Blocks that did not fit in the cache without evicting one needed sooner: they
    /// were used from memory and dropped.
    pub uncached: u64,
    /// Requests retried after a transient failure (5xx, reset, timeout, short body).
    pub retries: u64,
    /// Seconds the readers spent waiting for a block (a fetch, or the read-ahead's).
    pub wait_seconds: f64,
}

impl RemoteStats {
    /// Bytes fetched per payload byte used (1 when every fetched byte was used once).
    pub fn fetched_per_used(&self) -> f64 {
        self.bytes_fetched as f64 / self.bytes_used.max(1) as f64
    }

    /// The counts since `earlier` (a snapshot of the same store).
    pub fn since(&self, earlier: &RemoteStats) -> RemoteStats {
        RemoteStats {
            requests: self.requests - earlier.requests,
            bytes_fetched: self.bytes_fetched - earlier.bytes_fetched,
            bytes_used: self.bytes_used - earlier.bytes_used,
            samples: self.samples - earlier.samples,
            blocks_fetched: self.blocks_fetched - earlier.blocks_fetched,
            blocks_ahead: self.blocks_ahead - earlier.blocks_ahead,
            cache_hits: self.cache_hits - earlier.cache_hits,
            cache_corrupt: self.cache_corrupt - earlier.cache_corrupt,
            evictions: self.evictions - earlier.evictions,
            uncached: self.uncached - earlier.uncached,
            retries: self.retries - earlier.retries,
            wait_seconds: self.wait_seconds - earlier.wait_seconds,
        }
    }

    /// Requests per sample read.
    pub fn requests_per_sample(&self) -> f64 {
        self.requests as f64 / self.samples.max(1) as f64
    }
}

/// The live counters, updated from workers, fetch tasks and the read-ahead.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_used: AtomicU64,
    pub samples: AtomicU64,
    pub blocks_fetched: AtomicU64,
    pub blocks_ahead: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_corrupt: AtomicU64,
    pub evictions: AtomicU64,
    pub uncached: AtomicU64,
    pub retries: AtomicU64,
    pub wait_ns: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> RemoteStats {
        let get = |c: &AtomicU64| c.load(Relaxed);
        RemoteStats {
            requests: get(&self.requests),
            bytes_fetched: get(&self.bytes_fetched),
            bytes_used: get(&self.bytes_used),
            samples: get(&self.samples),
            blocks_fetched: get(&self.blocks_fetched),
            blocks_ahead: get(&self.blocks_ahead),
            cache_hits: get(&self.cache_hits),
            cache_corrupt: get(&self.cache_corrupt),
            evictions: get(&self.evictions),
            uncached: get(&self.uncached),
            retries: get(&self.retries),
            wait_seconds: get(&self.wait_ns) as f64 * 1e-9,
        }
    }
}
