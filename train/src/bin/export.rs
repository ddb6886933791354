//! `slotcon-export`: a run's teacher backbone for torchvision or detectron2.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use slotcon_train::device::DeviceChoice;
use slotcon_train::export::{torchvision_tensors, write_detectron2, write_safetensors};
use slotcon_train::inference::open_run;

/// Export the teacher backbone (`encoder_k`) of a SlotCon run.
///
/// FILE.json, written beside it, records the run, checkpoint, step and training config.
///
/// torchvision: safetensors with torchvision's ResNet names (and `num_batches_tracked`);
/// `resnet50().load_state_dict(load_file(FILE), strict=False)` then misses only `fc.*`.
/// detectron2: the `.pkl` that `DetectionCheckpointer` loads (`MODEL.WEIGHTS FILE`,
/// with `MODEL.PIXEL_MEAN/STD` and `FORMAT: RGB` of torchvision); needs the project's
/// Python venv (numpy, safetensors) to write the pickle.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The run directory (made by slotcon-train).
    run: PathBuf,
    /// Which checkpoint: current, or epoch-NNNN.
    #[arg(long, default_value = "current")]
    checkpoint: String,
    /// Target format.
    #[arg(long, value_enum)]
    to: Format,
    /// The file to write (written atomically).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// safetensors, torchvision `state_dict` names.
    Torchvision,
    /// detectron2 pickle (`stem.`, `res2..res5`, `conv*.norm`, `shortcut`).
    Detectron2,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bar = indicatif::ProgressBar::new_spinner().with_message(format!("loading {}", cli.run.display()));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let (run, _) = open_run(&cli.run, &cli.checkpoint, DeviceChoice::Flex)?;
    bar.set_message(format!("writing {}", cli.out.display()));
    let tensors = torchvision_tensors(&run.net.teacher.backbone, run.step)?;
    match cli.to {
        Format::Torchvision => write_safetensors(&tensors, &cli.out)?,
        Format::Detectron2 => {
            let python = slotcon_bench::python().context("the project's Python venv (scripts/python-env.sh)")?;
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/detectron2_pkl.py");
            write_detectron2(&tensors, &cli.out, &python, &script)?;
        }
    }
    let sidecar = serde_json::json!({
        "run": cli.run, "checkpoint": run.dir, "step": run.step, "to": format!("{:?}", cli.to).to_lowercase(),
        "tensors": tensors.len(), "config": run.cfg,
    });
    let sidecar_path = PathBuf::from(format!("{}.json", cli.out.display()));
    slotcon_train::export::write_atomic(&sidecar_path, serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
    bar.finish_and_clear();
    println!(
        "{}: {} teacher backbone ({:?}) at step {} from {} -> {}",
        cli.run.display(),
        run.cfg.arch.name(),
        cli.to,
        run.step,
        run.dir.display(),
        cli.out.display()
    );
    Ok(())
}
