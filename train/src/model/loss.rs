//! The SlotCon loss (DESIGN §6): self-distillation of the aligned score maps and the
//! slot contrast, with the centre's EMA, over the global batch of a distributed run.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

use super::heads::l2_normalize;
use super::slotcon::SlotConNet;
use crate::align::{AlignPlan, DeviceAlign};
use crate::config::LossConfig;
use crate::dist;

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

/// `[n, k, h, w]` to `[n·h·w, k]`.
fn pixels(x: Tensor<4>) -> Tensor<2> {
    let [n, k, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n * h * w, k])
}

/// Cross-entropy of the sharpened, centred teacher against the student, per pixel, summed
/// over the pixels of valid pairs (divided by the global count later); `temps` are the
/// student's and the teacher's.
fn self_distill(q: Tensor<4>, t: Tensor<4>, center: Tensor<2>, valid: &[bool], temps: [f64; 2]) -> Tensor<1> {
    let [n, _, h, w] = q.dims();
    let device = q.device();
    let lq = log_softmax(pixels(q) / temps[0], 1);
    let pt = softmax((pixels(t) - center) / temps[1], 1);
    let per_pixel = (pt * lq).sum_dim(1).neg(); // [n·h·w, 1]
    let weights: Vec<f32> = valid
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v as u8 as f32, h * w))
        .collect();
    let weights = Tensor::<2>::from_data(TensorData::new(weights, [n * h * w, 1]), &device);
    (per_pixel * weights).sum()
}

/// What a step's one host read brings back, over the global batch (every rank's images,
/// rank by rank; this rank's alone in a world of one).
struct Read<const N: usize> {
    /// Per score map, which prototypes win at least one pixel of each image: `[W·n·k]`.
    active: [Vec<bool>; N],
    /// Which pairs of crops overlap: `[W·n]`.
    valid: Vec<bool>,
    /// The caller's `carry`, summed over ranks.
    carried: Vec<f64>,
}

/// The active prototypes of several score maps `[n, k, h, w]`, the valid pairs and `carry`
/// (a caller's values that would otherwise cost a read of their own), gathered from every
/// rank in one all-gather and read back in one host read.
fn active<const N: usize>(maps: [&Tensor<4>; N], valid: &[bool], carry: Option<Tensor<1>>) -> Read<N> {
    let device = maps[0].device();
    let mut parts: Vec<Tensor<1>> = maps
        .iter()
        .map(|m| (*m).clone().argmax(1).reshape([-1]).float())
        .collect();
    let flags: Vec<f32> = valid.iter().map(|&v| v as u8 as f32).collect();
    parts.push(Tensor::from_data(TensorData::new(flags, [valid.len()]), &device));
    parts.extend(carry);
    let all = dist::all_gather(Tensor::cat(parts, 0))
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default();
    let mut read = Read {
        active: maps.map(|_| Vec::new()),
        valid: Vec::new(),
        carried: Vec::new(),
    };
    // Every rank sends the same layout; an empty read (nothing to send) has no chunks.
    for chunk in all.chunks((all.len() / dist::world_size()).max(1)) {
        read.add_rank(&maps, chunk);
    }
    read
}

