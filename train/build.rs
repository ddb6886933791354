//! Build script, with the `tch` feature only:
//! - finds the libtorch that torch-sys links (the venv's PyTorch with
//!   LIBTORCH_USE_PYTORCH=1, or $LIBTORCH), embeds it as an rpath in this crate's binaries,
//!   and hands the folder to the build scripts of the crates that depend on this one
//!   (`links = "slotcon_torch"`: they read DEP_SLOTCON_TORCH_LIB), so that no binary needs
//!   LD_LIBRARY_PATH;
//! - compiles `native/backward.cpp` (LibTorch's `at::convolution_backward` and
//!   `at::native_batch_norm_backward` behind a C ABI) and `native/dist.cpp` (c10d's process
//!   groups) and `native/observe.cpp` (the operator and memory observer of
//!   `slotcon-train-bench --report`) against that libtorch's headers, with its C++ ABI. c10d's Gloo header includes
//!   gloo's own headers, which the wheel does not ship (Debian's `libgloo-dev`, installed by
//!   the scripts). NCCL is compiled in when that libtorch has CUDA and the `nvidia-nccl`
//!   and `nvidia-cuda-runtime` wheels beside it carry `nccl.h` and the CUDA headers.

use std::path::PathBuf;

/// Where a libtorch lives and how its C++ was compiled (only `lib` without `tch`).
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
struct Torch {
    lib: String,
    include: String,
    cxx11_abi: String,
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo:rerun-if-changed=native/backward.cpp");
    println!("cargo:rerun-if-changed=native/dist.cpp");
    println!("cargo:rerun-if-changed=native/observe.cpp");
    println!("cargo:rerun-if-changed=native/optim.cpp");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let torch = torch();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", torch.lib);
    println!("cargo:lib={}", torch.lib);
    compile_shim(&torch);
}

/// `native/backward.cpp`, `native/dist.cpp` and `native/observe.cpp` as a static library, linked before libtorch.
#[cfg(feature = "tch")]
fn compile_shim(torch: &Torch) {
    let gloo = std::path::Path::new("/usr/include/gloo/config.h");
    assert!(
        gloo.exists(),
        "{}: missing; c10d's Gloo header needs gloo's headers (apt-get install libgloo-dev)",
        gloo.display()
    );
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("native/backward.cpp")
        .file("native/dist.cpp")
        .file("native/observe.cpp")
        .file("native/optim.cpp")
        .include(&torch.include)
        .include(format!("{}/torch/csrc/api/include", torch.include))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", torch.cxx11_abi))
        .define("USE_C10D_GLOO", None)
        .flag("-w");
    let nccl = nccl_headers(torch);
    for dir in &nccl {
        build.include(dir);
    }
    if !nccl.is_empty() {
        build.define("USE_C10D_NCCL", None).define("SLOTCON_NCCL", None);
    }
    build.compile("slotcon_native");
    println!("cargo:rustc-link-search=native={}", torch.lib);
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if !nccl.is_empty() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    println!("cargo:rustc-env=SLOTCON_NCCL={}", !nccl.is_empty());
}

/// Every `include` folder of the NVIDIA wheels beside this libtorch, when it has CUDA and
/// they hold what c10d's NCCL header needs (`nccl.h`, the CUDA runtime, `crt/` from
/// nvidia-cuda-nvcc, `nv/target` from nvidia-cuda-cccl); else none, and no NCCL
/// (`$SLOTCON_NO_NCCL` leaves it out too).
#[cfg(feature = "tch")]
fn nccl_headers(torch: &Torch) -> Vec<String> {
    use std::path::Path;
    println!("cargo:rerun-if-env-changed=SLOTCON_NO_NCCL");
    let nvidia = Path::new(&torch.lib).join("../../nvidia");
    let needed = [
        "nccl/include/nccl.h",
        "cuda_runtime/include/cuda_runtime.h",
        "cuda_nvcc/include/crt/host_config.h",
        "cuda_cccl/include/nv/target",
    ];
    let cuda = Path::new(&torch.lib).join("libtorch_cuda.so").exists();
    if std::env::var_os("SLOTCON_NO_NCCL").is_some() || !cuda || !needed.iter().all(|f| nvidia.join(f).exists()) {
        return Vec::new();
    }
    let Ok(entries) = nvidia.read_dir() else {
        return Vec::new();
    };
    let mut dirs: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path().join("include")))
        .filter(|d| d.is_dir())
        .map(|d| d.display().to_string())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(not(feature = "tch"))]
fn compile_shim(_: &Torch) {}

/// `$LIBTORCH` (its `lib` and `include`, the ABI from `$LIBTORCH_CXX11_ABI`, default 1), else
/// the `torch` package Python imports.
fn torch() -> Torch {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if let Ok(root) = std::env::var("LIBTORCH") {
        return Torch {
            lib: format!("{root}/lib"),
            include: format!("{root}/include"),
            cxx11_abi: std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into()),
        };
    }
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let code = "import os, torch\n\
                root = os.path.dirname(torch.__file__)\n\
                print(os.path.join(root, 'lib'))\n\
                print(os.path.join(root, 'include'))\n\
                print(int(torch._C._GLIBCXX_USE_CXX11_ABI))";
    let out = std::process::Command::new(python)
        .args(["-c", code])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "cannot find PyTorch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 paths");
    let mut lines = text.lines().map(str::trim);
    let mut next = || lines.next().expect("python printed three lines").to_string();
    let (lib, include, cxx11_abi) = (next(), next(), next());
    assert!(
        PathBuf::from(&include).join("ATen/ATen.h").exists(),
        "{include}: no ATen headers"
    );
    Torch {
        lib,
        include,
        cxx11_abi,
    }
}
