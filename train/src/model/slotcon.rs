//! The SlotCon network (student, EMA teacher, predictor) and its loss (DESIGN §6).

use std::path::Path;

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::{log_softmax, softmax};

use super::heads::{l2_normalize, Grouping, Predictor, Projector};
use super::resnet::ResNet;
use crate::align::AlignPlan;
use crate::config::TrainConfig;
use crate::error::{Error, Result};

/// Backbone, projector and prototypes: the student's or the teacher's.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The ResNet up to C5.
    pub backbone: ResNet,
    /// The 1x1-conv projector.
    pub projector: Projector,
    /// Prototypes and pooling.
    pub grouping: Grouping,
}

impl Encoder {
    pub(crate) fn new(cfg: &TrainConfig, device: &Device) -> Self {
        Encoder {
            backbone: ResNet::new(cfg.arch, device),
            projector: Projector::new(cfg.arch.channels(), cfg.dim_hidden, cfg.dim_out, device),
            grouping: Grouping::new(cfg.num_prototypes, cfg.dim_out, cfg.teacher_temp, device),
        }
    }

    /// Images `[n, 3, s, s]` to (slots `[n, k, d]`, scores `[n, k, s/32, s/32]`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<3>, Tensor<4>) {
        self.grouping.forward(self.projector.forward(self.backbone.forward(x)))
    }
}

/// Student, teacher (an EMA copy, no gradients) and the slot predictor.
#[derive(Module, Debug)]
pub struct SlotConNet {
    /// Trained by gradients.
    pub student: Encoder,
    /// Follows the student by EMA.
    pub teacher: Encoder,
    /// Maps student slots to the teacher's space for the contrast.
    pub predictor: Predictor,
}

impl SlotConNet {
    /// A fresh network; the teacher starts with the student's parameters.
    ///
    /// The teacher is built on its own and then given the student's values, not cloned:
    /// a clone would share the student's BatchNorm running statistics (Burn keeps them
    /// behind a shared lock), so each would absorb the other's batches until a
    /// checkpoint reload separated them.
    pub fn new(cfg: &TrainConfig, device: &Device) -> Self {
        let student = Encoder::new(cfg, device);
        let predictor = Predictor::new(cfg.dim_out, cfg.dim_hidden, device);
        let teacher = crate::optim::ema_update(Encoder::new(cfg, device), &student, 0.0);
        SlotConNet {
            teacher,
            student,
            predictor,
        }
    }

    /// Writes every parameter and BN statistic as safetensors with PyTorch conventions
    /// (BN `weight`/`bias`, linear weights `[out, in]`), under this module's names.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut store = SafetensorsStore::from_file(path)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true);
        self.save_into(&mut store).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// The loss of one batch and its parts.
#[derive(Clone, Debug)]
pub struct Losses {
    /// `w · group + (1 - w) · contrast`, both directions summed (differentiable).
    pub total: Tensor<1>,
    /// `[total, grouping, contrast]`, detached, on the device (read with the next step's
    /// argmax: see `Trainer::train_step`).
    pub metrics: Tensor<1>,
    /// The values of `carry`, read back with the argmax.
    pub carried: Vec<f64>,
    /// The centre after this batch's EMA update, `[1, k]`.
    pub center: Tensor<2>,
    /// Mean number of prototypes active (winning some pixel) per view of the teacher.
    pub active_slots: f32,
    /// Pairs whose crops did not overlap (masked out of the grouping loss).
    pub masked_pairs: usize,
}

/// An [`AlignPlan`] on the device: `Ay` `[n, h, h]` and `Axᵀ` `[n, w, w]`, uploaded once
/// and applied to the student's and the teacher's score maps of the same view.
struct DeviceAlign {
    ay: Tensor<3>,
    axt: Tensor<3>,
}

impl DeviceAlign {
    fn new(plan: &AlignPlan, device: &Device) -> Self {
        let (n, h, w) = (plan.n, plan.h, plan.w);
        let ay = Tensor::<3>::from_data(TensorData::new(plan.ay.clone(), [n, h, h]), device);
        let ax = Tensor::<3>::from_data(TensorData::new(plan.ax.clone(), [n, w, w]), device);
        DeviceAlign {
            ay,
            axt: ax.swap_dims(1, 2),
        }
    }

