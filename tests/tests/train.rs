//! The trainer's model-independent parts against their references: the roi_align
//! replacement against torchvision, and the COCO-Stuff-27 labels of the sample masks.

use serde_json::json;
use slotcon_augment::{draw_two_views, AugmentConfig, NormBox, SampleRng};
use slotcon_tests::python_script;
use slotcon_train::AlignPlan;

#[test]
fn align_plan_matches_torchvision_roi_align_with_flips_and_degenerate_boxes() {
    let cfg = AugmentConfig::slotcon();
    let (mut boxes, mut flips) = (Vec::new(), Vec::new());
    // Real geometry from the augmentation: both views of many samples.
    for index in 0..200u64 {
        let mut d = [SampleRng::new(1, 0, index, 0), SampleRng::new(1, 0, index, 1)];
        let [d1, d2] = &mut d;
        let m = draw_two_views(&cfg, 640, 480, [d1, d2]);
        boxes.extend(m.boxes);
        flips.extend(m.flips());
    }
    // Degenerate boxes as the view-2 fallback makes them (slightly inverted), and edges.
    for (b, f) in [
        ([0.6, 0.2, 0.55, 0.8], false),
        ([0.1, 0.7, 0.9, 0.68], true),
        ([0.3, 0.3, 0.3, 0.9], false),
    ] {
        boxes.push(NormBox(b));
        flips.push(f);
    }
    boxes.push(NormBox([0.0, 0.0, 1.0, 1.0]));
    flips.push(true);
    let (n, c, h, w) = (boxes.len(), 3usize, 7usize, 7usize);
    let mut rng = SampleRng::new(9, 9, 9, 9);
    let maps: Vec<f32> = (0..n * c * h * w)
        .map(|_| slotcon_augment::Draws::uniform(&mut rng, -1.0, 1.0) as f32)
        .collect();

    let tmp = tempfile::tempdir().unwrap();
    let case = json!({"n": n, "c": c, "h": h, "w": w, "boxes": boxes, "flips": flips});
    std::fs::write(tmp.path().join("case.json"), case.to_string()).unwrap();
    std::fs::write(
        tmp.path().join("maps.f32"),
        maps.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    assert_eq!(python_script("parity_align.py", &[tmp.path()]).trim(), "ok");
    let bytes = std::fs::read(tmp.path().join("aligned.f32")).unwrap();
    let want: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();

    let plan = AlignPlan::new(&boxes, &flips, h, w);
    let per = c * h * w;
    let mut got = vec![0f32; per];
    let mut invalid = 0;
    for i in 0..n {
        plan.apply(i, &maps[i * per..(i + 1) * per], &mut got);
        for (k, (a, b)) in got.iter().zip(&want[i * per..(i + 1) * per]).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5,
                "sample {i} (box {:?}, flip {}) value {k}: {a} vs {b}",
                boxes[i],
                flips[i]
            );
        }
        invalid += !plan.valid[i] as usize;
    }
    assert!(invalid >= 3, "the degenerate boxes must be marked invalid");
}

#[test]
fn coco_stuff_27_mapping_covers_every_label_of_the_sample_masks() {
    use slotcon_eval::segment::{Coco27, IGNORE};
    let root = slotcon_tests::coco128();
    let map = Coco27::from_panoptic_json(&root.join("panoptic_train2017.json")).unwrap();
    assert_eq!(map.classes.len(), 27);
    assert_eq!((map.classes[0].as_str(), map.classes[26].as_str()), ("person", "solid"));
    let masks: Vec<_> = std::fs::read_dir(root.join("semantic/train2017"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(masks.len(), 100);
    let (mut labelled, mut seen) = (0usize, std::collections::HashSet::new());
    for path in masks {
        let mut rgb = Vec::new();
        slotcon_augment::decode::decode_rgb(&std::fs::read(&path).unwrap(), Default::default(), &mut rgb).unwrap();
        let ids: Vec<u8> = rgb.iter().step_by(3).copied().collect();
        for (&id, &class) in ids.iter().zip(&map.map_mask(&ids)) {
            assert_eq!(
                class == IGNORE,
                id == 0,
                "{}: category {id} has no coarse class",
                path.display()
            );
            labelled += (class != IGNORE) as usize;
            seen.insert(class);
        }
    }
    assert!(
        labelled > 1_000_000 && seen.len() > 20,
        "{labelled} labelled pixels, {} classes",
        seen.len()
    );
}

/// Runs torchvision's `arch` (random weights and BN statistics) and ours with the same
/// weights on the same input; returns the largest relative error of C5 (eval, train).
fn backbone_errors(arch: &str, ours: slotcon_train::Arch) -> (f32, f32) {
    use burn::prelude::*;
    let tmp = tempfile::tempdir().unwrap();
    python_script("resnet_reference.py", &[std::path::Path::new(arch), tmp.path()]);
    let read = |name: &str| -> Vec<f32> {
        let b = std::fs::read(tmp.path().join(name)).unwrap();
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let rel = |got: Vec<f32>, want: &[f32]| {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs() / scale))
    };
    let input = read("input.f32");
    let mut errors = [0f32; 2];
    let devices = train_devices().into_iter().flat_map(|d| [d.clone().inner(), d]);
    for (k, device) in devices.enumerate() {
        let mut model = slotcon_train::model::ResNet::new(ours, &device);
        let report =
            slotcon_train::model::load_torchvision(&mut model, &tmp.path().join("weights.safetensors")).unwrap();
        assert!(
            report
                .unused
                .iter()
                .all(|n| n.starts_with("fc.") || n.ends_with("num_batches_tracked")),
            "{:?}",
            report.unused
        );
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [4, 3, 128, 128]), &device);
        let c5 = model.forward(x).into_data().try_to_vec::<f32>().unwrap();
        let err = rel(c5, &read(if k % 2 == 0 { "c5_eval.f32" } else { "c5_train.f32" }));
        errors[k % 2] = errors[k % 2].max(err);
    }
    (errors[0], errors[1])
}

