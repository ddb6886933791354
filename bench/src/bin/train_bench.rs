//! `slotcon-train-bench`: the training step against the PyTorch reference, same model,
//! batch, weights and thread count, in one invocation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use slotcon_augment::{LoaderBuilder, TwoViewBatch};
use slotcon_bench::{median, run_python};
use slotcon_cli::{bad_flag, flags};
use slotcon_shards::ShardReader;
use slotcon_train::burn::prelude::Device;
use slotcon_train::device::DeviceChoice;
use slotcon_train::model::floats;
use slotcon_train::observe::{Observation, KINDS};
use slotcon_train::trainer::Trainer;
use slotcon_train::{MemoryFormat, Precision, TrainConfig};
use slotcon_train_cli::SettingsArgs;

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
    /// The shard store made by slotcon-ingest: a folder, or a URL (s3://bucket/prefix/,
    /// gs://, az://, https://).
    #[arg(long)]
    shards: PathBuf,
    #[command(flatten)]
    store: slotcon_cli::StoreArgs,
    /// The settings: --preset, --config and the flags that override one setting each
    /// (the same as slotcon-train's).
    #[command(flatten)]
    settings: SettingsArgs,
    /// flex, libtorch or libtorch-cuda:N (PyTorch runs on cpu or cuda:N to match).
    #[arg(long, default_value = "libtorch")]
    device: DeviceChoice,
    /// Precision of the PyTorch reference: f32, bf16 (torch.autocast) or fp16 (autocast
    /// with GradScaler's loss scaling).
    #[arg(long, default_value = "f32")]
    reference_precision: Precision,
    /// Memory format of the PyTorch reference: contiguous (NCHW, the official code's) or
    /// channels_last (the views and the model in torch.channels_last).
    #[arg(long, default_value = "contiguous", value_parser = reference_format)]
    reference_memory_format: MemoryFormat,
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
    /// Also observe one step on each side (LibTorch only): the ATen operators it
    /// dispatches, by kind, and the peak of the bytes the allocator holds above those held
    /// when the step begins (RecordFunction and memory-reporting hooks on our side,
    /// torch.profiler with profile_memory on PyTorch's; see slotcon_train::observe).
    #[arg(long)]
    report: bool,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_python: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// First check one step here against the same step on LibTorch's CPU (same weights,
    /// same batch): the loss within 1e-3 and the update of the parameters within 1e-2,
    /// relative; exit 1 when not. For a GPU: --device libtorch-cuda:N.
    #[arg(long)]
    compare_cpu: bool,
}

