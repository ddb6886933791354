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
/// PyTorch use the same count.
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
    /// Float type here: f32 or bf16 (the reference runs f32).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Untimed steps first, 0 to 1000.
    #[arg(long, default_value_t = 2, value_parser = flags::int(0..=1000usize))]
    warmup: usize,
    /// Timed steps, 1 to 1000.
    #[arg(long, default_value_t = 5, value_parser = flags::int(1..=1000usize))]
    steps: usize,
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
    let device = cli.device.autodiff(cfg.precision)?;
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
    let tmp = std::env::temp_dir().join(format!("slotcon-train-bench-{}", std::process::id()));
    slotcon_train::reference::dump_case(&trainer, &batch, &tmp)?;
    let (mut ours, mut losses) = (Vec::new(), Vec::new());
    for i in 0..cli.warmup + cli.steps {
        let t = Instant::now();
        losses.push(trainer.train_step(&batch)?.loss);
        if i >= cli.warmup {
            ours.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let reference = if cli.no_python {
        None
    } else {
        Some(python(&cli, &tmp, threads)?)
    };
    std::fs::remove_dir_all(&tmp).ok();
    report(&cli, &cfg, threads, (ours, losses), reference)
}

fn python(cli: &Cli, dir: &std::path::Path, threads: usize) -> anyhow::Result<serde_json::Value> {
    let device = match cli.device {
        DeviceChoice::LibtorchCuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    };
    let args = [
        dir.display().to_string(),
        format!("--warmup={}", cli.warmup),
        format!("--steps={}", cli.steps),
        format!("--threads={threads}"),
        format!("--device={device}"),
    ];
    Ok(run_python("train_step.py", &args)?)
}

fn report(
    cli: &Cli,
    cfg: &TrainConfig,
    threads: usize,
    (ours, losses): (Vec<f64>, Vec<f64>),
    reference: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let ms = median(&ours);
    let theirs = reference.as_ref().map(|r| {
        let v: Vec<f64> = r["step_ms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .collect();
        median(&v)
    });
    let out = serde_json::json!({
        "arch": cfg.arch.name(), "batch": cfg.batch_size, "image_size": cfg.image_size,
        "device": cli.device.to_string(), "precision": cfg.precision, "threads": threads,
        "slotcon_step_ms": ours, "slotcon_losses": losses, "slotcon_median_ms": ms, "slotcon_img_per_sec": cfg.batch_size as f64 * 1000.0 / ms,
        "pytorch": reference, "pytorch_median_ms": theirs, "ratio": theirs.map(|t| ms / t),
    });
    if cli.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} batch {} at {} px, {} {}, {threads} threads",
        cfg.arch.name(),
        cfg.batch_size,
        cfg.image_size,
        cli.device,
        cfg.precision
    );
    println!(
        "slotcon  {ms:8.1} ms/step  {:7.1} img/s",
        cfg.batch_size as f64 * 1000.0 / ms
    );
    if let Some(t) = theirs {
        println!(
            "pytorch  {t:8.1} ms/step  {:7.1} img/s",
            cfg.batch_size as f64 * 1000.0 / t
        );
        println!("ratio    {:.2}x (slotcon time / PyTorch time; target <= 1.15)", ms / t);
    }
    Ok(())
}
