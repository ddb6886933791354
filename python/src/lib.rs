//! `slotcon._native`: slotcon's loader, store and ingest as a Python extension (pyo3),
//! wrapped by the pure-Python `slotcon` package beside it (`python/slotcon/`).
//!
//! ```text
//! import slotcon
//! loader = slotcon.Loader("shards/", batch_size=64, workers=8, seed=0, image_size=224)
//! loader.set_epoch(epoch)
//! for batch in loader:
//!     v1, v2 = batch.views        # numpy uint8 [N, 224, 224, 3] each, no copy
//!     boxes, flips = batch.boxes, batch.flips
//! ```
//!
//! A batch's views stay in the loader's buffer: the arrays keep the batch alive through
//! NumPy's array interface (`__array_interface__`), and the buffer goes back to the loader
//! when the last of them is gone. Waiting for a batch releases the GIL; errors are Python
//! exceptions (`SampleError` names the sample's id and path).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use slotcon_augment::{DataConfig, LoaderBuilder, TwoViewBatch};
use slotcon_shards::ShardReader;

create_exception!(_native, SlotconError, PyException, "An error of slotcon's Rust side.");
create_exception!(
    _native,
    SampleError,
    SlotconError,
    "A sample could not be read or decoded: `.id` and `.path` name it."
);
create_exception!(
    _native,
    SettingsError,
    SlotconError,
    "Loader settings out of their bounds (the loader's own check); `slotcon.SettingsError` is also a ValueError."
);

/// A Rust error as a Python exception; a sample's carries its id and path.
fn to_py(e: slotcon_augment::Error) -> PyErr {
    match e {
        slotcon_augment::Error::Sample { id, path, cause } => {
            let err = SampleError::new_err(format!("sample {id} ({path}): {cause}"));
            Python::attach(|py| {
                let value = err.value(py);
                let _ = value.setattr("id", id);
                let _ = value.setattr("path", path);
            });
            err
        }
        // Settings out of their bounds, which the loader checks (`LoaderBuilder`).
        slotcon_augment::Error::Config(reason) => SettingsError::new_err(format!("loader settings: {reason}")),
        other => SlotconError::new_err(other.to_string()),
    }
}

fn store_err(e: slotcon_shards::Error) -> PyErr {
    SlotconError::new_err(e.to_string())
}

/// A shard store, read-only: `len(store)`, `store[i]` → `(bytes, (width, height), path)`.
#[pyclass(module = "slotcon._native", frozen)]
struct Store {
    reader: Arc<ShardReader>,
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (path, cache=None, cache_limit=None, storage_options=None))]
    fn new(
        path: &Bound<'_, PyAny>,
        cache: Option<PathBuf>,
        cache_limit: Option<u64>,
        storage_options: Option<Options>,
    ) -> PyResult<Self> {
        let reader = open_store(path, cache, cache_limit, storage_options)?;
        Ok(Store {
            reader: Arc::new(reader),
        })
    }

    fn __len__(&self) -> usize {
        self.reader.len() as usize
    }

    /// `(payload bytes, (width, height), source path)` of sample `i`; the payload is the
    /// stored JPEG/PNG, or raw RGB in a raw store.
    fn __getitem__<'py>(&self, py: Python<'py>, i: i64) -> PyResult<(Bound<'py, PyBytes>, (u32, u32), String)> {
        let n = self.reader.len() as i64;
        let id = if i < 0 { i + n } else { i };
        if !(0..n).contains(&id) {
            return Err(PyIndexError::new_err(format!(
                "sample {i} out of range (the store holds {n})"
            )));
        }
        let s = self.reader.get(id as u64).map_err(store_err)?;
        Ok((PyBytes::new(py, &s.bytes), (s.width, s.height), s.path.to_string()))
    }

    /// `"encoded"` or `"raw"`.
    #[getter]
    fn kind(&self) -> String {
        format!("{:?}", self.reader.store()).to_lowercase()
    }
}

/// One epoch's batches of one rank: a Rust `Loader`, built when iteration starts.
///
/// Its state sits behind a mutex, so `close()`, `set_epoch()` or `len()` from another
/// thread wait for a `next()` under way (the GIL released) instead of failing. In a child
/// made by `os.fork()` the worker threads are the parent's, so the child forgets the
/// parent's loaders (never joins them) and builds its own on its next `iter()`.
#[pyclass(module = "slotcon._native", frozen)]
struct Loader {
    /// The settings, at epoch 0 and step 0.
    settings: LoaderBuilder,
    steps: u64,
    state: Mutex<LoaderState>,
}