fn config(cli: &Cli) -> anyhow::Result<TrainConfig> {
    let cfg = cli.settings.resolve()?;
    cli.settings.check(&cfg)?;
    if let Some(reason) = cli.device.unavailable() {
        return Err(bad_flag("--device", cli.device, reason));
    }
    cli.settings.check_device(&cfg, cli.device)?;
    if cli.report && cli.device == DeviceChoice::Flex {
        return Err(bad_flag(
            "--report",
            "flex",
            "observes LibTorch: use --device libtorch or libtorch-cuda:N",
        ));
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
    let reader =
        Arc::new(ShardReader::open_with(&cli.shards, &cli.store.settings()).context("opening the shard store")?);
    let short = slotcon_train::run::short_of_a_batch(&reader, &cli.shards, cfg.data.batch_size);
    if let Some(reason) = short.filter(|_| cli.settings.overrides.batch_size.is_some()) {
        return Err(bad_flag("--batch-size", cfg.data.batch_size, reason));
    }
    let batch = LoaderBuilder::new(reader)
        .augment(cfg.data.augment())
        .batch_size(cfg.data.batch_size)
        .workers(threads)
        .build()?
        .next()
        .context("the store makes no batch")??;
    let check = if cli.compare_cpu {
        Some(compare_cpu(&cfg, &device, &batch)?)
    } else {
        None
    };
    let mut trainer = Trainer::new(cfg.clone(), &device, 1000);
    trainer.set_profile(cli.breakdown);
    let tmp = std::env::temp_dir().join(format!("slotcon-train-bench-{}", std::process::id()));
    // The case folder goes whether the timing succeeds or not.
    let timed = (|| -> anyhow::Result<(Vec<_>, _)> {
        slotcon_train::reference::dump_case(&trainer, &batch, &tmp)?;
        let mut runs = Vec::new();
        for repeat in 0..cli.repeats {
            let warmup = if repeat == 0 { cli.warmup } else { 0 };
            let ours = time_ours(&mut trainer, &batch, warmup, cli.steps)?;
            let theirs = (!cli.no_python).then(|| python(&cli, &tmp, threads)).transpose()?;
            runs.push((ours, theirs));
        }
        let observed = cli
            .report
            .then(|| observe(&cli, (&cfg, &device), &batch, &tmp, threads))
            .transpose()?;
        Ok((runs, observed))
    })();
    std::fs::remove_dir_all(&tmp).ok();
    let (runs, observed) = timed?;
    report(&cli, &cfg, threads, runs, check, observed)
}

/// One step observed here and, unless --no-python, in PyTorch: `(ours, theirs)`.
fn observe(
    cli: &Cli,
    (cfg, device): (&TrainConfig, &Device),
    batch: &TwoViewBatch,
    dir: &std::path::Path,
    threads: usize,
) -> anyhow::Result<(Observation, Option<Observation>)> {
    let ours = observe_ours(cfg, device, batch)?;
    let theirs = (!cli.no_python)
        .then(|| -> anyhow::Result<Observation> {
            let mut args = python_args(cli, dir, threads);
            args.push("--observe".into());
            let v = run_python("train_step.py", &args)?;
            serde_json::from_value(v).context("reading train_step.py --observe")
        })
        .transpose()?;
    Ok((ours, theirs))
}

/// A trainer built under observation, as train_step.py --observe builds its model under
/// the profiler, so that what it holds between steps counts (`held_bytes`): the same
/// initial weights as the timed one (the seed's).
fn observe_ours(cfg: &TrainConfig, device: &Device, batch: &TwoViewBatch) -> anyhow::Result<Observation> {
    let mut observer = slotcon_train::observe::Observer::begin()?;
    let mut trainer = Trainer::new(cfg.clone(), device, 1000);
    // Two steps under observation first, so that what the measured step frees of the
    // previous one was seen allocated (as train_step.py --observe does).
    for _ in 0..2 {
        trainer.train_step(batch)?;
    }
    observer.reset();
    trainer.train_step(batch)?;
    Ok(observer.end()?)
}

/// One step on `device` and on LibTorch's CPU from the same initial checkpoint: the two
/// losses, and per parameter the relative difference of the two updates (which carry the
/// gradients). Errs when they differ beyond 1e-3 (loss) or 1e-2 (an update).
fn compare_cpu(cfg: &TrainConfig, device: &Device, batch: &TwoViewBatch) -> anyhow::Result<serde_json::Value> {
    let init = std::env::temp_dir().join(format!("slotcon-compare-cpu-{}", std::process::id()));
    let mut here = Trainer::new(cfg.clone(), device, 1000);
    here.save(&init)?;
    let mut cpu = Trainer::new(cfg.clone(), &DeviceChoice::Libtorch.autodiff()?, 1000).load(&init)?;
    std::fs::remove_dir_all(&init).ok();
    let before = floats(here.net());
    let losses = [here.train_step_now(batch)?.loss, cpu.train_step_now(batch)?.loss];
    let (after, after_cpu) = (floats(here.net()), floats(cpu.net()));
    // Per tensor, and over all of them at once (biases in front of a BatchNorm have a
    // zero gradient in exact arithmetic: their update is rounding noise, whose relative
    // difference means nothing, so the check is on the whole).
    let (mut worst, mut sum_apart, mut sum_update) = ((0.0f64, String::new()), 0.0, 0.0);
    for ((path, _, w0), ((_, _, w1), (_, _, c1))) in before.iter().zip(after.iter().zip(&after_cpu)) {
        if !(path.starts_with("student.") || path.starts_with("predictor.")) || path.contains(".running_") {
            continue;
        }
        let sq = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>();
        let update = sq(&mut w0.iter().zip(c1).map(|(a, b)| (*b - *a) as f64));
        let apart = sq(&mut w1.iter().zip(c1).map(|(a, b)| (*a - *b) as f64));
        (sum_apart, sum_update) = (sum_apart + apart, sum_update + update);
        if update > 0.0 && (apart / update).sqrt() > worst.0 {
            worst = ((apart / update).sqrt(), path.clone());
        }
    }
    let update_rel = (sum_apart / sum_update).sqrt();
    let loss_rel = (losses[0] - losses[1]).abs() / losses[1].abs();
    let out = serde_json::json!({
        "device": losses[0], "cpu": losses[1], "loss_rel": loss_rel, "update_rel": update_rel,
        "worst_tensor_update_rel": worst.0, "worst_tensor": worst.1,
    });
    if loss_rel > 1e-3 || update_rel > 1e-2 {
        anyhow::bail!("one step here and on the CPU differ: {out}");
    }
    Ok(out)
}

/// Our side of one repeat: `warmup` untimed steps, then `steps` timed ones.
fn time_ours(trainer: &mut Trainer, batch: &TwoViewBatch, warmup: usize, steps: usize) -> anyhow::Result<Side> {
    let mut side = Side::default();
    for i in 0..warmup + steps {
        let t = Instant::now();
        // The step as training runs it: its losses arrive with the next step's read.
        side.losses.extend(trainer.train_step(batch)?.map(|m| m.loss));
        if i >= warmup {
            side.step_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if let Some(times) = trainer.last_times() {
                side.phases.push(serde_json::to_value(times)?);
            }
        }
    }
    side.losses.extend(trainer.flush()?.map(|m| m.loss));
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
    let mut args = python_args(cli, dir, threads);
    if cli.breakdown {
        args.push("--breakdown".into());
    }
    Ok(Side::from_python(&run_python("train_step.py", &args)?))
}

/// train_step.py's arguments for this invocation's case, device and precision.
/// `--reference-memory-format`: contiguous or channels_last (PyTorch has no `auto`).
fn reference_format(s: &str) -> Result<MemoryFormat, String> {
    match s.parse::<MemoryFormat>().map_err(|e| e.to_string())? {
        MemoryFormat::Auto => Err("contiguous or channels_last: the reference has no auto".into()),
        format => Ok(format),
    }
}

fn python_args(cli: &Cli, dir: &std::path::Path, threads: usize) -> Vec<String> {
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
        format!("--memory-format={}", cli.reference_memory_format),
    ];
    match cli.reference_precision {
        Precision::F32 => {}
        Precision::Bf16 => args.push("--amp=bf16".into()),
        Precision::Fp16 => args.push("--amp=fp16".into()),
    }
    args
}

