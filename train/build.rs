//! Build script: the libtorch rpath for the `tch` feature.

include!("torch_rpath.rs");

fn main() {
    torch_rpath();
}
