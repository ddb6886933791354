//! A run never loses work: an existing run folder is refused without --resume or
//! --force, a kill at any point of the checkpoint swap resumes to the same final
//! checkpoint, and a flipped byte in a checkpoint is a clear error naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use slotcon_tests::{bin, floats, ingest_coco, run, run_ok, snapshot};

/// 128 images / batch 32 = 4 steps per epoch; a milestone every epoch.
const RUN: [&str; 10] = [
    "--image-size",
    "64",
    "--batch-size",
    "32",
    "--workers",
    "2",
    "--save-every",
    "1",
    "--seed",
    "5",
];

fn store(tmp: &Path) -> PathBuf {
    let shards = tmp.join("shards");
    ingest_coco(&shards);
    shards
}

fn train(shards: &Path, out: &Path, steps: &str, extra: &[&str]) -> Command {
    let mut cmd = bin("slotcon-train");
    cmd.arg("--shards").arg(shards).arg("--out").arg(out).args(RUN);
    cmd.args(["--max-steps", steps, "-q"]).args(extra);
    cmd
}

#[test]
fn an_existing_run_is_refused_without_resume_or_force() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = store(tmp.path());
    let out = tmp.path().join("run");
    run_ok(&mut train(&shards, &out, "2", &[]));
    let before = snapshot(&out);
    let (code, _, err) = run(&mut train(&shards, &out, "2", &[]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("already holds a run; pass --resume to continue it, or --force to start over"),
        "{err}"
    );
    assert!(snapshot(&out) == before, "a refused run changed the folder");
    // --force starts over: a fresh run of 1 step, nothing kept.
    run_ok(&mut train(&shards, &out, "1", &["--force"]));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1);
    // A folder of other files is never written into.
    let other = tmp.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("a.txt"), "mine").unwrap();
    let (code, _, err) = run(&mut train(&shards, &other, "1", &["--force"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not empty and holds no run"), "{err}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}

/// One checkpoint folder: its name, every tensor's bits by path, `progress.json`.
pub(crate) type Held = (String, Vec<(String, Vec<u32>)>, String);

/// What a run's checkpoints hold: the checkpoint folders (no swap leftovers), and per
/// folder every tensor's bits and the progress (step, centre). The file bytes are not
/// compared: Burn writes fresh parameter ids into every file.
pub(crate) fn checkpoints(out: &Path) -> Vec<Held> {
    let names: Vec<String> = snapshot(&out.join("checkpoints"))
        .into_iter()
        .filter_map(|(n, _)| n.strip_suffix("/checkpoint.json").map(String::from))
        .collect();
    let leftovers: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "leftovers of the swap remain: {leftovers:?}");
    let device = slotcon_train::device::DeviceChoice::Flex.inference().unwrap();
    names
        .into_iter()
        .map(|name| {
            let run = slotcon_eval::inference::load_run(out, &name, &device).unwrap();
            let bits = floats(&run.net)
                .into_iter()
                .map(|(path, _, v)| (path, v.iter().map(|x| x.to_bits()).collect()))
                .collect();
            let progress = std::fs::read_to_string(out.join("checkpoints").join(&name).join("progress.json")).unwrap();
            (name, bits, progress)
        })
        .collect()
}

#[test]
fn a_kill_at_any_point_of_the_checkpoint_swap_resumes_to_the_same_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = store(tmp.path());
    let reference = tmp.path().join("reference");
    run_ok(&mut train(&shards, &reference, "4", &[]));
    // Each crash resumes a copy of these first 4 steps (training them again gives the same
    // folder, as the resume tests hold).
    let first = tmp.path().join("first-4-steps");
    slotcon_tests::copy_dir(&reference, &first);
    run_ok(&mut train(&shards, &reference, "8", &["--resume"]));
    let want = checkpoints(&reference);
    let names: Vec<&str> = want.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["current", "epoch-0001", "epoch-0002"]);
    for (point, note) in [
        ("written", "removed an unfinished checkpoint"),
        ("milestone", "removed an unfinished milestone copy"),
        ("retired", "completed an interrupted checkpoint swap"),
        ("swapped", "removed the checkpoint a finished swap replaced"),
    ] {
        let out = tmp.path().join(point);
        slotcon_tests::copy_dir(&first, &out);
        let mut crash = train(&shards, &out, "8", &["--resume"]);
        let (code, _, err) = run(crash.env("SLOTCON_CRASH_AT", point));
        assert_ne!(code, 0, "{point}: the crash hook did not fire: {err}");
        let (code, _, err) = run(&mut train(&shards, &out, "8", &["--resume"]));
        assert_eq!(code, 0, "{point}: {err}");
        assert!(err.contains(note), "{point}: expected a note {note:?}: {err}");
        assert!(
            checkpoints(&out) == want,
            "{point}: the checkpoints differ from the uninterrupted run's"
        );
    }
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_a_clear_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = store(tmp.path());
    let out = tmp.path().join("run");
    run_ok(&mut train(&shards, &out, "2", &[]));
    let model = out.join("checkpoints/current/model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&model, bytes).unwrap();
    let (code, _, err) = run(&mut train(&shards, &out, "4", &["--resume"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("model.bpk: corrupt: checkpoint.json says"), "{err}");
    let (code, _, err) = run(bin("slotcon-export")
        .arg(&out)
        .args(["--to", "torchvision", "--out"])
        .arg(tmp.path().join("x.safetensors")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("model.bpk: corrupt"), "{err}");
}