fn report(
    cli: &Cli,
    cfg: &TrainConfig,
    threads: usize,
    runs: Vec<(Side, Option<Side>)>,
    check: Option<serde_json::Value>,
    observed: Option<(Observation, Option<Observation>)>,
) -> anyhow::Result<()> {
    let ours: Vec<f64> = runs.iter().map(|(o, _)| median(&o.step_ms)).collect();
    let theirs: Vec<f64> = runs
        .iter()
        .filter_map(|(_, t)| t.as_ref().map(|t| median(&t.step_ms)))
        .collect();
    let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| o / t).collect();
    let (ms, t) = (median(&ours), (!theirs.is_empty()).then(|| median(&theirs)));
    let ratio = (!ratios.is_empty()).then(|| median(&ratios));
    let img_s = |ms: f64| cfg.data.batch_size as f64 * 1000.0 / ms;
    let out = serde_json::json!({
        "arch": cfg.model.arch.name(), "batch": cfg.data.batch_size, "image_size": cfg.data.image_size,
        "device": cli.device.to_string(), "precision": cfg.precision,
        "reference_precision": cli.reference_precision, "threads": threads, "repeats": runs,
        "memory_format": cfg.memory_format, "reference_memory_format": cli.reference_memory_format,
        "slotcon_median_ms": ms, "slotcon_img_per_sec": img_s(ms),
        "pytorch_median_ms": t, "ratio": ratio, "ratios": ratios, "compare_cpu": check,
        "observed": observed.as_ref().map(|(o, t)| serde_json::json!({"slotcon": o, "pytorch": t})),
    });
    if cli.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} batch {} at {} px, {} {} {} (PyTorch {} {}), {threads} threads, {} repeats",
        cfg.model.arch.name(),
        cfg.data.batch_size,
        cfg.data.image_size,
        cli.device,
        cfg.precision,
        cfg.memory_format,
        cli.reference_precision,
        cli.reference_memory_format,
        runs.len()
    );
    if let Some(c) = &check {
        println!(
            "one step vs LibTorch CPU: loss {:.2e} relative, update {:.2e} (worst tensor {:.2e}, {})",
            c["loss_rel"].as_f64().unwrap_or(f64::NAN),
            c["update_rel"].as_f64().unwrap_or(f64::NAN),
            c["worst_tensor_update_rel"].as_f64().unwrap_or(f64::NAN),
            c["worst_tensor"].as_str().unwrap_or("")
        );
    }
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
    if let Some((ours, theirs)) = &observed {
        print_observed(ours, theirs.as_ref());
    }
    Ok(())
}

