//! One SlotCon optimisation step, and the state that survives a checkpoint.

use std::path::Path;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};
use slotcon_augment::TwoViewBatch;
use slotcon_shards::io_err;

use crate::align::{plans, view_tensor};
use crate::amp;
use crate::config::{read_json, OptimConfig, Optimizer, Precision, TrainConfig};
use crate::device;
use crate::dist;
use crate::error::{Error, Result};
use crate::model::{layout, slotcon_loss, SlotConNet};
use crate::optim::lars::{momentum_module, with_momentum};
use crate::optim::{ema_update, Lars};
use crate::scaler::{self, LossScaler, ScalerState};

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
    /// fp16: the loss scale this step used (absent in f32 and bf16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f32>,
    /// fp16: the step's gradients overflowed, so it changed no weight, momentum, teacher or
    /// centre (its loss may be NaN or infinite).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// What the ranks ask of the whole run after a step: each rank's asks travel, summed over
/// the ranks, in the step's one read ([`Trainer::train_step`]), so every rank learns the
/// same [`Trainer::agreed`] after the same step, with no collective of their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asks {
    /// Stop the run after this step, with a checkpoint (a stop signal).
    pub stop: bool,
    /// Write a checkpoint after this step (`--save-every-minutes`, rank 0's clock).
    pub save: bool,
}

impl Asks {
    /// The asks as the two values the step's read carries.
    fn values(self) -> [f32; 2] {
        [f32::from(u8::from(self.stop)), f32::from(u8::from(self.save))]
    }

    /// Any rank's asks, from the carried sums (the read's last two values).
    fn from_sums(carried: &[f64]) -> Self {
        let sums = &carried[carried.len().saturating_sub(2)..];
        let asked = |i: usize| sums.get(i).is_some_and(|&v| v > 0.0);
        Asks {
            stop: asked(0),
            save: asked(1),
        }
    }
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
    /// fp16: the loss scaler's state (absent in f32 and bf16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<ScalerState>,
}

