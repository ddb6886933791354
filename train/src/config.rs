//! `TrainConfig`: every hyper-parameter of a SlotCon run, with named presets.

use std::ops::RangeInclusive;
use std::path::Path;

use serde::{Deserialize, Serialize};
/// What the loader makes: the batch and the views (`slotcon-augment` owns it).
pub use slotcon_augment::{DataConfig, OrderKind};

use crate::error::{ParseError, Result};
use crate::scaler::ScalerConfig;

/// The backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// torchvision's ResNet-18 (C5 has 512 channels).
    Resnet18,
    /// torchvision's ResNet-34 (512 channels).
    Resnet34,
    /// torchvision's ResNet-50 v1.5 (2048 channels).
    Resnet50,
}

impl std::str::FromStr for Arch {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<Self, ParseError> {
        [Arch::Resnet18, Arch::Resnet34, Arch::Resnet50]
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| ParseError::Unknown {
                what: "architecture",
                name: s.to_string(),
                accepted: "resnet18, resnet34, resnet50",
            })
    }
}

impl Arch {
    /// torchvision's name: `resnet18`, `resnet34` or `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
        }
    }

    /// Channels of the C5 feature map.
    pub fn channels(self) -> usize {
        match self {
            Arch::Resnet18 | Arch::Resnet34 => 512,
            Arch::Resnet50 => 2048,
        }
    }
}

/// The optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// LARS (η = 0.001, momentum 0.9), no decay or adaptation on 1-D parameters.
    Lars,
    /// SGD with momentum.
    Sgd,
}

/// The float type of parameters and activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats (the reference).
    #[default]
    F32,
    /// Mixed precision as AMP does it ([`crate::amp`]): convolutions and linear layers in
    /// bfloat16, with the activations bfloat16 between layers (BatchNorm's statistics and
    /// parameters f32), while parameters, optimiser state, the teacher EMA, the centre, the
    /// heads' outputs, softmaxes and loss reductions stay f32.
    Bf16,
    /// The same with IEEE half (the official recipe's `--fp16`), with dynamic loss scaling
    /// as `torch.amp.GradScaler` does it ([`crate::scaler`]): a step whose gradients
    /// overflow is skipped.
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<Self, ParseError> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            _ => Err(ParseError::Unknown {
                what: "precision",
                name: s.to_string(),
                accepted: "f32, bf16, fp16",
            }),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl Precision {
    /// The float type convolutions and matmuls compute in under [`crate::amp::autocast`]
    /// (`None`: f32, no casts).
    pub fn compute(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::FloatDType::BF16),
            Precision::Fp16 => Some(burn::tensor::FloatDType::F16),
        }
    }
}

/// The memory format of the activations and convolution weights on LibTorch
/// ([`crate::model::layout`]): the same values, another order in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// The measured choice for the device ([`MemoryFormat::channels_last_on`]).
    #[default]
    Auto,
    /// NCHW, as the official code feeds its network.
    Contiguous,
    /// NHWC strides (`model.to(memory_format=torch.channels_last)`), LibTorch only.
    ChannelsLast,
}

impl std::str::FromStr for MemoryFormat {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<Self, ParseError> {
        match s {
            "auto" => Ok(MemoryFormat::Auto),
            "contiguous" => Ok(MemoryFormat::Contiguous),
            "channels_last" => Ok(MemoryFormat::ChannelsLast),
            _ => Err(ParseError::Unknown {
                what: "memory format",
                name: s.to_string(),
                accepted: "auto, contiguous, channels_last",
            }),
        }
    }
}

impl std::fmt::Display for MemoryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemoryFormat::Auto => "auto",
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        })
    }
}

impl MemoryFormat {
    /// Whether a step in `precision` on a LibTorch device runs channels_last (`cuda`: a
    /// CUDA device, else the CPU). `auto` is channels_last on CUDA, where cuDNN's NHWC
    /// kernels are what NVIDIA's ResNet-50 recipes train with (not measured here: no GPU
    /// was lent yet), and on LibTorch's CPU for bf16 and fp16, where oneDNN's bf16 step was
    /// 18 % faster so; an f32 step there was 4-9 % slower channels_last, so f32 stays NCHW
    /// (bench/RESULTS.md).
    pub fn channels_last_on(self, cuda: bool, precision: Precision) -> bool {
        match self {
            MemoryFormat::Auto => cuda || precision != Precision::F32,
            MemoryFormat::Contiguous => false,
            MemoryFormat::ChannelsLast => true,
        }
    }
}