    /// `Ay · X · Axᵀ` for score maps `[n, k, h, w]`.
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, k, h, w] = x.dims();
        let ay = self.ay.clone().unsqueeze_dim::<4>(1).expand([n, k, h, h]);
        let axt = self.axt.clone().unsqueeze_dim::<4>(1).expand([n, k, w, w]);
        ay.matmul(x).matmul(axt)
    }
}

/// Aligns score maps `[n, k, h, w]` to the overlap with `plan` (`Ay · X · Axᵀ`).
pub fn align(x: Tensor<4>, plan: &AlignPlan) -> Tensor<4> {
    DeviceAlign::new(plan, &x.device()).apply(x)
}

/// `[n, k, h, w]` to `[n·h·w, k]`.
fn pixels(x: Tensor<4>) -> Tensor<2> {
    let [n, k, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n * h * w, k])
}

/// Cross-entropy of the sharpened, centred teacher against the student, per pixel,
/// averaged over the pixels of valid pairs.
fn self_distill(q: Tensor<4>, t: Tensor<4>, center: Tensor<2>, valid: &[bool], cfg: &TrainConfig) -> Tensor<1> {
    let [n, _, h, w] = q.dims();
    let device = q.device();
    let lq = log_softmax(pixels(q) / cfg.student_temp, 1);
    let pt = softmax((pixels(t) - center) / cfg.teacher_temp, 1);
    let per_pixel = (pt * lq).sum_dim(1).neg(); // [n·h·w, 1]
    let weights: Vec<f32> = valid
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v as u8 as f32, h * w))
        .collect();
    let count = weights.iter().sum::<f32>().max(1.0);
    let weights = Tensor::<2>::from_data(TensorData::new(weights, [n * h * w, 1]), &device);
    (per_pixel * weights).sum().div_scalar(count)
}

/// Which prototypes win at least one pixel of each image, for several score maps `[n, k,
/// h, w]`: `[n·k]` flags per map. One host read, which also brings back `carry` (a
/// caller's values that would otherwise cost a read of their own).
fn active<const N: usize>(maps: [&Tensor<4>; N], carry: Option<Tensor<1>>) -> ([Vec<bool>; N], Vec<f64>) {
    let mut parts: Vec<Tensor<1>> = maps
        .iter()
        .map(|m| (*m).clone().argmax(1).reshape([-1]).float())
        .collect();
    parts.extend(carry);
    let all = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default();
    let mut at = 0;
    let flags = maps.map(|m| {
        let [n, k, h, w] = m.dims();
        let mut flags = vec![false; n * k];
        for (i, &win) in all[at..at + n * h * w].iter().enumerate() {
            flags[(i / (h * w)) * k + win as usize] = true;
        }
        at += n * h * w;
        flags
    });
    (flags, all[at..].to_vec())
}

/// The rows of a contrast direction from the active flags of the query's and the key's
/// views: the queries (active in both), the keys (active in the key's view) and each
/// query's label, the position of its own slot among the keys. One pass: `idx_q` is a
/// subset of `idx_k` and both are ascending.
fn contrast_indices(mq: &[bool], mk: &[bool]) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let (mut idx_q, mut idx_k, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (&q, &k)) in mq.iter().zip(mk).enumerate() {
        if !k {
            continue;
        }
        if q {
            idx_q.push(i as i64);
            labels.push(idx_k.len() as i64);
        }
        idx_k.push(i as i64);
    }
    (idx_q, idx_k, labels)
}

/// MoCo-v3-style slot contrast: student slots active in both views (`mq`, `mk` from
/// [`active`], through the predictor) against every active teacher slot; the positive
/// is the same image and prototype. Scaled by 2τ.
fn contrast(q: Tensor<3>, k: Tensor<3>, mq: &[bool], mk: &[bool], net: &SlotConNet, tau: f64) -> Tensor<1> {
    let [n, kk, d] = q.dims();
    let device = q.device();
    let (idx_q, idx_k, labels) = contrast_indices(mq, mk);
    // The predictor's BatchNorm1d needs two rows: PyTorch refuses one ("Expected more than
    // 1 value per channel when training") and its batch statistics would be degenerate, so
    // a direction with fewer than two shared active slots (tiny score maps) adds nothing.
    if idx_q.len() < 2 {
        return Tensor::zeros([1], &device);
    }
    let ints = |v: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let queries = q.reshape([n * kk, d]).select(0, ints(&idx_q));
    let keys = l2_normalize(k.reshape([n * kk, d]), 1).select(0, ints(&idx_k));
    let logits = l2_normalize(net.predictor.forward(queries), 1).matmul(keys.transpose()) / tau;
    let logp = log_softmax(logits, 1);
    let picked = logp.gather(1, ints(&labels).reshape([labels.len(), 1]));
    picked.mean().neg() * (2.0 * tau)
}