/// The operator table (outermost calls by kind, then in all) and the peak bytes.
fn print_observed(ours: &Observation, theirs: Option<&Observation>) {
    let none = Observation::default();
    let t = theirs.unwrap_or(&none);
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
    println!("one step observed     slotcon    PyTorch   ratio");
    let (ok, tk) = (ours.by_kind(), t.by_kind());
    for kind in KINDS {
        let (a, b) = (ok[kind], tk[kind]);
        if a != 0 || b != 0 {
            println!("  {kind:<18} {a:>8} {b:>10}   {}", ratio(a as f64, b as f64));
        }
    }
    let ((a_top, a_all), (b_top, b_all)) = (ours.calls(), t.calls());
    println!(
        "ATen calls, outermost {a_top:>8} {b_top:>10}   {}",
        ratio(a_top as f64, b_top as f64)
    );
    println!(
        "ATen calls, in all    {a_all:>8} {b_all:>10}   {}",
        ratio(a_all as f64, b_all as f64)
    );
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    let row = |name: &str, a: i64, b: i64| {
        println!(
            "{name:<21} {:>8.1} {:>10.1}   {}",
            mib(a),
            mib(b),
            ratio(a as f64, b as f64)
        )
    };
    row("held MiB (between)", ours.held_bytes, t.held_bytes);
    row("peak MiB, held incl.", ours.peak_held_bytes(), t.peak_held_bytes());
    row("peak MiB above held", ours.peak_bytes, t.peak_bytes);
    print_phases(ours, t);
}

/// Per phase of the observed step: the peak MiB and the MiB live at its end, each side.
fn print_phases(ours: &Observation, theirs: &Observation) {
    if ours.phases.is_empty() {
        return;
    }
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    let find = |o: &Observation, name: &str| {
        o.phases.iter().find(|p| p.name == name).map_or("-".to_string(), |p| {
            format!("{:.1} / {:.1}", mib(p.peak_bytes), mib(p.live_bytes))
        })
    };
    println!("phase MiB, peak / at end   slotcon          PyTorch");
    for p in &ours.phases {
        println!(
            "  {:<22} {:>15}  {:>15}",
            p.name,
            find(ours, &p.name),
            find(theirs, &p.name)
        );
    }
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
