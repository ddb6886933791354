//! The slotcon shard store: sharded Parquet files with a memory-mapped, zero-copy
//! random-access index. This crate knows bytes, not pixels.
//!
//! - `ShardWriter` appends images to one shard and commits it atomically (feature
//!   `write`, the only part that needs Parquet and Arrow);
//! - [`Manifest`] is the store's table of contents (`manifest.json`, versioned);
//! - [`ShardReader`] maps a store and serves [`Sample`]s as slices of the map;
//! - a store may also sit in object storage (`s3://`, `gs://`, `az://`, `https://`):
//!   [`remote`] fetches its blocks with ranged reads into a local cache, which the
//!   reader then maps the same way;
//! - [`verify_checksums`] checks every file and sample checksum; [`check_files`] is the
//!   cheap check that the files are the ones the manifest lists (sizes, index checksums).
//!
//! The format is documented in one place, [`format`](mod@format).
//!
//! ```
//! use slotcon_shards::{Manifest, NewSample, ShardReader, ShardWriter, StoreKind};
//!
//! # fn main() -> Result<(), slotcon_shards::Error> {
//! let dir = std::env::temp_dir().join(format!("slotcon-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//!
//! // Write one shard of two "images" (any bytes: this crate does not decode).
//! let mut w = ShardWriter::create(&dir, 0, 0, StoreKind::Encoded)?;
//! w.push(NewSample { bytes: b"first image", path: "a.jpg", width: 4, height: 3 })?;
//! w.push(NewSample { bytes: b"second", path: "b/c.png", width: 2, height: 2 })?;
//! let shard = w.finish()?;
//! Manifest::new(StoreKind::Encoded, serde_json::json!({}), vec![shard]).save(&dir)?;
//!
//! // Read them back: `bytes` borrows from the memory map.
//! let reader = ShardReader::open(&dir)?;
//! assert_eq!(reader.len(), 2);
//! let s = reader.get(1)?;
//! assert_eq!((&*s.bytes, s.path, s.width), (&b"second"[..], "b/c.png", 2));
//! assert!(slotcon_shards::verify_checksums(&dir)?.is_empty());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

pub mod ahead;
pub mod blocks;
mod checksum;
mod direct;
mod error;
pub mod format;
pub mod guard;
mod index;
pub mod input;
pub mod lock;
mod planned;
mod reader;
pub mod remote;
mod verify;
#[cfg(feature = "write")]
mod writer;

pub use checksum::{crc32c, format_checksum};
pub use error::{io_err, Error, Result};
pub use format::{Manifest, ShardInfo, StoreKind, FORMAT_VERSION, OLDEST_VERSION};
pub use input::read_bounded;
pub use lock::{FolderLock, LockKind};
pub use reader::{map_file, Extent, Payload, Sample, ShardReader};
pub use remote::{Location, RemoteSettings, RemoteStats};
pub use verify::{check_files, check_shard_files, verify_checksums, Problem};
#[cfg(feature = "write")]
pub use writer::{NewSample, ShardWriter};
