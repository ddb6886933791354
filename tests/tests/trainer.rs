//! `slotcon-train` end to end on the COCO sample: the run directory, exact resume, and
//! clear errors for a missing or empty store.

use std::path::Path;

use slotcon_tests::{bin, run, run_ok, step_losses};

const SMALL: [&str; 8] = [
    "--image-size",
    "64",
    "--batch-size",
    "8",
    "--workers",
    "2",
    "--seed",
    "3",
];

fn store(dir: &Path) {
    slotcon_tests::ingest_coco(dir);
}

#[test]
fn a_resumed_run_continues_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let train = |out: &Path, steps: &str, resume: bool| {
        let mut cmd = bin("slotcon-train");
        cmd.arg("--shards")
            .arg(&shards)
            .arg("--out")
            .arg(out)
            .args(SMALL)
            .args(["--max-steps", steps, "-q"]);
        if resume {
            cmd.arg("--resume");
        }
        run_ok(&mut cmd);
    };
    let (straight, resumed) = (tmp.path().join("straight"), tmp.path().join("resumed"));
    train(&straight, "6", false);
    train(&resumed, "3", false);
    train(&resumed, "6", true);
    let (a, b) = (step_losses(&straight), step_losses(&resumed));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "the resumed run differs");
    // Not just the losses: every tensor of the final checkpoint, BatchNorm running
    // statistics of student, teacher and predictor included, and the centre.
    let (c, d) = (
        crate::checkpoint::checkpoints(&straight),
        crate::checkpoint::checkpoints(&resumed),
    );
    assert_eq!(c.len(), 1);
    for ((name, x, px), (_, y, py)) in c.iter().zip(&d) {
        assert_eq!(px, py, "{name}: progress (step, centre) differs");
        for ((path, u), (_, v)) in x.iter().zip(y) {
            assert!(u == v, "{name}: {path} differs after a resume");
        }
        assert!(x.iter().any(|(p, _)| p.ends_with("running_var")));
    }
    assert!(a.iter().all(|(_, l)| l.is_finite() && *l > 0.0));

    // The run directory holds the resolved config, per-step metrics and the checkpoint.
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(straight.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg["image_size"].as_u64(), cfg["batch_size"].as_u64()),
        (Some(64), Some(8))
    );
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(straight.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    for key in [
        "step",
        "epoch",
        "loss",
        "loss_group",
        "loss_contrast",
        "lr",
        "momentum",
        "active_slots_per_image",
        "img_per_sec",
        "data_wait_frac",
    ] {
        assert!(line.get(key).is_some(), "metrics.jsonl lacks {key}: {line}");
    }
    for f in ["model.bpk", "optimizer.bin", "progress.json", "config.json"] {
        assert!(
            straight.join("checkpoints/current").join(f).exists(),
            "checkpoint lacks {f}"
        );
    }
}

#[test]
fn a_missing_or_empty_store_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = run(bin("slotcon-train")
        .arg("--shards")
        .arg(tmp.path().join("nope"))
        .arg("--out")
        .arg(tmp.path().join("r"))
        .arg("-q"));
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot open the shard store") && err.contains("nope"),
        "{err}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    slotcon_shards::Manifest::new(slotcon_shards::StoreKind::Encoded, serde_json::json!({}), vec![])
        .save(&empty)
        .unwrap();
    let (code, _, err) = run(bin("slotcon-train")
        .arg("--shards")
        .arg(&empty)
        .arg("--out")
        .arg(tmp.path().join("r2"))
        .arg("-q"));
    assert_eq!(code, 1);
    assert!(err.contains("holds no image"), "{err}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let out = tmp.path().join("run");
    // 128 / 32 = 4 steps per epoch: a checkpoint after step 4, then an absurd SGD rate
    // blows the weights up.
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards").arg(&shards).arg("--out").arg(&out).args([
        "--image-size",
        "64",
        "--batch-size",
        "32",
        "--workers",
        "2",
    ]);
    cmd.args(["--optimizer", "sgd", "--base-lr", "1e9", "--epochs", "3", "-q"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    let nan_loss = err.contains("the loss is") && err.contains("stopping");
    let nan_weights = err.contains("holds a NaN or an infinity; stopping without saving it");
    assert!(nan_loss || nan_weights, "{err}");
    let steps = step_losses(&out);
    let failed_at = steps.len() as u64;
    let progress = out.join("checkpoints/current/progress.json");
    if progress.exists() {
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&progress).unwrap()).unwrap();
        assert!(
            p["step"].as_u64().unwrap() <= failed_at,
            "the checkpoint is newer than the failure"
        );
        // Every tensor kept, BatchNorm statistics included, is finite.
        let device = slotcon_train::device::DeviceChoice::Flex.inference().unwrap();
        let kept = slotcon_eval::inference::load_run(&out, "current", &device).unwrap();
        let bad = slotcon_train::checkpoint::first_non_finite(&kept.net);
        assert_eq!(bad, None, "the kept checkpoint holds a non-finite tensor");
    }
    assert!(
        steps.iter().all(|(_, l)| l.is_finite()),
        "a non-finite loss was recorded: {steps:?}"
    );
}

