//! Dynamic loss scaling for fp16 mixed precision, as `torch.amp.GradScaler` does it.
//!
//! An f16 gradient underflows below 2⁻²⁴ and overflows above 65504, so an fp16 step
//! multiplies the loss by a scale before the backward pass and divides the gradients by it
//! after (the *unscale*). A step whose unscaled gradients hold an inf or a NaN is skipped:
//! no optimiser update, no teacher EMA, no centre update, as PyTorch skips
//! `optimizer.step`. The scale starts at 2¹⁶ ([`ScalerConfig::init_scale`]), is multiplied
//! by `growth_factor` after `growth_interval` steps in a row without an overflow, and by
//! `backoff_factor` at each overflow: GradScaler's `_amp_update_scale_` (the product in f64,
//! kept in f32 as its scale tensor is).
//!
//! ```
//! use slotcon_train::scaler::{LossScaler, ScalerConfig};
//!
//! let mut s = LossScaler::new(&ScalerConfig { growth_interval: 2, ..ScalerConfig::default() });
//! assert_eq!(s.scale(), 65536.0);
//! s.update(true); // an overflow: halve
//! s.update(false);
//! s.update(false); // two clean steps: double
//! assert_eq!(s.scale(), 65536.0);
//! ```

use std::collections::HashMap;

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::Dispatch;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// GradScaler's settings, under its own names (flattened into a run's config).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScalerConfig {
    /// The scale of the first step (2¹⁶).
    pub init_scale: f64,
    /// The factor after `growth_interval` clean steps (2).
    pub growth_factor: f64,
    /// The factor at an overflow (0.5).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows (2000).
    pub growth_interval: u64,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// The scaler's state: what a checkpoint keeps (GradScaler's `scale` and
/// `_growth_tracker`, plus the overflows in a row that [`LossScaler::MAX_SKIPS`] bounds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// The scale of the next step.
    pub scale: f32,
    /// Clean steps since the last growth or overflow.
    pub growth_tracker: u64,
    /// Steps skipped in a row up to now (0 after a clean step).
    #[serde(default)]
    pub skipped_in_a_row: u64,
}

/// The scale and its counters ([`ScalerConfig`] for the rule).
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    cfg: ScalerConfig,
    state: ScalerState,
}

impl LossScaler {
    /// Overflowing steps in a row after which the run is reported diverged: from 2¹⁶,
    /// halving 64 times reaches 2⁻⁴⁸, so what overflows then is not the gradients' scale
    /// but the forward pass itself (GradScaler itself never stops; a run that skips every
    /// step would train nothing).
    pub const MAX_SKIPS: u64 = 64;

    /// A scaler at `cfg.init_scale`.
    pub fn new(cfg: &ScalerConfig) -> Self {
        LossScaler {
            cfg: *cfg,
            state: ScalerState {
                scale: cfg.init_scale as f32,
                growth_tracker: 0,
                skipped_in_a_row: 0,
            },
        }
    }

    /// The scale of the next step.
    pub fn scale(&self) -> f32 {
        self.state.scale
    }

    /// `1 / scale` as GradScaler computes it (in f64, then rounded to f32).
    pub fn inv_scale(&self) -> f32 {
        (1.0 / f64::from(self.state.scale)) as f32
    }

    /// The state a checkpoint keeps.
    pub fn state(&self) -> &ScalerState {
        &self.state
    }

    /// Restores a state from [`LossScaler::state`].
    pub fn set_state(&mut self, state: ScalerState) {
        self.state = state;
    }

    /// Steps skipped in a row up to now.
    pub fn skipped_in_a_row(&self) -> u64 {
        self.state.skipped_in_a_row
    }

    /// After a step: backs off when `found_inf`, else counts the clean step and grows the
    /// scale after `growth_interval` of them (unless the grown scale would not be finite).
    pub fn update(&mut self, found_inf: bool) {
        let s = &mut self.state;
        if found_inf {
            s.scale = (f64::from(s.scale) * self.cfg.backoff_factor) as f32;
            s.growth_tracker = 0;
            s.skipped_in_a_row += 1;
            return;
        }
        s.skipped_in_a_row = 0;
        let successful = s.growth_tracker + 1;
        if successful == self.cfg.growth_interval {
            let grown = (f64::from(s.scale) * self.cfg.growth_factor) as f32;
            if grown.is_finite() {
                s.scale = grown;
            }
            s.growth_tracker = 0;
        } else {
            s.growth_tracker = successful;
        }
    }
}

