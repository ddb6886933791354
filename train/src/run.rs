//! A whole training run over a shard store: the loader, the steps, `metrics.jsonl`,
//! atomic checkpoints and exact resume.
//!
//! In a distributed run (`crate::dist`) every rank runs this loop on its share of each
//! global batch (`batch_size / world` images, the loader's rank share), and rank 0 alone
//! writes the run folder: config, metrics and checkpoints. Every rank reads the folder to
//! resume (a folder all ranks see, as the reference's `--resume` needs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::prelude::*;
use serde::Serialize;
use slotcon_augment::LoaderBuilder;
use slotcon_shards::ShardReader;

use crate::checkpoint::{self, checkpoints};
use crate::config::TrainConfig;
use crate::dist;
use crate::run_folder::{self, Intent};
use crate::tensorboard::{EventWriter, TB_DIR};
use slotcon_shards::io_err as io;

use crate::error::{Error, Result};
use crate::trainer::{Asks, StepMetrics, Trainer};

/// How to run (everything else is in the [`TrainConfig`]).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The shard store: a folder, or a URL (`s3://bucket/prefix/`, `gs://`, `az://`,
    /// `https://`).
    pub shards: PathBuf,
    /// How a remote store is read: its cache, its limit, the deadline of a request.
    pub store: slotcon_shards::RemoteSettings,
    /// The run directory.
    pub out: PathBuf,
    /// Loader worker threads.
    pub workers: usize,
    /// Stop after this many steps in all (a short run), checkpointing there.
    pub max_steps: Option<u64>,
    /// Continue from `out/checkpoints/current`.
    pub resume: bool,
    /// Start over in an `out` that already holds a run, deleting it first.
    pub force: bool,
    /// Set from anywhere (a signal handler: `slotcon-train`'s stop signals) to stop the
    /// run: every rank finishes the step it is in, or the next one, the same step on every
    /// rank ([`Asks`]); rank 0 writes a checkpoint there, and [`train`] returns with
    /// [`Finished::stopped`]. A run resumed from it continues exactly.
    pub stop: Option<Arc<AtomicBool>>,
    /// Also write the checkpoint (`checkpoints/current`) whenever this long has passed
    /// since the last one by rank 0's clock, at a step every rank agrees on, besides the
    /// end of every epoch.
    pub save_every: Option<Duration>,
}

/// How [`train`] ended.
pub struct Finished {
    /// The trainer after the last step.
    pub trainer: Trainer,
    /// The run stopped before its last step, on [`RunOptions::stop`], with a checkpoint
    /// at [`Trainer::step`].
    pub stopped: bool,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsLine {
    /// The step's numbers.
    #[serde(flatten)]
    pub step: StepMetrics,
    /// Two-view samples per second over this step, for the whole world.
    pub img_per_sec: f64,
    /// Fraction of the step spent waiting for the loader (rank 0's).
    pub data_wait_frac: f64,
    /// Processes training together.
    pub world_size: usize,
    /// Milliseconds rank 0 spent summing gradients over the ranks (0 in a world of one).
    pub grad_sync_ms: f64,
    /// A remote store's counters since the run (this process) started, rank 0's: requests,
    /// bytes fetched and used, cache hits, retries, the loader's wait. Absent for a folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<slotcon_shards::RemoteStats>,
}

impl MetricsLine {
    /// The line's numbers as TensorBoard scalars: `(tag, value)`.
    pub fn scalars(&self) -> [(&'static str, f64); 10] {
        let s = &self.step;
        [
            ("loss/total", s.loss),
            ("loss/group", s.loss_group),
            ("loss/contrast", s.loss_contrast),
            ("optim/lr", s.lr),
            ("optim/teacher_momentum", s.momentum),
            ("slots/active_per_image", s.active_slots_per_image),
            ("slots/masked_pairs", s.masked_pairs as f64),
            ("speed/img_per_sec", self.img_per_sec),
            ("speed/data_wait_frac", self.data_wait_frac),
            ("speed/grad_sync_ms", self.grad_sync_ms),
        ]
    }
}

/// `metrics.jsonl` as it is written: a step's losses arrive one step after its timing
/// (see [`Trainer::train_step`]), so the timings wait here for them.
struct MetricsLog {
    /// The file (rank 0), or none (the other ranks).
    file: Option<std::fs::File>,
    /// The same numbers as TensorBoard scalars, in `out/tb/` (rank 0).
    tb: Option<EventWriter>,
    path: PathBuf,
    /// `(img_per_sec, data_wait_frac, grad_sync_ms)` of the steps whose metrics have not
    /// arrived.
    timing: std::collections::VecDeque<(f64, f64, f64)>,
    /// The store, when remote (its counters go into each line).
    reader: Option<Arc<ShardReader>>,
}

impl MetricsLog {
    /// Writes the line of `done` (a step's metrics, once known) and shows it to `on_step`.
    fn write(
        &mut self,
        done: Option<StepMetrics>,
        on_step: &mut dyn FnMut(&MetricsLine, u64),
        last: u64,
    ) -> Result<()> {
        let Some(step) = done else {
            return Ok(());
        };
        let (img_per_sec, data_wait_frac, grad_sync_ms) =
            self.timing.pop_front().unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let line = MetricsLine {
            step,
            img_per_sec,
            data_wait_frac,
            world_size: dist::world_size(),
            grad_sync_ms,
            remote: self.reader.as_ref().and_then(|r| r.remote_stats()),
        };
        if let Some(file) = self.file.as_mut() {
            writeln!(file, "{}", serde_json::to_string(&line).expect("json")).map_err(io(&self.path))?;
        }
        if let Some(tb) = self.tb.as_mut() {
            tb.scalars(line.step.step, &line.scalars())?;
        }
        on_step(&line, last);
        Ok(())
    }