#[test]
fn libtorch_is_a_device_when_built_with_tch() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards")
        .arg(&shards)
        .arg("--out")
        .arg(tmp.path().join("run"))
        .args(SMALL)
        .args(["--max-steps", "2", "--device", "libtorch", "-q"]);
    let (code, _, err) = run(&mut cmd);
    if cfg!(feature = "tch") {
        assert_eq!(code, 0, "{err}");
        assert_eq!(step_losses(&tmp.path().join("run")).len(), 2);
    } else {
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--features tch"), "{err}");
    }
}

/// Trains `steps` steps of the SMALL setting into `out` on `device` in `precision`.
fn train_in(shards: &Path, out: &Path, device: &str, precision: &str, steps: &str, resume: bool) {
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards").arg(shards).arg("--out").arg(out).args(SMALL).args([
        "--max-steps",
        steps,
        "--device",
        device,
        "--precision",
        precision,
        "-q",
    ]);
    if resume {
        cmd.arg("--resume");
    }
    run_ok(&mut cmd);
}

/// Tracking the f32 run is tests/precision.rs's; here: a bf16 run resumes exactly, and
/// its config says bf16.
#[test]
fn a_bf16_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let devices: &[&str] = if cfg!(feature = "tch") {
        &["flex", "libtorch"]
    } else {
        &["flex"]
    };
    for device in devices {
        let whole = tmp.path().join(format!("{device}-bf16"));
        train_in(&shards, &whole, device, "bf16", "3", false);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(whole.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["precision"], "bf16");
        let resumed = tmp.path().join(format!("{device}-bf16-resumed"));
        train_in(&shards, &resumed, device, "bf16", "2", false);
        train_in(&shards, &resumed, device, "bf16", "3", true);
        assert_eq!(
            step_losses(&resumed),
            step_losses(&whole),
            "{device}: a resumed bf16 run differs"
        );
        assert_eq!(step_losses(&whole).len(), 3);
    }
}

