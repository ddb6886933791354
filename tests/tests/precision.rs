//! Mixed precision as AMP does it: a bf16 (or fp16, loss-scaled) run keeps f32 master
//! weights, so its teacher, its student and its loss follow the f32 run's, where an
//! all-bf16 run's updates round away (DESIGN §6).

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use slotcon_augment::LoaderBuilder;
use slotcon_shards::ShardReader;
use slotcon_tests::floats;
use slotcon_train::optim::{ema_update, Lars};
use slotcon_train::trainer::Trainer;
use slotcon_train::{Precision, TrainConfig};

/// The devices the precision tests run on, with the steps each runs (flex, four times
/// slower with bf16 casts, 30; LibTorch 60: its 100 took 11 of CI's minutes, and the
/// checks judge the first 30 steps and the per-step mean over the whole run).
fn devices() -> Vec<(Device, usize)> {
    #[allow(unused_mut)] // pushed to with the `tch` feature only
    let mut devices = vec![(Device::flex().autodiff(), 30)];
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    devices.push((Device::libtorch().autodiff(), 60));
    devices
}

/// Every parameter (not the BatchNorm statistics) of `module` whose path starts with
/// `prefix`, concatenated.
fn flat<M: burn::module::Module>(module: &M, prefix: &str) -> Vec<f32> {
    floats(module)
        .into_iter()
        .filter(|(path, _, _)| path.starts_with(prefix) && !path.contains(".running_"))
        .flat_map(|(_, _, v)| v)
        .collect()
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The runs compared: f32, bf16 or fp16 (AMP), and the control, an f32 run whose only
/// difference is that its initial weights were rounded to that precision once.
const RUNS: usize = 3;

/// What the runs measured.
struct Runs {
    /// Total and grouping loss per step.
    losses: [Vec<StepLoss>; RUNS],
    teacher0: Vec<f32>,
    teacher30: [Vec<f32>; RUNS],
    student0: Vec<f32>,
    student30: [Vec<f32>; RUNS],
    /// Steps the fp16 run skipped for overflowing gradients.
    skipped: usize,
}

/// Perturbs every float of a module the way a control run starts, keeping what requires
/// gradients: `Round(t)` rounds each to the float type `t` (kept as f32); `Nudge` moves
/// each by about one f32 rounding (`x · (1 + 2⁻²³)`).
enum Perturb {
    Round(FloatDType),
    Nudge,
}

impl burn::module::ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        param.map(|t| {
            let grad = t.is_require_grad();
            let moved = match self {
                Perturb::Round(dtype) => t.inner().cast(*dtype).cast(FloatDType::F32),
                Perturb::Nudge => t.inner().mul_scalar(1.0 + f32::EPSILON as f64),
            };
            let moved = Tensor::from_inner(moved);
            if grad {
                moved.require_grad()
            } else {
                moved
            }
        })
    }
}