    /// Opens `out/metrics.jsonl` on rank 0, dropping the lines of steps at or after `step`,
    /// and a new TensorBoard event file in `out/tb/` that drops them there too.
    fn open(out: &Path, step: u64, reader: &Arc<ShardReader>) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        let (file, tb) = if dist::rank() == 0 {
            truncate_metrics(&path, step)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            (Some(file), Some(EventWriter::create(&out.join(TB_DIR), step)?))
        } else {
            (None, None)
        };
        Ok(MetricsLog {
            file,
            tb,
            path,
            timing: Default::default(),
            reader: reader.is_remote().then(|| reader.clone()),
        })
    }
}

/// This rank's share of a global batch of `batch` images.
fn rank_batch(batch: usize) -> Result<usize> {
    let world = dist::world_size();
    if !batch.is_multiple_of(world) {
        return Err(Error::UnevenBatch { batch, world });
    }
    Ok(batch / world)
}

/// Trains on `device` (an autodiff device); `on_step` sees every step's metrics. In a
/// distributed run, every rank calls this with the same settings.
pub fn train(
    cfg: TrainConfig,
    opts: &RunOptions,
    device: &Device,
    on_step: &mut dyn FnMut(&MetricsLine, u64),
    on_note: &mut dyn FnMut(&str),
) -> Result<Finished> {
    cfg.validate()?;
    let reader = open_store(&opts.shards, &opts.store)?;
    let steps_per_epoch = reader.len() / cfg.data.batch_size as u64;
    if steps_per_epoch == 0 {
        return Err(Error::Store {
            path: opts.shards.clone(),
            reason: format!("{} images make no batch of {}", reader.len(), cfg.data.batch_size),
        });
    }
    let rank_batch = rank_batch(cfg.data.batch_size)?;
    dist::agree(&settings(&cfg, opts, &reader), device)?;
    // Rank 0 holds the folder's lock until the run ends.
    let mut _folder = None;
    if dist::rank() == 0 {
        let intent = match (opts.resume, opts.force) {
            (true, _) => Intent::Resume,
            (false, true) => Intent::Replace,
            (false, false) => Intent::Start,
        };
        _folder = Some(run_folder::open(&opts.out, intent, true, on_note)?);
        if opts.resume {
            for note in checkpoint::recover(&opts.out)? {
                on_note(&note);
            }
        } else {
            cfg.save(&opts.out.join("config.json"))?;
        }
    }
    // The other ranks read the folder once rank 0 has made it ready.
    dist::barrier();
    let mut trainer = Trainer::new(cfg.clone(), device, steps_per_epoch);
    if opts.resume {
        trainer = resume(trainer, &opts.out)?;
    }
    trainer.broadcast();
    let last = opts.max_steps.unwrap_or(u64::MAX).min(trainer.total_steps());
    let mut log = MetricsLog::open(&opts.out, trainer.step, &reader)?;
    let aug = cfg.data.augment();
    let mut previous = None;
    let (mut saved_at, mut stopped) = (Instant::now(), false);
    while trainer.step < last && !stopped {
        let (epoch, start) = (trainer.step / steps_per_epoch, trainer.step % steps_per_epoch);
        // Each epoch takes over the last one's batch buffers.
        let mut loader = LoaderBuilder::new(Arc::clone(&reader))
            .augment(aug.clone())
            .order(cfg.data.order())
            .batch_size(rank_batch)
            .distributed(dist::rank(), dist::world_size())
            .workers(opts.workers)
            .seed(cfg.seed)
            .epoch(epoch)
            .start_step(start)
            .build_after(previous.take())?;
        let mut wait_start = Instant::now();
        for batch in loader.by_ref() {
            let batch = batch?;
            let waited = wait_start.elapsed().as_secs_f64();
            let t = Instant::now();
            trainer.ask(asks(opts, saved_at));
            let done = trainer.train_step(&batch)?;
            let busy = t.elapsed().as_secs_f64();
            let images = (batch.len() * dist::world_size()) as f64;
            log.timing.push_back((
                images / (waited + busy),
                waited / (waited + busy),
                trainer.last_grad_sync_ms(),
            ));
            log.write(done, on_step, last)?;
            let agreed = trainer.agreed();
            if agreed.stop && trainer.step < last {
                on_note(&format!(
                    "stop asked (a stop signal on a rank): stopping after step {} with a checkpoint",
                    trainer.step
                ));
                stopped = true;
            }
            if stopped || trainer.step >= last {
                break;
            }
            if agreed.save && !trainer.step.is_multiple_of(steps_per_epoch) {
                saved_at = save_here(&mut trainer, &mut log, &opts.out, false, on_step, last)?;
            }
            wait_start = Instant::now();
        }
        previous = Some(loader);
        let epoch_done = trainer.step.is_multiple_of(steps_per_epoch);
        let milestone = epoch_done && (trainer.step / steps_per_epoch).is_multiple_of(cfg.save_every_epochs);
        saved_at = save_here(&mut trainer, &mut log, &opts.out, milestone, on_step, last)?;
    }
    if let Some(file) = log.file.as_mut() {
        file.flush().map_err(io(&log.path))?;
    }
    // No rank ends before rank 0 has written the last checkpoint.
    dist::barrier();
    Ok(Finished { trainer, stopped })
}

/// The checkpoint at the trainer's step, on every rank together: the last step's losses
/// flushed (checked finite before anything is saved) and logged, then rank 0 writes
/// `current` (and the epoch's milestone when `milestone`). Returns when it was written.
fn save_here(
    trainer: &mut Trainer,
    log: &mut MetricsLog,
    out: &Path,
    milestone: bool,
    on_step: &mut dyn FnMut(&MetricsLine, u64),
    last: u64,
) -> Result<Instant> {
    log.write(trainer.flush()?, on_step, last)?;
    if dist::rank() == 0 {
        checkpoint::save(trainer, out, milestone)?;
    }
    Ok(Instant::now())
}

/// This rank's asks for the next step: a stop when [`RunOptions::stop`] is set, a
/// checkpoint (rank 0 alone) when [`RunOptions::save_every`] has passed since `saved_at`.
fn asks(opts: &RunOptions, saved_at: Instant) -> Asks {
    Asks {
        stop: opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)),
        save: dist::rank() == 0 && opts.save_every.is_some_and(|every| saved_at.elapsed() >= every),
    }
}

