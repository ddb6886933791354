//! `slotcon-train`: SlotCon pre-training on a shard store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use slotcon_cli::{bad_flag, flags};
use slotcon_train::device::DeviceChoice;
use slotcon_train::dist::{self, DistBackend, Launch};
use slotcon_train::run::{train, RunOptions};
use slotcon_train::TrainConfig;
use slotcon_train_cli::signals::{signal_name, StopSignalSet, StopSignals, DEFAULT_STOP_SIGNALS, EXIT_STOPPED};
use slotcon_train_cli::SettingsArgs;

/// Pre-train a ResNet with SlotCon (semantic grouping + slot contrast) on a shard store.
///
/// The run directory gets config.json (the resolved settings), metrics.jsonl (one line
/// per step), tb/ (the same numbers as TensorBoard event files: `tensorboard --logdir
/// RUN`) and checkpoints/ (current, plus one every --save-every epochs).
///
/// Numeric flags are checked before anything starts; a bad value exits with code 2.
///
/// Distributed: launch N processes with torchrun, e.g. `torchrun --no-python
/// --nproc-per-node 8 slotcon-train --device libtorch-cuda --shards S --out RUN`
/// (or set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT yourself). Under
/// srun, with those unset, Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and the
/// first host of SLURM_JOB_NODELIST stand in for them (MASTER_PORT defaults to 29500).
/// --batch-size is then the global batch, split evenly over the ranks; every BatchNorm
/// is a SyncBatchNorm; rank 0 writes the run directory, which every rank must be able
/// to read for --resume.
///
/// Stopping: the first of --stop-signals (default SIGTERM, SIGINT, SIGUSR1) makes every
/// rank finish its step; rank 0 writes a checkpoint there and the process exits with code
/// 75 ("requeue me"); --auto-resume then continues exactly. A second signal exits at
/// once (128 + its number), leaving the last complete checkpoint.
///
/// Exit codes: 0 done, 1 error, 2 bad flag or settings, 75 stopped by a signal after a
/// checkpoint.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The shard store made by slotcon-ingest: a folder, or a URL (s3://bucket/prefix/,
    /// gs://, az://, https://) read through a local cache (--cache, --cache-limit).
    #[arg(long, required_unless_present = "print_config")]
    shards: Option<PathBuf>,
    #[command(flatten)]
    store: slotcon_cli::StoreArgs,
    /// The run directory.
    #[arg(long, required_unless_present = "print_config")]
    out: Option<PathBuf>,
    /// The settings: --preset, --config and the flags that override one setting each.
    #[command(flatten)]
    settings: SettingsArgs,
    /// Print the resolved settings as TOML (preset, then --config, then the flags; with
    /// --resume, the run's) and exit without training. --shards is not needed.
    #[arg(long)]
    print_config: bool,
    /// Stop after this many steps in all, at least 1 (the schedules still span --epochs).
    #[arg(long, value_parser = flags::at_least(1u64))]
    max_steps: Option<u64>,
    /// Compute device: flex (pure-Rust CPU), libtorch (LibTorch CPU), libtorch-cuda:N, or
    /// libtorch-cuda (the GPU numbered $LOCAL_RANK: one per process under torchrun).
    /// The LibTorch devices need a build with `--features tch`; flex is single-process.
    #[arg(long, default_value = "flex")]
    device: DeviceChoice,
    /// Loader worker threads (default: every core; at most 4 per core).
    #[arg(long, value_parser = flags::threads)]
    workers: Option<usize>,
    /// Continue the run in --out from its last checkpoint (finishing or rolling back a
    /// checkpoint swap that a kill interrupted).
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Continue the run in --out if it has a checkpoint, else start one there (an absent
    /// or empty folder, or a run stopped before its first checkpoint): one command line for
    /// the first start and every restart (torchrun --max-restarts, a requeued Slurm job),
    /// as the official --auto-resume. A run made with other settings is refused, naming them.
    #[arg(long, conflicts_with_all = ["force", "resume"])]
    auto_resume: bool,
    /// Start over in an --out that already holds a run, deleting it first. Without
    /// --resume or --force, a folder that holds a run is refused.
    #[arg(long)]
    force: bool,
    /// Also write the checkpoint whenever this many minutes have passed since the last
    /// one (rank 0's clock, at a step every rank agrees on), besides every epoch's end:
    /// what a preemption without warning can lose. Fractions allowed, up to 10080 (a week).
    #[arg(long, value_name = "MINUTES", value_parser = flags::positive(10_080.0))]
    save_every_minutes: Option<f64>,
    /// The signals that stop the run with a checkpoint and exit code 75: a comma list of
    /// TERM, INT, USR1, USR2, HUP, or none (then each keeps its default action).
    #[arg(long, value_name = "LIST", default_value = DEFAULT_STOP_SIGNALS)]
    stop_signals: StopSignalSet,
    /// Distributed backend: gloo (CPU tensors) or nccl (CUDA tensors). Default: nccl on a
    /// CUDA device, gloo otherwise. Only used under a distributed launch.
    #[arg(long)]
    dist_backend: Option<DistBackend>,
    /// Seconds to wait for the rendezvous and for any one collective before giving up
    /// (a rank that never arrives), 1 to 86400.
    #[arg(long, default_value_t = 300, value_parser = flags::int(1..=86_400u64))]
    dist_timeout: u64,
    /// No progress bar (ranks other than 0 never show one).
    #[arg(long, short)]
    quiet: bool,
}

