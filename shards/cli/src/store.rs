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
    /// One of object_store's options for the store's kind, over its environment
    /// variables; repeat for several: for S3 endpoint, region, access_key_id,
    /// secret_access_key, allow_http; for HTTP allow_invalid_certificates, proxy_url
    /// (fsspec's storage_options).
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = key_value)]
    pub storage_options: Vec<(String, String)>,
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
        for (k, v) in &self.storage_options {
            s.storage_options.insert(k.clone(), v.clone());
        }
    }
}

/// A `KEY=VALUE` flag (the value may hold `=`); for `value_parser`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A size flag: bytes, or with a unit; for `value_parser`.
pub fn size(s: &str) -> Result<u64, String> {
    parse_size(s)
}
