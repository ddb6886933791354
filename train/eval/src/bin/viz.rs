//! `slotcon-viz`: pictures of a run (prototype retrieval grid, slot overlays, curves).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use slotcon_eval::inference::open_run;
use slotcon_eval::viz::curves::{curves_png, read_curves};
use slotcon_eval::viz::{image_overlay, prototype_grid, GridOptions};
use slotcon_shards::format::write_atomic;
use slotcon_shards::ShardReader;
use slotcon_train::device::DeviceChoice;

/// Draw what a SlotCon run learned.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which run and checkpoint, on which device.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The run directory.
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint: current, or epoch-NNNN.
    #[arg(long, default_value = "current")]
    checkpoint: String,
    /// flex, libtorch or libtorch-cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceChoice,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The paper's Fig. 3: sampled prototypes (rows) and the --topk store images that
    /// match each best (mean teacher score over the pixels the prototype wins), those
    /// pixels in red. PNG size: 40 + topk·(tile + 4) by 4 + rows·(tile + 4); OUT.json
    /// records the settings and the prototypes shown.
    Prototypes {
        #[command(flatten)]
        run: RunArgs,
        /// The shard store to retrieve from.
        #[arg(long)]
        shards: PathBuf,
        /// Images per prototype.
        #[arg(long, default_value_t = 5)]
        topk: usize,
        /// Prototypes to show (sampled among those that win pixels).
        #[arg(long, default_value_t = 20)]
        sample: usize,
        /// Resize/crop size for the teacher.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Tile size in the grid.
        #[arg(long, default_value_t = 96)]
        tile: usize,
        /// Only the first N images of the store.
        #[arg(long)]
        max_images: Option<u64>,
        /// Seed of the prototype sample.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// One image with its pixels coloured by the winning prototype and a legend of
    /// prototype ids. PNG size: 2·size + 104 by size.
    Image {
        #[command(flatten)]
        run: RunArgs,
        /// The image (JPEG or PNG).
        #[arg(long)]
        image: PathBuf,
        /// Short side and crop size.
        #[arg(long, default_value_t = 320)]
        size: usize,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Loss, learning rate and active slots per view from RUN/metrics.jsonl.
    Curves {
        /// The run directory.
        #[arg(long)]
        run: PathBuf,
        /// Panel width and height.
        #[arg(long, default_value_t = 360)]
        panel_width: usize,
        #[arg(long, default_value_t = 240)]
        panel_height: usize,
        /// The PNG to write (default RUN/curves.png).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    slotcon_cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Prototypes {
            run,
            shards,
            topk,
            sample,
            size,
            tile,
            max_images,
            seed,
            out,
        } => {
            let (loaded, device) = open_run(&run.run, &run.checkpoint, run.device)?;
            let reader = ShardReader::open(&shards).context("opening the shard store")?;
            anyhow::ensure!(
                !reader.is_empty(),
                "{}: the shard store holds no image",
                shards.display()
            );
            let opts = GridOptions {
                size,
                tile,
                topk,
                sample,
                seed,
                max_images,
                ..GridOptions::default()
            };
            let bar = slotcon_cli::bar(0, "images", false);
            let (grid, shown) = prototype_grid(&reader, &loaded.net.teacher, &device, &opts, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            grid.save_png(&out)?;
            let sidecar = serde_json::json!({
                "run": run.run, "checkpoint": loaded.dir, "step": loaded.step, "shards": shards,
                "size": size, "tile": tile, "topk": topk, "sample": sample, "seed": seed,
                "max_images": max_images, "prototypes": shown,
            });
            let path = PathBuf::from(format!("{}.json", out.display()));
            write_atomic(&path, serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
            println!("{}: {}x{}, prototypes {shown:?}", out.display(), grid.w, grid.h);
        }
        Command::Image { run, image, size, out } => {
            let (loaded, device) = open_run(&run.run, &run.checkpoint, run.device)?;
            let picture = image_overlay(&image, &loaded.net.teacher, &device, size)?;
            picture.save_png(&out)?;
            println!("{}: {}x{}", out.display(), picture.w, picture.h);
        }
        Command::Curves {
            run,
            panel_width,
            panel_height,
            out,
        } => {
            let curves = read_curves(&run.join("metrics.jsonl"))?;
            let out = out.unwrap_or_else(|| run.join("curves.png"));
            let picture = curves_png(&curves, panel_width, panel_height);
            picture.save_png(&out)?;
            println!("{}: {}x{}", out.display(), picture.w, picture.h);
        }
    }
    Ok(())
}
