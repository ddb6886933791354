//! `slotcon-eval`: evaluations of a trained run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slotcon_cli::{bad_flag, flags};
use slotcon_eval::inference::{open_run, LoadedRun, SIZE};
use slotcon_eval::segment::{segment, Scores, SegmentOptions, SegmentReport};
use slotcon_eval::viz::confusion::confusion_png;
use slotcon_shards::format::write_atomic;
use slotcon_train::device::DeviceChoice;

/// Evaluate a SlotCon run.
///
/// Numeric flags are checked before anything is loaded; a bad value exits with code 2.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Unsupervised semantic segmentation, COCO-Stuff-27 protocol.
    ///
    /// Each labelled image is resized (Pillow bicubic) so its short side is --size and
    /// centre-cropped to --size × --size; its mask likewise with nearest neighbours. The
    /// teacher's prototype scores and projected features are upsampled bilinearly to the
    /// labels. (a) K-means with 27 clusters on the features, Hungarian-matched to the
    /// classes (PiCIE); (b) each prototype to its majority class. Unlabeled pixels (id 0)
    /// are ignored. Writes OUT/segment.json and OUT/confusion-{hungarian,majority}.png.
    Segment {
        /// The run directory.
        #[arg(long)]
        run: PathBuf,
        /// Which checkpoint: current, or epoch-NNNN.
        #[arg(long, default_value = "current")]
        checkpoint: String,
        /// Image folder.
        #[arg(long)]
        images: PathBuf,
        /// Mask folder: <image stem>.png, COCO panoptic category id per pixel (0 = unlabeled).
        #[arg(long)]
        masks: PathBuf,
        /// COCO panoptic JSON whose categories (supercategory) define the 27 classes.
        #[arg(long)]
        categories: PathBuf,
        /// Short side and crop size, 32 to 1024.
        #[arg(long, default_value_t = 320, value_parser = flags::int(SIZE))]
        size: usize,
        /// Where to write the report and pictures (default RUN/eval).
        #[arg(long)]
        out: Option<PathBuf>,
        /// flex, libtorch or libtorch-cuda:N.
        #[arg(long, default_value = "flex")]
        device: DeviceChoice,
        /// Seed of the K-means initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    slotcon_cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Segment {
        run,
        checkpoint,
        images,
        masks,
        categories,
        size,
        out,
        device,
        seed,
        json,
        quiet,
    } = cli.command;
    let opts = SegmentOptions {
        size,
        seed,
        ..SegmentOptions::new(images, masks, categories)
    };
    if let Err(slotcon_eval::Error::Setting { name, value, reason }) = opts.check() {
        return Err(bad_flag(&format!("--{name}"), value, reason));
    }
    if let Some(reason) = device.unavailable() {
        return Err(bad_flag("--device", device, reason));
    }
    let (loaded, device) = open_run(&run, &checkpoint, device)?;
    let bar = slotcon_cli::bar(0, "images", quiet);
    let report = segment(&loaded.net.teacher, &device, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let out = out.unwrap_or_else(|| run.join("eval"));
    write(&out, &report, &opts, &loaded.dir, loaded.step)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report, &loaded, size, &out);
    }
    Ok(())
}

fn write(
    out: &std::path::Path,
    r: &SegmentReport,
    opts: &SegmentOptions,
    checkpoint: &std::path::Path,
    step: u64,
) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "checkpoint": checkpoint, "step": step, "images_dir": opts.images, "masks_dir": opts.masks,
        "categories": opts.categories, "size": opts.size, "kmeans_iterations": opts.kmeans_iterations,
        "seed": opts.seed, "report": r,
    });
    write_atomic(
        &out.join("segment.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    let title = |name: &str, s: &Scores| {
        format!(
            "{name}: miou {:.2} acc {:.2} (rows label, cols predicted)",
            100.0 * s.miou,
            100.0 * s.pixel_accuracy
        )
    };
    confusion_png(
        &r.hungarian_confusion,
        &r.classes,
        &title("kmeans+hungarian", &r.hungarian),
    )
    .save_png(&out.join("confusion-hungarian.png"))?;
    confusion_png(&r.majority_confusion, &r.classes, &title("majority", &r.majority))
        .save_png(&out.join("confusion-majority.png"))?;
    Ok(())
}

fn print(r: &SegmentReport, run: &LoadedRun, size: usize, out: &std::path::Path) {
    println!(
        "COCO-Stuff-27 on {} images ({size} px centre crops, {} labelled pixels), {} step {}",
        r.images,
        r.pixels,
        run.cfg.model.arch.name(),
        run.step
    );
    for (name, s) in [
        ("K-means (27) + Hungarian", &r.hungarian),
        ("prototypes by majority vote", &r.majority),
    ] {
        println!(
            "  {name:<28} mIoU {:6.2}  pixel accuracy {:6.2}",
            100.0 * s.miou,
            100.0 * s.pixel_accuracy
        );
    }
    println!(
        "  prototypes used: {} of {}",
        r.prototypes_used, run.cfg.model.num_prototypes
    );
    for s in &r.skipped {
        println!("  skipped {s}");
    }
    println!(
        "  wrote {}/segment.json and confusion-{{hungarian,majority}}.png",
        out.display()
    );
}
