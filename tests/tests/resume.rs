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

/// When to `kill -9` an ingest: after a time, or once a number of shards are committed.
#[derive(Clone, Copy)]
enum Kill {
    AfterMs(u64),
    Committed(usize),
}

/// Shards committed in the resume journal of `out`.
fn committed(out: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(out.join(".ingest-partial")) else {
        return 0;
    };
    let is_line = |n: &str| n.starts_with("shard-") && n.ends_with(".json");
    dir.flatten()
        .filter(|e| is_line(&e.file_name().to_string_lossy()))
        .count()
}

/// Runs the ingest into `out` and kills it (SIGKILL) at `point`, unless it ends first.
fn run_until(out: &Path, point: Kill) {
    let mut child = command(out).spawn().unwrap();
    let start = Instant::now();
    let due = || match point {
        Kill::AfterMs(ms) => start.elapsed() >= Duration::from_millis(ms),
        Kill::Committed(n) => committed(out) >= n,
    };
    while !due() && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill(); // SIGKILL; an error only says it had already ended
    child.wait().unwrap();
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
    // Kills at fixed times (on a loaded machine all before the first commit, which waits
    // for a chunk of 64 decoded images), then as soon as 1, 4 and 8 shards are committed,
    // so that kills land mid-run whatever the load.
    let points = [5, 40, 90, 150].map(Kill::AfterMs).into_iter();
    for point in points.chain([1, 4, 8].map(Kill::Committed)) {
        run_until(&out, point);
        if out.join(".ingest-partial").is_dir() && !out.join("manifest.json").exists() {
            interrupted_with_shards += (committed(&out) > 0) as usize;
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