/// `steps` steps of the tiny preset (64 px, batch 8) on `device` for each of the [`RUNS`],
/// on the same batches, the mixed one in `precision`.
fn run_all(shards: &std::path::Path, device: &Device, steps: usize, precision: Precision) -> Runs {
    let mut cfg = TrainConfig::tiny();
    (cfg.data.image_size, cfg.data.batch_size, cfg.seed) = (64, 8, 3);
    let mut mixed = cfg.clone();
    mixed.precision = precision;
    let round = precision.compute().expect("a mixed precision");
    // Every run starts from the first one's initial checkpoint (other tests draw from the
    // same device generator in parallel, so two constructions could differ).
    let first = Trainer::new(cfg.clone(), device, 100);
    let init = tempfile::tempdir().unwrap();
    first.save(init.path()).unwrap();
    let second = Trainer::new(mixed, device, 100).load(init.path()).unwrap();
    let mut control = Trainer::new(cfg.clone(), device, 100).load(init.path()).unwrap();
    control.map_net(|net| burn::module::Module::map(net, &mut Perturb::Round(round)));
    let (teacher0, student0) = (flat(first.net(), "teacher"), flat(first.net(), "student"));
    assert_eq!(teacher0, flat(second.net(), "teacher"));
    assert_ne!(teacher0, flat(control.net(), "teacher"));
    let mut trainers = [first, second, control];
    let reader = Arc::new(ShardReader::open(shards).unwrap());
    let aug = cfg.data.augment();
    let mut runs = Runs {
        losses: Default::default(),
        teacher0,
        teacher30: Default::default(),
        student0,
        student30: Default::default(),
        skipped: 0,
    };
    for epoch in 0..7 {
        let loader = LoaderBuilder::new(Arc::clone(&reader))
            .augment(aug.clone())
            .batch_size(cfg.data.batch_size)
            .workers(2)
            .seed(cfg.seed)
            .epoch(epoch)
            .build()
            .unwrap();
        for batch in loader.take(steps - runs.losses[0].len()) {
            let batch = batch.unwrap();
            for (i, trainer) in trainers.iter_mut().enumerate() {
                let m = trainer.train_step_now(&batch).unwrap();
                runs.skipped += usize::from(m.skipped);
                runs.losses[i].push((m.loss, m.loss_group));
                if runs.losses[i].len() == 30 {
                    runs.teacher30[i] = flat(trainer.net(), "teacher");
                    runs.student30[i] = flat(trainer.net(), "student");
                }
            }
        }
    }
    // Everything the mixed run keeps is f32: parameters, BN statistics, teacher, predictor.
    for (path, dtype, _) in floats(trainers[1].net()) {
        assert_eq!(dtype, DType::F32, "{path} is kept in {dtype:?}");
    }
    runs
}

/// One step's (total, grouping) losses.
type StepLoss = (f64, f64);

/// The mean of `f(run) / f(f32) - 1` in absolute value over `pairs` (run, f32).
fn mean_rel(pairs: &[(StepLoss, StepLoss)], f: impl Fn(&StepLoss) -> f64) -> f64 {
    pairs.iter().map(|(b, a)| (f(b) / f(a) - 1.0).abs()).sum::<f64>() / pairs.len() as f64
}

/// How run `i` compares with the f32 run: (teacher apart after 30 steps, student moved,
/// loss per step over 30 steps, grouping loss per step, total loss per step over the
/// whole run, and per 25-step window, for the record).
fn compare(r: &Runs, i: usize) -> (f64, f64, f64, f64, f64, Vec<f64>) {
    let apart = distance(&r.teacher30[i], &r.teacher30[0]);
    let moved = distance(&r.student30[i], &r.student0);
    let pairs: Vec<_> = r.losses[i].iter().copied().zip(r.losses[0].iter().copied()).collect();
    let windows = pairs.chunks(25).map(|w| mean_rel(w, |l| l.0)).collect();
    (
        apart,
        moved,
        mean_rel(&pairs[..30], |l| l.0),
        mean_rel(&pairs, |l| l.1),
        mean_rel(&pairs, |l| l.0),
        windows,
    )
}

#[test]
fn a_bf16_run_follows_the_f32_run_with_f32_master_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    slotcon_tests::ingest_coco(&shards);
    for (device, steps) in devices() {
        follows(&shards, &device, steps, Precision::Bf16);
    }
}

/// fp16 with the loss scaling, 30 steps on flex, judged as bf16 is. Not on LibTorch: its
/// f16 convolutions on a CPU take ~9 s a step at this size (flex ~1.7 s), so the 90 steps
/// took 12 of CI's minutes. LibTorch's fp16 steps are run by the overflow test below and
/// by `trainer.rs`'s, whose loss scale is compared with GradScaler's step for step.
#[test]
fn an_fp16_run_follows_the_f32_run_with_f32_master_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    slotcon_tests::ingest_coco(&shards);
    follows(&shards, &Device::flex().autodiff(), 30, Precision::Fp16);
}

