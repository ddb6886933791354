//! Build script: embed the rpath to the libtorch that `slotcon-train` found (its build
//! script passes the folder as DEP_SLOTCON_TORCH_LIB when the `tch` feature is on).

fn main() {
    if let Ok(lib) = std::env::var("DEP_SLOTCON_TORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
