//! Build script: with the `tch` feature, find the libtorch that torch-sys links (the venv's
//! PyTorch with LIBTORCH_USE_PYTORCH=1, or $LIBTORCH), embed it as an rpath in this
//! crate's binaries, and hand the folder to the build scripts of the crates that depend on
//! this one (`links = "slotcon_torch"`: they read DEP_SLOTCON_TORCH_LIB), so that no
//! binary needs LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let lib = torch_lib();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:lib={lib}");
}

/// `$LIBTORCH/lib`, else the `lib` folder of the `torch` package Python imports.
fn torch_lib() -> String {
    if let Ok(root) = std::env::var("LIBTORCH") {
        return format!("{root}/lib");
    }
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let code = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    let out = std::process::Command::new(python)
        .args(["-c", code])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "cannot find PyTorch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 path").trim().to_string()
}
