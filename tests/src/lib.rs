//! Helpers for slotcon's end-to-end tests: where the release binaries, the Python venv
//! and the shared COCO sample live, and small wrappers to run them.
//!
//! The integration tests (`tests/integration.rs`) drive the release binaries, so build
//! them first: `cargo build --release --workspace` (`scripts/test.sh` does); [`bin`]
//! refuses a binary older than its sources. Python checks
//! run in the venv that `scripts/python-env.sh` makes (or `$SLOTCON_PYTHON`).
//!
//! ```no_run
//! let out = slotcon_tests::run_ok(slotcon_tests::bin("slotcon-ingest").arg("--help"));
//! assert!(out.contains("--out"));
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod cgroup;
mod poison;
pub mod s3;
pub mod webdav;
pub use poison::poisoned_jpegs;

pub use slotcon_train::model::floats;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The release (or current-profile) binary `name`, as a command ready for arguments.
/// A binary older than any of its sources is refused, so that a test never passes (or
/// fails) on a stale build: `cargo test` builds the binaries of the tested package only.
pub fn bin(name: &str) -> Command {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace` first (scripts/test.sh does)",
        path.display()
    );
    if let Some(newer) = newer_source(&path) {
        panic!(
            "{} is older than its source {}: run `cargo build --release --workspace` first (scripts/test.sh does)",
            path.display(),
            newer.display()
        );
    }
    Command::new(path)
}

/// A source file of `binary` modified after it was linked, from the dep-info file cargo
/// writes beside it (`binary.d`: every file the build read); `None` when there is none.
fn newer_source(binary: &Path) -> Option<PathBuf> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(binary)?;
    let info = std::fs::read_to_string(binary.with_extension("d")).ok()?;
    let (_, deps) = info.lines().next()?.split_once(": ")?;
    // Paths are separated by spaces; a space inside a path is escaped with a backslash.
    let deps = deps.replace("\\ ", "\u{0}");
    deps.split(' ')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
        .find(|d| modified(d).is_none_or(|m| m > built))
}

/// The shared COCO sample: `$SLOTCON_COCO128`, else `../shared/data/coco128` beside
/// the checkout.
pub fn coco128() -> PathBuf {
    let dir = std::env::var_os("SLOTCON_COCO128")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/coco128"));
    assert!(
        dir.join("images/train2017").is_dir(),
        "{}: the COCO sample is not there (set SLOTCON_COCO128)",
        dir.display()
    );
    dir
}

/// The files of the workspace folder `dir` whose names end in `.ext`, sorted.
pub fn files_with_extension(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// The project's Python, found as every slotcon binary finds it ([`slotcon_cli::python`]:
/// `$SLOTCON_PYTHON`, else the workspace's `.venv`).
pub fn python() -> Command {
    let path = slotcon_cli::python(None).unwrap_or_else(|e| panic!("{e:#}; scripts/test.sh makes the venv"));
    Command::new(path)
}

/// Runs a helper script from `tests/python/` with `args`; returns its stdout.
pub fn python_script(script: &str, args: &[&Path]) -> String {
    let mut cmd = python();
    cmd.arg(root().join("tests/python").join(script)).args(args);
    run_ok(&mut cmd)
}

/// Runs `cmd`, panics with its output unless it exits 0, and returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout.into_owned()
}

/// Runs `cmd` and returns (exit code, stdout, stderr) without judging.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Copies every regular file under `from` to the same relative path under `to` (a run
/// folder, say: a test resumes a copy instead of training the same steps again).
pub fn copy_dir(from: &Path, to: &Path) {
    for (name, bytes) in snapshot(from) {
        let path = to.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Every regular file under `dir` (recursively) as (relative path, bytes), sorted.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Ingests the COCO sample into `dir` with the release `slotcon-ingest`.
pub fn ingest_coco(dir: &Path) {
    run_ok(
        bin("slotcon-ingest")
            .arg(coco128().join("images"))
            .arg("--out")
            .arg(dir)
            .arg("-q"),
    );
}

/// Ingests the COCO sample into `tmp/shards` and trains a tiny run (64 px views, batch
/// 16) for `steps` steps into `tmp/run`; returns `(shards, run)`.
pub fn tiny_run(tmp: &Path, steps: &str) -> (PathBuf, PathBuf) {
    let shards = tmp.join("shards");
    ingest_coco(&shards);
    let out = tmp.join("run");
    run_ok(
        bin("slotcon-train")
            .arg("--shards")
            .arg(&shards)
            .arg("--out")
            .arg(&out)
            .args(["--image-size", "64", "--batch-size", "16", "--max-steps", steps, "-q"]),
    );
    (shards, out)
}

/// Every step's `(step, loss)` in `run/metrics.jsonl`.
pub fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// Every f32 tensor of the safetensors file `path`, by name.
pub fn safetensors_f32(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == safetensors::Dtype::F32)
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
            (name, values.collect())
        })
        .collect()
}

/// Every tensor of `reference` (but those whose name ends with one of `skip`) equals the
/// one of the same name in `ours` within `tol` of its largest magnitude (or 1e-6
/// absolute); returns `(tensors compared, BatchNorm statistics among them)`.
pub fn compare_safetensors(ours: &Path, reference: &Path, skip: &[&str], tol: f64) -> (usize, usize) {
    let (ours, reference) = (safetensors_f32(ours), safetensors_f32(reference));
    let (mut compared, mut statistics) = (0, 0);
    for (name, want) in reference.iter().filter(|(n, _)| !skip.iter().any(|s| n.ends_with(s))) {
        let got = ours.get(name).unwrap_or_else(|| panic!("{name} is missing from ours"));
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
        let diff = got
            .iter()
            .zip(want)
            .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
        assert!(
            diff / scale < tol || diff < 1e-6,
            "{name}: error {diff} at scale {scale}"
        );
        compared += 1;
        statistics += usize::from(name.contains("running_"));
    }
    (compared, statistics)
}

/// A PNG's `(width, height)` from its header.
pub fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// A fresh temporary folder that lasts until the test process exits, then is removed:
/// for fixtures a test binary shares through a `static`. Statics are never dropped, so a
/// `tempfile::TempDir` kept in one would be left behind (686 MB a run, for the
/// distributed runs).
pub fn process_tempdir() -> PathBuf {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        let dirs = DIRS.lock().map(|d| d.clone()).unwrap_or_default();
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    unsafe extern "C" {
        fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
    }
    // SAFETY: `atexit` is the C library's (std links it); `remove_all` is a plain
    // function that neither unwinds nor calls `exit`.
    HOOK.call_once(|| assert_eq!(unsafe { atexit(remove_all) }, 0, "atexit"));
    let dir = tempfile::Builder::new()
        .prefix("slotcon-test-")
        .tempdir()
        .unwrap()
        .keep();
    DIRS.lock().unwrap().push(dir.clone());
    dir
}