/// Runs [`run_all`] and checks that the `precision` run follows the f32 run.
fn follows(shards: &std::path::Path, device: &Device, steps: usize, precision: Precision) {
    {
        let r = run_all(shards, device, steps, precision);
        let travelled = distance(&r.teacher30[0], &r.teacher0);
        let f32_moved = distance(&r.student30[0], &r.student0);
        let (apart, moved, total30, group, total, windows) = compare(&r, 1);
        let (c_apart, c_moved, c_total30, c_group, c_total, c_windows) = compare(&r, 2);
        eprintln!(
            "{device:?} ({steps} steps, {precision}, {} skipped): teacher travelled {travelled:.3e}, {precision} {apart:.3e} from it, \
             control {c_apart:.3e}; student moved {f32_moved:.3e}, {precision} {moved:.3e}, control {c_moved:.3e}; \
             loss per step (30) {precision} {total30:.4} control {c_total30:.4}; grouping per step {precision} {group:.4} \
             control {c_group:.4}; loss per step ({steps}) {precision} {total:.4} control {c_total:.4}; windows {precision} \
             {windows:.4?} control {c_windows:.4?}",
            r.skipped
        );
        // Judged against the control: 30 steps already amplify one rounding of the start
        // (the contrast's argmax flips), so that is the noise floor. The bf16 teacher is
        // no farther from the f32 teacher than the control's, and the losses differ no
        // more: step by step over 30 steps, for the grouping loss (no argmax) over every
        // step, and for the total over the whole run.
        let near = |got: f64, control: f64, floor: f64| got < 2.0 * control.max(floor);
        assert!(
            near(apart, c_apart, 0.05 * travelled),
            "{device:?}: teacher {apart} vs control {c_apart}"
        );
        // The student: LARS gives every step an update of a fixed size, so the distance
        // measures how consistent the directions were, and it is the most chaotic figure
        // here: bf16 gradients of the 1-D parameters (BatchNorm's, sums with much
        // cancellation) differ by 5-10 % per step, and the bf16 and control distances
        // have ranged from -33 % to +48 % of f32's as the data and the order of sums
        // changed (docs/training.md). Gradients that lost their direction (noise) would move the
        // student far less; within 60 %, or twice the control's difference.
        let (gap, c_gap) = ((moved / f32_moved - 1.0).abs(), (c_moved / f32_moved - 1.0).abs());
        assert!(
            gap < 2.0 * c_gap.max(0.3),
            "{device:?}: student moved {moved}, f32 {f32_moved}, control {c_moved}"
        );
        assert!(
            near(total30, c_total30, 0.005),
            "{device:?}: losses {:?} vs {:?}",
            r.losses[1],
            r.losses[0]
        );
        assert!(
            near(group, c_group, 0.005),
            "{device:?}: losses {:?} vs {:?}",
            r.losses[1],
            r.losses[0]
        );
        // The whole run, step by step: the mean per-step difference of the total loss.
        // Not 25-step windows (judged until now): a window is one sample of a chaotic
        // process (an argmax flip makes one run jump), so a bound on it judged the CPU's
        // round-off, not the code: a fixed 3 % failed on an AVX-512 machine where the
        // control's window reached 3.25 %, and 2x the control's window on an AVX2 one
        // where the bf16 run's argmax flipped at step 25 and the control's had not
        // (2.9 % against 0.45 % over steps 25-29, while over all 30 steps bf16 was
        // 0.98 % and the control 1.22 %). The windows are printed above, for the record.
        assert!(
            near(total, c_total, 0.005),
            "{device:?}: loss per step {total} vs control {c_total}; windows {windows:?}, control {c_windows:?}"
        );
    }
}

/// `x` stored in bf16 (what a bf16 parameter holds), back as f32.
fn bf16_stored<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::BF16).cast(FloatDType::F32)
}

