//! `slotcon-import`: an official SlotCon checkpoint as a slotcon run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use slotcon_cli::flags;
use slotcon_eval::official_run::{import_official, ImportOptions};
use slotcon_train::TrainConfig;

/// Make a slotcon run from a checkpoint of the official SlotCon code (CVMI-Lab/SlotCon's
/// main_pretrain.py: `ckpt_epoch_N.pth`, `current.pth`, a released full checkpoint).
///
/// Student and teacher encoders, projectors and prototypes, the slot predictor, the
/// centre, the LARS/SGD momentum buffers and the step are taken over; the config comes
/// from the preset, then the checkpoint's `args`, then its tensors' shapes (backbone,
/// widths, prototypes), then the flags. Then slotcon-eval, slotcon-viz, slotcon-export
/// and `slotcon-train --resume` work on RUN. A tensor that has no place in slotcon's
/// network is an error naming it. The file is read by PyTorch's safe loader in a Python
/// with PyTorch (--python, else $SLOTCON_PYTHON, else .venv/bin/python here or above).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The official checkpoint (.pth).
    ckpt: PathBuf,
    /// The run directory to create (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Settings for what the checkpoint does not say.
    #[arg(long, value_enum, default_value_t = Preset::CocoR50)]
    preset: Preset,
    /// Steps per epoch, when the checkpoint's args lack num_instances and it has no
    /// scheduler (at least 1).
    #[arg(long, value_parser = flags::at_least(1u64))]
    steps_per_epoch: Option<u64>,
    /// Epochs of the run, 1 to 100000 (over the checkpoint's args.epochs).
    #[arg(long, value_parser = flags::int(TrainConfig::EPOCHS))]
    epochs: Option<u64>,
    /// Global batch size, 1 to 65536 (over args.batch_size x args.world_size).
    #[arg(long, value_parser = flags::int(TrainConfig::BATCH_SIZE))]
    batch_size: Option<usize>,
    /// Seed of the data order and the augmentation (over args.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Replace a run already in --out.
    #[arg(long)]
    force: bool,
    /// Read with Python's full unpickler, which runs any code the file holds: only for a
    /// file you trust that PyTorch's safe loader refuses.
    #[arg(long)]
    trust_pickle: bool,
    /// The Python interpreter (needs PyTorch, torchvision and safetensors).
    #[arg(long)]
    python: Option<PathBuf>,
    /// No spinner.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// The official defaults of scripts/slotcon_coco_r50_800ep.sh.
    #[value(name = "coco_r50_800ep")]
    CocoR50,
    /// slotcon's CPU-sized settings.
    Tiny,
}

fn main() -> ExitCode {
    slotcon_cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let python = slotcon_cli::python(cli.python.as_deref())?;
    let base = match cli.preset {
        Preset::CocoR50 => TrainConfig::coco_r50_800ep(),
        Preset::Tiny => TrainConfig::tiny(),
    };
    let opts = ImportOptions {
        base,
        steps_per_epoch: cli.steps_per_epoch,
        epochs: cli.epochs,
        batch_size: cli.batch_size,
        seed: cli.seed,
        force: cli.force,
        trust_pickle: cli.trust_pickle,
    };
    let bar = slotcon_cli::spinner(format!("reading {}", cli.ckpt.display()), cli.quiet);
    let note = &mut |text: &str| bar.suspend(|| eprintln!("note: {text}"));
    let moved = import_official(&cli.ckpt, &cli.out, &opts, &python, note)?;
    bar.finish_and_clear();
    println!("{}: {moved} -> {}", cli.ckpt.display(), cli.out.display());
    Ok(())
}
