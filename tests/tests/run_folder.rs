//! Run folders: `--force` deletes only what slotcon made, one writer at a time, a run
//! killed before its first checkpoint starts over, `--resume` with another preset is
//! refused by name, and an export never lands inside its run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slotcon_tests::{bin, ingest_coco, run, run_ok, snapshot, step_losses};

fn train(shards: &Path, out: &Path, steps: &str, extra: &[&str]) -> Command {
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards").arg(shards).arg("--out").arg(out);
    cmd.args(["--image-size", "64", "--batch-size", "32", "--workers", "2"]);
    cmd.args(["--max-steps", steps, "-q"]).args(extra);
    cmd
}

/// A temp folder with the COCO store in `shards/` and a one-step run in `run/`.
fn one_step_run() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    ingest_coco(&shards);
    let out = tmp.path().join("run");
    run_ok(&mut train(&shards, &out, "1", &[]));
    (tmp, shards, out)
}

#[test]
fn force_refuses_a_folder_with_a_config_json_that_slotcon_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    ingest_coco(&shards);
    let project = tmp.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("config.json"), r#"{"model": "mine"}"#).unwrap();
    std::fs::create_dir(project.join("checkpoints")).unwrap();
    std::fs::write(project.join("checkpoints/best.pt"), "weights").unwrap();
    let before = snapshot(&project);
    let (code, _, err) = run(&mut train(&shards, &project, "1", &["--force"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no .slotcon-run marker"), "{err}");
    assert!(snapshot(&project) == before, "a refused --force changed the folder");
    // A run slotcon made is replaced by --force, and a file of the user's in it stays.
    let out = tmp.path().join("run");
    run_ok(&mut train(&shards, &out, "1", &[]));
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    run_ok(&mut train(&shards, &out, "2", &["--force"]));
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
}

/// Kills the child when dropped, so that a failing test leaves no trainer behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_trainer_on_a_run_folder_is_refused_naming_the_first() {
    let (_tmp, shards, out) = one_step_run();
    let mut first = train(&shards, &out, "400", &["--resume"]);
    let first = Reaped(first.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let lock = out.join(".train.lock");
    let pid = first.0.id().to_string();
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first trainer never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for extra in [&["--resume"][..], &["--force"][..]] {
        let (code, _, err) = run(&mut train(&shards, &out, "2", extra));
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(
            err.contains(&format!("(pid {pid}) is writing this run")),
            "{extra:?}: {err}"
        );
    }
    drop(first);
    // The killed holder's lock file blocks nothing.
    run_ok(&mut train(&shards, &out, "2", &["--resume"]));
}

#[test]
fn a_run_killed_before_its_first_checkpoint_starts_over_without_force() {
    let (_tmp, shards, out) = one_step_run();
    // What a kill during the first steps leaves: the config, metrics, no checkpoint.
    std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    let (code, _, err) = run(&mut train(&shards, &out, "2", &[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("stopped before its first checkpoint; starting it over"),
        "{err}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
    assert!(out.join("checkpoints/current/checkpoint.json").is_file());
}

#[test]
fn resume_with_a_conflicting_preset_is_refused_by_name() {
    let (_tmp, shards, out) = one_step_run();
    let before = snapshot(&out);
    let (code, _, err) = run(&mut train(
        &shards,
        &out,
        "2",
        &["--resume", "--preset", "coco_r50_800ep"],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--preset") && err.contains("coco_r50_800ep"), "{err}");
    assert!(
        err.contains("arch") && err.contains("resnet50"),
        "the differing fields are named: {err}"
    );
    assert!(snapshot(&out) == before, "a refused resume changed the folder");
    // The preset the run was made with agrees.
    run_ok(&mut train(&shards, &out, "2", &["--resume", "--preset", "tiny"]));
}

#[test]
fn export_out_inside_the_run_folder_is_refused_and_the_run_is_unchanged() {
    let (tmp, _shards, out) = one_step_run();
    let before = snapshot(&out);
    let model = out.join("checkpoints/current/model.bpk");
    for target in [model.clone(), out.join("backbone.safetensors")] {
        let mut cmd = bin("slotcon-export");
        cmd.arg(&out).args(["--to", "torchvision", "-q", "--out"]).arg(&target);
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 2, "{}: {err}", target.display());
        assert!(err.contains("inside the run folder"), "{err}");
    }
    assert!(snapshot(&out) == before, "a refused export changed the run");
    let mut cmd = bin("slotcon-export");
    cmd.arg(&out)
        .args(["--to", "torchvision", "-q", "--out"])
        .arg(tmp.path().join("b.safetensors"));
    run_ok(&mut cmd);
}

/// `--auto-resume` is one command line for the first start and every restart: it starts in
/// an empty folder, continues the run from its checkpoint (across an epoch's end: 4 steps
/// per epoch here), ends where an uninterrupted run ends (every step's loss bit for bit),
/// and refuses a run made with other settings, naming the setting and changing nothing.
#[test]
fn auto_resume_starts_then_continues_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    ingest_coco(&shards);
    let whole = tmp.path().join("whole");
    run_ok(&mut train(&shards, &whole, "6", &[]));
    let out = tmp.path().join("auto");
    std::fs::create_dir(&out).unwrap();
    let first = run_ok(&mut train(&shards, &out, "2", &["--auto-resume"]));
    assert!(first.contains("2 steps done"), "{first}");
    let again = run_ok(&mut train(&shards, &out, "6", &["--auto-resume"]));
    assert!(again.contains("6 steps done"), "{again}");
    let (resumed, want) = (step_losses(&out), step_losses(&whole));
    assert_eq!(want.len(), 6);
    assert_eq!(resumed, want, "an auto-resumed run differs from the uninterrupted one");
    let kept = || {
        (
            snapshot(&out.join("checkpoints")),
            std::fs::read(out.join("metrics.jsonl")).unwrap(),
        )
    };
    let before = kept();
    let (code, _, err) = run(&mut train(&shards, &out, "8", &["--auto-resume", "--seed", "5"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another config") && err.contains("seed"), "{err}");
    assert!(kept() == before, "a refused --auto-resume changed the run");
    // With --resume or --force it is a usage error.
    let (code, _, err) = run(&mut train(&shards, &out, "8", &["--auto-resume", "--resume"]));
    assert_eq!(code, 2, "{err}");
}