impl<const N: usize> Read<N> {
    /// Appends one rank's part of the read (laid out as [`active`] sends it).
    fn add_rank(&mut self, maps: &[&Tensor<4>; N], chunk: &[f64]) {
        let mut at = 0;
        for (flags, m) in self.active.iter_mut().zip(maps) {
            let [n, k, h, w] = m.dims();
            let start = flags.len();
            flags.resize(start + n * k, false);
            for (i, &win) in chunk[at..at + n * h * w].iter().enumerate() {
                flags[start + (i / (h * w)) * k + win as usize] = true;
            }
            at += n * h * w;
        }
        let n = maps[0].dims()[0];
        self.valid.extend(chunk[at..at + n].iter().map(|&v| v != 0.0));
        let carry = &chunk[at + n..];
        self.carried.resize(carry.len(), 0.0);
        for (sum, v) in self.carried.iter_mut().zip(carry) {
            *sum += v;
        }
    }
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

/// MoCo-v3-style slot contrast: this rank's student slots active in both views (`mq`, `mk`:
/// global flags from [`active`]), through the predictor, against every rank's active teacher
/// slots of the other view (`keys`: every rank's normalised teacher slots of both views as
/// [`gathered_keys`] lays them out, `view` picking the key view); the positive is the same
/// image and prototype. This rank's share of the mean over the global batch's queries,
/// scaled by 2τ.
fn contrast(
    q: Tensor<3>,
    keys: &Tensor<2>,
    view: usize,
    mq: &[bool],
    mk: &[bool],
    net: &SlotConNet,
    tau: f64,
) -> Tensor<1> {
    let [n, kk, d] = q.dims();
    let nk = n * kk;
    let device = q.device();
    let (idx_q, idx_k, labels) = contrast_indices(mq, mk);
    // The predictor's BatchNorm1d needs two rows: PyTorch refuses one ("Expected more than
    // 1 value per channel when training") and its batch statistics would be degenerate, so
    // a direction with fewer than two shared active slots (tiny score maps) adds nothing.
    if idx_q.len() < 2 {
        return Tensor::zeros([1], &device);
    }
    let mine = dist::rank() * nk..(dist::rank() + 1) * nk;
    let (local, local_labels): (Vec<i64>, Vec<i64>) = idx_q
        .iter()
        .zip(&labels)
        .filter(|(i, _)| mine.contains(&(**i as usize)))
        .map(|(i, l)| (*i - mine.start as i64, *l))
        .unzip();
    let rows: Vec<i64> = idx_k
        .iter()
        .map(|&g| g + (g / nk as i64 + view as i64) * nk as i64)
        .collect();
    let ints = |v: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let queries = q.reshape([nk, d]).select(0, ints(&local));
    let keys = keys.clone().select(0, ints(&rows));
    let logits = l2_normalize(net.predictor.forward(queries), 1).matmul(keys.transpose()) / tau;
    let logp = log_softmax(logits, 1);
    let picked = logp.gather(1, ints(&local_labels).reshape([local_labels.len(), 1]));
    picked.sum().neg() * (2.0 * tau / idx_q.len() as f64)
}

/// Every rank's normalised teacher slots `[n, k, d]` of both views, `[W·2·n·k, d]`: rank
/// `s`'s view `v` slot `j` (of its `n·k`) at row `s·2nk + v·nk + j`.
fn gathered_keys(k1: &Tensor<3>, k2: &Tensor<3>) -> Tensor<2> {
    let [n, kk, d] = k1.dims();
    let both = Tensor::cat(
        vec![k1.clone().reshape([n * kk, d]), k2.clone().reshape([n * kk, d])],
        0,
    );
    dist::all_gather(l2_normalize(both, 1))
}

/// The SlotCon loss of one batch: the student's and the teacher's outputs for both views
/// (teacher outputs are detached here), the alignment of each view, and the centre; the
/// teacher's temperature is the one `net`'s teacher groups with ([`crate::ModelConfig`]). Its
/// one host read (the prototype argmax) also brings back `carry` ([`Losses::carried`]).
///
/// In a distributed run (`crate::dist`) this is this rank's share of the global batch's
/// loss: sums over its images divided by counts over every rank's (valid pixels, contrast
/// queries), so that the ranks' shares add up to the loss of the whole batch whatever the
/// number of ranks; the contrast's keys and the centre's batch mean are every rank's, and
/// the metrics ([`Losses::carried`], the active slots, the masked pairs) are the global
/// batch's.
pub fn slotcon_loss(
    net: &SlotConNet,
    student: [(Tensor<3>, Tensor<4>); 2],
    teacher: [(Tensor<3>, Tensor<4>); 2],
    plans: [&AlignPlan; 2],
    center: Tensor<2>,
    cfg: &LossConfig,
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
    // The teacher's temperature is its grouping's (one `teacher_temp`, as the official code).
    let temps = [cfg.student_temp, net.teacher.grouping.temp()];
    let distill = [
        self_distill(qa1, ka2, center.clone(), &valid, temps),
        self_distill(qa2, ka1, center.clone(), &valid, temps),
    ];
    let keys = gathered_keys(&k1, &k2);
    // One host read for the four maps, the valid pairs and `carry` (of every rank): the
    // teacher's flags serve the contrast and the metric.
    let read = active([&sq1, &sq2, &sk1, &sk2], &valid, carry);
    let [mq1, mq2, mk1, mk2] = &read.active;
    let [_, _, h, w] = sq1.dims();
    let pixels_valid = (read.valid.iter().filter(|v| **v).count() * h * w).max(1);
    let [d1, d2] = distill.map(|d| d.div_scalar(pixels_valid as f64));
    let group = d1 + d2;
    let tau = cfg.contrast_temp;
    let ctr = contrast(q1, &keys, 1, mq1, mk2, net, tau) + contrast(q2, &keys, 0, mq2, mk1, net, tau);
    let w = cfg.group_loss_weight;
    let total = group.clone() * w + ctr.clone() * (1.0 - w);
    let teacher_pixels = pixels(Tensor::cat(vec![sk1.clone(), sk2.clone()], 0));
    let count = teacher_pixels.dims()[0] * dist::world_size();
    let batch_center = dist::all_reduce_sum(teacher_pixels.sum_dim(0)).div_scalar(count as f64);
    let center = center * cfg.center_momentum + batch_center * (1.0 - cfg.center_momentum);
    let n_active = [mk1, mk2].iter().copied().flatten().filter(|&&a| a).count();
    let views = 2 * read.valid.len();
    let metrics = Tensor::cat(vec![total.clone().detach(), group.detach(), ctr.detach()], 0);
    Losses {
        total,
        metrics,
        carried: read.carried,
        center,
        active_slots: n_active as f32 / views.max(1) as f32,
        masked_pairs: read.valid.iter().filter(|v| !**v).count(),
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
