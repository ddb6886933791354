//! SlotCon on Burn: the model, its loss and its training loop. What comes after training
//! (inference, export, evaluation, pictures) is the `slotcon-eval` crate, built on this one.
//!
//! - [`TrainConfig`] with presets [`TrainConfig::coco_r50_800ep`] and [`TrainConfig::tiny`],
//!   nesting [`ModelConfig`] (whose [`ModelConfig::init`] builds the network),
//!   [`LossConfig`], [`OptimConfig`] and [`DataConfig`] (whose [`DataConfig::augment`] is
//!   the loader's view settings);
//! - [`schedule::learning_rate`] and [`schedule::teacher_momentum`], pure functions of the step;
//! - [`AlignPlan`]: `roi_align(aligned=True)` plus un-flipping as `Ay · X · Axᵀ`;
//! - [`model`]: ResNet (torchvision layout), projector, grouping, predictor, the loss;
//! - [`trainer::Trainer`] (one step, checkpoints) and [`run::train`] (the whole run);
//! - [`device::DeviceChoice`]: flex / LibTorch devices; [`amp`]: bf16 and fp16 mixed
//!   precision with f32 master weights; [`scaler`]: fp16's dynamic loss scaling;
//! - [`reference::dump_case`]: one step's inputs for the PyTorch reference;
//! - [`observe`]: the ATen operators and peak bytes of a step on LibTorch;
//! - [`dist`]: several processes on PyTorch's c10d (torchrun), SyncBatchNorm, gradient sums.
//!
//! ```
//! use slotcon_train::{schedule, AlignPlan, TrainConfig};
//!
//! let cfg = TrainConfig::coco_r50_800ep();
//! assert_eq!(cfg.lr(), 2.0); // 1.0 × 512 / 256
//! let (steps_per_epoch, total) = (230, 230 * cfg.epochs);
//! let o = &cfg.optim; // the model, loss, optimiser and data settings nest
//! let warmup = (o.warmup_epochs * steps_per_epoch as f64) as u64;
//! let lr0 = schedule::learning_rate(0, warmup, total, cfg.lr(), o.warmup_multiplier, o.min_lr);
//! assert!((lr0 - 0.02).abs() < 1e-12); // warm-up starts at lr / 100
//!
//! // Align a 7x7 map to the right half of its view, flipped.
//! let plan = AlignPlan::new(&[slotcon_augment::NormBox([0.5, 0.0, 1.0, 1.0])], &[true], 7, 7);
//! assert!(plan.valid[0]);
//! ```

mod align;
pub mod alloc;
pub mod amp;
pub mod checkpoint;
mod config;
pub mod device;
pub mod dist;
mod error;
pub mod model;
pub mod observe;
pub mod optim;
pub mod reference;
pub mod run;
pub mod run_folder;
pub mod scaler;
pub mod schedule;
mod settings_file;
pub mod tensorboard;
pub mod trainer;

/// The Burn this crate is built on (its devices and tensors), for the crates above.
pub use burn;

pub use align::{normalized, plans, view_tensor, AlignPlan, DeviceAlign};
pub use config::{
    Arch, DataConfig, InvalidField, LossConfig, MemoryFormat, ModelConfig, OptimConfig, Optimizer, OrderKind,
    Precision, TrainConfig,
};
pub use error::{Error, ParseError, Result};
pub use settings_file::SettingsError;