#[test]
fn two_hundred_ema_steps_move_an_f32_teacher_as_far_as_exact_arithmetic() {
    let device = Device::flex();
    let cfg = TrainConfig::tiny();
    // Two fresh networks: the first's student, the second's teacher (other weights).
    let student = cfg.model.init(&device).student;
    let mut teacher = cfg.model.init(&device).teacher;
    let (s, t0) = (flat(&student, ""), flat(&teacher, ""));
    let m: f64 = 0.999;
    for _ in 0..200 {
        teacher = ema_update(teacher, &student, m);
    }
    // Exactly: t200 = s + m^200 (t0 - s), so it covered 1 - m^200 of the gap.
    let want = (1.0 - m.powi(200)) * distance(&s, &t0);
    let got = distance(&flat(&teacher, ""), &t0);
    assert!((got / want - 1.0).abs() < 0.01, "moved {got}, exact {want}");
    // The same steps with the teacher stored in bf16 go somewhere else (the all-bf16 mode
    // this replaced): the test can tell.
    let t = Tensor::<1>::from_floats(t0.as_slice(), &device);
    let st = Tensor::<1>::from_floats(s.as_slice(), &device);
    let mut b = bf16_stored(t.clone());
    for _ in 0..200 {
        b = bf16_stored(b * m + st.clone() * (1.0 - m));
    }
    let bf16_moved = distance(&b.into_data().try_to_vec::<f32>().unwrap(), &t0);
    assert!(
        (bf16_moved / want - 1.0).abs() > 0.05,
        "bf16 storage moved {bf16_moved}, exact {want}"
    );
}

#[test]
fn two_hundred_lars_steps_on_bf16_gradients_change_f32_weights_as_f32_gradients_do() {
    let device = Device::flex();
    let cfg = TrainConfig::tiny();
    let lars = Lars::new(cfg.optim.weight_decay, cfg.optim.lars_eta, cfg.optim.momentum);
    let lr = cfg.lr();
    let w0 = Tensor::<2>::random([256, 576], burn::tensor::Distribution::Normal(0.0, 0.05), &device);
    let grads: Vec<Tensor<2>> = (0..200)
        .map(|_| Tensor::random([256, 576], burn::tensor::Distribution::Normal(0.0, 1e-3), &device))
        .collect();
    let run = |bf16_grads: bool, bf16_weights: bool| {
        use burn::optim::Optimizer;
        let (mut w, mut state) = (w0.clone(), None);
        for g in &grads {
            let g = if bf16_grads { bf16_stored(g.clone()) } else { g.clone() };
            let (next, s) = lars.step(lr, w, g, state);
            (w, state) = (if bf16_weights { bf16_stored(next) } else { next }, s);
        }
        let v = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        distance(&v(w), &v(w0.clone()))
    };
    let exact = run(false, false);
    let amp = run(true, false);
    assert!((amp / exact - 1.0).abs() < 0.03, "AMP moved {amp}, f32 {exact}");
    // Weights stored in bf16 (the mode this replaced) lose the updates.
    let all_bf16 = run(true, true);
    assert!(
        (all_bf16 / exact - 1.0).abs() > 0.1,
        "bf16 weights moved {all_bf16}, f32 {exact}"
    );
}

#[test]
fn an_fp16_step_whose_gradients_overflow_changes_no_weight_momentum_teacher_or_centre() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    slotcon_tests::ingest_coco(&shards);
    let mut cfg = TrainConfig::tiny();
    (cfg.data.image_size, cfg.data.batch_size, cfg.seed) = (64, 8, 3);
    cfg.precision = Precision::Fp16;
    // 2¹²⁷ times any gradient overflows f16 (and the loss, f32): the step must be skipped.
    cfg.scaler.init_scale = 2f64.powi(127);
    let reader = Arc::new(ShardReader::open(&shards).unwrap());
    let batch = LoaderBuilder::new(reader)
        .augment(cfg.data.augment())
        .batch_size(cfg.data.batch_size)
        .workers(2)
        .seed(cfg.seed)
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    for (device, _) in devices() {
        let mut trainer = Trainer::new(cfg.clone(), &device, 100);
        let (params, before) = (flat(trainer.net(), ""), trainer.progress().unwrap());
        let m = trainer.train_step_now(&batch).unwrap();
        assert!(m.skipped, "{device:?}: a step at scale 2^127 was not skipped");
        assert_eq!(m.loss_scale, Some(2f32.powi(127)));
        assert!(
            params == flat(trainer.net(), ""),
            "{device:?}: a skipped step moved a weight"
        );
        assert!(
            trainer.momentum().unwrap().is_none(),
            "{device:?}: a skipped step set momentum"
        );
        let after = trainer.progress().unwrap();
        assert_eq!(
            after.center, before.center,
            "{device:?}: a skipped step moved the centre"
        );
        let scaler = after.scaler.expect("an fp16 trainer has a scaler");
        assert_eq!((scaler.scale, scaler.skipped_in_a_row), (2f32.powi(126), 1));
        assert_eq!(after.step, 1, "a skipped step still counts (the schedules go on)");
    }
}