/// The settings: the preset's with --config laid over it (or, with --resume, the run's
/// config.json) and the flags given applied. With --resume a --preset or --config given
/// must agree with the run, field by field.
fn config(cli: &Cli, resume: bool) -> anyhow::Result<TrainConfig> {
    let settings = &cli.settings;
    let saved = cli.out.as_ref().map(|out| out.join("config.json"));
    let Some(saved) = saved.filter(|s| resume && s.is_file()) else {
        return settings.resolve();
    };
    let cfg = settings.overrides.apply(TrainConfig::load(&saved)?);
    if settings.preset.is_some() || settings.config.is_some() {
        let asked = settings.resolve()?;
        if asked != cfg {
            let diff = slotcon_train::run::config_diff(&cfg, &asked);
            let (flag, value) = match &settings.config {
                Some(file) => ("--config", file.display().to_string()),
                None => ("--preset", settings.preset().name()),
            };
            let reason = format!(
                "the run in {} was made with other settings ({diff}); leave {flag} out to resume it",
                saved.parent().unwrap_or(&saved).display()
            );
            return Err(bad_flag(flag, value, reason));
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    slotcon_train::alloc::retain_freed_memory();
    slotcon_cli::exit(run(Cli::parse()))
}

/// Whether to resume: `--resume`, or `--auto-resume` on a folder whose run has a
/// checkpoint. Every rank decides before the rendezvous, where the ranks compare it.
fn resumes(cli: &Cli) -> bool {
    let has_checkpoint = || cli.out.as_deref().is_some_and(slotcon_train::checkpoint::exists);
    cli.resume || (cli.auto_resume && has_checkpoint())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let resume = resumes(&cli);
    let cfg = config(&cli, resume)?;
    cli.settings.check(&cfg)?;
    if cli.print_config {
        let toml = cfg.to_toml().context("--print-config")?;
        print!("{toml}");
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(shards), Some(out)) = (cli.shards.clone(), cli.out.clone()) else {
        anyhow::bail!("--shards and --out are needed to train");
    };
    if let Some(reason) = cli.device.unavailable() {
        return Err(bad_flag("--device", cli.device, reason));
    }
    cli.settings.check_device(&cfg, cli.device)?;
    // The batch against a local store (opening it maps its index; errors are train's to
    // report). A remote store is opened once, by the run.
    let local = matches!(
        slotcon_shards::Location::parse(&shards),
        Ok(slotcon_shards::Location::Local(_))
    );
    if let Some(reader) = local.then(|| slotcon_shards::ShardReader::open(&shards).ok()).flatten() {
        let batch = cfg.data.batch_size;
        let short = slotcon_train::run::short_of_a_batch(&reader, &shards, batch);
        if let Some(reason) = short.filter(|_| cli.settings.overrides.batch_size.is_some()) {
            return Err(bad_flag("--batch-size", batch, reason));
        }
    }
    let stop = StopSignals::install(&cli.stop_signals).context("installing the --stop-signals")?;
    join_world(&cli)?;
    let device = cli.device.autodiff()?;
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = RunOptions {
        shards,
        store: cli.store.settings(),
        out: out.clone(),
        workers,
        max_steps: cli.max_steps,
        resume,
        force: cli.force,
        stop: Some(stop.flag.clone()),
        save_every: cli
            .save_every_minutes
            .map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
    };
    let bar = slotcon_cli::bar(0, "steps", cli.quiet || dist::rank() != 0);
    let on_step = &mut |m: &slotcon_train::run::MetricsLine, last: u64| {
        bar.set_length(last);
        bar.set_position(m.step.step + 1);
        // fp16: the loss scale, and whether the step was skipped for overflowing gradients.
        let scale = match (m.step.loss_scale, m.step.skipped) {
            (Some(s), true) => format!(" scale {s:.0e} (skipped)"),
            (Some(s), false) => format!(" scale {s:.0e}"),
            (None, _) => String::new(),
        };
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} slots {:.1} {:.1} img/s wait {:.0}%{scale}",
            m.step.loss,
            m.step.lr,
            m.step.active_slots_per_image,
            m.img_per_sec,
            m.data_wait_frac * 100.0
        ));
    };
    let note = &mut |text: &str| bar.suspend(|| eprintln!("note: {text}"));
    let done = train(cfg, &opts, &device, on_step, note).with_context(|| format!("training into {}", out.display()))?;
    bar.finish_and_clear();
    let step = done.trainer.step;
    if !done.stopped {
        if dist::rank() == 0 {
            println!("{step} steps done; run directory {}", out.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let by = stop
        .received()
        .map_or("a signal to another rank".to_string(), signal_name);
    if dist::rank() == 0 {
        println!(
            "stopped by {by} after step {step}, with a checkpoint; --auto-resume continues the run in {} \
             (exit code {EXIT_STOPPED})",
            out.display()
        );
    }
    Ok(ExitCode::from(EXIT_STOPPED))
}

/// Joins the distributed world that the launcher's environment describes (nothing
/// without one), after checking that the device and backend can take part.
fn join_world(cli: &Cli) -> anyhow::Result<()> {
    let launch = Launch::from_env()?;
    let backend = cli
        .dist_backend
        .unwrap_or_else(|| DistBackend::default_for(cli.device.is_cuda()));
    if launch.world_size > 1 {
        if cli.device == DeviceChoice::Flex {
            return Err(bad_flag(
                "--device",
                cli.device,
                format!(
                    "flex is single-process; a distributed launch (WORLD_SIZE={}) needs libtorch or libtorch-cuda",
                    launch.world_size
                ),
            ));
        }
        if !backend.available() {
            return Err(bad_flag(
                "--dist-backend",
                backend,
                "this build has no NCCL (its PyTorch had no CUDA, or nccl.h was missing); use gloo",
            ));
        }
        if backend == DistBackend::Nccl && !cli.device.is_cuda() {
            return Err(bad_flag(
                "--dist-backend",
                backend,
                "NCCL needs a CUDA device; use gloo",
            ));
        }
    }
    dist::init(&launch, backend, std::time::Duration::from_secs(cli.dist_timeout))?;
    Ok(())
}
