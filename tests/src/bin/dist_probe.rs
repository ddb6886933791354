//! `slotcon-dist-probe`: run in every process of a distributed launch (torchrun's
//! variables), it checks the collectives and SyncBatchNorm of `slotcon_train::dist` against
//! one process's arithmetic: each rank takes its slice of a batch that every rank can
//! build, and compares the synced output, input gradient, parameter gradients (summed over
//! ranks) and running statistics with flex's plain BatchNorm over the whole batch, in f32
//! and with a bf16 input as autocast gives it (f32 statistics and parameters). Prints one
//! line per check; exits 1 if any is off. `tests/tests/distributed.rs` launches it.

#![allow(deprecated)] // burn-tch's LibTorch device, as slotcon-train uses it

use std::time::Duration;

use anyhow::{bail, Result};
use burn::prelude::*;
use burn::tensor::FloatDType;
use slotcon_train::dist::{self, DistBackend, Launch};
use slotcon_train::model::norm::batch_norm_layer;

const TOLERANCE: f32 = 1e-4;

/// What rounding a value to bf16 may change, relative to it (half of bf16's 2⁻⁷ spacing).
const BF16_ROUNDING: f32 = 1.0 / 256.0;

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

/// `v` rounded to bf16 (kept as f32).
fn bf16_rounded(v: &[f32]) -> Vec<f32> {
    let t = Tensor::<1>::from_floats(v, &Device::flex());
    values(t.cast(FloatDType::BF16).cast(FloatDType::F32))
}

/// `(output, d x, d gamma, d beta, running mean, running var)` of a training-mode batch
/// norm of `x` (shape `shape`) on `device`, for the loss `Σ out · w`; with `half`, the
/// batch norm takes `x` in bf16 and returns bf16, as under autocast.
fn bn_case(device: &Device, x: Vec<f32>, w: Vec<f32>, shape: &[usize], half: bool) -> [Vec<f32>; 6] {
    let c = shape[1];
    let bn = batch_norm_layer(c, 1.5, device);
    let x = Tensor::<1>::from_floats(x.as_slice(), device).require_grad();
    let w = Tensor::<1>::from_floats(w.as_slice(), device);
    let rest = shape[2..].iter().product::<usize>();
    let shaped: Tensor<3> = x.clone().reshape([shape[0], c, rest]);
    let out = match half {
        true => bn.forward(shaped.cast(FloatDType::BF16)).cast(FloatDType::F32),
        false => bn.forward(shaped),
    };
    let out = out.reshape([shape.iter().product::<usize>()]);
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

/// SyncBatchNorm on this rank's `rows[rank]` rows against flex over all of them, each check
/// with its tolerance. With `half` the rank's input is bf16 and flex's the same values in
/// f32: the output and the input gradient are then bf16 roundings of flex's, and the
/// rest, computed in f32, is held as in f32.
fn sync_bn(rows: &[usize], rest: &[usize], half: bool) -> Vec<(String, f32, f32)> {
    let rank = dist::rank();
    let per_row: usize = rest.iter().product();
    let total: usize = rows.iter().sum();
    let full_shape: Vec<usize> = [total].iter().chain(rest).copied().collect();
    let (mut x, mut w) = (
        batch(&full_shape),
        batch(&full_shape).iter().map(|v| v.cos()).collect::<Vec<_>>(),
    );
    if half {
        // What reaches the batch norm in bf16: the input, and the output gradient (`w`).
        (x, w) = (bf16_rounded(&x), bf16_rounded(&w));
    }
    let want = bn_case(&Device::flex().autodiff(), x.clone(), w.clone(), &full_shape, false);
    let start = rows[..rank].iter().sum::<usize>() * per_row;
    let range = start..start + rows[rank] * per_row;
    let mine: Vec<usize> = [rows[rank]].iter().chain(rest).copied().collect();
    let device = Device::libtorch().autodiff();
    let got = bn_case(
        &device,
        x[range.clone()].to_vec(),
        w[range.clone()].to_vec(),
        &mine,
        half,
    );
    let summed = |v: &[f32]| values(dist::all_reduce_sum(Tensor::<1>::from_floats(v, &Device::libtorch())));
    let rounded = TOLERANCE + if half { BF16_ROUNDING } else { 0.0 };
    vec![
        ("output".into(), off(&got[0], &want[0][range.clone()]), rounded),
        ("d input".into(), off(&got[1], &want[1][range]), rounded),
        ("d gamma (summed)".into(), off(&summed(&got[2]), &want[2]), TOLERANCE),
        ("d beta (summed)".into(), off(&summed(&got[3]), &want[3]), TOLERANCE),
        ("running mean".into(), off(&got[4], &want[4]), TOLERANCE),
        ("running var".into(), off(&got[5], &want[5]), TOLERANCE),
    ]
}

fn collectives() -> Vec<(String, f32, f32)> {
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
            TOLERANCE,
        ),
        (
            "all_gather".into(),
            off(&values(dist::all_gather(x.clone())), &gathered),
            TOLERANCE,
        ),
        (
            "broadcast".into(),
            off(&values(dist::broadcast(x)), &[1.0, 10.0]),
            TOLERANCE,
        ),
    ]
}

fn main() -> Result<()> {
    let launch = Launch::from_env()?;
    dist::init(&launch, DistBackend::Gloo, Duration::from_secs(60))?;
    let world = dist::world_size();
    let mut checks = collectives();
    let even = vec![4; world];
    for (name, rows, rest, half) in [
        ("conv", even.clone(), vec![3, 5, 5], false),
        // Under autocast: a bf16 activation with f32 statistics and parameters.
        ("conv, bf16", even.clone(), vec![3, 5, 5], true),
        // The predictor's BatchNorm1d: a different number of rows on each rank.
        ("1-d, uneven", (0..world).map(|r| 5 - (r % 3)).collect(), vec![6], false),
        // A rank without a single row still takes part.
        (
            "1-d, empty rank",
            (0..world).map(|r| if r == world - 1 { 0 } else { 3 }).collect(),
            vec![6],
            false,
        ),
    ] {
        for (what, e, tolerance) in sync_bn(&rows, &rest, half) {
            checks.push((format!("SyncBatchNorm {name}: {what}"), e, tolerance));
        }
    }
    let mut bad = 0;
    for (name, e, tolerance) in &checks {
        let ok = e <= tolerance;
        bad += usize::from(!ok);
        println!(
            "rank {}: {name}: {e:.2e} (tolerance {tolerance:.1e}) {}",
            dist::rank(),
            if ok { "ok" } else { "OFF" }
        );
    }
    dist::barrier();
    if bad > 0 {
        bail!("{bad} checks off by more than their tolerance");
    }
    Ok(())
}