/// What a [`Loader`] iterates, and where.
struct LoaderState {
    /// The process whose threads these loaders own.
    pid: u32,
    epoch: u64,
    /// Where the next iteration starts; back to 0 once it has started.
    start_step: u64,
    /// A loader built for `(epoch, start_step)` and not iterated yet.
    ready: Option<(u64, u64, slotcon_augment::Loader)>,
    /// The running iteration has not yielded a batch yet.
    fresh: bool,
    /// The iteration under way.
    running: Option<slotcon_augment::Loader>,
    /// A finished or stopped loader, whose buffers the next one takes over.
    previous: Option<slotcon_augment::Loader>,
    /// The process forked while an iteration was under way: its next `next()` says so.
    forked_mid_epoch: bool,
}

/// What one `next()` got.
enum Next {
    Batch(TwoViewBatch),
    Done,
    Forked,
}

#[pymethods]
impl Loader {
    #[new]
    #[pyo3(signature = (shards, batch_size, workers=None, seed=0, image_size=224, min_scale=0.08, rank=0, world_size=1, prefetch=2, cache=None, cache_limit=None, order="global", storage_options=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shards: &Bound<'_, PyAny>,
        batch_size: usize,
        workers: Option<usize>,
        seed: u64,
        image_size: u32,
        min_scale: f64,
        rank: usize,
        world_size: usize,
        prefetch: usize,
        cache: Option<PathBuf>,
        cache_limit: Option<u64>,
        order: &str,
        storage_options: Option<Options>,
    ) -> PyResult<Self> {
        let reader = open_store(shards, cache, cache_limit, storage_options)?;
        let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let order = match order {
            "global" => slotcon_augment::OrderKind::Global,
            "block" => slotcon_augment::OrderKind::Block,
            other => {
                return Err(SettingsError::new_err(format!(
                    "loader settings: order {other:?} is not \"global\" or \"block\""
                )))
            }
        };
        let data = DataConfig {
            batch_size,
            image_size,
            min_scale,
            order,
            order_block: slotcon_augment::DEFAULT_ORDER_BLOCK,
            order_window: slotcon_augment::DEFAULT_ORDER_WINDOW,
        };
        let settings = LoaderBuilder::new(Arc::new(reader))
            .augment(data.augment())
            .order(data.order())
            .batch_size(batch_size)
            .workers(workers)
            .seed(seed)
            .distributed(rank, world_size)
            .prefetch(prefetch);
        // Every setting is checked now; the loader serves the first iteration.
        let first = settings.clone().build().map_err(to_py)?;
        Ok(Loader {
            settings,
            steps: first.steps_per_epoch(),
            state: Mutex::new(LoaderState {
                pid: std::process::id(),
                epoch: 0,
                start_step: 0,
                ready: Some((0, 0, first)),
                fresh: false,
                running: None,
                previous: None,
                forked_mid_epoch: false,
            }),
        })
    }

    /// The epoch the next iteration runs (as `DistributedSampler.set_epoch`); stops one
    /// that is running.
    fn set_epoch(&self, py: Python<'_>, epoch: u64) {
        self.with_state(py, |s| {
            s.retire();
            s.epoch = epoch;
        })
    }

    /// The step the next iteration starts at (resuming mid-epoch); stops one that is
    /// running. It applies to that one iteration: the ones after it start at step 0.
    fn set_start_step(&self, py: Python<'_>, step: u64) {
        self.with_state(py, |s| {
            s.retire();
            s.start_step = step;
        })
    }

    /// Full batches per epoch for this rank.
    fn __len__(&self) -> usize {
        self.steps as usize
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        let this = &*slf;
        slf.py()
            .detach(|| {
                let mut s = this.lock();
                // `iter()` of an iteration that has not yielded yet is that iteration
                // (`for b in iter(loader)` calls it twice), not a new one.
                if s.running.is_some() && s.fresh {
                    return Ok(());
                }
                s.retire();
                let loader = s.take_loader(&this.settings)?;
                s.running = Some(loader);
                s.fresh = true;
                s.start_step = 0;
                Ok(())
            })
            .map_err(to_py)?;
        Ok(slf)
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let next = py.detach(|| {
            let mut s = self.lock();
            if std::mem::take(&mut s.forked_mid_epoch) {
                return Ok(Next::Forked);
            }
            s.fresh = false;
            let Some(loader) = s.running.as_mut() else {
                return Ok(Next::Done);
            };
            match loader.next() {
                None => {
                    s.retire();
                    Ok(Next::Done)
                }
                Some(Err(e)) => {
                    s.running = None;
                    Err(e)
                }
                Some(Ok(batch)) => Ok(Next::Batch(batch)),
            }
        });
        match next.map_err(to_py)? {
            Next::Done => Ok(None),
            Next::Forked => Err(SlotconError::new_err(
                "this process was forked while the loader was iterating, and its worker threads \
                 stayed in the parent: start a new iteration (iter(loader)) in the child",
            )),
            Next::Batch(batch) => {
                // A signal handler's own exception (a SIGTERM handler's SystemExit, say).
                py.check_signals()?;
                Ok(Some(Batch { batch }))
            }
        }
    }

    /// Stops the workers of a running iteration and joins them (also when the loader is
    /// garbage-collected).
    fn close(&self, py: Python<'_>) {
        self.with_state(py, |s| {
            s.running = None;
            s.ready = None;
            s.previous = None;
        })
    }

    /// Whether an iteration's worker threads are running.
    #[getter]
    fn running(&self, py: Python<'_>) -> bool {
        self.with_state(py, |s| s.running.is_some())
    }
}

