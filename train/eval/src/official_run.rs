//! A run to an official SlotCon checkpoint and back ([`export_official`],
//! [`import_official`]); the names and the pickle are [`crate::official`]'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::Serialize;
use slotcon_shards::format::write_atomic;
use slotcon_train::checkpoint;
use slotcon_train::device::DeviceChoice;
use slotcon_train::model::SlotConNet;
use slotcon_train::run_folder::{self, Intent};
use slotcon_train::trainer::{Progress, Trainer};
use slotcon_train::{Optimizer, TrainConfig};

use crate::error::{Error, Result};
use crate::export::{Exported, BN_UPDATES_PER_STEP};
use crate::official::{
    apply_args, f32_values, infer_arch, official_args, our_name, read_pth, steps_per_epoch, to_official, write_pth,
    Meta, OfficialScaler, CENTER, MOMENTUM,
};

/// What an import or an export moved.
#[derive(Clone, Debug, Serialize)]
pub struct Moved {
    /// The run's config.
    pub cfg: TrainConfig,
    /// Steps taken.
    pub step: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
    /// The official `epoch` (epochs finished).
    pub epoch: u64,
    /// Model tensors (parameters, BatchNorm statistics and counters, the centre).
    pub tensors: usize,
    /// Momentum buffers.
    pub momentum: usize,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} run at step {} (epoch {}, {} steps/epoch): {} tensors, {} momentum buffers",
            self.cfg.model.arch.name(),
            self.step,
            self.epoch,
            self.steps_per_epoch,
            self.tensors,
            self.momentum
        )
    }
}

/// `PATH: cause` for an error of this crate or of `slotcon-train`.
fn with_path<E: Into<Error>>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| e.into().with_path(path)
}

/// Checkpoint `name` of `run` with its optimiser, on the CPU.
fn load_trainer(run: &Path, name: &str) -> Result<(Trainer, PathBuf)> {
    let (dir, cfg) = crate::inference::open_checkpoint(run, name)?;
    let device = DeviceChoice::Flex.autodiff()?;
    let trainer = Trainer::new(cfg, &device, 1).load(&dir)?;
    Ok((trainer, dir))
}

/// Writes checkpoint `name` of `run` as the official checkpoint `out` (`python` pickles it).
pub fn export_official(run: &Path, name: &str, out: &Path, python: &Path) -> Result<Moved> {
    let (trainer, dir) = load_trainer(run, name)?;
    let bad = with_path(&dir);
    let progress = trainer.progress().map_err(&bad)?;
    let (step, spe) = (progress.step, progress.steps_per_epoch.max(1));
    let mut tensors = to_official(&trainer.net().to_safetensors().map_err(&bad)?, "", |_| true)?;
    let counters: Vec<Exported> = tensors
        .iter()
        .filter_map(|t| t.name.strip_suffix(".running_mean"))
        .map(|bn| Exported {
            name: format!("{bn}.num_batches_tracked"),
            dtype: Dtype::I64,
            shape: vec![],
            data: ((step * BN_UPDATES_PER_STEP) as i64).to_le_bytes().to_vec(),
        })
        .collect();
    tensors.extend(counters);
    tensors.push(Exported {
        name: CENTER.into(),
        dtype: Dtype::F32,
        shape: vec![1, progress.center.len()],
        data: progress.center.iter().flat_map(|v| v.to_le_bytes()).collect(),
    });
    let model = tensors.len();
    let trained = |n: &str| {
        (n.starts_with("student.") || n.starts_with("predictor."))
            && !n.ends_with("running_mean")
            && !n.ends_with("running_var")
    };
    if let Some(buffers) = trainer.momentum().map_err(&bad)? {
        tensors.extend(to_official(
            &buffers.to_safetensors().map_err(&bad)?,
            MOMENTUM,
            trained,
        )?);
    }
    let cfg = trainer.cfg.clone();
    let mut meta = export_meta(&cfg, step, spe);
    if let Some(state) = &progress.scaler {
        meta["scaler"] = serde_json::to_value(OfficialScaler::new(&cfg.scaler, state)).expect("json");
    }
    write_pth(&tensors, &meta, out, python)?;
    Ok(Moved {
        cfg,
        step,
        steps_per_epoch: spe,
        epoch: step / spe,
        tensors: model,
        momentum: tensors.len() - model,
    })
}

/// The JSON `official_pth.py write` turns into `args`, `optimizer`, `scheduler`, `epoch`.
fn export_meta(cfg: &TrainConfig, step: u64, spe: u64) -> serde_json::Value {
    let (warmup, total) = (cfg.warmup_steps(spe), cfg.epochs * spe);
    let lr = cfg.lr_at(step, spe);
    let kind = match cfg.optim.optimizer {
        Optimizer::Lars => "lars",
        Optimizer::Sgd => "sgd",
    };
    serde_json::json!({
        "args": official_args(cfg, spe),
        "epoch": step / spe,
        "optimizer": {"kind": kind, "lr": lr, "weight_decay": cfg.optim.weight_decay, "momentum": cfg.optim.momentum, "eta": cfg.optim.lars_eta},
        "scheduler": {"base_lr": cfg.lr(), "t_max": total.saturating_sub(warmup), "eta_min": cfg.optim.min_lr, "steps": step,
                      "warmup_iters": warmup, "multiplier": cfg.optim.warmup_multiplier},
    })
}

