//! Learning-rate and teacher-momentum schedules: pure functions of the step.

use std::f64::consts::PI;

/// The official scheduler (`GradualWarmupScheduler` around `CosineAnnealingLR`, stepped
/// once per iteration): linear from `lr / multiplier` at step 0 to `lr` at step
/// `warmup`, then cosine from `lr` to `min_lr` at step `total`.
pub fn learning_rate(step: u64, warmup: u64, total: u64, lr: f64, multiplier: f64, min_lr: f64) -> f64 {
    if step <= warmup {
        if warmup == 0 {
            return lr;
        }
        return lr / multiplier * ((multiplier - 1.0) * step as f64 / warmup as f64 + 1.0);
    }
    let t_max = total.saturating_sub(warmup).max(1) as f64;
    min_lr + (lr - min_lr) * (1.0 + (PI * (step - warmup) as f64 / t_max).cos()) / 2.0
}

/// The teacher's EMA momentum at step `k` of `total`: `1 - (1 - m0)·(cos(πk/K) + 1)/2`,
/// from `m0` to 1.
pub fn teacher_momentum(k: u64, total: u64, m0: f64) -> f64 {
    1.0 - (1.0 - m0) * ((PI * k as f64 / total.max(1) as f64).cos() + 1.0) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let (w, t) = (50, 1000);
        assert!((learning_rate(0, w, t, 2.0, 100.0, 1e-6) - 0.02).abs() < 1e-12);
        assert!((learning_rate(w, w, t, 2.0, 100.0, 1e-6) - 2.0).abs() < 1e-12);
        assert!((learning_rate(t, w, t, 2.0, 100.0, 1e-6) - 1e-6).abs() < 1e-12);
        let mid = learning_rate(w + (t - w) / 2, w, t, 2.0, 100.0, 1e-6);
        assert!((mid - (1e-6 + (2.0 - 1e-6) / 2.0)).abs() < 1e-9);
        let lrs: Vec<f64> = (0..=t).map(|s| learning_rate(s, w, t, 2.0, 100.0, 1e-6)).collect();
        assert!(lrs[..=w as usize].windows(2).all(|p| p[0] < p[1]));
        assert!(lrs[w as usize..].windows(2).all(|p| p[0] >= p[1]));
    }

    #[test]
    fn momentum_goes_from_m0_to_one() {
        assert!((teacher_momentum(0, 100, 0.99) - 0.99).abs() < 1e-12);
        assert!((teacher_momentum(100, 100, 0.99) - 1.0).abs() < 1e-12);
        assert!((teacher_momentum(50, 100, 0.99) - 0.995).abs() < 1e-12);
    }
}