/// The network's shape: what [`ModelConfig::init`] builds (DESIGN §6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Backbone.
    pub arch: Arch,
    /// Hidden width of the projector and the predictor.
    pub dim_hidden: usize,
    /// Width of the projected features, prototypes and slots.
    pub dim_out: usize,
    /// Number of prototypes K.
    pub num_prototypes: usize,
    /// The teacher's temperature (0.07): its grouping's softmax, and the sharpening of its
    /// assignments in the loss (as the official code uses one `teacher_temp` for both).
    pub teacher_temp: f64,
}

/// The loss's weights and temperatures ([`crate::model::slotcon_loss`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Student softmax temperature (0.1).
    pub student_temp: f64,
    /// Weight of the grouping loss; the contrast gets `1 - w`.
    pub group_loss_weight: f64,
    /// EMA momentum of the centre (0.9).
    pub center_momentum: f64,
    /// Slot-contrast temperature τ (0.2).
    pub contrast_temp: f64,
}

/// The optimiser, its schedules, and the teacher's EMA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Learning rate per 256 images: `lr = base_lr · batch_size / 256`.
    pub base_lr: f64,
    /// Weight decay (non-1-D parameters only).
    pub weight_decay: f64,
    /// LARS trust coefficient η.
    pub lars_eta: f64,
    /// Optimiser momentum.
    pub momentum: f64,
    /// Warm-up epochs (linear from `lr / warmup_multiplier`).
    pub warmup_epochs: f64,
    /// The warm-up starts at `lr / warmup_multiplier`.
    pub warmup_multiplier: f64,
    /// Cosine end value of the learning rate.
    pub min_lr: f64,
    /// Final EMA momentum of the teacher is 1; this is its start (0.99).
    pub teacher_momentum: f64,
}

/// Every setting of a run, by component; saved as `config.json` next to its artifacts.
///
/// The components are flattened in the files (`config.json`, settings files): each
/// setting is one top-level name, as in the files of earlier versions, which still load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    #[serde(flatten)]
    pub model: ModelConfig,
    /// The loss.
    #[serde(flatten)]
    pub loss: LossConfig,
    /// The optimiser and the schedules.
    #[serde(flatten)]
    pub optim: OptimConfig,
    /// The loader's batch and views.
    #[serde(flatten)]
    pub data: DataConfig,
    /// Epochs.
    pub epochs: u64,
    /// Seed of the data order, the augmentation and the initialisation.
    pub seed: u64,
    /// Save a numbered checkpoint every this many epochs (plus `current` every epoch).
    pub save_every_epochs: u64,
    /// Float type of the whole network (f32 unless asked).
    #[serde(default)]
    pub precision: Precision,
    /// The memory format of activations and convolution weights on LibTorch (flex keeps
    /// its own).
    #[serde(default)]
    pub memory_format: MemoryFormat,
    /// The loss scaling of `precision: fp16` (unused otherwise).
    #[serde(flatten)]
    pub scaler: ScalerConfig,
}

/// A [`TrainConfig`] field out of its range: `FIELD VALUE: what it should be`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    /// The field's name in `config.json` (`batch_size`).
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be (`must be in 1..=65536`).
    pub expected: String,
}

impl InvalidField {
    fn new(field: &'static str, value: &dyn std::fmt::Display, expected: String) -> Self {
        InvalidField {
            field,
            value: value.to_string(),
            expected,
        }
    }
}

impl std::fmt::Display for InvalidField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.field, self.value, self.expected)
    }
}

impl std::error::Error for InvalidField {}

/// Reads a JSON file into `T`; errors name the file.
pub(crate) use slotcon_shards::format::read_json;

impl Default for TrainConfig {
    fn default() -> Self {
        Self::coco_r50_800ep()
    }
}

