//! `slotcon-viz`: pictures of a run (prototype retrieval grid, slot overlays, curves).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use slotcon_cli::{bad_flag, flags};
use slotcon_eval::inference::{open_run, SIZE};
use slotcon_eval::viz::curves::{curves_png, read_curves, CurvesStyle, PANEL_HEIGHT, PANEL_WIDTH};
use slotcon_eval::viz::{image_overlay, prototype_grid, GridOptions};
use slotcon_shards::format::write_atomic;
use slotcon_shards::ShardReader;
use slotcon_train::device::DeviceChoice;

/// Draw what a SlotCon run learned.
///
/// Numeric flags are checked before anything is loaded; a bad value exits with code 2.
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
        /// The shard store to retrieve from: a folder, or a URL (s3://bucket/prefix/,
        /// gs://, az://, https://).
        #[arg(long)]
        shards: PathBuf,
        #[command(flatten)]
        store: slotcon_cli::StoreArgs,
        /// Images per prototype, 1 to 20.
        #[arg(long, default_value_t = 5, value_parser = flags::int(GridOptions::TOPK))]
        topk: usize,
        /// Prototypes to show (sampled among those that win pixels), 1 to 100.
        #[arg(long, default_value_t = 20, value_parser = flags::int(GridOptions::SAMPLE))]
        sample: usize,
        /// Resize/crop size for the teacher, 32 to 1024.
        #[arg(long, default_value_t = 224, value_parser = flags::int(SIZE))]
        size: usize,
        /// Tile size in the grid, 8 to 224.
        #[arg(long, default_value_t = 96, value_parser = flags::int(GridOptions::TILE))]
        tile: usize,
        /// Only the first N images of the store (N at least 1).
        #[arg(long, value_parser = flags::at_least(1u64))]
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
        /// Short side and crop size, 32 to 1024.
        #[arg(long, default_value_t = 320, value_parser = flags::int(SIZE))]
        size: usize,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Loss, learning rate and active slots per view from RUN/metrics.jsonl, for one run
    /// or several on the same axes (`slotcon-viz curves RUN_A RUN_B --out cmp.png`).
    Curves {
        /// The run directories, 1 to 16: each is one colour, named in a legend when there
        /// are several.
        #[arg(value_name = "RUN")]
        runs: Vec<PathBuf>,
        /// A run directory, as a positional RUN (the flag earlier scripts use).
        #[arg(long = "run", value_name = "RUN")]
        run_flags: Vec<PathBuf>,
        /// TensorBoard's smoothing weight, 0 (raw values only) to 0.999; the raw values
        /// are drawn faintly behind the smoothed ones.
        #[arg(long, default_value_t = 0.6)]
        smoothing: f64,
        /// Panel width, 160 to 4096.
        #[arg(long, default_value_t = 360, value_parser = flags::int(PANEL_WIDTH))]
        panel_width: usize,
        /// Panel height, 80 to 4096.
        #[arg(long, default_value_t = 240, value_parser = flags::int(PANEL_HEIGHT))]
        panel_height: usize,
        /// The PNG to write (default RUN/curves.png for one run; needed for several).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    slotcon_cli::exit(run(Cli::parse()))
}

/// A setting the library refused, as the flag it came from (exit code 2).
fn flag_error(e: slotcon_eval::Error) -> anyhow::Error {
    match e {
        slotcon_eval::Error::Setting { name, value, reason } => {
            bad_flag(&format!("--{}", name.replace('_', "-")), value, reason)
        }
        e => e.into(),
    }
}

/// The device, if this build and machine have it (exit code 2 otherwise).
fn check_device(device: DeviceChoice) -> anyhow::Result<()> {
    match device.unavailable() {
        Some(reason) => Err(bad_flag("--device", device, reason)),
        None => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Prototypes {
            run,
            shards,
            store,
            topk,
            sample,
            size,
            tile,
            max_images,
            seed,
            out,
        } => {
            let opts = GridOptions {
                size,
                tile,
                topk,
                sample,
                seed,
                max_images,
                ..GridOptions::default()
            };
            opts.check().map_err(flag_error)?;
            check_device(run.device)?;
            let (loaded, device) = open_run(&run.run, &run.checkpoint, run.device)?;
            let reader = ShardReader::open_with(&shards, &store.settings()).context("opening the shard store")?;
            anyhow::ensure!(
                !reader.is_empty(),
                "{}: the shard store holds no image",
                shards.display()
            );
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
            check_device(run.device)?;
            let (loaded, device) = open_run(&run.run, &run.checkpoint, run.device)?;
            let picture = image_overlay(&image, &loaded.net.teacher, &device, size).map_err(flag_error)?;
            picture.save_png(&out)?;
            println!("{}: {}x{}", out.display(), picture.w, picture.h);
        }
        Command::Curves {
            runs,
            run_flags,
            smoothing,
            panel_width,
            panel_height,
            out,
        } => {
            let runs: Vec<PathBuf> = run_flags.into_iter().chain(runs).collect();
            let out = match (out, &runs[..]) {
                (Some(out), _) => out,
                (None, [one]) => one.join("curves.png"),
                (None, []) => return Err(bad_flag("RUN", "(none)", "name at least one run directory")),
                (None, _) => return Err(bad_flag("--out", "(none)", "several runs need --out")),
            };
            let curves = runs
                .iter()
                .map(|run| read_curves(&run_name(run, &runs), &run.join("metrics.jsonl")))
                .collect::<Result<Vec<_>, _>>()?;
            let style = CurvesStyle {
                panel_width,
                panel_height,
                smoothing,
            };
            let picture = curves_png(&curves, &style).map_err(flag_error)?;
            picture.save_png(&out)?;
            println!("{}: {}x{}", out.display(), picture.w, picture.h);
        }
    }
    Ok(())
}

/// A run's name in the legend: its folder's name, or the path as given when another run
/// has the same folder name.
fn run_name(run: &Path, runs: &[PathBuf]) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(run) {
        Some(n) if runs.iter().filter(|r| name(r).as_deref() == Some(&n)).count() == 1 => n,
        _ => run.display().to_string(),
    }
}
