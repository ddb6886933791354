//! `slotcon-dist-probe`: run in every process of a distributed launch (torchrun's
//! variables), it checks the collectives and SyncBatchNorm of `slotcon_train::dist` against
//! one process's arithmetic: each rank takes its slice of a batch that every rank can
//! build, and compares the synced output, input gradient, parameter gradients (summed over
//! ranks) and running statistics with flex's plain BatchNorm over the whole batch. Prints
//! one line per check; exits 1 if any is off. `tests/tests/distributed.rs` launches it.

#![allow(deprecated)] // burn-tch's LibTorch device, as slotcon-train uses it

use std::time::Duration;

use anyhow::{bail, Result};
use burn::prelude::*;
use slotcon_train::dist::{self, DistBackend, Launch};
use slotcon_train::model::norm::batch_norm_layer;

const TOLERANCE: f32 = 1e-4;

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().expect("f32")
}

/// Largest |a − b| relative to max(1, |b|).
fn off(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// A deterministic batch `[rows, c, rest...]`, as every rank builds it.
fn batch(shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let per_row = n / shape[0];
    (0..n)
        .map(|i| ((i as f32) * 0.37).sin() * 3.0 + (i % per_row) as f32 * 0.01 + 0.5)
        .collect()
}

/// `(output, d x, d gamma, d beta, running mean, running var)` of a training-mode batch
/// norm of `x` (shape `shape`) on `device`, for the loss `Σ out · w`.
fn bn_case(device: &Device, x: Vec<f32>, w: Vec<f32>, shape: &[usize]) -> [Vec<f32>; 6] {
    let c = shape[1];
    let bn = batch_norm_layer(c, 1.5, device);
    let x = Tensor::<1>::from_floats(x.as_slice(), device).require_grad();
    let w = Tensor::<1>::from_floats(w.as_slice(), device);
    let rest = shape[2..].iter().product::<usize>();
    let shaped: Tensor<3> = x.clone().reshape([shape[0], c, rest]);
    let out = bn.forward(shaped).reshape([shape.iter().product::<usize>()]);
    let grads = (out.clone() * w).sum().backward();
    let grad = |t: Tensor<1>| t.grad(&grads).map(values).unwrap_or_default();
    [
        values(out),
        grad(x),
        grad(bn.gamma.val()),
        grad(bn.beta.val()),
        values(bn.running_mean.value()),
        values(bn.running_var.value()),
    ]
}

/// SyncBatchNorm on this rank's `rows[rank]` rows against flex over all of them.
fn sync_bn(rows: &[usize], rest: &[usize]) -> Vec<(String, f32)> {
    let rank = dist::rank();
    let per_row: usize = rest.iter().product();
    let total: usize = rows.iter().sum();
    let full_shape: Vec<usize> = [total].iter().chain(rest).copied().collect();
    let (x, w) = (
        batch(&full_shape),
        batch(&full_shape).iter().map(|v| v.cos()).collect::<Vec<_>>(),
    );
    let want = bn_case(&Device::flex().autodiff(), x.clone(), w.clone(), &full_shape);
    let start = rows[..rank].iter().sum::<usize>() * per_row;
    let range = start..start + rows[rank] * per_row;
    let mine: Vec<usize> = [rows[rank]].iter().chain(rest).copied().collect();
    let device = Device::libtorch().autodiff();
    let got = bn_case(&device, x[range.clone()].to_vec(), w[range.clone()].to_vec(), &mine);
    let summed = |v: &[f32]| values(dist::all_reduce_sum(Tensor::<1>::from_floats(v, &Device::libtorch())));
    vec![
        ("output".into(), off(&got[0], &want[0][range.clone()])),
        ("d input".into(), off(&got[1], &want[1][range])),
        ("d gamma (summed)".into(), off(&summed(&got[2]), &want[2])),
        ("d beta (summed)".into(), off(&summed(&got[3]), &want[3])),
        ("running mean".into(), off(&got[4], &want[4])),
        ("running var".into(), off(&got[5], &want[5])),
    ]
}

fn collectives() -> Vec<(String, f32)> {
    let (rank, world) = (dist::rank() as f32, dist::world_size());
    let device = Device::libtorch();
    let x = Tensor::<1>::from_floats([rank + 1.0, 10.0], &device);
    let ranks = (0..world).map(|r| r as f32);
    let sum = vec![ranks.clone().map(|r| r + 1.0).sum(), 10.0 * world as f32];
    let gathered: Vec<f32> = ranks.flat_map(|r| [r + 1.0, 10.0]).collect();
    vec![
        (
            "all_reduce_sum".into(),
            off(&values(dist::all_reduce_sum(x.clone())), &sum),
        ),
        (
            "all_gather".into(),
            off(&values(dist::all_gather(x.clone())), &gathered),
        ),
        ("broadcast".into(), off(&values(dist::broadcast(x)), &[1.0, 10.0])),
    ]
}

fn main() -> Result<()> {
    let launch = Launch::from_env()?;
    dist::init(&launch, DistBackend::Gloo, Duration::from_secs(60))?;
    let world = dist::world_size();
    let mut checks = collectives();
    let even = vec![4; world];
    for (name, rows, rest) in [
        ("conv", even.clone(), vec![3, 5, 5]),
        // The predictor's BatchNorm1d: a different number of rows on each rank.
        ("1-d, uneven", (0..world).map(|r| 5 - (r % 3)).collect(), vec![6]),
        // A rank without a single row still takes part.
        (
            "1-d, empty rank",
            (0..world).map(|r| if r == world - 1 { 0 } else { 3 }).collect(),
            vec![6],
        ),
    ] {
        for (what, e) in sync_bn(&rows, &rest) {
            checks.push((format!("SyncBatchNorm {name}: {what}"), e));
        }
    }
    let mut bad = 0;
    for (name, e) in &checks {
        let ok = *e <= TOLERANCE;
        bad += usize::from(!ok);
        println!(
            "rank {}: {name}: {e:.2e} {}",
            dist::rank(),
            if ok { "ok" } else { "OFF" }
        );
    }
    dist::barrier();
    if bad > 0 {
        bail!("{bad} checks off by more than {TOLERANCE}");
    }
    Ok(())
}
