//! `slotcon-train --config FILE` and `--print-config`: every `configs/*.toml` loads, the
//! printed settings read back to themselves, a file's mistakes name the field, and a
//! resumed run refuses a file that disagrees with it.

use std::collections::BTreeMap;

use slotcon_tests::{bin, files_with_extension, ingest_coco, run, run_ok};

/// `slotcon-train ARGS --print-config`, parsed as `key = value` lines.
fn printed(args: &[&str]) -> BTreeMap<String, String> {
    let out = run_ok(bin("slotcon-train").args(args).arg("--print-config"));
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_configs_file_loads_and_the_recipes_match_the_presets() {
    let files = files_with_extension("configs", "toml");
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "coco_r50_800ep",
        "cocoplus_r50_800ep",
        "imagenet_r50_100ep",
        "imagenet_r50_200ep",
        "tiny",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "configs/{want}.toml is missing: {names:?}"
        );
    }
    let coco = printed(&["--preset", "coco_r50_800ep"]);
    for file in &files {
        let path = file.to_str().unwrap();
        // A file gives every setting: the preset under it does not matter.
        let over_tiny = printed(&["--config", path]);
        assert_eq!(
            over_tiny,
            printed(&["--preset", "coco_r50_800ep", "--config", path]),
            "{path}"
        );
        assert_eq!(over_tiny.len(), coco.len(), "{path} leaves settings to the preset");
        let differs: Vec<_> = coco
            .keys()
            .filter(|k| coco[*k] != over_tiny[*k])
            .map(String::as_str)
            .collect();
        let name = file.file_stem().unwrap().to_str().unwrap();
        match name {
            "coco_r50_800ep" | "cocoplus_r50_800ep" => assert!(differs.is_empty(), "{name}: {differs:?}"),
            "imagenet_r50_100ep" | "imagenet_r50_200ep" => {
                assert_eq!(differs, ["epochs", "num_prototypes", "save_every_epochs"], "{name}");
                assert_eq!(over_tiny["num_prototypes"], "2048");
            }
            "tiny" => assert_eq!(over_tiny, printed(&["--preset", "tiny"])),
            _ => {}
        }
    }
}

#[test]
fn printed_settings_read_back_and_flags_override_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mine.toml");
    let out = run_ok(bin("slotcon-train").args(["--preset", "coco_r50_800ep", "--seed", "7", "--print-config"]));
    std::fs::write(&file, &out).unwrap();
    let path = file.to_str().unwrap();
    let back = run_ok(bin("slotcon-train").args(["--config", path, "--print-config"]));
    assert_eq!(back, out);
    // A partial file over the default preset; a flag over the file.
    std::fs::write(&file, "epochs = 3\nbase_lr = 0.5\n").unwrap();
    let s = printed(&["--config", path, "--epochs", "4"]);
    assert_eq!(
        (s["epochs"].as_str(), s["base_lr"].as_str(), s["arch"].as_str()),
        ("4", "0.5", "\"resnet18\"")
    );
    // A run's config.json is a settings file too.
    let json = tmp.path().join("config.json");
    std::fs::write(&json, r#"{"batch_size": 24}"#).unwrap();
    assert_eq!(printed(&["--config", json.to_str().unwrap()])["batch_size"], "24");
}

#[test]
fn a_settings_files_mistakes_are_usage_errors_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    for (text, names) in [
        ("batchsize = 8\n", "`batchsize` is not a setting"),
        ("batch_size = \"eight\"\n", "`batch_size`"),
        ("batch_size = 0\n", "batch_size 0: must be in 1..=65536"),
        ("epochs = [\n", "not a TOML file"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = run(bin("slotcon-train").arg("--config").arg(&file).arg("--print-config"));
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains("--config") && err.contains(names), "{text}: {err}");
    }
    let (code, _, err) = run(bin("slotcon-train").args(["--config", "/nonexistent.toml", "--print-config"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.toml"), "{err}");
    // A seed TOML cannot hold is refused with a reason, not a panic.
    let (code, _, err) = run(bin("slotcon-train").args(["--seed", "18446744073709551615", "--print-config"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("JSON"), "{err}");
}

#[test]
fn resume_with_a_conflicting_settings_file_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    ingest_coco(&shards);
    let out = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut cmd = bin("slotcon-train");
        cmd.arg("--shards").arg(&shards).arg("--out").arg(&out);
        cmd.args(["--image-size", "64", "--batch-size", "32", "--workers", "2", "-q"])
            .args(extra);
        cmd
    };
    run_ok(&mut train(&["--max-steps", "1"]));
    let file = tmp.path().join("other.toml");
    std::fs::write(&file, "seed = 5\n").unwrap();
    let (code, _, err) = run(&mut train(&[
        "--max-steps",
        "2",
        "--resume",
        "--config",
        file.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config") && err.contains("seed"), "{err}");
    // --print-config with --resume shows the run's own settings.
    let s = printed(&["--out", out.to_str().unwrap(), "--resume"]);
    assert_eq!((s["image_size"].as_str(), s["batch_size"].as_str()), ("64", "32"));
}