/// How to turn an official checkpoint into a run.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The settings the checkpoint's `args` and shapes start from.
    pub base: TrainConfig,
    /// Steps per epoch, when the checkpoint cannot tell (no `args.num_instances`).
    pub steps_per_epoch: Option<u64>,
    /// Epochs of the whole run (the schedules' length), over the checkpoint's `args`.
    pub epochs: Option<u64>,
    /// The global batch, over the checkpoint's `args`.
    pub batch_size: Option<usize>,
    /// The seed of the data order and augmentation, over the checkpoint's `args`.
    pub seed: Option<u64>,
    /// Replace a run already in the folder.
    pub force: bool,
    /// Let Python's full unpickler read the file (it can run code).
    pub trust_pickle: bool,
}

/// Makes the run folder `out` from the official checkpoint `ckpt` (read by `python`);
/// `on_note` hears what was assumed.
pub fn import_official(
    ckpt: &Path,
    out: &Path,
    opts: &ImportOptions,
    python: &Path,
    on_note: &mut dyn FnMut(&str),
) -> Result<Moved> {
    let (tensors, meta) = read_pth(ckpt, python, opts.trust_pickle)?;
    let bad = with_path::<Error>(ckpt);
    let bad_train = with_path::<slotcon_train::Error>(ckpt);
    check_finite(&tensors).map_err(&bad)?;
    let cfg = import_config(&tensors, &meta, opts).map_err(&bad)?;
    let spe = opts
        .steps_per_epoch
        .or_else(|| steps_per_epoch(&meta))
        .ok_or_else(|| Error::Weights {
            path: ckpt.to_path_buf(),
            reason: "cannot tell the steps per epoch (no args.num_instances, no scheduler): pass --steps-per-epoch"
                .into(),
        })?;
    let step = imported_step(&meta, spe, &cfg).map_err(&bad)?;
    check_counters(&tensors, step, on_note);
    let device = DeviceChoice::Flex.autodiff()?;
    let mut trainer = Trainer::new(cfg.clone(), &device, spe);
    let (model, momentum) = split(&tensors).map_err(&bad)?;
    let mut loaded = Ok(0);
    trainer.map_net(|mut net| {
        loaded = net.load_safetensors(serialize(&model), false);
        net
    });
    loaded.map_err(&bad_train)?;
    if !momentum.is_empty() {
        set_momentum(&mut trainer, &meta, &momentum).map_err(&bad)?;
    }
    let center = tensors.get(CENTER).map(f32_values).unwrap_or_else(|| {
        on_note("no `center` buffer: the centre starts at zero");
        vec![0.0; cfg.model.num_prototypes]
    });
    let progress = Progress {
        step,
        steps_per_epoch: spe,
        center,
        scaler: meta.scaler.as_ref().map(OfficialScaler::state),
    };
    trainer.set_progress(progress).map_err(&bad_train)?;
    write_run(&trainer, out, opts.force)?;
    let record = serde_json::json!({"source": ckpt, "epoch": meta.epoch, "step": step, "steps_per_epoch": spe,
                                    "args": meta.args, "ddp_prefix": meta.ddp_prefix});
    write_atomic(
        &out.join("imported.json"),
        serde_json::to_string_pretty(&record).expect("json").as_bytes(),
    )?;
    Ok(Moved {
        cfg,
        step,
        steps_per_epoch: spe,
        epoch: step / spe,
        tensors: tensors.len() - momentum.len(),
        momentum: momentum.len(),
    })
}

/// The run's config: `opts.base`, then the checkpoint's `args`, its shapes, the overrides.
fn import_config(tensors: &BTreeMap<String, Exported>, meta: &Meta, opts: &ImportOptions) -> Result<TrainConfig> {
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    let mut cfg = apply_args(opts.base.clone(), meta)?;
    cfg.model.arch = infer_arch(&names)?;
    let dim = |key: &str| {
        tensors
            .get(key)
            .map(|t| t.shape[0])
            .ok_or_else(|| Error::MissingTensor { name: key.to_string() })
    };
    cfg.model.dim_hidden = dim("projector_q.mlp.0.weight")?;
    cfg.model.dim_out = dim("projector_q.mlp.6.weight")?;
    cfg.model.num_prototypes = dim("grouping_q.slot_embed.weight")?;
    if let Some(arch) = meta.args.get("arch").and_then(|v| v.as_str()) {
        if arch != cfg.model.arch.name() {
            return Err(Error::ArchMismatch {
                args: arch.to_string(),
                tensors: cfg.model.arch.name(),
            });
        }
    }
    cfg.epochs = opts.epochs.unwrap_or(cfg.epochs);
    cfg.data.batch_size = opts.batch_size.unwrap_or(cfg.data.batch_size);
    cfg.seed = opts.seed.unwrap_or(cfg.seed);
    cfg.check().map_err(Error::ImportedConfig)?;
    Ok(cfg)
}

