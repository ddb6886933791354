//! `RUN/tb/` holds TensorBoard event files with the numbers of `metrics.jsonl`, read back
//! with the `tensorboard` package's own readers: every tag, every step once, after a
//! resume that redoes steps a crash had already logged.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use slotcon_tests::{bin, ingest_coco, python_script, run, run_ok};

/// 128 images / batch 32 = 4 steps per epoch, a checkpoint at each epoch's end.
fn train(shards: &Path, out: &Path, steps: &str, resume: bool) -> Command {
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards").arg(shards).arg("--out").arg(out);
    cmd.args([
        "--image-size",
        "64",
        "--batch-size",
        "32",
        "--workers",
        "2",
        "--seed",
        "3",
    ]);
    cmd.args(["--max-steps", steps, "-q"]);
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

/// The TensorBoard tag of each `metrics.jsonl` field ([`slotcon_train::run::MetricsLine::scalars`]).
const TAGS: [(&str, &str); 10] = [
    ("loss/total", "loss"),
    ("loss/group", "loss_group"),
    ("loss/contrast", "loss_contrast"),
    ("optim/lr", "lr"),
    ("optim/teacher_momentum", "momentum"),
    ("slots/active_per_image", "active_slots_per_image"),
    ("slots/masked_pairs", "masked_pairs"),
    ("speed/img_per_sec", "img_per_sec"),
    ("speed/data_wait_frac", "data_wait_frac"),
    ("speed/grad_sync_ms", "grad_sync_ms"),
];

#[test]
fn tensorboard_shows_each_step_of_metrics_once_after_a_crash_and_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    ingest_coco(&shards);
    let out = tmp.path().join("run");
    // Steps 0-3, a checkpoint at step 4.
    run_ok(&mut train(&shards, &out, "4", false));
    // Steps 4-7 logged, then an abort while the step-8 checkpoint is written: the run
    // resumes from step 4 and redoes steps 4-7.
    let (code, _, err) = run(train(&shards, &out, "12", true).env("SLOTCON_CRASH_AT", "written"));
    assert_ne!(code, 0, "the crash hook did not fire: {err}");
    let logged = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), 8, "{logged}");
    run_ok(&mut train(&shards, &out, "12", true));

    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = metrics.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (0..12).collect::<Vec<_>>());

    let tb: serde_json::Value =
        serde_json::from_str(&python_script("read_tensorboard.py", &[&out.join("tb")])).unwrap();
    assert_eq!(tb["files"], 3, "one event file per run: {tb}");
    // 4 + 4 (superseded) + 8 step events in the files; TensorBoard shows 12.
    assert_eq!(tb["raw_scalar_events"], 16, "{tb}");
    let scalars: BTreeMap<String, Vec<(u64, f64)>> = serde_json::from_value(tb["scalars"].clone()).unwrap();
    let tags: Vec<&str> = scalars.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = TAGS.iter().map(|(t, _)| *t).collect();
    expected.sort();
    assert_eq!(tags, expected);
    // TensorBoard keeps f32; compared as f32, since serde_json's decimal parsing may be
    // one f64 ulp off.
    for (tag, field) in TAGS {
        let shown: Vec<(u64, f32)> = scalars[tag].iter().map(|&(s, v)| (s, v as f32)).collect();
        let want: Vec<(u64, f32)> = metrics
            .iter()
            .map(|m| (m["step"].as_u64().unwrap(), m[field].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(shown, want, "{tag} (metrics.jsonl's {field})");
    }
}
