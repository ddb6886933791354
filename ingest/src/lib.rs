//! `slotcon-ingest`: any folder of JPEG/PNG images into a verified slotcon shard store.
//!
//! - [`scan`] finds the images (recursively, sorted by relative path);
//! - [`prepare`] validates one by decoding it fully and produces what is stored;
//! - [`ingest`] runs the whole thing in parallel, writes shards atomically, skips and
//!   reports bad files, and resumes an interrupted run to a byte-identical result;
//! - [`verify`] checks a store's checksums and decodes every image;
//! - [`STORE_LOCK`] keeps a second ingest out of an output folder that one is writing.
//!
//! ```
//! use slotcon_ingest::{ingest, IngestConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root = std::env::temp_dir().join(format!("slotcon-ingest-doc-{}", std::process::id()));
//! let src = root.join("images");
//! std::fs::create_dir_all(&src)?;
//! // One 3x2 gray PNG and one file that only pretends to be a JPEG.
//! let mut png = Vec::new();
//! let mut enc = png::Encoder::new(&mut png, 3, 2);
//! enc.set_color(png::ColorType::Grayscale);
//! enc.write_header()?.write_image_data(&[0, 50, 100, 150, 200, 250])?;
//! std::fs::write(src.join("a.png"), &png)?;
//! std::fs::write(src.join("b.jpg"), b"not really")?;
//!
//! let out = root.join("shards");
//! let report = ingest(&src, &out, &IngestConfig::default(), false, &|_done, _total| {})?;
//! assert_eq!(report.written, 1);
//! assert_eq!(report.skipped[0].path, "b.jpg");
//!
//! let store = slotcon_shards::ShardReader::open(&out)?;
//! assert_eq!(&*store.get(0)?.bytes, &png[..]); // the original bytes, unchanged
//! let check = slotcon_ingest::verify(&out, &Default::default(), 1, &|_done, _total| {})?;
//! assert!(check.problems.is_empty());
//! # std::fs::remove_dir_all(&root)?;
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
pub mod prepare;
mod remote;
pub mod resume;
mod run;
pub mod scan;
mod verify;

pub use config::{IngestConfig, MAX_SHARD_SIZE};
pub use error::{Error, Result};
pub use remote::{default_staging, ingest_to_url};
pub use run::{ingest, ingest_with, IngestReport, OnShard, REPORT_FILE, STORE_LOCK};
pub use verify::{verify, VerifyReport};

/// Progress of a long operation, `(done, total)`, called from any worker thread.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);