impl Loader {
    /// The state, for this process: in a child made by `fork`, without the parent's loaders.
    fn lock(&self) -> std::sync::MutexGuard<'_, LoaderState> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.adopt();
        s
    }

    /// Runs `f` on the state with the GIL released (waiting for a `next()` under way in
    /// another thread, or joining worker threads, never holds it).
    fn with_state<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut LoaderState) -> T + Send) -> T {
        py.detach(|| f(&mut self.lock()))
    }
}

impl LoaderState {
    /// After a `fork`, forgets the parent's loaders: their threads are not in this process,
    /// and dropping them would wait for those threads forever.
    fn adopt(&mut self) {
        let pid = std::process::id();
        if self.pid == pid {
            return;
        }
        self.pid = pid;
        self.forked_mid_epoch = self.running.is_some();
        std::mem::forget(self.ready.take());
        std::mem::forget(self.running.take());
        std::mem::forget(self.previous.take());
    }

    /// The running iteration becomes the previous one (its buffers serve the next).
    fn retire(&mut self) {
        if let Some(loader) = self.running.take() {
            self.previous = Some(loader);
        }
    }

    /// The loader for the next iteration: the one built ahead if it fits, else a new one
    /// that takes over the previous one's buffers (as persistent DataLoader workers).
    fn take_loader(&mut self, settings: &LoaderBuilder) -> slotcon_augment::Result<slotcon_augment::Loader> {
        if let Some((epoch, start, loader)) = self.ready.take() {
            if (epoch, start) == (self.epoch, self.start_step) {
                return Ok(loader);
            }
            self.previous = Some(loader);
        }
        let builder = settings.clone().epoch(self.epoch).start_step(self.start_step);
        builder.build_after(self.previous.take())
    }
}

impl Drop for LoaderState {
    fn drop(&mut self) {
        // In a forked child: forget, never join, the parent's threads.
        self.adopt();
    }
}

/// A path argument: `str`, `bytes` (the file system's own bytes) or `os.PathLike`.
/// object_store's options for a URL's kind (`RemoteSettings::storage_options`).
type Options = std::collections::BTreeMap<String, String>;

/// Opens a store given as a path or a URL; `cache`, `cache_limit` (bytes) and
/// `storage_options` apply to a URL, over the defaults (`$SLOTCON_CACHE`, the store's
/// size, the environment).
fn open_store(
    path: &Bound<'_, PyAny>,
    cache: Option<PathBuf>,
    cache_limit: Option<u64>,
    storage_options: Option<Options>,
) -> PyResult<ShardReader> {
    let settings = slotcon_shards::RemoteSettings {
        cache,
        cache_limit,
        storage_options: storage_options.unwrap_or_default(),
        ..Default::default()
    };
    ShardReader::open_with(path_arg(path)?, &settings).map_err(store_err)
}

fn path_arg(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        use std::os::unix::ffi::OsStrExt;
        return Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes.as_bytes())));
    }
    obj.extract::<PathBuf>()
}

/// One batch, lent by the loader: its buffer returns when this object and every array
/// made from it are gone.
#[pyclass(module = "slotcon._native", frozen)]
struct Batch {
    batch: TwoViewBatch,
}

#[pymethods]
impl Batch {
    fn __len__(&self) -> usize {
        self.batch.len()
    }

    /// Epoch and step of this batch.
    #[getter]
    fn epoch(&self) -> u64 {
        self.batch.epoch()
    }

    #[getter]
    fn step(&self) -> u64 {
        self.batch.step()
    }

    /// View size in pixels.
    #[getter]
    fn size(&self) -> usize {
        self.batch.size()
    }