#[test]
fn the_step_benchmark_replays_the_same_first_step_in_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let device = if cfg!(feature = "tch") { "libtorch" } else { "flex" };
    let (code, out, err) = run(bin("slotcon-train-bench")
        .arg("--shards")
        .arg(&shards)
        .args([
            "--image-size",
            "64",
            "--batch-size",
            "8",
            "--warmup",
            "1",
            "--steps",
            "1",
            "--repeats",
            "2",
        ])
        .args(["--device", device, "--json", "--breakdown"]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let repeats = v["repeats"].as_array().unwrap();
    assert_eq!(repeats.len(), 2);
    assert!(v["ratio"].as_f64().unwrap() > 0.0);
    for (ours, theirs) in repeats.iter().map(|r| (&r[0], &r[1])) {
        assert_eq!(ours["step_ms"].as_array().unwrap().len(), 1);
        assert_eq!(theirs["step_ms"].as_array().unwrap().len(), 1);
        // --breakdown: every phase timed on both sides, and they add up to at most the step.
        for side in [ours, theirs] {
            let phases = &side["phases"][0];
            let sum: f64 = ["data", "forward", "loss", "backward", "optimizer", "ema"]
                .iter()
                .map(|p| phases[p].as_f64().unwrap_or_else(|| panic!("no {p} in {side}")))
                .sum();
            assert!(
                sum > 0.0 && sum <= side["step_ms"][0].as_f64().unwrap() * 1.01,
                "{side}"
            );
        }
    }
    // Same weights, same batch: the first step's loss is the same computation.
    let ours = repeats[0][0]["losses"][0].as_f64().unwrap();
    let theirs = repeats[0][1]["losses"][0].as_f64().unwrap();
    assert!((ours - theirs).abs() < 1e-4 * theirs.abs(), "{ours} vs {theirs}");
}

/// `--report`: one step observed on both sides. The same network makes the same number of
/// convolutions and batch norms (forward and backward), so those counts must agree
/// exactly; a peak of bytes is found on both sides, with the bytes held between steps and
/// the same phases, and the table names the kinds.
#[cfg(feature = "tch")]
#[test]
fn the_step_report_counts_the_same_convolutions_as_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let args = [
        "--image-size",
        "64",
        "--batch-size",
        "4",
        "--warmup",
        "1",
        "--steps",
        "1",
        "--repeats",
        "1",
    ];
    let report = |extra: &[&str]| {
        let (code, out, err) = run(bin("slotcon-train-bench")
            .arg("--shards")
            .arg(&shards)
            .args(args)
            .args(["--device", "libtorch", "--report"])
            .args(extra));
        assert_eq!(code, 0, "{err}");
        out
    };
    let v: serde_json::Value = serde_json::from_str(&report(&["--json"])).unwrap();
    let side = |name: &str| -> slotcon_train::observe::Observation {
        serde_json::from_value(v["observed"][name].clone()).unwrap_or_else(|e| panic!("{name}: {e} in {v}"))
    };
    let (ours, theirs) = (side("slotcon"), side("pytorch"));
    let (ok, tk) = (ours.by_kind(), theirs.by_kind());
    for kind in ["convolution", "batch_norm"] {
        assert!(ok[kind] > 0, "{kind}: none observed: {ours:?}");
        assert_eq!(ok[kind], tk[kind], "{kind}: {:?} vs {:?}", ours.ops, theirs.ops);
    }
    let phases = ["data", "forward", "loss", "backward", "optimizer", "ema"];
    for o in [&ours, &theirs] {
        assert!(
            o.peak_bytes > 0 && o.calls().0 > 0 && o.calls().1 >= o.calls().0,
            "{o:?}"
        );
        // Both built their model under observation: its weights are held between steps.
        assert!(o.held_bytes > o.peak_bytes / 4, "{:?}", (o.held_bytes, o.peak_bytes));
        let names: Vec<&str> = o.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, phases, "{o:?}");
        // The step's peak is its highest phase's.
        let highest = o.phases.iter().map(|p| p.peak_bytes).max();
        assert_eq!(highest, Some(o.peak_bytes), "{:?}", o.phases);
    }
    // The text table lists the kinds, the totals and the phases.
    let text = report(&[]);
    for line in [
        "convolution",
        "ATen calls, outermost",
        "peak MiB, held incl.",
        "backward",
    ] {
        assert!(text.contains(line), "no {line:?} in {text}");
    }
    // flex has no LibTorch to observe: a flag error, code 2.
    let (code, _, err) = run(bin("slotcon-train-bench")
        .arg("--shards")
        .arg(&shards)
        .args(["--device", "flex", "--report"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--report"), "{err}");
}

/// Every step's `(step, loss bits, loss scale, skipped)` in `run/metrics.jsonl` (a skipped
/// step's loss may be null: NaN).
fn scaled_steps(run: &Path) -> Vec<(u64, Option<u64>, f32, bool)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().map(f64::to_bits),
                v["loss_scale"].as_f64().expect("an fp16 step records its loss scale") as f32,
                v["skipped"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// `slotcon-train` in fp16 on LibTorch with the scaler settings `settings` (TOML), at
/// [`SMALL`]'s settings but batch 4: LibTorch's f16 convolutions on a CPU take seconds a
/// step, and the scale's sequence does not depend on the batch.
fn train_fp16(shards: &Path, out: &Path, settings: &Path, steps: &str, resume: bool) {
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards").arg(shards).arg("--out").arg(out);
    for pair in SMALL.chunks(2) {
        cmd.args([pair[0], if pair[0] == "--batch-size" { "4" } else { pair[1] }]);
    }
    cmd.arg("--config").arg(settings).args([
        "--max-steps",
        steps,
        "--device",
        "libtorch",
        "--precision",
        "fp16",
        "-q",
    ]);
    if resume {
        cmd.arg("--resume");
    }
    run_ok(&mut cmd);
}

/// fp16's loss scaling, under forced overflows (a first scale of 2¹²⁷, far above what f16
/// gradients hold, backing off by 2⁻⁴⁰ and growing after every 2 clean steps): each step's
/// scale is the one
/// `torch.amp.GradScaler` has when fed the same overflows, the run goes on past its skipped
/// steps (the divergence check lets them pass), and a resumed run is the same run, its
/// scale and counter included.
#[cfg(feature = "tch")]
#[test]
fn an_fp16_run_scales_its_loss_as_grad_scaler_does_and_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    store(&shards);
    let settings = tmp.path().join("fp16.toml");
    let (init, backoff) = (2f64.powi(127), 2f64.powi(-40));
    std::fs::write(
        &settings,
        format!("init_scale = {init:?}\nbackoff_factor = {backoff:?}\ngrowth_interval = 2\n"),
    )
    .unwrap();
    let whole = tmp.path().join("whole");
    train_fp16(&shards, &whole, &settings, "6", false);
    let steps = scaled_steps(&whole);
    let skipped: Vec<bool> = steps.iter().map(|s| s.3).collect();
    // The scale is an f32 (as GradScaler's scale tensor), written in its shortest form.
    let scales: Vec<f32> = steps.iter().map(|s| s.2).collect();
    eprintln!("scales {scales:?}, skipped {skipped:?}");
    assert_eq!(scales[0], init as f32);
    assert!(skipped[0], "the first scale, 2^127, did not overflow");
    assert!(skipped.contains(&false), "every step overflowed: {scales:?}");
    assert!(
        scales.windows(2).any(|w| w[1] > w[0]),
        "the scale never grew: {scales:?}"
    );
    // GradScaler fed the same overflows (an inf gradient where ours skipped).
    let pattern: Vec<String> = skipped.iter().map(|s| u8::from(*s).to_string()).collect();
    let code = format!(
        "import torch\np = torch.nn.Parameter(torch.zeros(1))\nopt = torch.optim.SGD([p], lr=0.1)\n\
         s = torch.amp.GradScaler('cpu', init_scale={init:?}, backoff_factor={backoff:?}, growth_interval=2)\nout = []\n\
         for inf in [{}]:\n    out.append(s.get_scale())\n    opt.zero_grad()\n    \
         s.scale(p.sum() * (float('inf') if inf else 1.0)).backward()\n    s.step(opt)\n    s.update()\nprint(out)",
        pattern.join(", ")
    );
    let theirs: Vec<f64> = serde_json::from_str(run_ok(slotcon_tests::python().args(["-c", &code])).trim()).unwrap();
    let theirs: Vec<f32> = theirs.into_iter().map(|v| v as f32).collect();
    assert_eq!(scales, theirs, "the loss scale per step differs from GradScaler's");
    // Resumed after the first half: every step's loss, scale and skip the same.
    let resumed = tmp.path().join("resumed");
    let half = (steps.len() / 2).to_string();
    train_fp16(&shards, &resumed, &settings, &half, false);
    train_fp16(&shards, &resumed, &settings, "6", true);
    assert_eq!(scaled_steps(&resumed), steps, "a resumed fp16 run differs");
}
