//! One SlotCon optimisation step, and the state that survives a checkpoint.

use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};
use slotcon_augment::TwoViewBatch;
use slotcon_shards::io_err;

use crate::amp;
use crate::config::{read_json, Optimizer, TrainConfig};
use crate::data::{plans, view_tensor};
use crate::error::{Error, Result};
use crate::model::{slotcon_loss, SlotConNet};
use crate::optim::{ema_update, Lars};
use crate::schedule::{learning_rate, teacher_momentum};

/// What one step measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    /// Global step (0-based, the one just taken).
    pub step: u64,
    /// Epoch.
    pub epoch: u64,
    /// Total loss.
    pub loss: f64,
    /// Grouping loss (both directions).
    pub loss_group: f64,
    /// Slot contrast loss (both directions).
    pub loss_contrast: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Teacher momentum used.
    pub momentum: f64,
    /// Mean prototypes active per view (teacher).
    pub active_slots_per_image: f64,
    /// Pairs masked out of the grouping loss (crops without overlap).
    pub masked_pairs: usize,
}

/// The counters a checkpoint restores besides the tensors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Steps taken so far (the next step's number).
    pub step: u64,
    /// Steps per epoch of this run.
    pub steps_per_epoch: u64,
    /// The centre, `[k]`.
    pub center: Vec<f32>,
}

/// Where one step's time went, in milliseconds, when profiling ([`Trainer::set_profile`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepTimes {
    /// Uploading the views and the alignment plans.
    pub data: f64,
    /// Student and teacher forward passes, both views.
    pub forward: f64,
    /// Alignment, both losses, and reading the total back.
    pub loss: f64,
    /// The backward pass.
    pub backward: f64,
    /// LARS (or SGD).
    pub optimizer: f64,
    /// The teacher EMA and the centre.
    pub ema: f64,
}

/// Phase timer: each lap waits for the device first (when profiling), else reads nothing.
struct Clock<'a> {
    device: Option<&'a Device>,
    last: std::time::Instant,
}

impl<'a> Clock<'a> {
    fn start(device: Option<&'a Device>) -> Self {
        Clock {
            device,
            last: std::time::Instant::now(),
        }
    }

    /// Milliseconds since the previous lap (0 when not profiling).
    fn lap(&mut self) -> f64 {
        let Some(device) = self.device else {
            return 0.0;
        };
        let _ = device.sync();
        let now = std::time::Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1e3;
        self.last = now;
        ms
    }
}

/// LARS (the reference) or plain SGD with momentum and weight decay.
fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    match cfg.optimizer {
        Optimizer::Lars => Lars::new(cfg.weight_decay, cfg.lars_eta, cfg.momentum).init(),
        Optimizer::Sgd => Lars::sgd(cfg.weight_decay, cfg.momentum).init(),
    }
}

/// The network, the optimiser and the centre, on one device.
pub struct Trainer {
    /// The run's settings.
    pub cfg: TrainConfig,
    device: Device,
    net: Option<SlotConNet>,
    optim: ModuleOptimizer,
    center: Tensor<2>,
    /// Steps taken.
    pub step: u64,
    steps_per_epoch: u64,
    profile: Option<StepTimes>,
}

impl Trainer {
    /// A fresh run on `device` (an autodiff device), seeded by `cfg.seed`.
    pub fn new(cfg: TrainConfig, device: &Device, steps_per_epoch: u64) -> Self {
        device.seed(cfg.seed);
        let net = SlotConNet::new(&cfg, device);
        let optim = optimizer(&cfg);
        let center = Tensor::zeros([1, cfg.num_prototypes], device);
        Trainer {
            cfg,
            device: device.clone(),
            net: Some(net),
            optim,
            center,
            step: 0,
            steps_per_epoch,
            profile: None,
        }
    }

    /// The network.
    pub fn net(&self) -> &SlotConNet {
        self.net.as_ref().expect("the network is present between steps")
    }

    /// Replaces the network with `f(network)` (same structure), between steps.
    pub fn map_net(&mut self, f: impl FnOnce(SlotConNet) -> SlotConNet) {
        let net = self.net.take().expect("the network is present between steps");
        self.net = Some(f(net));
    }

