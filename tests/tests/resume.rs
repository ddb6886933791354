//! Killing `slotcon-ingest` at any point and rerunning gives the uninterrupted store.

use std::path::Path;
use std::time::{Duration, Instant};

use slotcon_tests::{bin, coco128, run_ok, snapshot};

const ARGS: [&str; 5] = ["--shard-size", "1MiB", "--threads", "1", "--quiet"];

fn command(out: &Path) -> std::process::Command {
    let mut cmd = bin("slotcon-ingest");
    cmd.arg(coco128().join("images")).arg("--out").arg(out).args(ARGS);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// The store without the report's wall time.
fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = snapshot(dir);
    for (name, bytes) in &mut files {
        if name == "ingest-report.json" {
            let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            v["seconds"] = 0.into();
            *bytes = v.to_string().into_bytes();
        }
    }
    files
}

#[test]
fn kill_9_then_rerun_is_byte_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    run_ok(&mut command(&reference));
    let want = store_files(&reference);
    assert!(
        want.iter().filter(|(n, _)| n.ends_with(".parquet")).count() >= 10,
        "expected many shards"
    );

    let out = tmp.path().join("killed");
    let mut interrupted_with_shards = 0;
    for delay_ms in [5, 40, 90, 150, 220, 300, 400] {
        let mut child = command(&out).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let partial = out.join(".ingest-partial");
        if partial.is_dir() && !out.join("manifest.json").exists() {
            let committed = std::fs::read_dir(&partial)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != "state.json")
                .count();
            interrupted_with_shards += (committed > 0) as usize;
            // Nothing half-written is visible under a final name.
            for (name, bytes) in snapshot(&out) {
                if name.ends_with(".parquet") {
                    assert_eq!(&bytes[bytes.len() - 4..], b"PAR1", "{name} is half-written");
                }
            }
        }
    }
    assert!(
        interrupted_with_shards > 0,
        "no kill landed mid-run; the test proves nothing"
    );
    let start = Instant::now();
    run_ok(&mut command(&out));
    assert!(start.elapsed() < Duration::from_secs(120));
    let got = store_files(&out);
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs from the uninterrupted run");
    }
}

#[test]
fn rerun_on_a_complete_store_does_nothing_and_other_settings_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    run_ok(&mut command(&out));
    let before = snapshot(&out);
    let mut again = bin("slotcon-ingest");
    again.arg(coco128().join("images")).arg("--out").arg(&out).args(ARGS);
    let text = run_ok(&mut again);
    assert!(text.contains("already holds a complete store of 128 images"), "{text}");
    assert_eq!(snapshot(&out), before);

    let mut other = bin("slotcon-ingest");
    other
        .arg(coco128().join("images"))
        .arg("--out")
        .arg(&out)
        .args(["--store", "raw", "--quiet"]);
    let (code, _, err) = slotcon_tests::run(&mut other);
    assert_ne!(code, 0);
    assert!(err.contains("other settings") && err.contains("--force"), "{err}");
    other.arg("--force");
    run_ok(&mut other);
}