/// What every rank must share: each config field, the store (its manifest), the run
/// folder, the run's flags and the job its launcher names ([`dist::agree`]).
fn settings(cfg: &TrainConfig, opts: &RunOptions, reader: &ShardReader) -> Vec<dist::Setting> {
    let setting = |name: &str, value: String| dist::Setting {
        name: name.to_string(),
        value,
    };
    let fields = serde_json::to_value(cfg).ok();
    let fields = fields.as_ref().and_then(|v| v.as_object());
    let mut out: Vec<dist::Setting> = fields
        .into_iter()
        .flatten()
        .map(|(k, v)| setting(k, v.to_string()))
        .collect();
    let manifest = serde_json::to_string(reader.manifest()).unwrap_or_default();
    out.push(setting("the store's manifest", manifest));
    let folder = std::path::absolute(&opts.out).unwrap_or_else(|_| opts.out.clone());
    out.push(setting("--out", folder.display().to_string()));
    out.push(setting("--max-steps", format!("{:?}", opts.max_steps)));
    out.push(setting("--resume", opts.resume.to_string()));
    out.push(setting("--force", opts.force.to_string()));
    out.push(setting("--save-every-minutes", format!("{:?}", opts.save_every)));
    let job = dist::job().unwrap_or("no job variable set").to_string();
    out.push(setting(
        "the job (SLOTCON_JOB_ID, TORCHELASTIC_RUN_ID, SLURM_JOB_ID)",
        job,
    ));
    out
}

