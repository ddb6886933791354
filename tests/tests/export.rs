//! `slotcon-export` on a short tiny run: the torchvision file loads into torchvision and
//! gives our teacher's C5; the detectron2 pickle has detectron2's names; clear errors.

use std::path::Path;

use burn::prelude::*;
use slotcon_eval::inference::load_run;
use slotcon_tests::{bin, python_script, run, tiny_run};
use slotcon_train::device::DeviceChoice;

fn export(run_dir: &Path, to: &str, out: &Path) -> (i32, String, String) {
    run(bin("slotcon-export")
        .arg(run_dir)
        .args(["--to", to])
        .arg("--out")
        .arg(out))
}

#[test]
fn exports_load_in_torchvision_and_name_detectron2_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, run_dir) = tiny_run(tmp.path(), "3");
    let case = tmp.path().join("case");
    std::fs::create_dir_all(&case).unwrap();
    for (to, file) in [("torchvision", "export.safetensors"), ("detectron2", "export.pkl")] {
        let (code, _, err) = export(&run_dir, to, &case.join(file));
        assert_eq!(code, 0, "{err}");
        let sidecar = std::fs::read_to_string(case.join(format!("{file}.json"))).unwrap();
        let sidecar: serde_json::Value = serde_json::from_str(&sidecar).unwrap();
        assert_eq!((sidecar["step"].as_u64(), sidecar["to"].as_str()), (Some(3), Some(to)));
        assert_eq!(sidecar["config"]["arch"], "resnet18");
    }
    // Our teacher backbone's C5 on a deterministic input, in inference mode.
    let device = DeviceChoice::Flex.inference().unwrap();
    let loaded = load_run(&run_dir, "current", &device).unwrap();
    let (n, s) = (2usize, 64usize);
    let input: Vec<f32> = (0..n * 3 * s * s)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [n, 3, s, s]), &device);
    let c5: Vec<f32> = loaded.net.teacher.backbone.forward(x).into_data().try_to_vec().unwrap();
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(case.join("input.f32"), bytes(&input)).unwrap();
    std::fs::write(case.join("c5.f32"), bytes(&c5)).unwrap();
    let meta = serde_json::json!({"arch": "resnet18", "n": n, "size": s});
    std::fs::write(case.join("case.json"), meta.to_string()).unwrap();
    let report: serde_json::Value = serde_json::from_str(&python_script("check_export.py", &[&case])).unwrap();
    eprintln!("{report}");
    assert!(report["c5_rel"].as_f64().unwrap() < 1e-4, "{report}");
    assert_eq!(
        report["num_batches_tracked"], 6,
        "two BatchNorm updates (views) per step"
    );
}

#[test]
fn a_missing_checkpoint_or_a_mismatched_architecture_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, run_dir) = tiny_run(tmp.path(), "1");
    let out = tmp.path().join("x.safetensors");
    let (code, _, err) = run(bin("slotcon-export")
        .arg(&run_dir)
        .args(["--checkpoint", "epoch-0099", "--to", "torchvision"])
        .arg("--out")
        .arg(&out));
    assert_ne!(code, 0);
    assert!(
        err.contains("epoch-0099: no such checkpoint (this run has: current)"),
        "{err}"
    );
    let (code, _, err) = export(&tmp.path().join("nowhere"), "torchvision", &out);
    assert_ne!(code, 0);
    assert!(err.contains("no such checkpoint (this run has: none)"), "{err}");
    // A config that says resnet50 over resnet18 weights.
    let config = run_dir.join("checkpoints/current/config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("resnet18", "resnet50");
    std::fs::write(&config, text).unwrap();
    // Sealed again, as if the checkpoint had been written that way.
    slotcon_train::checkpoint::seal(config.parent().unwrap(), 1).unwrap();
    let (code, _, err) = export(&run_dir, "torchvision", &out);
    assert_ne!(code, 0);
    assert!(
        err.contains("model.bpk: does not fit the checkpoint's config (resnet50"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written on failure");
}

#[test]
fn the_detectron2_export_runs_from_any_folder_and_never_makes_a_venv() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, run_dir) = tiny_run(tmp.path(), "1");
    let out = tmp.path().join("r18.pkl");
    // A named interpreter that does not exist: a clear error, nothing written.
    let (code, _, err) = run(bin("slotcon-export")
        .arg(&run_dir)
        .args(["--to", "detectron2", "--python", "/nonexistent/python"])
        .arg("--out")
        .arg(&out));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/python: no such Python interpreter"), "{err}");
    // No --python, no SLOTCON_PYTHON, and a folder with no .venv above it: a clear error
    // that says how to get one, and no venv appears.
    let (code, _, err) = run(bin("slotcon-export")
        .current_dir(tmp.path())
        .env_remove("SLOTCON_PYTHON")
        .arg(&run_dir)
        .args(["--to", "detectron2"])
        .arg("--out")
        .arg(&out));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pass --python or set SLOTCON_PYTHON"), "{err}");
    assert!(!out.exists() && !tmp.path().join(".venv").exists());
    // The pickler is built into the binary: run from a folder far from the checkout.
    let python = slotcon_cli::python(None).unwrap();
    let (code, _, err) = run(bin("slotcon-export")
        .current_dir(tmp.path())
        .arg(&run_dir)
        .args(["--to", "detectron2", "--python"])
        .arg(&python)
        .arg("--out")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    assert!(out.is_file());
}

/// Sets every element of the first parameter it meets to NaN.
struct Poison(bool);

impl burn::module::ModuleMapper for Poison {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        if std::mem::replace(&mut self.0, true) {
            return param;
        }
        param.map(|t| t * f32::NAN)
    }
}

#[test]
fn a_checkpoint_with_a_nan_is_never_exported() {
    use burn::module::Module;
    use burn::store::{BurnpackStore, ModuleSnapshot};
    let tmp = tempfile::tempdir().unwrap();
    let (_, run_dir) = tiny_run(tmp.path(), "1");
    let device = DeviceChoice::Flex.inference().unwrap();
    let loaded = load_run(&run_dir, "current", &device).unwrap();
    let poisoned = loaded.net.map(&mut Poison(false));
    let current = run_dir.join("checkpoints/current");
    let mut store = BurnpackStore::from_file(current.join("model.bpk")).overwrite(true);
    poisoned.save_into(&mut store).unwrap();
    slotcon_train::checkpoint::seal(&current, 1).unwrap();
    let out = tmp.path().join("x.safetensors");
    let (code, _, err) = export(&run_dir, "torchvision", &out);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("holds a NaN or an infinity; refusing to use it"), "{err}");
    assert!(!out.exists());
}