    /// Steps per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// Total steps of the run.
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch * self.cfg.epochs
    }

    /// Times every phase of the following steps (see [`StepTimes`]); each phase then ends
    /// with a device sync, which a normal step does not pay.
    pub fn set_profile(&mut self, on: bool) {
        self.profile = on.then(StepTimes::default);
    }

    /// The phases of the last step, when [`Trainer::set_profile`] is on.
    pub fn last_times(&self) -> Option<&StepTimes> {
        self.profile.as_ref()
    }

    /// One step on `batch`: forward both encoders, loss, backward, LARS, EMA, centre.
    ///
    /// Device→host reads per step: 7, each a sync point.
    /// - 4 in the loss, one per view and encoder: the prototype argmax per pixel of the
    ///   student's and the teacher's score maps of both views (`active`), which picks the
    ///   contrast's rows and labels; the teacher's also give `active_slots_per_image`.
    /// - 2 in the loss: the grouping and contrast losses as metrics (`into_scalar`).
    /// - 1 here: the total loss, for the divergence check and the metrics (`into_scalar`).
    ///
    /// The forward passes, backward, LARS (the trust ratio stays on the device) and the
    /// EMA read nothing back. With `precision: bf16` the forward passes run under
    /// [`amp::autocast`]; everything the step keeps is f32.
    pub fn train_step(&mut self, batch: &TwoViewBatch) -> Result<StepMetrics> {
        let cfg = &self.cfg;
        let mut clock = Clock::start(self.profile.is_some().then_some(&self.device));
        let mut times = StepTimes::default();
        let warmup = (cfg.warmup_epochs * self.steps_per_epoch as f64).round() as u64;
        let lr = learning_rate(
            self.step,
            warmup,
            self.total_steps(),
            cfg.lr(),
            cfg.warmup_multiplier,
            cfg.min_lr,
        );
        let momentum = teacher_momentum(self.step, self.total_steps(), cfg.teacher_momentum);
        let net = self.net.take().expect("network present");
        let views = [view_tensor(batch, 0, &self.device), view_tensor(batch, 1, &self.device)];
        times.data = clock.lap();
        let autocast = amp::autocast(cfg.precision.compute());
        let student = views.clone().map(|v| net.student.forward(v));
        let teacher = views.map(|v| net.teacher.forward(v));
        drop(autocast);
        times.forward = clock.lap();
        let [p1, p2] = plans(batch, student[0].1.dims()[2]);
        let losses = slotcon_loss(&net, student, teacher, [&p1, &p2], self.center.clone(), cfg);
        let loss = losses.total.clone().into_scalar::<f32>() as f64;
        times.loss = clock.lap();
        if !loss.is_finite() {
            self.net = Some(net);
            return Err(Error::Diverged { step: self.step, loss });
        }
        let grads = GradientsParams::from_grads(losses.total.backward(), &net);
        times.backward = clock.lap();
        let mut net = self.optim.step(lr, net, grads);
        times.optimizer = clock.lap();
        net.teacher = ema_update(net.teacher, &net.student, momentum);
        self.net = Some(net);
        self.center = losses.center.detach();
        times.ema = clock.lap();
        if let Some(slot) = self.profile.as_mut() {
            *slot = times;
        }
        let metrics = StepMetrics {
            step: self.step,
            epoch: self.step / self.steps_per_epoch.max(1),
            loss,
            loss_group: losses.group as f64,
            loss_contrast: losses.contrast as f64,
            lr,
            momentum,
            active_slots_per_image: losses.active_slots as f64,
            masked_pairs: losses.masked_pairs,
        };
        self.step += 1;
        Ok(metrics)
    }

    /// Writes `dir/model.bpk` (with parameter ids), `dir/optimizer.bin` and
    /// `dir/progress.json`. The caller makes it atomic by writing into a temporary folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let weights = |reason: String| Error::Weights {
            path: dir.to_path_buf(),
            reason,
        };
        let mut store = BurnpackStore::from_file(dir.join("model.bpk")).overwrite(true);
        self.net().save_into(&mut store).map_err(|e| weights(e.to_string()))?;
        self.optim
            .save(dir.join("optimizer.bin"))
            .map_err(|e| weights(e.to_string()))?;
        let center = self
            .center
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| weights(e.to_string()))?;
        let progress = Progress {
            step: self.step,
            steps_per_epoch: self.steps_per_epoch,
            center,
        };
        let text = serde_json::to_string_pretty(&progress).expect("json");
        let path = dir.join("progress.json");
        Ok(std::fs::write(&path, text).map_err(io_err(&path))?)
    }

    /// Restores a checkpoint written by [`Trainer::save`] into a fresh trainer.
    pub fn load(mut self, dir: &Path) -> Result<Self> {
        let weights = |reason: String| Error::Weights {
            path: dir.to_path_buf(),
            reason,
        };
        let mut store = BurnpackStore::from_file(dir.join("model.bpk"));
        let mut net = self.net.take().expect("network present");
        net.load_from(&mut store).map_err(|e| weights(e.to_string()))?;
        self.net = Some(net);
        self.optim = self
            .optim
            .load(dir.join("optimizer.bin"))
            .map_err(|e| weights(e.to_string()))?;
        let p: Progress = read_json(&dir.join("progress.json"))?;
        if p.center.len() != self.cfg.num_prototypes {
            return Err(weights(format!(
                "checkpoint has {} prototypes, the config {}",
                p.center.len(),
                self.cfg.num_prototypes
            )));
        }
        self.center = Tensor::<1>::from_floats(p.center.as_slice(), &self.device).reshape([1, self.cfg.num_prototypes]);
        self.step = p.step;
        self.steps_per_epoch = p.steps_per_epoch;
        Ok(self)
    }
}