fn open_store(shards: &Path, store: &slotcon_shards::RemoteSettings) -> Result<Arc<ShardReader>> {
    let reader = ShardReader::open_with(shards, store).map_err(|source| Error::OpenStore {
        path: shards.to_path_buf(),
        source,
    })?;
    if reader.is_empty() {
        return Err(Error::Store {
            path: shards.to_path_buf(),
            reason: "the shard store holds no image".into(),
        });
    }
    Ok(Arc::new(reader))
}

/// Why the store `reader` (at `shards`) cannot make one batch of `batch` images, if it
/// cannot.
pub fn short_of_a_batch(reader: &ShardReader, shards: &Path, batch: usize) -> Option<String> {
    (batch as u64 > reader.len()).then(|| {
        format!(
            "{} holds {} images, fewer than one batch",
            shards.display(),
            reader.len()
        )
    })
}

/// Loads the run's current checkpoint (which rank 0 has recovered first).
fn resume(trainer: Trainer, out: &Path) -> Result<Trainer> {
    let dir = checkpoints(out);
    let current = dir.join("current");
    if !current.exists() {
        return Err(Error::Checkpoint {
            path: dir,
            reason: "no checkpoint to resume from".into(),
        });
    }
    checkpoint::verify(&current)?;
    let saved = TrainConfig::load(&current.join("config.json"))?;
    if saved != trainer.cfg {
        return Err(Error::Checkpoint {
            path: current,
            reason: format!(
                "the checkpoint was made with another config: {}",
                config_diff(&saved, &trainer.cfg)
            ),
        });
    }
    let store_steps = trainer.steps_per_epoch();
    let trainer = trainer.load(&current)?;
    if trainer.steps_per_epoch() != store_steps {
        return Err(Error::Checkpoint {
            path: current,
            reason: format!(
                "the run has {} steps per epoch, this store and batch size make {store_steps}: resume on the \
                 store it was trained on (an imported run takes its steps per epoch from the official \
                 checkpoint, or from slotcon-import --steps-per-epoch)",
                trainer.steps_per_epoch()
            ),
        });
    }
    Ok(trainer)
}

/// The fields where `saved` and `asked` differ: `batch_size 32 (asked 16), ...`.
pub fn config_diff(saved: &TrainConfig, asked: &TrainConfig) -> String {
    let (a, b) = (
        serde_json::to_value(saved).expect("json"),
        serde_json::to_value(asked).expect("json"),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return String::new();
    };
    let fields: Vec<String> = (a.iter())
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k} {v} (asked {})", b.get(k).unwrap_or(&serde_json::Value::Null)))
        .collect();
    fields.join(", ")
}

/// Drops `metrics.jsonl` lines of steps at or after `step` (they are redone on resume).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s < step)
        })
        .collect();
    if kept.len() == text.lines().count() && (text.is_empty() || text.ends_with('\n')) {
        return Ok(()); // nothing to drop
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    // A temporary file renamed over the old one: a kill or a full disk here leaves the
    // old metrics or the new, never a file cut short.
    Ok(slotcon_shards::format::write_atomic(path, out.as_bytes())?)
}