impl TrainConfig {
    /// The official `scripts/slotcon_coco_r50_800ep.sh`: ResNet-50, batch 512, LARS,
    /// base lr 1.0, 800 epochs.
    pub fn coco_r50_800ep() -> Self {
        TrainConfig {
            model: ModelConfig {
                arch: Arch::Resnet50,
                dim_hidden: 4096,
                dim_out: 256,
                num_prototypes: 256,
                teacher_temp: 0.07,
            },
            loss: LossConfig {
                student_temp: 0.1,
                group_loss_weight: 0.5,
                center_momentum: 0.9,
                contrast_temp: 0.2,
            },
            optim: OptimConfig {
                optimizer: Optimizer::Lars,
                base_lr: 1.0,
                weight_decay: 1e-5,
                lars_eta: 0.001,
                momentum: 0.9,
                warmup_epochs: 5.0,
                warmup_multiplier: 100.0,
                min_lr: 1e-6,
                teacher_momentum: 0.99,
            },
            data: DataConfig {
                batch_size: 512,
                image_size: 224,
                min_scale: 0.08,
                order: OrderKind::Global,
                order_block: slotcon_augment::DEFAULT_ORDER_BLOCK,
                order_window: slotcon_augment::DEFAULT_ORDER_WINDOW,
            },
            epochs: 800,
            seed: 0,
            save_every_epochs: 50,
            precision: Precision::F32,
            memory_format: MemoryFormat::Auto,
            scaler: ScalerConfig::default(),
        }
    }

    /// A CPU-sized run: ResNet-18, narrow heads, 64 prototypes, small views and batches.
    pub fn tiny() -> Self {
        let paper = Self::coco_r50_800ep();
        TrainConfig {
            model: ModelConfig {
                arch: Arch::Resnet18,
                dim_hidden: 512,
                dim_out: 64,
                num_prototypes: 64,
                ..paper.model
            },
            optim: OptimConfig {
                warmup_epochs: 1.0,
                ..paper.optim
            },
            data: DataConfig {
                batch_size: 16,
                image_size: 96,
                ..paper.data
            },
            epochs: 20,
            save_every_epochs: 5,
            ..paper
        }
    }