/// Where one step's time went, in milliseconds, when profiling ([`Trainer::set_profile`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepTimes {
    /// Uploading and normalising the views.
    pub data: f64,
    /// Student and teacher forward passes, both views.
    pub forward: f64,
    /// The alignment plans, both losses, and the step's one read.
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

    /// Milliseconds since the previous lap (0 when not profiling); the lap also ends the
    /// phase `phase` of a step under observation ([`crate::observe::mark`]).
    fn lap(&mut self, phase: &std::ffi::CStr) -> f64 {
        crate::observe::mark(phase);
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

/// `[total, grouping, contrast]` from the device, in one read.
fn read_metrics(metrics: Tensor<1>) -> Vec<f64> {
    metrics
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default()
}

/// A step whose losses are still on the device.
struct Pending {
    /// `[total, grouping, contrast]`.
    values: Tensor<1>,
    /// Everything else, known on the host.
    metrics: StepMetrics,
}

impl Pending {
    /// The step's metrics with its losses `values` (read back), or [`Error::Diverged`]
    /// (never for a step skipped for overflowing gradients).
    fn complete(self, values: &[f64]) -> Result<StepMetrics> {
        let get = |i: usize| values.get(i).copied().unwrap_or(f64::NAN);
        let loss = get(0);
        if !loss.is_finite() && !self.metrics.skipped {
            return Err(Error::Diverged {
                step: self.metrics.step,
                loss,
            });
        }
        Ok(StepMetrics {
            loss,
            loss_group: get(1),
            loss_contrast: get(2),
            ..self.metrics
        })
    }
}

/// LARS (the reference) or plain SGD with momentum and weight decay.
fn optimizer(cfg: &OptimConfig) -> ModuleOptimizer {
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
    pending: Option<Pending>,
    grad_sync_ms: f64,
    /// This rank's asks for the next step ([`Trainer::ask`]).
    asks: Asks,
    /// Every rank's asks of the last step.
    agreed: Asks,
    /// fp16's dynamic loss scaling (`None` in f32 and bf16).
    scaler: Option<LossScaler>,
    /// Whether the step runs channels_last ([`crate::MemoryFormat::channels_last_on`] for
    /// this device; never on flex).
    channels_last: bool,
}

impl Trainer {
    /// A fresh run on `device` (an autodiff device), seeded by `cfg.seed`.
    pub fn new(cfg: TrainConfig, device: &Device, steps_per_epoch: u64) -> Self {
        device.seed(cfg.seed);
        let net = cfg.model.init(device);
        let optim = optimizer(&cfg.optim);
        let center = Tensor::zeros([1, cfg.model.num_prototypes], device);
        let (cfg_precision, cfg_scaler) = (cfg.precision, cfg.scaler);
        let channels_last = device::is_libtorch(device)
            && cfg
                .memory_format
                .channels_last_on(device::is_cuda(device), cfg.precision);
        Trainer {
            cfg,
            device: device.clone(),
            net: Some(net),
            optim,
            center,
            step: 0,
            steps_per_epoch,
            profile: None,
            pending: None,
            grad_sync_ms: 0.0,
            asks: Asks::default(),
            agreed: Asks::default(),
            scaler: (cfg_precision == Precision::Fp16).then(|| LossScaler::new(&cfg_scaler)),
            channels_last,
        }
    }

    /// Makes every rank's network and centre rank 0's (`dist::broadcast_module`); nothing
    /// in a world of one. The run calls it once, after creating or loading the trainer.
    pub fn broadcast(&mut self) {
        self.map_net(dist::broadcast_module);
        self.center = dist::broadcast(self.center.clone());
    }

    /// Milliseconds the last step spent summing gradients over the ranks (0 in a world of
    /// one): the all-reduces and the wait for the slowest rank.
    pub fn last_grad_sync_ms(&self) -> f64 {
        self.grad_sync_ms
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

    /// What this rank asks of the run after the next step (see [`Asks`]); every rank
    /// learns every rank's asks from [`Trainer::agreed`] once that step is taken.
    pub fn ask(&mut self, asks: Asks) {
        self.asks = asks;
    }

    /// What any rank asked with the last step (nothing before the first): the same on
    /// every rank.
    pub fn agreed(&self) -> Asks {
        self.agreed
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
    /// Returns the metrics of the step before (see below), once they are known.
    ///
    /// One device→host read per step, a sync point: the prototype argmax per pixel of the
    /// student's and the teacher's score maps of both views (`active` in the loss), which
    /// picks the contrast's rows and labels (the official code syncs there too, with its
    /// boolean indexing). The previous step's `[total, grouping, contrast]` losses, left on
    /// the device, come back in the same read: so a step's metrics, and the check that its
    /// loss is finite, arrive with the next step (or [`Trainer::flush`]), and the device
    /// never waits for the host at the end of a step. A non-finite loss stops the run at
    /// the next step or flush, before anything is saved ([`Error::Diverged`] names its
    /// step); `checkpoint::save` flushes first.
    ///
    /// Nothing else is read back: not per parameter (LARS keeps its trust ratio on the
    /// device), not for the EMA. With `precision: bf16` the forward passes run under
    /// [`amp::autocast`]; everything the step keeps is f32. With `precision: fp16` they
    /// run under autocast in f16, and the loss scaling ([`crate::scaler`]) reads one more
    /// value, after the backward pass: whether the gradients overflowed, in which case the
    /// step changes no weight, momentum, teacher or centre (the BatchNorm running
    /// statistics move, as in PyTorch, where the forward updates them).
    /// [`Error::Overflowing`] after [`LossScaler::MAX_SKIPS`] such steps in a row.
    pub fn train_step(&mut self, batch: &TwoViewBatch) -> Result<Option<StepMetrics>> {
        let cfg = &self.cfg;
        let mut clock = Clock::start(self.profile.is_some().then_some(&self.device));
        let mut times = StepTimes::default();
        let lr = cfg.lr_at(self.step, self.steps_per_epoch);
        let momentum = cfg.teacher_momentum_at(self.step, self.steps_per_epoch);
        let mut net = self.net.take().expect("network present");
        // The views in the step's memory format (NCHW unless channels_last: the loader's
        // NHWC bytes, permuted, would otherwise carry NHWC strides into every layer), and
        // the convolution weights too when channels_last (once: the updates keep it).
        let format = |v: Tensor<4>| layout::memory_format(v, self.channels_last);
        let views = [0, 1].map(|v| format(view_tensor(batch, v, &self.device)));
        if self.channels_last {
            net.student = layout::weights_in_format(net.student, true);
            net.teacher = layout::weights_in_format(net.teacher, true);
        }
        times.data = clock.lap(c"data");
        let autocast = amp::autocast(cfg.precision.compute());
        let student = views.clone().map(|v| net.student.forward(v));
        let teacher = views.map(|v| net.teacher.forward(v));
        drop(autocast);
        times.forward = clock.lap(c"forward");
        let [p1, p2] = plans(batch, student[0].1.dims()[2]);
        let pending = self.pending.take();
        // The previous step's losses (when pending) and this rank's asks, in the one read.
        let asks = Tensor::<1>::from_floats(self.asks.values(), &self.device);
        let carry = Some(match pending.as_ref() {
            Some(p) => Tensor::cat(vec![p.values.clone(), asks], 0),
            None => asks,
        });
        let losses = slotcon_loss(
            &net,
            student,
            teacher,
            [&p1, &p2],
            self.center.clone(),
            &cfg.loss,
            carry,
        );
        times.loss = clock.lap(c"loss");
        self.agreed = Asks::from_sums(&losses.carried);
        let previous = match pending.map(|p| p.complete(&losses.carried)).transpose() {
            Ok(previous) => previous,
            Err(diverged) => {
                self.net = Some(net);
                return Err(diverged);
            }
        };
        let loss_scale = self.scaler.as_ref().map(LossScaler::scale);
        let total = match loss_scale {
            Some(scale) => losses.total.mul_scalar(scale),
            None => losses.total,
        };
        let grads = GradientsParams::from_grads(total.backward(), &net);
        times.backward = clock.lap(c"backward");
        let sync = std::time::Instant::now();
        let grads = dist::sum_gradients(grads, &net);
        self.grad_sync_ms = sync.elapsed().as_secs_f64() * 1e3;
        // The sum carries an overflow of any rank to all, so every rank skips the same steps.
        let (grads, skipped) = match self.scaler.as_mut() {
            Some(s) => {
                let (grads, found_inf) = scaler::unscale(grads, &net, s.inv_scale());
                s.update(found_inf);
                (grads, found_inf)
            }
            None => (grads, false),
        };
        if skipped {
            drop(grads);
            self.net = Some(net);
        } else {
            let mut net = self.optim.step(lr, net, grads);
            times.optimizer = clock.lap(c"optimizer");
            net.teacher = ema_update(net.teacher, &net.student, momentum);
            self.net = Some(net);
            self.center = losses.center.detach();
        }
        times.ema = clock.lap(c"ema");
        if let Some(slot) = self.profile.as_mut() {
            *slot = times;
        }
        let metrics = StepMetrics {
            step: self.step,
            epoch: self.step / self.steps_per_epoch.max(1),
            loss: f64::NAN,
            loss_group: f64::NAN,
            loss_contrast: f64::NAN,
            lr,
            momentum,
            active_slots_per_image: losses.active_slots as f64,
            masked_pairs: losses.masked_pairs,
            loss_scale,
            skipped,
        };
        self.pending = Some(Pending {
            values: losses.metrics,
            metrics,
        });
        self.step += 1;
        if let Some(s) = self
            .scaler
            .as_ref()
            .filter(|s| s.skipped_in_a_row() >= LossScaler::MAX_SKIPS)
        {
            return Err(Error::Overflowing {
                step: self.step - 1,
                skipped: s.skipped_in_a_row(),
                scale: s.scale(),
            });
        }
        Ok(previous)
    }

    /// The metrics of the last step, if [`Trainer::train_step`] has not returned them yet
    /// (one device→host read); [`Error::Diverged`] when its loss is not finite. In a
    /// distributed run every rank must call it at the same point (it sums the ranks' shares
    /// on the host in rank order, as the step's read does, so a step's metrics are the
    /// same bits whichever way they arrive).
    pub fn flush(&mut self) -> Result<Option<StepMetrics>> {
        self.pending
            .take()
            .map(|p| {
                let n = p.values.dims()[0];
                let all = read_metrics(dist::all_gather(p.values.clone()));
                let values: Vec<f64> = (0..n).map(|i| all.iter().skip(i).step_by(n).sum()).collect();
                p.complete(&values)
            })
            .transpose()
    }

    /// [`Trainer::train_step`] then [`Trainer::flush`]: this step's metrics now, at the
    /// cost of a second read (benchmarks and tests that want each step's loss at once).
    /// A step still pending from a plain `train_step` is checked, not returned.
    pub fn train_step_now(&mut self, batch: &TwoViewBatch) -> Result<StepMetrics> {
        self.flush()?;
        self.train_step(batch)?;
        Ok(self.flush()?.expect("the step just taken is pending"))
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
        let progress = self.progress().map_err(|e| e.with_path(dir))?;
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
        self.set_progress(p).map_err(|e| e.with_path(dir))?;
        Ok(self)
    }

    /// The step, the steps per epoch and the centre: what a checkpoint keeps besides the
    /// tensors (one read of the centre).
    pub fn progress(&self) -> Result<Progress> {
        let center = self.center.clone().into_data().convert::<f32>();
        Ok(Progress {
            step: self.step,
            steps_per_epoch: self.steps_per_epoch,
            center: center.try_to_vec::<f32>().map_err(Error::CentreData)?,
            scaler: self.scaler.as_ref().map(|s| s.state().clone()),
        })
    }

    /// Restores what [`Trainer::progress`] returned; the centre must have one value per
    /// prototype.
    pub fn set_progress(&mut self, p: Progress) -> Result<()> {
        let k = self.cfg.model.num_prototypes;
        if p.center.len() != k {
            return Err(Error::CentreSize {
                have: p.center.len(),
                want: k,
            });
        }
        self.center = Tensor::<1>::from_floats(p.center.as_slice(), &self.device).reshape([1, k]);
        self.step = p.step;
        self.steps_per_epoch = p.steps_per_epoch;
        // A checkpoint of another precision (or from before fp16) leaves the scale at its
        // start, as GradScaler's `load_state_dict` is skipped without a `scaler` entry.
        if let (Some(s), Some(state)) = (self.scaler.as_mut(), p.scaler) {
            s.set_state(state);
        }
        Ok(())
    }

    /// The optimiser's momentum buffers as a network of this one's structure (each
    /// parameter holds its buffer, or zeros), to be saved under the network's names;
    /// `None` before the first step.
    pub fn momentum(&self) -> Result<Option<SlotConNet>> {
        momentum_module(&self.optim, self.net().clone())
    }

    /// Sets the momentum buffers of the trained parameters (the student's and the
    /// predictor's) to the values that `buffers` (a network of the same parameter ids, a
    /// clone of [`Trainer::net`] given new values) holds for them.
    /// On an error the trainer is as it was.
    pub fn set_momentum(&mut self, buffers: &SlotConNet) -> Result<()> {
        let net = self.net.take().expect("network present");
        let (net, optim) = with_momentum(optimizer(&self.cfg.optim), net, &[&buffers.student, &buffers.predictor]);
        self.net = Some(net);
        self.optim = optim?;
        Ok(())
    }
}