#[test]
fn resnet18_and_50_match_torchvision_given_the_same_weights() {
    for (name, arch) in [
        ("resnet18", slotcon_train::Arch::Resnet18),
        ("resnet50", slotcon_train::Arch::Resnet50),
    ] {
        let (eval, train) = backbone_errors(name, arch);
        eprintln!("{name}: C5 max error / max |C5|: eval {eval:e}, train {train:e}");
        // Train mode normalises with batch statistics over few values at C5, which
        // amplifies float32 rounding differences in deep nets; eval mode is tighter.
        assert!(
            eval < 1e-4 && train < 3e-4,
            "{name}: C5 relative error eval {eval}, train {train}"
        );
    }
}

/// The autodiff devices the trainer parity runs on: flex, and LibTorch CPU when the
/// `tch` feature is on.
fn train_devices() -> Vec<burn::prelude::Device> {
    #[allow(unused_mut)]
    let mut devices = vec![burn::prelude::Device::flex().autodiff()];
    #[cfg(feature = "tch")]
    #[allow(deprecated)] // burn-tch is deprecated upstream; it is DESIGN §7's LibTorch path
    devices.push(burn::prelude::Device::libtorch().autodiff());
    devices
}

#[test]
fn slotcon_loss_matches_a_pytorch_reference_with_the_same_weights_and_batch() {
    for device in train_devices() {
        eprintln!("device {device:?}");
        loss_parity(device);
    }
}

