//! `slotcon-train-bench`: the training step against the PyTorch reference, same model,
//! batch, weights and thread count, in one invocation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use slotcon_augment::{AugmentConfig, LoaderBuilder};
use slotcon_bench::{median, run_python};
use slotcon_cli::{bad_flag, flags};
use slotcon_shards::ShardReader;
use slotcon_train::device::DeviceChoice;
use slotcon_train::trainer::Trainer;
use slotcon_train::{Arch, Precision, TrainConfig};

/// Time SlotCon training steps here and in PyTorch on one loader batch.
///
/// Both sides start from the same weights (exported as safetensors), take the same batch,
/// and run the same step: normalise the u8 views, student and teacher forward on both
/// views, align, loss, backward, LARS, EMA and centre. OMP_NUM_THREADS and
/// RAYON_NUM_THREADS are set to --threads before anything starts, so LibTorch, flex and
/// PyTorch use the same count; both sides get the same glibc malloc settings (see
/// slotcon_train::alloc).
///
/// Numeric flags are checked before anything starts; a bad value exits with code 2.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The shard store made by slotcon-ingest.
    #[arg(long)]
    shards: PathBuf,
    /// Named settings: tiny or coco_r50_800ep.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Backbone: resnet18, resnet34 or resnet50 (overrides the preset).
    #[arg(long)]
    arch: Option<Arch>,
    /// Batch size, 1 to 65536 and at most the store's images (overrides the preset).
    #[arg(long, value_parser = flags::int(TrainConfig::BATCH_SIZE))]
    batch_size: Option<usize>,
    /// View size, 32 to 1024 (overrides the preset).
    #[arg(long, value_parser = flags::int(TrainConfig::IMAGE_SIZE))]
    image_size: Option<u32>,
    /// flex, libtorch or libtorch-cuda:N (PyTorch runs on cpu or cuda:N to match).
    #[arg(long, default_value = "libtorch")]
    device: DeviceChoice,
    /// Precision here: f32, or bf16 (AMP: bf16 convolutions and matmuls, f32 weights).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Precision of the PyTorch reference: f32, or bf16 (torch.autocast).
    #[arg(long, default_value = "f32")]
    reference_precision: Precision,
    /// Untimed steps first, 0 to 1000.
    #[arg(long, default_value_t = 2, value_parser = flags::int(0..=1000usize))]
    warmup: usize,
    /// Timed steps per repeat, 1 to 1000.
    #[arg(long, default_value_t = 5, value_parser = flags::int(1..=1000usize))]
    steps: usize,
    /// Alternating repeats, 1 to 100: our steps, then PyTorch's, this many times; the
    /// ratio is the median of the repeats' ratios.
    #[arg(long, default_value_t = 5, value_parser = flags::int(1..=100usize))]
    repeats: usize,
    /// Also time each phase of the step (data, forward, loss, backward, optimizer, ema) on
    /// both sides, with a device sync after each.
    #[arg(long)]
    breakdown: bool,
    /// Threads for every side (default: every core; at most 4 per core).
    #[arg(long, value_parser = flags::threads)]
    threads: Option<usize>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_python: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn config(cli: &Cli) -> anyhow::Result<TrainConfig> {
    let mut cfg = TrainConfig::preset(&cli.preset).with_context(|| format!("unknown preset {:?}", cli.preset))?;
    cfg.arch = cli.arch.unwrap_or(cfg.arch);
    cfg.batch_size = cli.batch_size.unwrap_or(cfg.batch_size);
    cfg.image_size = cli.image_size.unwrap_or(cfg.image_size);
    cfg.precision = cli.precision;
    if let Err(e) = cfg.check() {
        let flag = match e.field {
            "batch_size" => "--batch-size",
            "image_size" => "--image-size",
            _ => anyhow::bail!("the {:?} preset's {e}", cli.preset),
        };
        return Err(bad_flag(flag, e.value, e.expected));
    }
    if let Some(reason) = cli.device.unavailable() {
        return Err(bad_flag("--device", cli.device, reason));
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    // The same malloc settings here and, through the environment, in the PyTorch child.
    slotcon_train::alloc::retain_freed_memory();
    for (name, value) in slotcon_train::alloc::env() {
        std::env::set_var(name, value);
    }
    slotcon_cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Set before LibTorch or rayon start a pool (the flags are checked by now, by clap).
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    std::env::set_var("OMP_NUM_THREADS", threads.to_string());
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let cfg = config(&cli)?;
    let device = cli.device.autodiff()?;
    let reader = Arc::new(ShardReader::open(&cli.shards).context("opening the shard store")?);
    let short = slotcon_train::run::short_of_a_batch(&reader, &cli.shards, cfg.batch_size);
    if let Some(reason) = short.filter(|_| cli.batch_size.is_some()) {
        return Err(bad_flag("--batch-size", cfg.batch_size, reason));
    }
    let aug = AugmentConfig::slotcon()
        .with_size(cfg.image_size)
        .with_min_scale(cfg.min_scale);
    let batch = LoaderBuilder::new(reader)
        .augment(aug)
        .batch_size(cfg.batch_size)
        .workers(threads)
        .build()?
        .next()
        .context("the store makes no batch")??;
    let mut trainer = Trainer::new(cfg.clone(), &device, 1000);
    trainer.set_profile(cli.breakdown);
    let tmp = std::env::temp_dir().join(format!("slotcon-train-bench-{}", std::process::id()));
    slotcon_train::reference::dump_case(&trainer, &batch, &tmp)?;
    let mut runs = Vec::new();
    for repeat in 0..cli.repeats {
        let warmup = if repeat == 0 { cli.warmup } else { 0 };
        let ours = time_ours(&mut trainer, &batch, warmup, cli.steps)?;
        let theirs = (!cli.no_python).then(|| python(&cli, &tmp, threads)).transpose()?;
        runs.push((ours, theirs));
    }
    std::fs::remove_dir_all(&tmp).ok();
    report(&cli, &cfg, threads, runs)
}

/// Our side of one repeat: `warmup` untimed steps, then `steps` timed ones.
fn time_ours(
    trainer: &mut Trainer,
    batch: &slotcon_augment::TwoViewBatch,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<Side> {
    let mut side = Side::default();
    for i in 0..warmup + steps {
        let t = Instant::now();
        side.losses.push(trainer.train_step(batch)?.loss);
        if i >= warmup {
            side.step_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if let Some(times) = trainer.last_times() {
                side.phases.push(serde_json::to_value(times)?);
            }
        }
    }
    Ok(side)
}

/// One side's timed steps in one repeat.
#[derive(Default, serde::Serialize)]
struct Side {
    step_ms: Vec<f64>,
    /// Every step's loss, warm-up included.
    losses: Vec<f64>,
    /// One object of phase times per step (`--breakdown`).
    phases: Vec<serde_json::Value>,
}

impl Side {
    /// From train_step.py's JSON.
    fn from_python(v: &serde_json::Value) -> Side {
        let list = |key: &str| -> Vec<f64> {
            v[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_f64())
                .collect()
        };
        let per_phase = v["phases_ms"].as_object();
        let phases = (0..list("step_ms").len())
            .filter(|_| per_phase.is_some())
            .map(|i| {
                let row = per_phase
                    .into_iter()
                    .flatten()
                    .map(|(k, vals)| (k.clone(), vals[i].clone()));
                serde_json::Value::Object(row.collect())
            })
            .collect();
        Side {
            step_ms: list("step_ms"),
            losses: list("losses"),
            phases,
        }
    }

    /// The median of each phase over the steps, in `PHASES` order.
    fn phase_medians(&self) -> Vec<f64> {
        PHASES
            .iter()
            .map(|p| median(&self.phases.iter().filter_map(|row| row[p].as_f64()).collect::<Vec<_>>()))
            .collect()
    }
}

const PHASES: [&str; 6] = ["data", "forward", "loss", "backward", "optimizer", "ema"];

fn python(cli: &Cli, dir: &std::path::Path, threads: usize) -> anyhow::Result<Side> {
    let device = match cli.device {
        DeviceChoice::LibtorchCuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    };
    let mut args = vec![
        dir.display().to_string(),
        format!("--warmup={}", cli.warmup),
        format!("--steps={}", cli.steps),
        format!("--threads={threads}"),
        format!("--device={device}"),
    ];
    if cli.reference_precision == Precision::Bf16 {
        args.push("--amp".into());
    }
    if cli.breakdown {
        args.push("--breakdown".into());
    }
    Ok(Side::from_python(&run_python("train_step.py", &args)?))
}

fn report(cli: &Cli, cfg: &TrainConfig, threads: usize, runs: Vec<(Side, Option<Side>)>) -> anyhow::Result<()> {
    let ours: Vec<f64> = runs.iter().map(|(o, _)| median(&o.step_ms)).collect();
    let theirs: Vec<f64> = runs
        .iter()
        .filter_map(|(_, t)| t.as_ref().map(|t| median(&t.step_ms)))
        .collect();
    let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| o / t).collect();
    let (ms, t) = (median(&ours), (!theirs.is_empty()).then(|| median(&theirs)));
    let ratio = (!ratios.is_empty()).then(|| median(&ratios));
    let img_s = |ms: f64| cfg.batch_size as f64 * 1000.0 / ms;
    let out = serde_json::json!({
        "arch": cfg.arch.name(), "batch": cfg.batch_size, "image_size": cfg.image_size,
        "device": cli.device.to_string(), "precision": cfg.precision,
        "reference_precision": cli.reference_precision, "threads": threads, "repeats": runs,
        "slotcon_median_ms": ms, "slotcon_img_per_sec": img_s(ms),
        "pytorch_median_ms": t, "ratio": ratio, "ratios": ratios,
    });
    if cli.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} batch {} at {} px, {} {} (PyTorch {}), {threads} threads, {} repeats",
        cfg.arch.name(),
        cfg.batch_size,
        cfg.image_size,
        cli.device,
        cfg.precision,
        cli.reference_precision,
        runs.len()
    );
    println!("slotcon  {ms:8.1} ms/step  {:7.1} img/s", img_s(ms));
    if let (Some(t), Some(r)) = (t, ratio) {
        println!("pytorch  {t:8.1} ms/step  {:7.1} img/s", img_s(t));
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "ratio    {r:.2}x (median of the repeats' slotcon/PyTorch: {}; target <= 1.15)",
            each.join(" ")
        );
    }
    if cli.breakdown {
        breakdown(&runs);
    }
    Ok(())
}

/// The phase table: medians over every timed step of every repeat.
fn breakdown(runs: &[(Side, Option<Side>)]) {
    let merge = |sides: Vec<&Side>| Side {
        phases: sides.iter().flat_map(|s| s.phases.clone()).collect(),
        ..Side::default()
    };
    let ours = merge(runs.iter().map(|(o, _)| o).collect()).phase_medians();
    let theirs = merge(runs.iter().filter_map(|(_, t)| t.as_ref()).collect()).phase_medians();
    println!("phase        slotcon ms   PyTorch ms");
    for (i, phase) in PHASES.iter().enumerate() {
        println!("{phase:<12} {:10.1}   {:10.1}", ours[i], theirs[i]);
    }
}
