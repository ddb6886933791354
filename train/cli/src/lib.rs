//! The settings flags that `slotcon-train` and `slotcon-train-bench` share: a preset, a
//! settings file laid over it, and the flags that override single settings. One
//! [`SettingsArgs`] (`#[command(flatten)]` in each binary's parser) turns them into a
//! checked [`TrainConfig`], and a setting out of its range is reported as the flag that
//! set it.

pub mod signals;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use slotcon_cli::{bad_flag, flags};
use slotcon_train::device::DeviceChoice;
use slotcon_train::{Arch, MemoryFormat, Optimizer, Precision, TrainConfig};

/// The settings of a run, as flags: `--preset`, then `--config`, then the overrides.
#[derive(Args, Clone, Debug)]
pub struct SettingsArgs {
    /// Named settings to start from (with slotcon-train --resume, the run's own
    /// config.json is the start, and flags given must agree with it).
    /// Default: tiny.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// A settings file laid over the preset: TOML (as configs/*.toml and --print-config
    /// write), or JSON when it ends in .json (a run's config.json). It may give any of the
    /// settings; the flags below override it. With --resume it must agree with the run.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The single settings.
    #[command(flatten)]
    pub overrides: Overrides,
}

/// The flags that set one setting each, over the preset and the settings file.
#[derive(Args, Clone, Debug, Default)]
pub struct Overrides {
    /// Backbone: resnet18, resnet34 or resnet50 (overrides the preset).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Batch size, 1 to 65536 and at most the store's images (overrides the preset).
    #[arg(long, value_parser = flags::int(TrainConfig::BATCH_SIZE))]
    pub batch_size: Option<usize>,
    /// Epochs, 1 to 100000 (overrides the preset; the schedules span them).
    #[arg(long, value_parser = flags::int(TrainConfig::EPOCHS))]
    pub epochs: Option<u64>,
    /// View size in pixels, 32 to 1024 (overrides the preset).
    #[arg(long, value_parser = flags::int(TrainConfig::IMAGE_SIZE))]
    pub image_size: Option<u32>,
    /// Keep checkpoints/epoch-NNNN every this many epochs, at least 1 (overrides the preset).
    #[arg(long, value_parser = flags::at_least(1u64))]
    pub save_every: Option<u64>,
    /// Seed of the initialisation, the order and the augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Learning rate per 256 images, in (0, 1e12] (overrides the preset's 1.0).
    #[arg(long, value_parser = flags::positive(TrainConfig::MAX_BASE_LR))]
    pub base_lr: Option<f64>,
    /// Optimiser (overrides the preset's LARS).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimArg>,
    /// Precision: f32 (default), bf16 mixed precision as autocast keeps it (convolutions
    /// and linear layers compute in bf16 and their activations stay bf16 through
    /// BatchNorm, whose statistics and parameters are f32, and ReLU; parameters,
    /// optimiser state, the projector's output and the loss stay f32), or
    /// fp16, the same in IEEE half with dynamic loss scaling as torch.amp.GradScaler
    /// (the official --fp16; the settings init_scale, growth_factor, backoff_factor and
    /// growth_interval tune it): a step whose gradients overflow is skipped.
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Memory format of the activations and convolution weights, LibTorch only: auto
    /// (default: channels_last on CUDA, and on LibTorch's CPU for bf16 and fp16; NCHW for
    /// f32 on the CPU, as measured in bench/RESULTS.md), contiguous (NCHW, as the
    /// official code), or channels_last
    /// (NHWC strides, as model.to(memory_format=torch.channels_last)). The same values
    /// either way, to round-off; another choice of kernels.
    #[arg(long)]
    pub memory_format: Option<MemoryFormat>,
    /// The epoch order: global (uniform over the store, the default) or block (runs of
    /// order_block consecutive samples of a shard, shuffled, then mixed within windows
    /// of order_window runs: for a store in object storage or larger than memory).
    #[arg(long, value_enum)]
    pub order: Option<OrderArg>,
}

/// `--order`'s values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OrderArg {
    /// Uniform over the store.
    Global,
    /// Runs of consecutive samples, shuffled, mixed within windows.
    Block,
}

/// The presets, as `--preset` names them.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// ResNet-18, 96 px views, batch 16: a CPU-sized run.
    Tiny,
    /// The paper's COCO setting: ResNet-50, batch 512, 800 epochs.
    #[value(name = "coco_r50_800ep")]
    CocoR50,
}

