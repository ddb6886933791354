//! Checkpoints both ways with the official SlotCon format (issue 15): an official-format
//! checkpoint built in Python from the reference model is imported, exported back
//! unchanged, and trains one step like the PyTorch reference; a slotcon run exported and
//! imported back is the same run, bit for bit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use slotcon_augment::LoaderBuilder;
use slotcon_shards::ShardReader;
use slotcon_tests::{bin, floats, ingest_coco, python, python_script, root, run, run_ok, tiny_run};
use slotcon_train::device::DeviceChoice;
use slotcon_train::schedule::{learning_rate, teacher_momentum};
use slotcon_train::trainer::Trainer;
use slotcon_train::TrainConfig;

/// Runs `tests/python/official_ckpt.py` with `args`; its stdout.
fn official_ckpt(args: &[&str]) -> String {
    let script = root().join("tests/python/official_ckpt.py");
    run_ok(python().arg(script).args(args))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `slotcon-import CKPT --out RUN --preset tiny EXTRA`.
fn import(ckpt: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    run(bin("slotcon-import")
        .arg(ckpt)
        .arg("--out")
        .arg(out)
        .args(["--preset", "tiny", "-q"])
        .args(extra))
}

/// `slotcon-export RUN --to FORMAT --out OUT`.
fn export(run_dir: &Path, format: &str, out: &Path) {
    run_ok(
        bin("slotcon-export")
            .arg(run_dir)
            .args(["--to", format, "-q", "--out"])
            .arg(out),
    );
}

/// The current checkpoint of `run_dir`, with its optimiser, on the CPU.
fn load(run_dir: &Path) -> Trainer {
    let current = run_dir.join("checkpoints/current");
    let cfg = TrainConfig::load(&current.join("config.json")).unwrap();
    let device = DeviceChoice::Flex.autodiff().unwrap();
    Trainer::new(cfg, &device, 1).load(&current).unwrap()
}

#[test]
fn an_official_checkpoint_imports_exports_back_unchanged_and_trains_like_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (shards, ckpt, run_dir, back) = (
        dir.join("shards"),
        dir.join("official.pth"),
        dir.join("run"),
        dir.join("back.pth"),
    );
    ingest_coco(&shards);
    // ResNet-18, 64-wide hidden layers, 16 prototypes, batch 32 of 128 images: 4 steps an
    // epoch, saved after 2 epochs.
    official_ckpt(&[
        "make",
        path(&ckpt),
        "--steps",
        "8",
        "--batch",
        "32",
        "--instances",
        "128",
    ]);
    let (code, out, err) = import(&ckpt, &run_dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("step 8 (epoch 2, 4 steps/epoch): 291 tensors, 81 momentum buffers"),
        "{out}"
    );

    // export(import(ckpt)) is the checkpoint: keys in order, shapes, dtypes, values, buffers.
    export(&run_dir, "slotcon", &back);
    let same: serde_json::Value = serde_json::from_str(&official_ckpt(&["compare", path(&ckpt), path(&back)])).unwrap();
    eprintln!("{same}");
    assert_eq!(same["model_equal"], true, "{same}");
    assert_eq!(same["optimizer_equal"], true, "{same}");
    assert_eq!(same["buffers"], 81, "{same}");
    assert_eq!(same["epochs"], serde_json::json!([2, 2]));
    assert_eq!(same["steps"], serde_json::json!([8, 8]));

    // One loader batch: the same losses as the PyTorch reference with those weights, and
    // the same step (LARS from the imported momentum, the EMA, BatchNorm statistics).
    let mut trainer = load(&run_dir);
    let cfg = trainer.cfg.clone();
    let (step, spe) = (trainer.step, trainer.steps_per_epoch());
    assert_eq!((step, spe), (8, 4));
    let reader = Arc::new(ShardReader::open(&shards).unwrap());
    let mut loader = LoaderBuilder::new(reader)
        .augment(cfg.data.augment())
        .batch_size(cfg.data.batch_size)
        .workers(2)
        .seed(cfg.seed)
        .epoch(step / spe)
        .start_step(step % spe)
        .build()
        .unwrap();
    let batch = loader.next().unwrap().unwrap();
    let case = dir.join("case");
    slotcon_train::reference::dump_case(&trainer, &batch, &case).unwrap();
    // The schedules at the imported step, from their definitions.
    let (warmup, total) = (cfg.warmup_steps(spe), cfg.epochs * spe);
    let o = &cfg.optim;
    let lr = learning_rate(step, warmup, total, cfg.lr(), o.warmup_multiplier, o.min_lr);
    let ema = teacher_momentum(step, total, o.teacher_momentum);
    let ours = trainer.train_step_now(&batch).unwrap();
    assert_eq!((ours.lr, ours.momentum), (lr, ema));
    let reference: serde_json::Value = serde_json::from_str(&official_ckpt(&[
        "step",
        path(&ckpt),
        path(&case),
        "--lr",
        &lr.to_string(),
        "--ema",
        &ema.to_string(),
    ]))
    .unwrap();
    for (name, got) in [
        ("total", ours.loss),
        ("group", ours.loss_group),
        ("contrast", ours.loss_contrast),
    ] {
        let want = reference[name].as_f64().unwrap();
        let rel = (got - want).abs() / want.abs();
        eprintln!("{name}: slotcon {got:.8} reference {want:.8} (relative {rel:e})");
        assert!(rel < 1e-5, "{name}: {got} vs {want}");
    }
    let after = case.join("ours_after.safetensors");
    trainer.net().save_safetensors(&after).unwrap();
    // 5e-4 of each tensor's scale: the step moves BatchNorm biases by ~0.1 of their scale,
    // and their float32 gradients (sums with heavy cancellation) differ from a float64
    // step by up to ~0.4 % on both sides (measured: slotcon 3.3e-3, PyTorch 3.6e-3).
    let (compared, statistics) = slotcon_tests::compare_safetensors(&after, &case.join("after.safetensors"), &[], 5e-4);
    eprintln!("{compared} tensors after the step equal the reference's ({statistics} BatchNorm statistics)");
    assert_eq!(
        (compared, statistics),
        (244, 92),
        "every tensor of the network, every BatchNorm statistic"
    );
}

