//! `slotcon-eval segment` and `slotcon-viz` on a short-trained tiny run and the 100
//! labelled COCO images.

use slotcon_tests::{bin, coco128, png_size, run, run_ok, tiny_run};

#[test]
fn segment_reports_both_clusterings_and_writes_confusion_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, run_dir) = tiny_run(tmp.path(), "2");
    let c = coco128();
    let out = tmp.path().join("eval");
    let text = run_ok(
        bin("slotcon-eval")
            .args(["segment", "--json", "-q", "--run"])
            .arg(&run_dir)
            .arg("--images")
            .arg(c.join("images/train2017"))
            .arg("--masks")
            .arg(c.join("semantic/train2017"))
            .arg("--categories")
            .arg(c.join("panoptic_train2017.json"))
            .arg("--out")
            .arg(&out),
    );
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["images"], 100, "the 100 labelled images");
    assert_eq!(r["classes"].as_array().unwrap().len(), 27);
    for part in ["hungarian", "majority"] {
        let miou = r[part]["miou"].as_f64().unwrap();
        let acc = r[part]["pixel_accuracy"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&miou) && (0.0..=1.0).contains(&acc),
            "{part}: {miou} {acc}"
        );
        assert_eq!(
            r[part]["mapping"].as_array().unwrap().len(),
            if part == "hungarian" { 27 } else { 64 }
        );
        // 27 classes, the longest name "furniture-stuff" (15 characters): 98 + 27·14 + 8 wide.
        assert_eq!(png_size(&out.join(format!("confusion-{part}.png"))), (484, 406));
    }
    // Every labelled pixel of 100 320x320 crops that is not unlabeled.
    let pixels = r["pixels"].as_u64().unwrap();
    assert!(
        pixels > 100 * 320 * 320 * 8 / 10 && pixels <= 100 * 320 * 320,
        "{pixels}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("segment.json")).unwrap()).unwrap();
    assert_eq!(saved["size"], 320);
    assert_eq!(saved["report"]["hungarian"]["miou"], r["hungarian"]["miou"]);
}

#[test]
fn segment_names_an_empty_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, run_dir) = tiny_run(tmp.path(), "1");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let c = coco128();
    let (code, _, err) = run(bin("slotcon-eval")
        .args(["segment", "-q", "--run"])
        .arg(&run_dir)
        .arg("--images")
        .arg(&empty)
        .arg("--masks")
        .arg(c.join("semantic/train2017"))
        .arg("--categories")
        .arg(c.join("panoptic_train2017.json")));
    assert_ne!(code, 0);
    assert!(err.contains(&format!("{}: no images", empty.display())), "{err}");
}

#[test]
fn viz_commands_write_pictures_of_the_documented_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, run_dir) = tiny_run(tmp.path(), "2");
    let grid = tmp.path().join("grid.png");
    run_ok(
        bin("slotcon-viz")
            .args(["prototypes", "--run"])
            .arg(&run_dir)
            .arg("--shards")
            .arg(&shards)
            .args([
                "--topk",
                "2",
                "--sample",
                "3",
                "--size",
                "64",
                "--tile",
                "32",
                "--max-images",
                "24",
            ])
            .arg("--out")
            .arg(&grid),
    );
    assert_eq!(png_size(&grid), (40 + 2 * 36, 4 + 3 * 36));
    let shown: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("grid.png.json")).unwrap()).unwrap();
    assert_eq!(shown["prototypes"].as_array().unwrap().len(), 3);
    let image = tmp.path().join("image.png");
    run_ok(
        bin("slotcon-viz")
            .args(["image", "--size", "96", "--run"])
            .arg(&run_dir)
            .arg("--image")
            .arg(coco128().join("images/train2017/000000000009.jpg"))
            .arg("--out")
            .arg(&image),
    );
    assert_eq!(png_size(&image), (2 * 96 + 104, 96));
    run_ok(bin("slotcon-viz").args(["curves", "--run"]).arg(&run_dir));
    assert_eq!(png_size(&run_dir.join("curves.png")), (1080, 240));
    // Two runs on one set of axes, a legend line each under the panels; several runs
    // need --out.
    let both = tmp.path().join("both.png");
    run_ok(
        bin("slotcon-viz")
            .arg("curves")
            .arg(&run_dir)
            .arg(&run_dir)
            .arg("--out")
            .arg(&both),
    );
    assert_eq!(png_size(&both), (1080, 240 + 6 + 2 * 12));
    let (code, _, err) = run(bin("slotcon-viz").arg("curves").arg(&run_dir).arg(&run_dir));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("several runs need --out"), "{err}");
    let (code, _, err) = run(bin("slotcon-viz")
        .args(["image", "--run"])
        .arg(&run_dir)
        .args(["--checkpoint", "nope", "--image", "x.jpg", "--out"])
        .arg(&image));
    assert_ne!(code, 0);
    assert!(err.contains("nope: no such checkpoint"), "{err}");
    // A FIFO or a device as --image is refused at once (it hung, or read /dev/zero until
    // memory ran out).
    let fifo = tmp.path().join("pipe.jpg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (input, what) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a device"),
    ] {
        let start = std::time::Instant::now();
        let (code, _, err) = run(bin("slotcon-viz")
            .args(["image", "--size", "96", "--run"])
            .arg(&run_dir)
            .arg("--image")
            .arg(input)
            .arg("--out")
            .arg(&image));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("not a regular file ({what})")), "{err}");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }
}

#[test]
fn upsampled_argmax_matches_pytorch_bilinear_interpolation() {
    use slotcon_augment::{Draws, SampleRng};
    let tmp = tempfile::tempdir().unwrap();
    let (k, h, w, out_h, out_w) = (27usize, 10usize, 7usize, 320usize, 224usize);
    let mut rng = SampleRng::new(9, 9, 9, 9);
    let maps: Vec<f32> = (0..k * h * w).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let mut ours = vec![0u16; out_h * out_w];
    slotcon_eval::segment::upsample::upsample_argmax(&maps, [k, h, w], &mut ours, out_h, out_w);
    let dir = tmp.path();
    std::fs::write(
        dir.join("maps.f32"),
        maps.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("ours.u16"),
        ours.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let case = serde_json::json!({"k": k, "h": h, "w": w, "out_h": out_h, "out_w": out_w});
    std::fs::write(dir.join("case.json"), case.to_string()).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&slotcon_tests::python_script("check_upsample.py", &[dir])).unwrap();
    assert_eq!(r["pixels"], out_h * out_w);
    assert_eq!(r["differ_not_tied"], 0, "{r}");
}