    /// Sample ids, as bytes of little-endian u64 (the package makes them an array).
    fn ids_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes: Vec<u8> = self.batch.ids().iter().flat_map(|i| i.to_le_bytes()).collect();
        PyBytes::new(py, &bytes)
    }

    /// Boxes `[N, 2, 4]` (f32, each view's normalised `x1, y1, x2, y2` of the overlap,
    /// after flips) as little-endian bytes.
    fn boxes_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes: Vec<u8> = self
            .batch
            .boxes()
            .iter()
            .flatten()
            .flat_map(|b| b.0)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        PyBytes::new(py, &bytes)
    }

    /// Crops `[N, 2, 4]` (u32 `i, j, h, w`: top, left, height, width in the source
    /// image, as torchvision's `RandomResizedCrop.get_params`) as little-endian bytes.
    fn crops_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes: Vec<u8> = (self.batch.crops().iter().flatten())
            .flat_map(|c| [c.i, c.j, c.h, c.w])
            .flat_map(|v| v.to_le_bytes())
            .collect();
        PyBytes::new(py, &bytes)
    }

    /// Flips `[N, 2]` as bytes of 0/1.
    fn flips_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes: Vec<u8> = self.batch.flips().iter().flatten().map(|f| u8::from(*f)).collect();
        PyBytes::new(py, &bytes)
    }

    /// `(id, path, reason)` of each sample left out of this batch.
    fn skipped(&self) -> Vec<(u64, String, String)> {
        self.batch
            .skipped()
            .iter()
            .map(|s| (s.id, s.path.clone(), s.reason.clone()))
            .collect()
    }

    /// View `v` (0 or 1) without a copy: an object with NumPy's array interface
    /// (`numpy.asarray(batch.view(0))` is `uint8 [N, S, S, 3]`), keeping the batch alive.
    fn view(slf: Bound<'_, Self>, v: usize) -> PyResult<View> {
        if v > 1 {
            return Err(PyIndexError::new_err(format!("view {v}: a batch has views 0 and 1")));
        }
        Ok(View { batch: slf.unbind(), v })
    }
}

/// One view of a batch, exposed through `__array_interface__`.
#[pyclass(module = "slotcon._native", frozen)]
struct View {
    batch: Py<Batch>,
    v: usize,
}

#[pymethods]
impl View {
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let batch = &self.batch.get().batch;
        let data = batch.views()[self.v];
        let (n, s) = (batch.len(), batch.size());
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", (n, s, s, 3))?;
        d.set_item("typestr", "|u1")?;
        // Writable: the buffer is this batch's alone until the batch and every array made
        // from it are gone (writes change this batch only); `torch.from_numpy` wants that.
        d.set_item("data", (data.as_ptr() as usize, false))?;
        Ok(d)
    }
}

/// Ingests the images under `src` into the store `out` (resuming a partial run; `force`
/// starts over); returns the report as a dict. `progress(done, total)` is called from the
/// workers, with the GIL; the first exception it raises ends its calls and is raised when
/// the ingest returns (the store is then complete, or resumable as any interrupted run).
/// `threads` is 0 (every core) or at most the binaries' bound (4 per core, at most 256).
#[pyfunction]
#[pyo3(signature = (src, out, force=false, raw=false, threads=0, progress=None))]
fn ingest(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    force: bool,
    raw: bool,
    threads: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let (src, out) = (path_arg(src)?, path_arg(out)?);
    let mut cfg = slotcon_ingest::IngestConfig::default().with_threads(threads);
    if raw {
        cfg.store = slotcon_shards::StoreKind::Raw;
    }
    cfg.validate().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let report = py.detach(|| {
        let call = |done: u64, total: u64| {
            let Some(f) = &progress else { return };
            let mut raised = raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if raised.is_none() {
                *raised = Python::attach(|py| f.call1(py, (done, total)).err());
            }
        };
        slotcon_ingest::ingest(&src, &out, &cfg, force, &call)
    });
    if let Some(e) = raised.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(e);
    }
    let report = report.map_err(|e| SlotconError::new_err(e.to_string()))?;
    let text = serde_json::to_string(&report).map_err(|e| SlotconError::new_err(e.to_string()))?;
    let json = py.import("json")?;
    Ok(json.call_method1("loads", (text,))?.unbind())
}

/// CRC-32C of `data` appended to `crc` (the checksum `slotcon-bench loader` reports).
#[pyfunction]
#[pyo3(name = "crc32c", signature = (data, crc=0))]
fn crc32c_of(data: &[u8], crc: u32) -> u32 {
    ::crc32c::crc32c_append(crc, data)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()?;
    m.add_class::<Loader>()?;
    m.add_class::<Batch>()?;
    m.add_class::<View>()?;
    m.add_function(wrap_pyfunction!(ingest, m)?)?;
    m.add_function(wrap_pyfunction!(crc32c_of, m)?)?;
    m.add("SlotconError", m.py().get_type::<SlotconError>())?;
    m.add("SampleError", m.py().get_type::<SampleError>())?;
    m.add("SettingsError", m.py().get_type::<SettingsError>())?;
    Ok(())
}
