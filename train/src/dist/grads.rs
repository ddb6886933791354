//! Gradients summed over ranks (in buckets), and weights from rank 0.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::{all_reduce_sum, broadcast, is_distributed};

/// Elements per all-reduce: 25 MiB of f32, DDP's default bucket.
const BUCKET: usize = 25 * 1024 * 1024 / 4;

/// The sum over ranks of every gradient in `grads` (of `module`'s parameters), in buckets
/// of about 25 MiB: one all-reduce per bucket, after the backward pass. Each rank's loss is
/// its share of the global loss (sums divided by global counts), so the sum is the
/// gradient of the global batch. Every rank must hold gradients for the same parameters,
/// which the same network and loss guarantee. Identity in a world of one.
pub fn sum_gradients<M: Module>(mut grads: GradientsParams, module: &M) -> GradientsParams {
    if !is_distributed() {
        return grads;
    }
    let mut take = Take {
        grads: &mut grads,
        flat: Vec::new(),
    };
    module.visit(&mut take);
    let flat = take.flat;
    let mut summed = HashMap::new();
    let mut start = 0;
    while start < flat.len() {
        let mut end = start;
        let mut size = 0;
        while end < flat.len() && (end == start || size + flat[end].1.dims()[0] <= BUCKET) {
            size += flat[end].1.dims()[0];
            end += 1;
        }
        let bucket = all_reduce_sum(Tensor::cat(
            flat[start..end].iter().map(|(_, t)| t.clone()).collect(),
            0,
        ));
        let mut at = 0;
        for (id, t) in &flat[start..end] {
            let len = t.dims()[0];
            summed.insert(*id, bucket.clone().narrow(0, at, len));
            at += len;
        }
        start = end;
    }
    module.visit(&mut Put {
        grads: &mut grads,
        summed,
    });
    grads
}

/// Takes each parameter's gradient out of `grads`, flattened, in visiting order.
struct Take<'a> {
    grads: &'a mut GradientsParams,
    flat: Vec<(ParamId, Tensor<1>)>,
}

impl ModuleVisitor for Take<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.flat.push((param.id, g.flatten(0, D - 1)));
        }
    }
}

/// Puts the summed gradients back, in their parameters' shapes.
struct Put<'a> {
    grads: &'a mut GradientsParams,
    summed: HashMap<ParamId, Tensor<1>>,
}

impl ModuleVisitor for Put<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.summed.remove(&param.id) {
            self.grads.register::<D>(param.id, g.reshape(param.shape()));
        }
    }
}

/// Every float tensor of `module` (parameters and BatchNorm statistics) set to rank 0's
/// value, keeping whether it requires a gradient. Identity in a world of one.
pub fn broadcast_module<M: Module>(module: M) -> M {
    if !is_distributed() {
        return module;
    }
    module.map(&mut FromRankZero)
}

struct FromRankZero;

impl ModuleMapper for FromRankZero {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            let tracked = t.is_require_grad();
            let t = broadcast(t.detach());
            if tracked {
                t.require_grad()
            } else {
                t
            }
        })
    }
}
