//! Criterion benchmarks of every augmentation op on a 224x224 view of a real COCO image.
//! Run with `cargo bench -p slotcon-bench`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};

fn coco_jpeg() -> Vec<u8> {
    let rel = "shared/data/coco128/images/train2017/000000000009.jpg";
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [here.join("../..").join(rel), PathBuf::from("/work").join(rel)];
    let path = candidates
        .iter()
        .find(|p| p.exists())
        .expect("COCO sample image not found");
    std::fs::read(path).unwrap()
}

fn ops(c: &mut Criterion) {
    for mut op in slotcon_bench::ops::op_benches(&coco_jpeg()).unwrap() {
        c.bench_function(op.name, |b| b.iter(&mut op.run));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = ops
}
criterion_main!(benches);