/// Notes `num_batches_tracked` counters that are not twice the step (they are not kept:
/// an export writes twice the step).
fn check_counters(tensors: &BTreeMap<String, Exported>, step: u64, on_note: &mut dyn FnMut(&str)) {
    let want = (step * BN_UPDATES_PER_STEP) as i64;
    let odd = tensors.values().find(|t| {
        t.name.ends_with("num_batches_tracked")
            && t.data.len() == 8
            && i64::from_le_bytes(t.data[..8].try_into().unwrap()) != want
    });
    if let Some(t) = odd {
        on_note(&format!(
            "{} is {}, not {want} (2 x step {step}); slotcon keeps no counter and writes 2 x step back",
            t.name,
            i64::from_le_bytes(t.data[..8].try_into().unwrap())
        ));
    }
}

/// The model's tensors and the momentum buffers, under our names (counters dropped).
fn split(tensors: &BTreeMap<String, Exported>) -> Result<(Vec<Exported>, Vec<Exported>)> {
    let (mut model, mut momentum) = (Vec::new(), Vec::new());
    for (name, t) in tensors {
        if name == CENTER || name.ends_with("num_batches_tracked") {
            continue;
        }
        let (official, into) = match name.strip_prefix(MOMENTUM) {
            Some(n) => (n, &mut momentum),
            None => (name.as_str(), &mut model),
        };
        let ours = our_name(official).ok_or_else(|| Error::NoPlace {
            name: official.to_string(),
        })?;
        if t.dtype != Dtype::F32 {
            return Err(Error::NotFloat {
                name: official.to_string(),
                dtype: t.dtype,
            });
        }
        into.push(Exported {
            name: ours,
            ..t.clone()
        });
    }
    Ok((model, momentum))
}

fn serialize(tensors: &[Exported]) -> Vec<u8> {
    let pairs: Vec<(&str, &Exported)> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    safetensors::serialize(pairs, None).expect("tensors of known sizes serialize")
}

/// The optimiser's buffers from `momentum` (our names): the trained parameters only.
fn set_momentum(trainer: &mut Trainer, meta: &Meta, momentum: &[Exported]) -> Result<()> {
    let kind = match trainer.cfg.optim.optimizer {
        Optimizer::Lars => "lars",
        Optimizer::Sgd => "sgd",
    };
    if meta.optimizer.as_deref() != Some(kind) {
        return Err(Error::OptimizerMismatch {
            state: meta.optimizer.clone(),
            config: kind,
        });
    }
    if let Some(t) = momentum.iter().find(|t| t.name.starts_with("teacher.")) {
        let name = crate::official::official_name(&t.name).unwrap_or_else(|| t.name.clone());
        return Err(Error::TeacherMomentum { name });
    }
    let mut buffers: SlotConNet = trainer.net().clone();
    buffers.load_safetensors(serialize(momentum), true)?;
    Ok(trainer.set_momentum(&buffers)?)
}

/// Writes `trainer` as a new run in `out`: `config.json` and `checkpoints/current`, in
/// a folder taken as `slotcon-train` takes one ([`run_folder::open`]: the marker, the
/// lock; `force` replaces only a run slotcon made). A write that fails leaves nothing.
fn write_run(trainer: &Trainer, out: &Path, force: bool) -> Result<()> {
    let intent = if force { Intent::Replace } else { Intent::Start };
    let folder = run_folder::open(out, intent, false, &mut |_| {})?;
    let written = trainer
        .cfg
        .save(&out.join("config.json"))
        .and_then(|()| checkpoint::save(trainer, out, false));
    if let Err(e) = written {
        folder.discard();
        return Err(e.into());
    }
    Ok(())
}

/// Every tensor of the checkpoint is finite: a run never starts from a NaN or an infinity
/// (in a weight, a momentum buffer or the centre).
fn check_finite(tensors: &BTreeMap<String, Exported>) -> Result<()> {
    for (name, t) in tensors {
        if t.dtype != Dtype::F32 {
            continue;
        }
        if let Some(v) = f32_values(t).into_iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                name: name.clone(),
                value: v,
            });
        }
    }
    Ok(())
}

/// The step the checkpoint was taken after: the scheduler's count, else epoch x steps per
/// epoch; within the run's `epochs x steps per epoch` (no overflow, no step past the end).
fn imported_step(meta: &Meta, spe: u64, cfg: &TrainConfig) -> Result<u64> {
    let total = cfg.epochs.checked_mul(spe).ok_or(Error::StepOverflow {
        epochs: cfg.epochs,
        steps_per_epoch: spe,
    })?;
    let step = match (meta.scheduler_steps, meta.epoch) {
        (Some(s), _) => Some(s),
        (None, Some(e)) => e.checked_mul(spe),
        (None, None) => Some(0),
    };
    match step {
        Some(s) if s <= total => Ok(s),
        _ => Err(Error::StepPastEnd {
            scheduler_steps: meta.scheduler_steps,
            epoch: meta.epoch,
            total,
            epochs: cfg.epochs,
            steps_per_epoch: spe,
        }),
    }
}