/// The SlotCon loss of one batch: the student's and the teacher's outputs for both views
/// (teacher outputs are detached here), the alignment of each view, and the centre. Its
/// one host read (the prototype argmax) also brings back `carry` ([`Losses::carried`]).
pub fn slotcon_loss(
    net: &SlotConNet,
    student: [(Tensor<3>, Tensor<4>); 2],
    teacher: [(Tensor<3>, Tensor<4>); 2],
    plans: [&AlignPlan; 2],
    center: Tensor<2>,
    cfg: &TrainConfig,
    carry: Option<Tensor<1>>,
) -> Losses {
    let [(q1, sq1), (q2, sq2)] = student;
    let [(k1, sk1), (k2, sk2)] = teacher.map(|(s, sc)| (s.detach(), sc.detach()));
    let valid: Vec<bool> = plans[0]
        .valid
        .iter()
        .zip(&plans[1].valid)
        .map(|(a, b)| *a && *b)
        .collect();
    let device = sq1.device();
    let [a1, a2] = plans.map(|p| DeviceAlign::new(p, &device));
    let (qa1, qa2) = (a1.apply(sq1.clone()), a2.apply(sq2.clone()));
    let (ka1, ka2) = (a1.apply(sk1.clone()), a2.apply(sk2.clone()));
    let group =
        self_distill(qa1, ka2, center.clone(), &valid, cfg) + self_distill(qa2, ka1, center.clone(), &valid, cfg);
    // One host read for the four maps (and `carry`): the teacher's flags serve the
    // contrast and the metric.
    let ([mq1, mq2, mk1, mk2], carried) = active([&sq1, &sq2, &sk1, &sk2], carry);
    let tau = cfg.contrast_temp;
    let ctr = contrast(q1, k2, &mq1, &mk2, net, tau) + contrast(q2, k1, &mq2, &mk1, net, tau);
    let w = cfg.group_loss_weight;
    let total = group.clone() * w + ctr.clone() * (1.0 - w);
    let batch_center = pixels(Tensor::cat(vec![sk1.clone(), sk2.clone()], 0)).mean_dim(0);
    let center = center * cfg.center_momentum + batch_center * (1.0 - cfg.center_momentum);
    let n_active = [mk1, mk2].iter().flatten().filter(|&&a| a).count();
    let views = 2 * sk1.dims()[0];
    let metrics = Tensor::cat(vec![total.clone().detach(), group.detach(), ctr.detach()], 0);
    Losses {
        total,
        metrics,
        carried,
        center,
        active_slots: n_active as f32 / views as f32,
        masked_pairs: valid.iter().filter(|v| !**v).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::contrast_indices;

    #[test]
    fn contrast_labels_are_the_positions_of_the_queries_among_the_keys() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut flag = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state & 3 != 0
        };
        for len in [0, 1, 2, 7, 64, 1000] {
            let (mq, mk): (Vec<bool>, Vec<bool>) = (0..len).map(|_| (flag(), flag())).unzip();
            let (idx_q, idx_k, labels) = contrast_indices(&mq, &mk);
            let want_q: Vec<i64> = (0..len).filter(|&i| mq[i] && mk[i]).map(|i| i as i64).collect();
            let want_k: Vec<i64> = (0..len).filter(|&i| mk[i]).map(|i| i as i64).collect();
            // The quadratic search this replaces.
            let want_labels: Vec<i64> = want_q
                .iter()
                .map(|i| want_k.iter().position(|j| j == i).unwrap() as i64)
                .collect();
            assert_eq!((idx_q, idx_k, labels), (want_q, want_k, want_labels), "length {len}");
        }
    }
}
