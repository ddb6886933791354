// Shared by build scripts: when the `tch` feature is on, embed an rpath to the libtorch
// that torch-sys linked against (the venv's PyTorch with LIBTORCH_USE_PYTORCH=1, or
// $LIBTORCH), so binaries run without LD_LIBRARY_PATH.
fn torch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let lib = match std::env::var("LIBTORCH") {
        Ok(root) => format!("{root}/lib"),
        Err(_) => {
            let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
            let code = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
            let out = std::process::Command::new(python).args(["-c", code]).output().expect("python runs");
            assert!(out.status.success(), "cannot find PyTorch: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).expect("utf-8 path").trim().to_string()
        }
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