/// `--optimizer`'s values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimArg {
    /// LARS, as the reference (η 0.001, momentum 0.9, no decay on 1-D parameters).
    Lars,
    /// SGD with momentum 0.9 and the preset's weight decay.
    Sgd,
}

impl Preset {
    /// The preset's settings.
    pub fn config(self) -> TrainConfig {
        match self {
            Preset::Tiny => TrainConfig::tiny(),
            Preset::CocoR50 => TrainConfig::coco_r50_800ep(),
        }
    }

    /// The name `--preset` takes.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

impl Overrides {
    /// `cfg` with every flag given applied.
    pub fn apply(&self, mut cfg: TrainConfig) -> TrainConfig {
        cfg.model.arch = self.arch.unwrap_or(cfg.model.arch);
        cfg.data.batch_size = self.batch_size.unwrap_or(cfg.data.batch_size);
        cfg.data.image_size = self.image_size.unwrap_or(cfg.data.image_size);
        cfg.epochs = self.epochs.unwrap_or(cfg.epochs);
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        cfg.optim.base_lr = self.base_lr.unwrap_or(cfg.optim.base_lr);
        cfg.save_every_epochs = self.save_every.unwrap_or(cfg.save_every_epochs);
        cfg.precision = self.precision.unwrap_or(cfg.precision);
        cfg.memory_format = self.memory_format.unwrap_or(cfg.memory_format);
        if let Some(o) = self.order {
            cfg.data.order = match o {
                OrderArg::Global => slotcon_train::OrderKind::Global,
                OrderArg::Block => slotcon_train::OrderKind::Block,
            };
        }
        if let Some(o) = self.optimizer {
            cfg.optim.optimizer = match o {
                OptimArg::Lars => Optimizer::Lars,
                OptimArg::Sgd => Optimizer::Sgd,
            };
        }
        cfg
    }
}

impl SettingsArgs {
    /// The preset asked for (tiny when none).
    pub fn preset(&self) -> Preset {
        self.preset.unwrap_or(Preset::Tiny)
    }

    /// The settings asked for: the preset, `--config` laid over it, then the flags. A file
    /// that cannot be read as settings is a usage error of `--config` (exit code 2).
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let preset = self.preset().config();
        let cfg = match &self.config {
            Some(file) => preset.with_file(file).map_err(|e| {
                let reason = match e {
                    slotcon_train::Error::Settings { source, .. } => source.to_string(),
                    e => e.to_string(),
                };
                bad_flag("--config", file.display(), reason)
            })?,
            None => preset,
        };
        Ok(self.overrides.apply(cfg))
    }

    /// Checks that `device` runs `cfg`: channels_last is LibTorch's (reported as
    /// `--memory-format` when the flag set it, exit code 2).
    pub fn check_device(&self, cfg: &TrainConfig, device: DeviceChoice) -> anyhow::Result<()> {
        if cfg.memory_format != MemoryFormat::ChannelsLast || device != DeviceChoice::Flex {
            return Ok(());
        }
        let reason = "a LibTorch memory format: flex keeps its own layout (use --device libtorch or libtorch-cuda:N)";
        match self.overrides.memory_format {
            Some(format) => Err(bad_flag("--memory-format", format, reason)),
            None => anyhow::bail!("the settings' memory_format channels_last is {reason}"),
        }
    }

    /// Checks `cfg` ([`TrainConfig::check`]): a field out of range is reported as the flag
    /// that sets it (exit code 2), or as the settings file's or the preset's when no flag
    /// does.
    pub fn check(&self, cfg: &TrainConfig) -> anyhow::Result<()> {
        let Err(e) = cfg.check() else { return Ok(()) };
        let flag = match e.field {
            "batch_size" => "--batch-size",
            "epochs" | "warmup_epochs" => "--epochs",
            "image_size" => "--image-size",
            "base_lr" => "--base-lr",
            _ if self.config.is_some() => anyhow::bail!("the settings' {e}"),
            _ => anyhow::bail!("the {:?} preset's {e}", self.preset()),
        };
        let (value, reason) = match e.field {
            "warmup_epochs" => (cfg.epochs.to_string(), format!("the preset's {e}")),
            _ => (e.value, e.expected),
        };
        Err(bad_flag(flag, value, reason))
    }
}
