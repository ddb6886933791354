//! The flags every binary that reads a store shares: where a remote store's cache is,
//! how large it may grow, and how long a request may take. `#[command(flatten)]` them
//! beside `--shards`, which takes a folder or a URL (`s3://bucket/prefix/`, `gs://`,
//! `az://`, `https://`).

use std::path::PathBuf;

use slotcon_shards::remote::parse_size;
use slotcon_shards::RemoteSettings;

use crate::flags;

/// A remote store's cache and requests (ignored for a folder).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreArgs {
    /// Cache folder for a remote store; processes naming the same folder share it.
    /// [default: $SLOTCON_CACHE, else $XDG_CACHE_HOME/slotcon, else ~/.cache/slotcon]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// The most the cache folder holds (bytes, or 500M, 20G, 1.5T).
    /// [default: the store's size, at most 3/4 of the free space there]
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub cache_limit: Option<u64>,
    /// The most bytes one request (one cached block) spans. [default: 1M]
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub block_size: Option<u64>,
    /// Seconds one request to a remote store may take, retries included, before it is
    /// an error naming the URL. [default: 60]
    #[arg(long, value_name = "SECONDS", value_parser = flags::positive(86400.0))]
    pub remote_timeout: Option<f64>,
}

impl StoreArgs {
    /// The settings these flags give, over the defaults.
    pub fn settings(&self) -> RemoteSettings {
        let mut s = RemoteSettings::default();
        self.apply(&mut s);
        s
    }

    /// Applies the flags given to `s`.
    pub fn apply(&self, s: &mut RemoteSettings) {
        if let Some(dir) = &self.cache {
            s.cache = Some(dir.clone());
        }
        if let Some(n) = self.cache_limit {
            s.cache_limit = Some(n);
        }
        if let Some(n) = self.block_size {
            s.block_bytes = n;
        }
        if let Some(t) = self.remote_timeout {
            s.timeout_s = t;
        }
    }
}

/// A size flag: bytes, or with a unit; for `value_parser`.
pub fn size(s: &str) -> Result<u64, String> {
    parse_size(s)
}
