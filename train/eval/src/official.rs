//! Checkpoints both ways with the official SlotCon code (CVMI-Lab/SlotCon's
//! `main_pretrain.py`): `{'args', 'model', 'optimizer', 'scheduler', 'epoch'}` pickled by
//! `torch.save`, read and written by the venv's PyTorch (`python/official_pth.py`, built
//! in); the names, the config and the run folder here.
//!
//! | slotcon | official |
//! |---|---|
//! | `student.backbone.*` / `teacher.backbone.*` | `encoder_q.*` / `encoder_k.*` (torchvision ResNet names, no `fc`) |
//! | `student.projector.{conv1,bn1,conv2,bn2,conv3}` | `projector_q.mlp.{0,1,3,4,6}` (`teacher`: `projector_k`) |
//! | `student.grouping.slot_embed` / `teacher.grouping.slot_embed` | `grouping_q.slot_embed` / `grouping_k.slot_embed` |
//! | `predictor.{fc1,bn1,fc2,bn2,fc3}` | `predictor_slot.mlp.{0,1,3,4,6}` |
//! | the centre (`progress.json`) | buffer `center`, `[1, K]` |
//! | LARS / SGD momentum of student and predictor | `optimizer['state'][i]['mu' / 'momentum_buffer']`, `i` the parameter's index in `model.parameters()` |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use slotcon_train::scaler::{ScalerConfig, ScalerState};
use slotcon_train::{Precision, TrainConfig};

use crate::error::{Error, Result};
use crate::export::{write_safetensors, Exported};

/// Module prefixes: ours, the official one.
const PREFIXES: [(&str, &str); 7] = [
    ("student.backbone.", "encoder_q."),
    ("teacher.backbone.", "encoder_k."),
    ("student.projector.", "projector_q.mlp."),
    ("teacher.projector.", "projector_k.mlp."),
    ("student.grouping.", "grouping_q."),
    ("teacher.grouping.", "grouping_k."),
    ("predictor.", "predictor_slot.mlp."),
];

/// The heads' layers: ours, the index in the official `nn.Sequential` (GELUs at 2 and 5).
const HEAD_LAYERS: [(&str, &str); 5] = [("1.", "0."), ("bn1.", "1."), ("2.", "3."), ("bn2.", "4."), ("3.", "6.")];

/// The backbone's shortcut: ours, torchvision's.
const SHORTCUT: [(&str, &str); 2] = [
    ("downsample.conv.", "downsample.0."),
    ("downsample.bn.", "downsample.1."),
];

/// The prefix of momentum buffers among the staged tensors.
pub const MOMENTUM: &str = "momentum.";

/// The official buffer holding the centre.
pub const CENTER: &str = "center";

/// `conv1.` / `fc1.` to `1.`, etc. (`bn*` stays): the head layer's number.
fn head_layer(rest: &str) -> &str {
    rest.strip_prefix("conv")
        .or_else(|| rest.strip_prefix("fc"))
        .unwrap_or(rest)
}

/// The official name of one of our tensors (PyTorch layout, as `SlotConNet::to_safetensors`
/// names them); `None` for a name outside the network.
pub fn official_name(ours: &str) -> Option<String> {
    let (from, to) = PREFIXES.iter().find(|(from, _)| ours.starts_with(from))?;
    let rest = &ours[from.len()..];
    if from.ends_with("backbone.") {
        let rest = SHORTCUT.iter().fold(rest.to_string(), |k, (a, b)| k.replace(a, b));
        return Some(format!("{to}{rest}"));
    }
    if !to.ends_with("mlp.") {
        return Some(format!("{to}{rest}"));
    }
    let rest = head_layer(rest);
    let (a, b) = HEAD_LAYERS.iter().find(|(a, _)| rest.starts_with(a))?;
    Some(format!("{to}{b}{}", &rest[a.len()..]))
}