/// `--memory-format channels_last` on LibTorch: the views and every convolution weight of
/// the student and the teacher are NHWC-strided after a step (the updates keep it), and the
/// run follows the NCHW run from the same start as closely as round-off lets it: no farther
/// (in losses and in weights after the steps) than a control NCHW run whose only difference
/// is one f32 rounding of every initial weight, within 4x that control's distance (or of a
/// floor of 2⁻²⁰ relative, should the control land exactly).
#[cfg(feature = "tch")]
#[test]
fn channels_last_steps_follow_nchw_steps() {
    use slotcon_train::model::layout::is_channels_last;
    use slotcon_train::MemoryFormat;

    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    slotcon_tests::ingest_coco(&shards);
    #[allow(deprecated)]
    let device = Device::libtorch().autodiff();
    let mut cfg = TrainConfig::tiny();
    (cfg.data.image_size, cfg.data.batch_size, cfg.seed) = (64, 8, 3);
    cfg.memory_format = MemoryFormat::Contiguous;
    let mut last = cfg.clone();
    last.memory_format = MemoryFormat::ChannelsLast;
    let first = Trainer::new(cfg.clone(), &device, 100);
    let init = tempfile::tempdir().unwrap();
    first.save(init.path()).unwrap();
    let second = Trainer::new(last, &device, 100).load(init.path()).unwrap();
    let mut control = Trainer::new(cfg.clone(), &device, 100).load(init.path()).unwrap();
    control.map_net(|net| burn::module::Module::map(net, &mut Perturb::Nudge));
    assert_ne!(flat(first.net(), "student"), flat(control.net(), "student"));
    let mut trainers = [first, second, control];
    let reader = Arc::new(ShardReader::open(&shards).unwrap());
    let loader = LoaderBuilder::new(reader)
        .augment(cfg.data.augment())
        .batch_size(cfg.data.batch_size)
        .workers(2)
        .seed(cfg.seed)
        .build()
        .unwrap();
    let mut losses: [Vec<f64>; 3] = Default::default();
    for batch in loader.take(4) {
        let batch = batch.unwrap();
        for (i, trainer) in trainers.iter_mut().enumerate() {
            losses[i].push(trainer.train_step_now(&batch).unwrap().loss);
        }
    }
    let weights = |t: &Trainer| {
        let mut conv = Vec::new();
        slotcon_train::model::layout::each_weight_4d(t.net(), |path, w| {
            // A 1x1 convolution's weight [o, i, 1, 1] is both NCHW and NHWC.
            if w.dims()[2..] != [1, 1] {
                conv.push((path.to_string(), is_channels_last(&w)))
            }
        });
        conv
    };
    for (i, want) in [(0, false), (1, true)] {
        let conv = weights(&trainers[i]);
        assert!(conv.len() > 20, "{conv:?}");
        for (path, format) in conv {
            assert_eq!(format, Some(want), "{path} after the steps, run {i}");
        }
    }
    let rel = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| ((x - y) / y).abs()).fold(0.0, f64::max);
    let (loss_apart, loss_control) = (rel(&losses[1], &losses[0]), rel(&losses[2], &losses[0]));
    let student = trainers.each_ref().map(|t| flat(t.net(), "student"));
    let (apart, control) = (distance(&student[1], &student[0]), distance(&student[2], &student[0]));
    println!("losses {losses:?}: channels_last {loss_apart:.3e}, control {loss_control:.3e}; student {apart:.3e}, control {control:.3e}");
    let floor = 2f64.powi(-20);
    let norm = student[0].iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        loss_apart <= 4.0 * loss_control.max(floor),
        "losses {loss_apart} vs control {loss_control}"
    );
    assert!(
        apart <= 4.0 * control.max(floor * norm),
        "student {apart} vs control {control}"
    );
}
