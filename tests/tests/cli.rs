//! Usage errors, empty inputs and `--help`.

use slotcon_tests::{bin, run, run_ok};

#[test]
fn help_explains_the_command() {
    let text = run_ok(bin("slotcon-ingest").arg("--help"));
    for word in ["--out", "--max-side", "--store", "--shard-size", "--threads", "verify"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = run(&mut bin("slotcon-ingest"));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(bin("slotcon-ingest").args(["/tmp", "--out", "/tmp/x", "--quality", "0"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn nothing_to_write_is_an_error_naming_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("empty");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("bad.jpg"), b"nope").unwrap();
    let (code, _, err) = run(bin("slotcon-ingest")
        .arg(&src)
        .arg("--out")
        .arg(tmp.path().join("o"))
        .arg("-q"));
    assert_eq!(code, 1);
    assert!(
        err.contains("no image could be written") && err.contains("1 skipped"),
        "{err}"
    );

    let (code, _, err) = run(bin("slotcon-ingest")
        .arg(tmp.path().join("missing"))
        .arg("--out")
        .arg(tmp.path().join("o2")));
    assert_eq!(code, 1);
    assert!(
        err.contains("missing") && err.contains("not a readable directory"),
        "{err}"
    );
}