/// `grads` (of `module`'s parameters) times `inv_scale`, and whether any of them holds an
/// inf or a NaN: one device→host read (`GradScaler.step` reads its `found_inf` too). On
/// LibTorch the unscale and the check are GradScaler's own kernels, two calls for all the
/// gradients (`native/optim.cpp`); elsewhere Burn's ops, two per gradient.
pub fn unscale<M: Module>(mut grads: GradientsParams, module: &M, inv_scale: f32) -> (GradientsParams, bool) {
    let mut take = Take {
        grads: &mut grads,
        ids: Vec::new(),
        values: Vec::new(),
    };
    module.visit(&mut take);
    let (ids, values) = (take.ids, take.values);
    if values.is_empty() {
        return (grads, false);
    }
    let (scaled, check) = unscale_all(values, inv_scale);
    module.visit(&mut Put {
        grads: &mut grads,
        scaled: ids.into_iter().zip(scaled).collect(),
    });
    let check = Tensor::<1>::from_dispatch(check).into_data().convert::<f64>();
    let found_inf = check.iter::<f64>().any(|v| v != 0.0);
    (grads, found_inf)
}

/// The gradients times `inv_scale` and a one-element check, 0 when every result is
/// finite (non-zero or NaN otherwise); `values` is not empty.
fn unscale_all(
    values: Vec<FloatTensor<Dispatch>>,
    inv_scale: f32,
) -> (Vec<FloatTensor<Dispatch>>, FloatTensor<Dispatch>) {
    #[cfg(feature = "tch")]
    #[allow(deprecated)] // burn-tch's LibTorch: the LibTorch path DESIGN §7 asks for
    {
        use burn::backend::LibTorch;
        let torch: Option<Vec<_>> = values
            .iter()
            .map(|v| {
                Tensor::<1>::from_dispatch(v.clone())
                    .try_into_primitive::<LibTorch>()
                    .ok()
            })
            .collect();
        if let Some(torch) = torch {
            let (scaled, found) = crate::optim::native::torch::unscale(&torch, inv_scale);
            let back = |t| Tensor::<1>::from_primitive::<LibTorch>(t).into_dispatch();
            return (scaled.into_iter().map(back).collect(), back(found));
        }
    }
    type B = Dispatch;
    let mut total: Option<FloatTensor<B>> = None;
    let scaled = values
        .into_iter()
        .map(|g| {
            let g = B::float_mul_scalar(g, inv_scale.into());
            // A sum of finite gradients stays far inside f32 (each is at most 65504 times
            // the scale's inverse); an inf or a NaN anywhere makes it non-finite.
            let sum = B::float_sum(g.clone());
            total = Some(match total.take() {
                Some(t) => B::float_add(t, sum),
                None => sum,
            });
            g
        })
        .collect();
    let total = total.expect("unscale_all is given at least one gradient");
    // x − x: 0 for a finite x, NaN for an inf or a NaN.
    (scaled, B::float_sub(total.clone(), total))
}

/// Takes each parameter's gradient out of `grads`, in visiting order.
struct Take<'a> {
    grads: &'a mut GradientsParams,
    ids: Vec<ParamId>,
    values: Vec<FloatTensor<Dispatch>>,
}

impl ModuleVisitor for Take<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.ids.push(param.id);
            self.values.push(g.into_dispatch());
        }
    }
}

/// Puts the unscaled gradients back.
struct Put<'a> {
    grads: &'a mut GradientsParams,
    scaled: HashMap<ParamId, FloatTensor<Dispatch>>,
}

impl ModuleVisitor for Put<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.scaled.remove(&param.id) {
            self.grads.register::<D>(param.id, Tensor::from_dispatch(g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_after_the_interval_backs_off_at_an_overflow_and_stays_finite() {
        let cfg = ScalerConfig {
            growth_interval: 3,
            ..ScalerConfig::default()
        };
        let mut s = LossScaler::new(&cfg);
        let mut seen = Vec::new();
        for inf in [false, false, false, true, false, true, true, false, false, false] {
            s.update(inf);
            seen.push((s.scale(), s.state().growth_tracker));
        }
        let k = 65536.0;
        let want = [
            (k, 1),
            (k, 2),
            (2.0 * k, 0),
            (k, 0),
            (k, 1),
            (k / 2.0, 0),
            (k / 4.0, 0),
            (k / 4.0, 1),
            (k / 4.0, 2),
            (k / 2.0, 0),
        ];
        assert_eq!(seen, want);
        let mut big = LossScaler::new(&ScalerConfig {
            init_scale: f64::from(f32::MAX),
            growth_interval: 1,
            ..cfg
        });
        big.update(false);
        assert_eq!(big.scale(), f32::MAX, "a scale that would overflow stays");
        big.update(true);
        assert_eq!(big.skipped_in_a_row(), 1);
        big.update(false);
        assert_eq!(big.skipped_in_a_row(), 0);
    }
}
