//! `IngestConfig`: what `slotcon-ingest` does to each image.

use serde::{Deserialize, Serialize};
use slotcon_shards::StoreKind;

use crate::Error;

/// Ingest settings. Everything that changes the bytes of the store is serialised into
/// the manifest; `threads` is not (the output does not depend on it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestConfig {
    /// `encoded` keeps image files (original bytes unless resized); `raw` stores RGB.
    pub store: StoreKind,
    /// Downscale images whose longer side exceeds this (bicubic, antialiased, as Pillow).
    pub max_side: Option<u32>,
    /// JPEG quality for re-encoded (resized) images.
    pub quality: u8,
    /// Images with more pixels than this are skipped (decompression-bomb limit).
    pub max_pixels: u64,
    /// Target payload bytes per shard; a shard closes once it reaches this.
    pub shard_size: u64,
    /// Worker threads for decoding (0 = every core).
    #[serde(skip)]
    pub threads: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            store: StoreKind::Encoded,
            max_side: None,
            quality: 90,
            max_pixels: slotcon_augment::decode::PIL_MAX_IMAGE_PIXELS,
            shard_size: 256 << 20,
            threads: 0,
        }
    }
}

/// The largest `--shard-size`: a shard is the unit of writing, resuming and (later)
/// fetching; a larger one only makes those coarser.
pub const MAX_SHARD_SIZE: u64 = 16 << 30;

impl IngestConfig {
    /// Sets the number of worker threads (0 = every core).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets the target shard size in bytes.
    pub fn with_shard_size(mut self, bytes: u64) -> Self {
        self.shard_size = bytes;
        self
    }

    /// The settings as recorded in the manifest and the resume state.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("config serialises")
    }

    /// Checks values that would make no sense.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |flag, value: &dyn std::fmt::Display, allowed| {
            Err(Error::Setting {
                flag,
                value: value.to_string(),
                allowed,
            })
        };
        if !(1..=MAX_SHARD_SIZE).contains(&self.shard_size) {
            return bad("--shard-size", &self.shard_size, "1 byte..=16GiB");
        }
        if !(1..=100).contains(&self.quality) {
            return bad("--quality", &self.quality, "1..=100");
        }
        if self.max_side == Some(0) {
            return bad("--max-side", &0, "1.. (a positive side)");
        }
        let most = slotcon_augment::threads::max_threads();
        if self.threads > most {
            return bad("--threads", &self.threads, "0 (every core) to 4 per core, at most 256");
        }
        Ok(())
    }
}