/// Our name of an official tensor (the inverse of [`official_name`]); `None` for a name
/// this network has no place for.
pub fn our_name(official: &str) -> Option<String> {
    let (to, from) = PREFIXES.iter().find(|(_, from)| official.starts_with(from))?;
    let rest = &official[from.len()..];
    if to.ends_with("backbone.") {
        let rest = SHORTCUT.iter().fold(rest.to_string(), |k, (a, b)| k.replace(b, a));
        return Some(format!("{to}{rest}"));
    }
    if !from.ends_with("mlp.") {
        return Some(format!("{to}{rest}"));
    }
    let (a, b) = HEAD_LAYERS.iter().find(|(_, b)| rest.starts_with(b))?;
    let layer = if a.starts_with("bn") {
        a.to_string()
    } else if to.starts_with("predictor") {
        format!("fc{a}")
    } else {
        format!("conv{a}")
    };
    let ours = format!("{to}{layer}{}", &rest[b.len()..]);
    (official_name(&ours).as_deref() == Some(official)).then_some(ours)
}

/// What `official_pth.py read` says of a checkpoint besides its tensors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    /// `epoch` (1-based: the epochs finished), if present.
    pub epoch: Option<u64>,
    /// `args` (the `argparse.Namespace`) as JSON, if present.
    #[serde(default)]
    pub args: BTreeMap<String, serde_json::Value>,
    /// `lars` (`mu` buffers) or `sgd` (`momentum_buffer`); `None` without optimizer state.
    pub optimizer: Option<String>,
    /// The optimizer's first parameter group, without its parameter list.
    #[serde(default)]
    pub param_group: BTreeMap<String, serde_json::Value>,
    /// The scheduler's `last_epoch` (the steps taken), if a scheduler was saved.
    pub scheduler_steps: Option<u64>,
    /// The cosine scheduler's `eta_min`, if a scheduler was saved.
    pub eta_min: Option<f64>,
    /// Whether the names had DDP's `module.` prefix.
    #[serde(default)]
    pub ddp_prefix: bool,
    /// An fp16 run's `scaler` (GradScaler's `state_dict`), if saved.
    #[serde(default)]
    pub scaler: Option<OfficialScaler>,
}

/// `torch.amp.GradScaler.state_dict()`: the scale, its counter and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfficialScaler {
    /// `scale`.
    pub scale: f64,
    /// `_growth_tracker`.
    pub growth_tracker: u64,
    /// `growth_factor`.
    pub growth_factor: f64,
    /// `backoff_factor`.
    pub backoff_factor: f64,
    /// `growth_interval`.
    pub growth_interval: u64,
}

impl OfficialScaler {
    /// The scaler of `cfg` in `state`, as GradScaler's `state_dict` says it.
    pub fn new(cfg: &ScalerConfig, state: &ScalerState) -> Self {
        OfficialScaler {
            scale: f64::from(state.scale),
            growth_tracker: state.growth_tracker,
            growth_factor: cfg.growth_factor,
            backoff_factor: cfg.backoff_factor,
            growth_interval: cfg.growth_interval,
        }
    }

    /// Its settings.
    pub fn config(&self) -> ScalerConfig {
        ScalerConfig {
            init_scale: self.scale,
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
        }
    }

    /// Its state (no skipped steps in a row: GradScaler does not count them).
    pub fn state(&self) -> ScalerState {
        ScalerState {
            scale: self.scale as f32,
            growth_tracker: self.growth_tracker,
            skipped_in_a_row: 0,
        }
    }
}

impl Meta {
    /// `args.KEY` as a number.
    pub fn arg_f64(&self, key: &str) -> Option<f64> {
        self.args.get(key).and_then(|v| v.as_f64())
    }

    /// `args.KEY` as a non-negative integer.
    pub fn arg_u64(&self, key: &str) -> Option<u64> {
        self.arg_f64(key)
            .filter(|v| *v >= 0.0 && v.fract() == 0.0)
            .map(|v| v as u64)
    }
}