#[test]
fn a_run_exported_and_imported_back_is_the_same_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, first) = tiny_run(tmp.path(), "3");
    let (pth, second) = (tmp.path().join("run.pth"), tmp.path().join("again"));
    export(&first, "slotcon", &pth);
    let (code, _, err) = import(&pth, &second, &[]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (load(&first), load(&second));
    assert_eq!(a.cfg, b.cfg);
    assert_eq!(a.progress().unwrap(), b.progress().unwrap());
    let (wa, wb) = (floats(a.net()), floats(b.net()));
    assert_eq!(wa.len(), wb.len());
    assert!(wa == wb, "the weights and BatchNorm statistics differ");
    let (ma, mb) = (a.momentum().unwrap().unwrap(), b.momentum().unwrap().unwrap());
    assert!(
        floats(&ma.student) == floats(&mb.student),
        "the student's momentum differs"
    );
    assert!(
        floats(&ma.predictor) == floats(&mb.predictor),
        "the predictor's momentum differs"
    );
    // And it trains on identically.
    let resume = |out: &PathBuf| {
        run_ok(
            bin("slotcon-train")
                .arg("--shards")
                .arg(&shards)
                .arg("--out")
                .arg(out)
                .args(["--resume", "--max-steps", "4", "-q"]),
        );
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        (last["step"].as_u64().unwrap(), last["loss"].as_f64().unwrap())
    };
    let (sa, sb) = (resume(&first), resume(&second));
    assert_eq!(sa.0, 3);
    assert_eq!(sa, sb, "the step after the round trip differs");
}

