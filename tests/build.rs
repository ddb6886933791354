//! Build script: the libtorch rpath for the `tch` feature.

include!("../train/torch_rpath.rs");

fn main() {
    torch_rpath();
}