fn loss_parity(device: burn::prelude::Device) {
    use burn::prelude::*;
    use slotcon_train::model::slotcon_loss;
    let mut cfg = slotcon_train::TrainConfig::tiny();
    (cfg.model.dim_hidden, cfg.model.dim_out, cfg.model.num_prototypes) = (64, 32, 16);
    cfg.data.image_size = 96;
    let (n, s) = (4usize, cfg.data.image_size as usize);
    // Real geometry from the augmentation, and one pair whose crops do not overlap.
    let aug = AugmentConfig::slotcon();
    let (mut boxes, mut flips) = (Vec::new(), Vec::new());
    for index in 0..n as u64 {
        let mut d = [SampleRng::new(4, 0, index, 0), SampleRng::new(4, 0, index, 1)];
        let [d1, d2] = &mut d;
        let m = draw_two_views(&aug, 640, 480, [d1, d2]);
        boxes.push(m.boxes);
        flips.push(m.flips());
    }
    boxes[3] = [NormBox([0.6, 0.2, 0.55, 0.8]), NormBox([0.3, 0.1, 0.25, 0.9])];
    let h = s / 32;
    let plan = |v: usize| {
        let b: Vec<NormBox> = boxes.iter().map(|b| b[v]).collect();
        let f: Vec<bool> = flips.iter().map(|f| f[v]).collect();
        AlignPlan::new(&b, &f, h, h)
    };
    let (p1, p2) = (plan(0), plan(1));
    let valid: Vec<bool> = p1.valid.iter().zip(&p2.valid).map(|(a, b)| *a && *b).collect();
    assert_eq!(valid, [true, true, true, false]);

    let mut rng = SampleRng::new(5, 5, 5, 5);
    let views: Vec<f32> = (0..2 * n * 3 * s * s)
        .map(|_| slotcon_augment::Draws::uniform(&mut rng, -2.0, 2.0) as f32)
        .collect();
    let net = cfg.model.init(&device);
    let tmp = tempfile::tempdir().unwrap();
    net.save_safetensors(&tmp.path().join("weights.safetensors")).unwrap();
    let half = n * 3 * s * s;
    let view = |v: usize| {
        Tensor::<4>::from_data(
            TensorData::new(views[v * half..(v + 1) * half].to_vec(), [n, 3, s, s]),
            &device,
        )
    };
    let student = [net.student.forward(view(0)), net.student.forward(view(1))];
    let teacher = [net.teacher.forward(view(0)), net.teacher.forward(view(1))];
    let center = Tensor::<2>::zeros([1, cfg.model.num_prototypes], &device);
    let ours = slotcon_loss(&net, student, teacher, [&p1, &p2], center, &cfg.loss, None);
    assert_eq!(ours.masked_pairs, 1);

    let case = json!({
        "arch": "resnet18", "channels": 512, "dim_hidden": cfg.model.dim_hidden, "dim_out": cfg.model.dim_out,
        "num_prototypes": cfg.model.num_prototypes, "teacher_temp": cfg.model.teacher_temp, "student_temp": cfg.loss.student_temp,
        "contrast_temp": cfg.loss.contrast_temp, "group_loss_weight": cfg.loss.group_loss_weight,
        "center_momentum": cfg.loss.center_momentum, "n": n, "size": s, "boxes": boxes, "flips": flips, "valid": valid,
        "lr": 10.0, "weight_decay": cfg.optim.weight_decay, "eta": cfg.optim.lars_eta, "ema": 0.5,
    });
    std::fs::write(tmp.path().join("case.json"), case.to_string()).unwrap();
    std::fs::write(
        tmp.path().join("views.f32"),
        views.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&python_script("slotcon_reference.py", &[tmp.path()])).unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-6);
    let m: Vec<f64> = ours.metrics.clone().into_data().convert::<f64>().try_to_vec().unwrap();
    let total = ours.total.clone().into_scalar::<f32>() as f64;
    assert_eq!(m[0], total, "the metrics' total is the loss");
    for (name, got, want) in [
        ("total", total, &reference["total"]),
        ("group", m[1], &reference["group"]),
        ("contrast", m[2], &reference["contrast"]),
    ] {
        let want = want.as_f64().unwrap();
        eprintln!(
            "{name}: slotcon {got:.7} reference {want:.7} (rel {:e})",
            rel(got, want)
        );
        assert!(rel(got, want) < 1e-4, "{name}: {got} vs {want}");
    }
    let center = ours.center.into_data().try_to_vec::<f32>().unwrap();
    for (a, b) in center.iter().zip(reference["center"].as_array().unwrap()) {
        assert!((*a as f64 - b.as_f64().unwrap()).abs() < 1e-5, "centre {a} vs {b}");
    }
    // Gradients, one LARS step and one EMA update.
    let grads = ours.total.backward();
    let vec = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let watched: [(&str, Vec<f32>); 3] = [
        (
            "student.grouping.slot_embed.weight",
            vec(net.student.grouping.slot_embed.weight.grad(&grads).unwrap()),
        ),
        (
            "student.projector.conv3.bias",
            net.student
                .projector
                .conv3
                .bias
                .as_ref()
                .unwrap()
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        ),
        (
            "predictor.fc3.weight",
            vec(net.predictor.fc3.weight.grad(&grads).unwrap().transpose()),
        ),
    ];
    let conv1 = net
        .student
        .backbone
        .conv1
        .weight
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for (name, got) in watched.into_iter().chain([("student.backbone.conv1.weight", conv1)]) {
        let want: Vec<f64> = reference["grads"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_close(name, &got, &want, 1e-3);
    }
    let gp = burn::optim::GradientsParams::from_grads(grads, &net);
    let mut optim =
        slotcon_train::optim::Lars::new(cfg.optim.weight_decay, cfg.optim.lars_eta, cfg.optim.momentum).init();
    let mut net = optim.step(10.0, net, gp);
    net.teacher = slotcon_train::optim::ema_update(net.teacher, &net.student, 0.5);
    net.save_safetensors(&tmp.path().join("ours_after.safetensors"))
        .unwrap();
    compare_safetensors(
        &tmp.path().join("ours_after.safetensors"),
        &tmp.path().join("after.safetensors"),
    );
}

/// Max |a - b| over max |b| must stay under `tol`.
fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: sizes differ");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    let err = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
        / scale;
    eprintln!("{name}: relative error {err:e}");
    assert!(err < tol, "{name}: relative error {err}");
}

/// Every tensor in `reference` equals ours within 1e-4 of its scale: the parameters, and
/// the BatchNorm running statistics, which follow `torch.nn.BatchNorm{1,2}d` (momentum
/// 0.1, unbiased running variance) through the same forward passes, and which the
/// teacher's EMA leaves alone (the reference blends `parameters()` only).
fn compare_safetensors(ours: &std::path::Path, reference: &std::path::Path) {
    // A bias right before a BN has a zero gradient in theory: both sides move it only by
    // float noise (times the large test learning rate), so it must just stay tiny.
    let pre_bn = [
        "predictor.fc1.bias",
        "predictor.fc2.bias",
        "projector.conv1.bias",
        "projector.conv2.bias",
    ];
    let (compared, statistics) = slotcon_tests::compare_safetensors(ours, reference, &pre_bn, 1e-4);
    for (name, got) in slotcon_tests::safetensors_f32(ours) {
        if pre_bn.iter().any(|b| name.ends_with(b)) {
            assert!(
                got.iter().all(|v| v.abs() < 1e-3),
                "{name} moved although its gradient is zero"
            );
        }
    }
    assert!(compared > 100, "only {compared} tensors compared");
    assert!(statistics > 40, "only {statistics} BatchNorm statistics compared");
}
