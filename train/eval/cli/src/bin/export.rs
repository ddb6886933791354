//! `slotcon-export`: a run's teacher backbone for torchvision or detectron2, or the whole
//! run as an official SlotCon checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use slotcon_eval::export::{torchvision_tensors, write_detectron2, write_safetensors};
use slotcon_eval::inference::open_run;
use slotcon_eval::official_run::export_official;
use slotcon_shards::format::write_atomic;
use slotcon_train::device::DeviceChoice;

/// Export the teacher backbone (`encoder_k`) of a SlotCon run, or the whole run as an
/// official SlotCon checkpoint.
///
/// FILE.json, written beside it, records the run, checkpoint, step and training config.
///
/// slotcon: the `.pth` that CVMI-Lab/SlotCon's main_pretrain.py saves ({'args', 'model'
/// with DDP's `module.` prefix, 'optimizer' (LARS `mu` / SGD `momentum_buffer` of student
/// and predictor), 'scheduler', 'epoch'}), for its --resume, viz_slots.py and the
/// transfer/ conversion scripts; `num_batches_tracked` is 2 x step (two views per step).
/// Needs a Python with PyTorch (the venv's).
///
/// torchvision: safetensors with torchvision's ResNet names (and `num_batches_tracked`);
/// `resnet50().load_state_dict(load_file(FILE), strict=False)` then misses only `fc.*`.
/// detectron2: the `.pkl` that `DetectionCheckpointer` loads (`MODEL.WEIGHTS FILE`,
/// with `MODEL.PIXEL_MEAN/STD` and `FORMAT: RGB` of torchvision); a Python with numpy and
/// safetensors writes the pickle (--python, else $SLOTCON_PYTHON, else .venv/bin/python
/// here or in a folder above; nothing is installed).
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
    /// The Python interpreter for --to detectron2 (numpy, safetensors) or --to slotcon
    /// (PyTorch, torchvision, safetensors).
    #[arg(long)]
    python: Option<PathBuf>,
    /// No spinner.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// safetensors, torchvision `state_dict` names.
    Torchvision,
    /// detectron2 pickle (`stem.`, `res2..res5`, `conv*.norm`, `shortcut`).
    Detectron2,
    /// The official SlotCon checkpoint (.pth): the whole run, optimizer included.
    Slotcon,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Torchvision => "torchvision",
            Format::Detectron2 => "detectron2",
            Format::Slotcon => "slotcon",
        }
    }
}

/// Writes `FILE.json` beside the exported `FILE`.
fn write_sidecar(out: &std::path::Path, sidecar: &serde_json::Value) -> anyhow::Result<()> {
    let path = PathBuf::from(format!("{}.json", out.display()));
    Ok(write_atomic(&path, serde_json::to_string_pretty(sidecar)?.as_bytes())?)
}

fn main() -> ExitCode {
    slotcon_cli::exit(run(Cli::parse()))
}

/// `--out` may not lie inside the run folder, where it (or its `.json` sidecar) could
/// overwrite the run's own files (`model.bpk`, `config.json`, ...).
fn check_out(cli: &Cli) -> anyhow::Result<()> {
    let (Ok(run), Some(name)) = (cli.run.canonicalize(), cli.out.file_name()) else {
        return Ok(());
    };
    let parent = cli.out.parent().filter(|p| !p.as_os_str().is_empty());
    let Ok(dir) = parent.map_or_else(std::env::current_dir, |p| p.canonicalize()) else {
        return Ok(());
    };
    if dir.join(name).starts_with(&run) {
        let reason = format!(
            "is inside the run folder {}, whose files it could overwrite; write the export elsewhere",
            cli.run.display()
        );
        return Err(slotcon_cli::bad_flag("--out", cli.out.display(), reason));
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    check_out(&cli)?;
    let python = match cli.to {
        Format::Detectron2 | Format::Slotcon => Some(slotcon_cli::python(cli.python.as_deref())?),
        Format::Torchvision => None,
    };
    let bar = slotcon_cli::spinner(format!("loading {}", cli.run.display()), cli.quiet);
    if let (Format::Slotcon, Some(python)) = (cli.to, &python) {
        let moved = export_official(&cli.run, &cli.checkpoint, &cli.out, python)?;
        let sidecar =
            serde_json::json!({"run": cli.run, "checkpoint": cli.checkpoint, "to": "slotcon", "moved": moved});
        write_sidecar(&cli.out, &sidecar)?;
        bar.finish_and_clear();
        println!("{}: {moved} -> {}", cli.run.display(), cli.out.display());
        return Ok(());
    }
    let (run, _) = open_run(&cli.run, &cli.checkpoint, DeviceChoice::Flex)?;
    bar.set_message(format!("writing {}", cli.out.display()));
    let tensors = torchvision_tensors(&run.net.teacher.backbone, run.step)?;
    match python {
        Some(python) => write_detectron2(&tensors, &cli.out, &python)?,
        None => write_safetensors(&tensors, &cli.out)?,
    }
    let sidecar = serde_json::json!({
        "run": cli.run, "checkpoint": run.dir, "step": run.step, "to": cli.to.name(),
        "tensors": tensors.len(), "config": run.cfg,
    });
    write_sidecar(&cli.out, &sidecar)?;
    bar.finish_and_clear();
    println!(
        "{}: {} teacher backbone ({}) at step {} from {} -> {}",
        cli.run.display(),
        run.cfg.model.arch.name(),
        cli.to.name(),
        run.step,
        run.dir.display(),
        cli.out.display()
    );
    Ok(())
}