#[test]
fn an_sgd_checkpoint_round_trips_and_the_imported_run_works_with_every_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ckpt, run_dir, back) = (dir.join("sgd.pth"), dir.join("run"), dir.join("back.pth"));
    official_ckpt(&["make", path(&ckpt), "--optimizer", "sgd", "--steps", "4"]);
    let (code, _, err) = import(&ckpt, &run_dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(load(&run_dir).cfg.optim.optimizer, slotcon_train::Optimizer::Sgd);
    export(&run_dir, "slotcon", &back);
    let same: serde_json::Value = serde_json::from_str(&official_ckpt(&["compare", path(&ckpt), path(&back)])).unwrap();
    assert_eq!(same["model_equal"], true, "{same}");
    assert_eq!(same["optimizer_equal"], true, "{same}");
    assert_eq!(same["param_groups"][1]["nesterov"], false, "{same}");
    // The other tools take the imported run as any run.
    let image = slotcon_tests::coco128().join("images/train2017/000000000009.jpg");
    let slots = dir.join("slots.png");
    run_ok(
        bin("slotcon-viz")
            .args(["image", "--size", "64", "--run"])
            .arg(&run_dir)
            .arg("--image")
            .arg(&image)
            .arg("--out")
            .arg(&slots),
    );
    assert!(slotcon_tests::png_size(&slots).0 > 0);
    let tv = dir.join("r18.safetensors");
    export(&run_dir, "torchvision", &tv);
    let exported = slotcon_tests::safetensors_f32(&tv);
    assert!(
        exported.contains_key("layer4.1.bn2.running_var"),
        "{:?}",
        exported.keys().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn an_fp16_checkpoint_carries_its_grad_scaler_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ckpt, run_dir, back) = (dir.join("fp16.pth"), dir.join("run"), dir.join("back.pth"));
    // A real GradScaler's state_dict mid-run: scale 8192, 37 clean steps, interval 500.
    official_ckpt(&["make", path(&ckpt), "--steps", "4", "--fp16"]);
    let (code, _, err) = import(&ckpt, &run_dir, &[]);
    assert_eq!(code, 0, "{err}");
    let trainer = load(&run_dir);
    assert_eq!(trainer.cfg.precision, slotcon_train::Precision::Fp16);
    assert_eq!(trainer.cfg.scaler.growth_interval, 500);
    let state = trainer
        .progress()
        .unwrap()
        .scaler
        .expect("an fp16 run keeps its scaler");
    assert_eq!((state.scale, state.growth_tracker), (8192.0, 37));
    export(&run_dir, "slotcon", &back);
    let same: serde_json::Value = serde_json::from_str(&official_ckpt(&["compare", path(&ckpt), path(&back)])).unwrap();
    assert_eq!(same["fp16"], serde_json::json!([true, true]), "{same}");
    assert!(same["scalers"][0].is_object(), "{same}");
    assert_eq!(same["scalers"][0], same["scalers"][1], "{same}");
    assert_eq!(same["model_equal"], true, "{same}");
    // A scaler entry that is not GradScaler's is refused, naming it.
    let bad = variant_of(&ckpt, "bad-scaler.pth", "c['scaler']['scale'] = 'big'");
    let (code, _, err) = import(&bad, &dir.join("bad-run"), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad-scaler.pth") && err.contains("'scaler'"), "{err}");
}

/// `ckpt` loaded in Python, changed by the statements `edit` (on `c`), saved beside it
/// as `name`.
fn variant_of(ckpt: &Path, name: &str, edit: &str) -> PathBuf {
    let out = ckpt.with_file_name(name);
    let code = format!(
        "import argparse, torch\nwith torch.serialization.safe_globals([argparse.Namespace]):\n    c = torch.load({:?}, weights_only=True)\n{edit}\ntorch.save(c, {:?})",
        path(ckpt),
        path(&out)
    );
    run_ok(python().args(["-c", &code]));
    out
}

#[test]
fn bad_official_checkpoints_are_clear_errors_naming_the_file_or_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ckpt = dir.join("official.pth");
    official_ckpt(&["make", path(&ckpt), "--steps", "4"]);
    let variant = |name: &str, edit: &str| variant_of(&ckpt, name, edit);
    let refused = |ckpt: &Path, extra: &[&str], want: &[&str]| {
        let out = dir.join(format!("run-{}", ckpt.file_name().unwrap().to_string_lossy()));
        let (code, _, err) = import(ckpt, &out, extra);
        assert_eq!(code, 1, "{err}");
        for w in want {
            assert!(err.contains(w), "{w:?} not in: {err}");
        }
        assert!(
            !out.join("checkpoints").exists(),
            "a refused import left a run in {}",
            out.display()
        );
    };
    let garbage = dir.join("garbage.pth");
    std::fs::write(&garbage, b"not a pickle at all").unwrap();
    refused(&garbage, &[], &["garbage.pth", "not a checkpoint"]);
    let extra = variant(
        "extra.pth",
        "c['model']['module.queue'] = torch.zeros(3); del c['optimizer']",
    );
    refused(&extra, &[], &["extra.pth", "queue: no place for it"]);
    let missing = variant(
        "missing.pth",
        "del c['model']['module.predictor_slot.mlp.4.running_var']",
    );
    refused(&missing, &[], &["missing.pth", "predictor.bn2.running_var"]);
    let teacher_mu = variant("teacher.pth", "c['optimizer']['state'][70] = {'mu': torch.zeros(1)}");
    refused(&teacher_mu, &[], &["teacher.pth", "encoder_k"]);
    let bare = variant("bare.pth", "del c['scheduler']; del c['args'].num_instances");
    refused(&bare, &[], &["bare.pth", "--steps-per-epoch"]);
    let (code, out, err) = import(&bare, &dir.join("bare-run"), &["--steps-per-epoch", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("step 2 (epoch 1, 2 steps/epoch)"), "{out}");
    // A folder that holds a run is refused without --force, replaced with it.
    let (code, _, err) = import(&ckpt, &dir.join("bare-run"), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds a run; pass --force"), "{err}");
    let (code, _, err) = import(&ckpt, &dir.join("bare-run"), &["--force"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_import_of_non_finite_or_out_of_range_values_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ckpt = dir.join("official.pth");
    official_ckpt(&["make", path(&ckpt), "--steps", "4"]);
    let variant = |name: &str, edit: &str| variant_of(&ckpt, name, edit);
    let cases = [
        (
            "inf-momentum.pth",
            "s = next(iter(c['optimizer']['state'].values()))\nnext(iter(s.values())).view(-1)[0] = float('inf')",
            "holds inf",
        ),
        (
            "nan-weight.pth",
            "next(v for v in c['model'].values() if v.is_floating_point() and v.numel() > 1).view(-1)[0] = float('nan')",
            "holds NaN",
        ),
        ("epoch.pth", "c['scheduler']['last_epoch'] = 2**62", "lies past the run's"),
        (
            "expanded.pth",
            "k = next(k for k, v in c['model'].items() if v.dim() == 4)\nc['model'][k] = torch.zeros(1).expand(c['model'][k].shape)",
            "claims more than its 4 bytes",
        ),
    ];
    let out = dir.join("run");
    for (name, edit, want) in cases {
        let bad = variant(name, edit);
        let (code, _, err) = import(&bad, &out, &[]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(
            err.contains(name) && err.contains(want),
            "{name}: {want:?} not in: {err}"
        );
        assert!(!out.exists(), "{name}: a refused import left {}", out.display());
    }
    // A storage that claims 8 GB where its record in the file holds a few kB: refused
    // before torch allocates it (or, memory-mapped, reads past the record).
    let inflated = dir.join("inflated.pth");
    python_script("inflate_storage.py", &[&ckpt, &inflated, Path::new("2000000000")]);
    let (code, _, err) = import(&inflated, &out, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("inflated.pth: storage") && err.contains(" bytes, its record data/"),
        "{err}"
    );
    assert!(!out.exists(), "a refused import left {}", out.display());
    // Nothing blocks the retry.
    let (code, _, err) = import(&ckpt, &out, &[]);
    assert_eq!(code, 0, "{err}");
}