/// Reads a checkpoint's tensors (official names, no `module.`) from the staged file.
pub fn read_staged(path: &Path) -> Result<BTreeMap<String, Exported>> {
    let bytes = std::fs::read(path).map_err(slotcon_shards::io_err(path))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(file
        .iter()
        .map(|(name, view)| {
            let t = Exported {
                name: name.to_string(),
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            (name.to_string(), t)
        })
        .collect())
}

/// The f32 values of `t`.
pub fn f32_values(t: &Exported) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The backbone whose tensors `names` (official, `encoder_q.` ones) are: the number of
/// blocks per stage and whether they are bottlenecks decide ([`Error::UnknownEncoder`]
/// when they make none).
pub fn infer_arch(names: &[&str]) -> Result<slotcon_train::Arch> {
    let blocks = |layer: usize| {
        (0..64)
            .take_while(|b| names.contains(&format!("encoder_q.layer{layer}.{b}.conv1.weight").as_str()))
            .count()
    };
    let stages = [blocks(1), blocks(2), blocks(3), blocks(4)];
    let bottleneck = names.contains(&"encoder_q.layer1.0.conv3.weight");
    use slotcon_train::Arch::*;
    match (stages, bottleneck) {
        ([2, 2, 2, 2], false) => Ok(Resnet18),
        ([3, 4, 6, 3], false) => Ok(Resnet34),
        ([3, 4, 6, 3], true) => Ok(Resnet50),
        _ => Err(Error::UnknownEncoder { stages, bottleneck }),
    }
}

/// The official `args` of a run with config `cfg` and `steps_per_epoch` steps per epoch,
/// as one process would have saved them (`world_size` 1, so `batch_size` is the batch).
pub fn official_args(cfg: &TrainConfig, steps_per_epoch: u64) -> serde_json::Value {
    let optimizer = match cfg.optim.optimizer {
        slotcon_train::Optimizer::Lars => "lars",
        slotcon_train::Optimizer::Sgd => "sgd",
    };
    serde_json::json!({
        "dataset": "COCO", "data_dir": "./data", "image_size": cfg.data.image_size, "min_scale": cfg.data.min_scale,
        "arch": cfg.model.arch.name(), "dim_hidden": cfg.model.dim_hidden, "dim_out": cfg.model.dim_out,
        "num_prototypes": cfg.model.num_prototypes, "teacher_momentum": cfg.optim.teacher_momentum,
        "teacher_temp": cfg.model.teacher_temp, "student_temp": cfg.loss.student_temp,
        "center_momentum": cfg.loss.center_momentum, "group_loss_weight": cfg.loss.group_loss_weight,
        "batch_size": cfg.data.batch_size, "base_lr": cfg.optim.base_lr, "optimizer": optimizer,
        "warmup_epoch": cfg.optim.warmup_epochs, "warmup_multiplier": cfg.optim.warmup_multiplier,
        "weight_decay": cfg.optim.weight_decay, "momentum": cfg.optim.momentum, "fp16": cfg.precision == Precision::Fp16, "start_epoch": 1,
        "epochs": cfg.epochs, "output_dir": "./output", "auto_resume": false, "resume": "",
        "print_freq": 10, "save_freq": cfg.save_every_epochs, "seed": cfg.seed, "num_workers": 8,
        "local_rank": 0, "world_size": 1, "num_instances": steps_per_epoch * cfg.data.batch_size as u64,
    })
}

/// `cfg` with what the official `args` (and the optimizer's group, the scheduler) of `meta`
/// say; fields they do not name keep their value ([`Error::UnknownOptimizer`] for an
/// `args.optimizer` of neither kind).
pub fn apply_args(mut cfg: TrainConfig, meta: &Meta) -> Result<TrainConfig> {
    let f = |key: &str, v: &mut f64| {
        if let Some(x) = meta.arg_f64(key) {
            *v = x;
        }
    };
    f("teacher_momentum", &mut cfg.optim.teacher_momentum);
    f("teacher_temp", &mut cfg.model.teacher_temp);
    f("student_temp", &mut cfg.loss.student_temp);
    f("center_momentum", &mut cfg.loss.center_momentum);
    f("group_loss_weight", &mut cfg.loss.group_loss_weight);
    f("base_lr", &mut cfg.optim.base_lr);
    f("warmup_epoch", &mut cfg.optim.warmup_epochs);
    f("warmup_multiplier", &mut cfg.optim.warmup_multiplier);
    f("weight_decay", &mut cfg.optim.weight_decay);
    f("momentum", &mut cfg.optim.momentum);
    f("min_scale", &mut cfg.data.min_scale);
    if let Some(eta) = meta.param_group.get("eta").and_then(|v| v.as_f64()) {
        cfg.optim.lars_eta = eta;
    }
    cfg.optim.min_lr = meta.eta_min.unwrap_or(cfg.optim.min_lr);
    let world = meta.arg_u64("world_size").unwrap_or(1);
    if let Some(b) = meta.arg_u64("batch_size") {
        cfg.data.batch_size = (b * world) as usize;
    }
    cfg.epochs = meta.arg_u64("epochs").unwrap_or(cfg.epochs);
    cfg.data.image_size = meta.arg_u64("image_size").map_or(cfg.data.image_size, |v| v as u32);
    cfg.seed = meta.arg_u64("seed").unwrap_or(cfg.seed);
    cfg.save_every_epochs = meta.arg_u64("save_freq").unwrap_or(cfg.save_every_epochs);
    // The official `--fp16` is fp16 autocast with a GradScaler: this engine's fp16.
    if meta.args.get("fp16").and_then(|v| v.as_bool()) == Some(true) {
        cfg.precision = Precision::Fp16;
    }
    if let Some(s) = &meta.scaler {
        cfg.scaler = s.config();
    }
    cfg.optim.optimizer = match meta.args.get("optimizer").and_then(|v| v.as_str()) {
        None => cfg.optim.optimizer,
        Some("lars") => slotcon_train::Optimizer::Lars,
        Some("sgd") => slotcon_train::Optimizer::Sgd,
        Some(other) => {
            return Err(Error::UnknownOptimizer {
                name: other.to_string(),
            })
        }
    };
    Ok(cfg)
}

/// The steps per epoch of the official run `meta` describes: `num_instances` over the
/// global batch (the loader drops the last partial batch), else the scheduler's steps over
/// the epochs.
pub fn steps_per_epoch(meta: &Meta) -> Option<u64> {
    let batch = meta.arg_u64("batch_size")? * meta.arg_u64("world_size").unwrap_or(1);
    let from_args = meta.arg_u64("num_instances").filter(|_| batch > 0).map(|n| n / batch);
    from_args
        .or_else(|| Some(meta.scheduler_steps? / meta.epoch.filter(|e| *e > 0)?))
        .filter(|s| *s > 0)
}

/// Stages `tensors` and `meta` beside `out` and runs `official_pth.py write` to pickle the
/// official checkpoint `out` (atomically: a temporary file, then a rename).
pub fn write_pth(tensors: &[Exported], meta: &serde_json::Value, out: &Path, python: &Path) -> Result<()> {
    let stage = staging(out);
    write_safetensors(tensors, &stage.tensors)?;
    let text = serde_json::to_vec_pretty(meta).expect("json");
    slotcon_shards::format::write_atomic(&stage.meta, &text)?;
    let result = run_script(
        python,
        &[
            "write".as_ref(),
            stage.tensors.as_os_str(),
            stage.meta.as_os_str(),
            out.as_os_str(),
        ],
    );
    stage.remove();
    result
}

/// Runs `official_pth.py read` on `ckpt`: its tensors (official names) and what else it
/// holds. `trust_pickle` lets the full unpickler run (code in the file runs too).
pub fn read_pth(ckpt: &Path, python: &Path, trust_pickle: bool) -> Result<(BTreeMap<String, Exported>, Meta)> {
    let stage = staging(ckpt);
    let mut args = vec![
        "read".as_ref(),
        ckpt.as_os_str(),
        stage.tensors.as_os_str(),
        stage.meta.as_os_str(),
    ];
    if trust_pickle {
        args.push("--trust-pickle".as_ref());
    }
    let result = run_script(python, &args).and_then(|()| {
        let meta: Meta = slotcon_shards::format::read_json(&stage.meta)?;
        Ok((read_staged(&stage.tensors)?, meta))
    });
    stage.remove();
    result
}

/// The files passed between Rust and Python.
struct Staging {
    tensors: PathBuf,
    meta: PathBuf,
}

impl Staging {
    fn remove(&self) {
        std::fs::remove_file(&self.tensors).ok();
        std::fs::remove_file(&self.meta).ok();
    }
}

/// Staging files in the system's temporary folder, named after `near` and this process.
fn staging(near: &Path) -> Staging {
    let stem = near.file_name().unwrap_or_default().to_string_lossy();
    let base = std::env::temp_dir().join(format!(".slotcon-pth-{}-{stem}", std::process::id()));
    Staging {
        tensors: base.with_extension("safetensors"),
        meta: base.with_extension("json"),
    }
}

/// `python/official_pth.py`, built into the binary so that it runs from anywhere.
const OFFICIAL_PTH: &str = include_str!("../python/official_pth.py");

fn run_script(python: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = std::process::Command::new(python)
        .args(["-c", OFFICIAL_PTH])
        .args(args)
        .output();
    let python_err = |reason: String| Error::Python {
        python: python.to_path_buf(),
        reason,
    };
    let out = out.map_err(|e| python_err(format!("cannot run: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or("").to_string();
    Err(python_err(format!(
        "official_pth.py: {}",
        last.trim_start_matches("SystemExit: ")
    )))
}

/// Our tensors `(name, dtype, shape, data)` of safetensors `bytes` under official names, in
/// f32 (I64 stays); names outside the network are an error.
pub fn to_official(bytes: &[u8], prefix: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<Exported>> {
    let here = Path::new("<memory>");
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
        path: here.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (name, view) in file.iter().filter(|(n, _)| keep(n)) {
        let official = official_name(name).ok_or_else(|| Error::Weights {
            path: here.to_path_buf(),
            reason: format!("{name}: no official name"),
        })?;
        let data = match view.dtype() {
            Dtype::F32 => view.data().to_vec(),
            Dtype::BF16 => crate::export::bf16_to_f32(view.data()),
            other => {
                return Err(Error::Weights {
                    path: here.to_path_buf(),
                    reason: format!("{name}: unexpected dtype {other:?}"),
                })
            }
        };
        out.push(Exported {
            name: format!("{prefix}{official}"),
            dtype: Dtype::F32,
            shape: view.shape().to_vec(),
            data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let cases = [
            ("student.backbone.conv1.weight", "encoder_q.conv1.weight"),
            (
                "teacher.backbone.layer2.0.downsample.conv.weight",
                "encoder_k.layer2.0.downsample.0.weight",
            ),
            (
                "student.backbone.layer4.0.downsample.bn.running_var",
                "encoder_q.layer4.0.downsample.1.running_var",
            ),
            ("student.projector.conv1.weight", "projector_q.mlp.0.weight"),
            ("teacher.projector.bn1.running_mean", "projector_k.mlp.1.running_mean"),
            ("student.projector.conv2.bias", "projector_q.mlp.3.bias"),
            ("teacher.projector.bn2.weight", "projector_k.mlp.4.weight"),
            ("student.projector.conv3.weight", "projector_q.mlp.6.weight"),
            ("student.grouping.slot_embed.weight", "grouping_q.slot_embed.weight"),
            ("teacher.grouping.slot_embed.weight", "grouping_k.slot_embed.weight"),
            ("predictor.fc1.weight", "predictor_slot.mlp.0.weight"),
            ("predictor.bn2.bias", "predictor_slot.mlp.4.bias"),
            ("predictor.fc3.bias", "predictor_slot.mlp.6.bias"),
        ];
        for (ours, official) in cases {
            assert_eq!(official_name(ours).as_deref(), Some(official), "{ours}");
            assert_eq!(our_name(official).as_deref(), Some(ours), "{official}");
        }
        for stray in [
            "fc.weight",
            "projector_q.mlp.2.weight",
            "predictor_slot.mlp.5.bias",
            "queue",
        ] {
            assert_eq!(our_name(stray), None, "{stray}");
        }
    }
}