    /// A preset by name: `tiny` or `coco_r50_800ep`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "coco_r50_800ep" => Some(Self::coco_r50_800ep()),
            _ => None,
        }
    }

    /// Sets the batch size.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.data.batch_size = n;
        self
    }

    /// Sets the number of epochs.
    pub fn with_epochs(mut self, n: u64) -> Self {
        self.epochs = n;
        self
    }

    /// Sets the backbone.
    pub fn with_arch(mut self, arch: Arch) -> Self {
        self.model.arch = arch;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The peak learning rate, `base_lr · batch_size / 256`.
    pub fn lr(&self) -> f64 {
        self.optim.base_lr * self.data.batch_size as f64 / 256.0
    }

    /// The warm-up's steps at `steps_per_epoch` steps per epoch.
    pub fn warmup_steps(&self, steps_per_epoch: u64) -> u64 {
        (self.optim.warmup_epochs * steps_per_epoch as f64).round() as u64
    }

    /// The learning rate of `step` at `steps_per_epoch` steps per epoch: the linear
    /// warm-up, then the cosine to `min_lr` ([`crate::schedule::learning_rate`]).
    pub fn lr_at(&self, step: u64, steps_per_epoch: u64) -> f64 {
        let total = self.epochs.saturating_mul(steps_per_epoch);
        let o = &self.optim;
        let warmup = self.warmup_steps(steps_per_epoch);
        crate::schedule::learning_rate(step, warmup, total, self.lr(), o.warmup_multiplier, o.min_lr)
    }

    /// The teacher's EMA momentum at `step` ([`crate::schedule::teacher_momentum`]).
    pub fn teacher_momentum_at(&self, step: u64, steps_per_epoch: u64) -> f64 {
        let total = self.epochs.saturating_mul(steps_per_epoch);
        crate::schedule::teacher_momentum(step, total, self.optim.teacher_momentum)
    }

    /// Batch sizes a run accepts (the loader also checks the batch against the store and
    /// the memory).
    pub const BATCH_SIZE: RangeInclusive<usize> = 1..=65536;
    /// Epochs a run accepts.
    pub const EPOCHS: RangeInclusive<u64> = 1..=100_000;
    /// View sizes a run accepts: at least one cell of the backbone's stride-32 feature map.
    pub const IMAGE_SIZE: RangeInclusive<u32> = 32..=1024;
    /// Widths of the heads and the number of prototypes (prototype ids are 16-bit in the
    /// pictures of `slotcon-viz`).
    pub const WIDTH: RangeInclusive<usize> = 1..=65536;
    /// The largest `base_lr` accepted (the reference uses 1.0; far larger rates are
    /// allowed so that divergence can be tested, but the peak rate stays a finite f32).
    pub const MAX_BASE_LR: f64 = 1e12;

    /// Checks the settings: every numeric field finite and in its range (see
    /// [`TrainConfig::check`]).
    pub fn validate(&self) -> Result<()> {
        Ok(self.check()?)
    }

    /// Checks every numeric field; the first one out of range is returned with its name,
    /// its value and what it should be.
    pub fn check(&self) -> std::result::Result<(), InvalidField> {
        fn int<T: PartialOrd + std::fmt::Display>(
            field: &'static str,
            v: T,
            range: RangeInclusive<T>,
        ) -> std::result::Result<(), InvalidField> {
            if range.contains(&v) {
                return Ok(());
            }
            Err(InvalidField::new(
                field,
                &v,
                format!("must be in {}..={}", range.start(), range.end()),
            ))
        }
        /// `lo <= v <= hi` (or `lo < v` when `open`), finite.
        fn real(field: &'static str, v: f64, lo: f64, hi: f64, open: bool) -> std::result::Result<(), InvalidField> {
            let above = if open { v > lo } else { v >= lo };
            if v.is_finite() && above && v <= hi {
                return Ok(());
            }
            let (l, h) = (
                if open { "(" } else { "[" },
                if hi.is_finite() {
                    format!("{hi}]")
                } else {
                    "inf)".into()
                },
            );
            let what = if v.is_finite() {
                "must be in"
            } else {
                "must be a finite number in"
            };
            Err(InvalidField::new(field, &v, format!("{what} {l}{lo}, {h}")))
        }
        let inf = f64::INFINITY;
        let (m, l, o, d) = (&self.model, &self.loss, &self.optim, &self.data);
        int("dim_hidden", m.dim_hidden, Self::WIDTH)?;
        int("dim_out", m.dim_out, Self::WIDTH)?;
        int("num_prototypes", m.num_prototypes, Self::WIDTH)?;
        real("teacher_momentum", o.teacher_momentum, 0.0, 1.0, false)?;
        real("teacher_temp", m.teacher_temp, 0.0, inf, true)?;
        real("student_temp", l.student_temp, 0.0, inf, true)?;
        real("group_loss_weight", l.group_loss_weight, 0.0, 1.0, false)?;
        real("center_momentum", l.center_momentum, 0.0, 1.0, false)?;
        real("contrast_temp", l.contrast_temp, 0.0, inf, true)?;
        int("batch_size", d.batch_size, Self::BATCH_SIZE)?;
        real("base_lr", o.base_lr, 0.0, Self::MAX_BASE_LR, true)?;
        real("weight_decay", o.weight_decay, 0.0, inf, false)?;
        real("lars_eta", o.lars_eta, 0.0, inf, true)?;
        real("momentum", o.momentum, 0.0, 1.0, false)?;
        int("epochs", self.epochs, Self::EPOCHS)?;
        real("warmup_epochs", o.warmup_epochs, 0.0, self.epochs as f64, false).map_err(|mut e| {
            e.expected = format!(
                "{} (the warm-up must lie within the {} epochs)",
                e.expected, self.epochs
            );
            e
        })?;
        real("warmup_multiplier", o.warmup_multiplier, 1.0, inf, false)?;
        real("min_lr", o.min_lr, 0.0, inf, false)?;
        int("image_size", d.image_size, Self::IMAGE_SIZE)?;
        real("min_scale", d.min_scale, 0.0, 1.0, true)?;
        int("order_block", d.order_block, 1..=1 << 20)?;
        int("order_window", d.order_window, 1..=1 << 20)?;
        int("save_every_epochs", self.save_every_epochs, 1..=u64::MAX)?;
        let sc = &self.scaler;
        real("init_scale", sc.init_scale, 0.0, f64::from(f32::MAX), true)?;
        real("growth_factor", sc.growth_factor, 1.0, inf, true)?;
        real("backoff_factor", sc.backoff_factor, 0.0, 1.0, true)?;
        int("growth_interval", sc.growth_interval, 1..=u64::from(u32::MAX))?;
        Ok(())
    }

    /// Writes the resolved config as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("config serialises") + "\n";
        Ok(slotcon_shards::format::write_atomic(path, text.as_bytes())?)
    }

    /// Reads a config written by [`TrainConfig::save`].
    pub fn load(path: &Path) -> Result<Self> {
        Ok(read_json(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_list_the_accepted() {
        assert_eq!("resnet34".parse::<Arch>(), Ok(Arch::Resnet34));
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        let e = "resnet101".parse::<Arch>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown architecture "resnet101" (resnet18, resnet34, resnet50)"#
        );
        let e = "f16".parse::<Precision>().unwrap_err();
        assert_eq!(e.to_string(), r#"unknown precision "f16" (f32, bf16, fp16)"#);
        for f in [MemoryFormat::Auto, MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
            assert_eq!(f.to_string().parse::<MemoryFormat>(), Ok(f));
        }
        let e = "nhwc".parse::<MemoryFormat>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown memory format "nhwc" (auto, contiguous, channels_last)"#
        );
        // auto: channels_last on CUDA, and on the CPU in half precision only.
        let auto = |cuda, p| MemoryFormat::Auto.channels_last_on(cuda, p);
        assert!(auto(true, Precision::F32) && auto(false, Precision::Bf16) && !auto(false, Precision::F32));
        assert!(!MemoryFormat::Contiguous.channels_last_on(true, Precision::Bf16));
    }

    #[test]
    fn presets_validate_and_round_trip() {
        for name in ["tiny", "coco_r50_800ep"] {
            let cfg = TrainConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            let path = std::env::temp_dir().join(format!("slotcon-cfg-{name}-{}.json", std::process::id()));
            cfg.save(&path).unwrap();
            assert_eq!(TrainConfig::load(&path).unwrap(), cfg);
            std::fs::remove_file(path).unwrap();
        }
        assert_eq!(TrainConfig::coco_r50_800ep().lr(), 2.0);
        assert!(TrainConfig::preset("huge").is_none());
        assert!(TrainConfig::tiny().with_batch_size(0).validate().is_err());
    }

    #[test]
    fn every_numeric_field_is_checked_by_name() {
        let tiny = TrainConfig::tiny;
        fn with(f: impl FnOnce(&mut TrainConfig)) -> TrainConfig {
            let mut c = TrainConfig::tiny();
            f(&mut c);
            c
        }
        let field = |c: TrainConfig| c.check().unwrap_err().field;
        assert_eq!(field(tiny().with_batch_size(0)), "batch_size");
        assert_eq!(field(tiny().with_batch_size(1_000_000)), "batch_size");
        assert_eq!(field(tiny().with_epochs(0)), "epochs");
        assert_eq!(field(with(|c| c.data.image_size = 0)), "image_size");
        assert_eq!(field(with(|c| c.data.image_size = 31)), "image_size");
        for lr in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(field(with(|c| c.optim.base_lr = lr)), "base_lr", "{lr}");
        }
        assert_eq!(field(with(|c| c.model.teacher_temp = f64::NAN)), "teacher_temp");
        assert_eq!(field(with(|c| c.optim.momentum = 1.5)), "momentum");
        assert_eq!(field(with(|c| c.model.num_prototypes = 0)), "num_prototypes");
        assert_eq!(field(with(|c| c.data.min_scale = 0.0)), "min_scale");
        assert_eq!(field(with(|c| c.save_every_epochs = 0)), "save_every_epochs");
        let e = TrainConfig::coco_r50_800ep().with_epochs(2).check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "warmup_epochs 5: must be in [0, 2] (the warm-up must lie within the 2 epochs)"
        );
        let e = with(|c| c.optim.base_lr = f64::NAN).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid settings: base_lr NaN: must be a finite number in (0, 1000000000000]"
        );
    }
}
