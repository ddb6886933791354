//! End-to-end tests: the release binaries on real data (`../shared/data/coco128`) and on
//! generated bad files, checked from Python with pyarrow, DuckDB, datasets and Pillow.
//!
//! Run with `scripts/test.sh` (which builds the binaries and the venv first).

mod augment;
mod checkpoint;
mod cli;
mod decoder_state;
mod distributed;
mod docs;
mod eval;
mod export;
mod hosts;
mod ingest;
mod larger_than_memory;
mod loader;
mod official;
mod precision;
mod preemption;
mod remote;
mod remote_cli;
mod resume;
mod run_folder;
mod sampler;
mod settings;
mod store;
mod tensorboard;
mod train;
mod trainer;
