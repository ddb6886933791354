//! `slotcon-bench`: throughput benchmarks, reported against a baseline from the same run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slotcon_cli::flags;
use slotcon_train::TrainConfig;

/// Measure slotcon's throughput. Each command prints a table, or one JSON object with --json.
///
/// Numeric flags are checked before anything starts; a bad value exits with code 2.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingest throughput: decode-validate every image and write the shards, from scratch.
    Ingest {
        /// The image folder to ingest.
        #[arg(long)]
        images: PathBuf,
        /// How many times to rebuild the store (1 to 100); the median run is reported.
        #[arg(long, default_value_t = 3, value_parser = flags::int(1..=100usize))]
        repeat: usize,
        /// Worker threads (default 0: every core; at most 4 per core).
        #[arg(long, default_value_t = 0, value_parser = flags::threads_or_all)]
        threads: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Two-view loader throughput over a shard store (JPEG or raw), a folder or a URL
    /// (s3://bucket/prefix/, gs://, az://, https://).
    Loader {
        #[command(flatten)]
        run: LoaderArgs,
        /// The store made by slotcon-ingest: a folder or a URL.
        #[arg(long)]
        shards: String,
        /// Run exactly this many epochs, each timed on its own (epoch 1 of a remote store
        /// with an empty cache is its cold figure, epoch 2 its warm one), instead of
        /// --seconds.
        #[arg(long, value_parser = flags::int(1..=1000u64))]
        epochs: Option<u64>,
        /// Run the same loader over this store too (the local copy of a remote one, say),
        /// in the same invocation, and report the ratio of each epoch's img/s. With
        /// --epochs the two runs take turns epoch by epoch (which goes first alternates);
        /// with --seconds this store runs first.
        #[arg(long, value_name = "STORE")]
        against: Option<String>,
        /// The epoch order: global (uniform) or block (runs of --order-block consecutive
        /// samples, shuffled, mixed within windows of --order-window runs).
        #[arg(long, value_enum, default_value_t = OrderArg::Global)]
        order: OrderArg,
        /// Consecutive samples per run of the block order, 1 to 1048576.
        #[arg(long, default_value_t = slotcon_augment::DEFAULT_ORDER_BLOCK, value_parser = flags::int(1..=1u64 << 20))]
        order_block: u64,
        /// Runs per window of the block order, 1 to 1048576.
        #[arg(long, default_value_t = slotcon_augment::DEFAULT_ORDER_WINDOW, value_parser = flags::int(1..=1u64 << 20))]
        order_window: u64,
        #[command(flatten)]
        store: slotcon_cli::StoreArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The reference: a PyTorch DataLoader with SlotCon's PIL/torchvision augmentation.
    Baseline {
        #[command(flatten)]
        run: LoaderArgs,
        /// The folder of JPEG images.
        #[arg(long)]
        images: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Loader and baseline on the same images and cores, with the ratio per core.
    Compare {
        #[command(flatten)]
        run: LoaderArgs,
        /// The store made from --images by slotcon-ingest: a folder or a URL.
        #[arg(long)]
        shards: String,
        #[command(flatten)]
        store: slotcon_cli::StoreArgs,
        /// The folder of JPEG images the store was made from.
        #[arg(long)]
        images: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the first N samples' views as PNGs and their geometry as samples.json.
    Dump {
        /// The store: a folder or a URL.
        #[arg(long)]
        shards: String,
        #[command(flatten)]
        store: slotcon_cli::StoreArgs,
        /// How many samples (ids 0..N, at most the store's; N at least 1).
        #[arg(long, default_value_t = 8, value_parser = flags::at_least(1u64))]
        n: u64,
        /// The seed (epoch 0), as given to the loader.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Where a core's time goes per two-view sample, stage by stage (single thread).
    Profile {
        /// The store: a folder or a URL.
        #[arg(long)]
        shards: String,
        #[command(flatten)]
        store: slotcon_cli::StoreArgs,
        /// Samples to profile (cycling over the store), 1 to 1000000.
        #[arg(long, default_value_t = 512, value_parser = flags::int(1..=1_000_000u64))]
        n: u64,
        /// Seed of the draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Per-op timings of the augmentation on one image, against the same ops in Pillow.
    Ops {
        /// A JPEG to cut the 224x224 view from (e.g. a COCO image).
        #[arg(long)]
        image: PathBuf,
        /// Seconds spent on each op (per side), in (0, 3600].
        #[arg(long, default_value_t = 0.5, value_parser = flags::positive(3600.0))]
        seconds: f64,
        /// Skip the Pillow side.
        #[arg(long)]
        no_python: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `--order`'s values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OrderArg {
    /// Uniform over the store.
    Global,
    /// Runs of consecutive samples, shuffled, mixed within windows.
    Block,
}

/// Settings shared by the loader benchmarks.
#[derive(clap::Args, Debug, Clone)]
struct LoaderArgs {
    /// Worker threads (slotcon) or processes (baseline), at most 4 per core.
    #[arg(long, default_value_t = 1, value_parser = flags::threads)]
    workers: usize,
    /// Samples per batch, 1 to 65536 and at most the store's images.
    #[arg(long, default_value_t = 32, value_parser = flags::int(TrainConfig::BATCH_SIZE))]
    batch_size: usize,
    /// Seconds to run each side for, in (0, 86400].
    #[arg(long, default_value_t = 10.0, value_parser = flags::positive(86400.0))]
    seconds: f64,
    /// Seed of the order and the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl LoaderArgs {
    fn run(&self, store: &slotcon_cli::StoreArgs, epochs: Option<u64>) -> slotcon_bench::loader::LoaderRun {
        slotcon_bench::loader::LoaderRun {
            workers: self.workers,
            batch_size: self.batch_size,
            seconds: self.seconds,
            seed: self.seed,
            checksum_batches: 4,
            epochs,
            store: store.settings(),
            order: slotcon_augment::Order::Global,
        }
    }

    fn python_args(&self, images: &std::path::Path) -> Vec<String> {
        let mut a = vec!["--images".to_string(), images.display().to_string()];
        a.extend([
            "--workers".into(),
            self.workers.to_string(),
            "--batch-size".into(),
            self.batch_size.to_string(),
        ]);
        a.extend(["--seconds".into(), self.seconds.to_string()]);
        a
    }
}

/// The loader benchmark with a bar of seconds (hidden with --json).
fn bench_loader(
    shards: &std::path::Path,
    run: &slotcon_bench::loader::LoaderRun,
    what: &str,
    json: bool,
) -> anyhow::Result<slotcon_bench::loader::LoaderBench> {
    check_batch(shards, run)?;
    let bar = slotcon_cli::bar(run.seconds.ceil() as u64, what, json);
    let r = slotcon_bench::loader::bench_loader(shards, run, &mut |secs, rate| {
        bar.set_position(secs as u64);
        bar.set_message(format!("{rate:.0} img/s"));
    })?;
    bar.finish_and_clear();
    Ok(r)
}

/// `--batch-size` against the store first: a usage error (exit 2), not the loader's. A
/// remote store is opened once, by the benchmark.
fn check_batch(shards: &std::path::Path, run: &slotcon_bench::loader::LoaderRun) -> anyhow::Result<()> {
    let local = matches!(
        slotcon_shards::Location::parse(shards),
        Ok(slotcon_shards::Location::Local(_))
    );
    if let Some(reader) = local.then(|| slotcon_shards::ShardReader::open(shards).ok()).flatten() {
        if run.batch_size as u64 > reader.len() {
            return Err(slotcon_cli::bad_flag(
                "--batch-size",
                run.batch_size,
                format!(
                    "{} holds {} images, fewer than one batch",
                    shards.display(),
                    reader.len()
                ),
            ));
        }
    }
    Ok(())
}

/// With `--epochs`, both stores' runs epoch by epoch in turn: `against`'s epoch 1 then
/// the store's, the store's epoch 2 then `against`'s, and so on, so that neither runs
/// all its epochs on a quieter machine, nor always goes first.
fn alternate(
    run: &slotcon_bench::loader::LoaderRun,
    shards: &str,
    against: &str,
    json: bool,
) -> anyhow::Result<(slotcon_bench::loader::LoaderBench, slotcon_bench::loader::LoaderBench)> {
    use slotcon_bench::loader::Session;
    check_batch(against.as_ref(), run)?;
    check_batch(shards.as_ref(), run)?;
    let bar = slotcon_cli::bar(
        2 * run.epochs.unwrap_or(0),
        "loader, epochs alternating with --against",
        json,
    );
    let mut base = Session::open(against.as_ref(), run)?;
    let mut ours = Session::open(shards.as_ref(), run)?;
    let mut quiet = |_: f64, _: f64| {};
    for epoch in 0u64.. {
        let (first, second) = if epoch % 2 == 0 {
            (&mut base, &mut ours)
        } else {
            (&mut ours, &mut base)
        };
        let more = first.epoch(&mut quiet)? & second.epoch(&mut quiet)?;
        bar.inc(2);
        if !more {
            break;
        }
    }
    bar.finish_and_clear();
    Ok((base.finish(), ours.finish()))
}

fn main() -> ExitCode {
    slotcon_cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ingest {
            images,
            repeat,
            threads,
            json,
        } => {
            let r = slotcon_bench::bench_ingest(&images, threads, repeat)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "ingest {}: {} images, {:.1} MB, {} thread(s)",
                    images.display(),
                    r.images,
                    r.bytes_in as f64 / 1e6,
                    r.threads
                );
                let runs: Vec<String> = r.runs.iter().map(|s| format!("{s:.3}")).collect();
                println!("  runs (s):      {}", runs.join(" "));
                println!("  img/s:         {:.1}", r.img_per_sec);
                println!("  img/s/core:    {:.1}  (target >= 150)", r.img_per_sec_per_core);
                println!("  MB/s:          {:.1}", r.mb_per_sec);
            }
        }
        Command::Ops {
            image,
            seconds,
            no_python,
            json,
        } => ops(&image, seconds, no_python, json)?,
        Command::Loader {
            run,
            shards,
            epochs,
            against,
            order,
            order_block,
            order_window,
            store,
            json,
        } => {
            let mut r = run.run(&store, epochs);
            r.order = match order {
                OrderArg::Global => slotcon_augment::Order::Global,
                OrderArg::Block => slotcon_augment::Order::Block {
                    samples: order_block,
                    window: order_window,
                },
            };
            loader_pair(&r, &shards, against.as_deref(), json)?
        }
        Command::Baseline { run, images, json } => {
            eprintln!("running the PyTorch DataLoader baseline for {} s ...", run.seconds);
            print_one(
                &slotcon_bench::run_python("baseline.py", &run.python_args(&images))?,
                json,
            );
        }
        Command::Profile {
            shards,
            store,
            n,
            seed,
            json,
        } => {
            let p = slotcon_bench::profile::profile(shards.as_ref(), &store.settings(), n, seed)?;
            if json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!("{:<18} {:>10} {:>7}", "stage", "µs/sample", "share");
                for s in &p.stages {
                    println!("{:<18} {:>10.1} {:>6.1}%", s.stage, s.us_per_sample, s.share * 100.0);
                }
                let (us, rate) = (p.us_per_sample, p.img_per_sec_per_core);
                println!(
                    "{:<18} {us:>10.1}   -> {rate:.0} img/s per core ({} store, {} samples)",
                    "total", p.store, p.samples
                );
            }
        }
        Command::Compare {
            run,
            shards,
            store,
            images,
            json,
        } => compare(&run, &run.run(&store, None), shards.as_ref(), &images, json)?,
        Command::Dump {
            shards,
            store,
            n,
            seed,
            out,
        } => {
            let samples = slotcon_bench::dump::dump(shards.as_ref(), &store.settings(), n, seed, &out)?;
            println!("wrote {} samples to {}", samples.len(), out.display());
        }
    }
    Ok(())
}

/// Prints a result as JSON, or as `key: value` lines.
fn print_one(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    for (k, val) in v.as_object().into_iter().flatten() {
        match val.as_f64() {
            Some(x) if !val.is_u64() => println!("{k:<22} {x:.2}"),
            _ => println!("{k:<22} {val}"),
        }
    }
}

/// `slotcon-bench loader`: one store, or `against` first and then `shards` (with
/// `--epochs`, their epochs in turn), with the ratio of each epoch's img/s (and of the
/// whole runs').
fn loader_pair(
    run: &slotcon_bench::loader::LoaderRun,
    shards: &str,
    against: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let Some(against) = against else {
        let r = bench_loader(shards.as_ref(), run, "loader", json)?;
        print_one(&serde_json::to_value(&r)?, json);
        return Ok(());
    };
    let (base, ours) = if run.epochs.is_some() {
        alternate(run, shards, against, json)?
    } else {
        (
            bench_loader(against.as_ref(), run, "loader (against)", json)?,
            bench_loader(shards.as_ref(), run, "loader", json)?,
        )
    };
    let ratios: Vec<f64> = ours
        .epochs
        .iter()
        .zip(&base.epochs)
        .map(|(o, b)| o.img_per_sec / b.img_per_sec)
        .collect();
    let ratio = ours.img_per_sec / base.img_per_sec;
    let out = serde_json::json!({
        "bench": "loader-pair", "store": ours, "against": base,
        "ratio": ratio, "ratio_per_epoch": ratios,
    });
    if json {
        println!("{out}");
        return Ok(());
    }
    println!("{:<8} {:>14} {:>14} {:>8}", "epoch", "img/s", "against", "ratio");
    for ((o, b), r) in ours.epochs.iter().zip(&base.epochs).zip(&ratios) {
        println!(
            "{:<8} {:>14.1} {:>14.1} {:>7.3}x",
            o.epoch + 1,
            o.img_per_sec,
            b.img_per_sec,
            r
        );
    }
    println!(
        "{:<8} {:>14.1} {:>14.1} {:>7.3}x",
        "all", ours.img_per_sec, base.img_per_sec, ratio
    );
    if let Some(s) = &ours.remote {
        println!(
            "remote: {:.3} requests/sample, {:.2} bytes fetched per byte used, {} cache hits, {} retries, workers waited {:.2} s",
            s.requests_per_sample(),
            s.fetched_per_used(),
            s.cache_hits,
            s.retries,
            s.wait_seconds
        );
    }
    Ok(())
}

fn compare(
    args: &LoaderArgs,
    run: &slotcon_bench::loader::LoaderRun,
    shards: &std::path::Path,
    images: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let ours = bench_loader(shards, run, "slotcon loader", json)?;
    if !json {
        eprintln!("running the PyTorch DataLoader baseline for {} s ...", run.seconds);
    }
    let base = slotcon_bench::run_python("baseline.py", &args.python_args(images))?;
    let base_per_core = base["img_per_sec_per_core"].as_f64().unwrap_or(0.0);
    let ratio = ours.img_per_sec_per_core / base_per_core;
    let out = serde_json::json!({
        "bench": "compare", "workers": run.workers, "batch_size": run.batch_size,
        "slotcon": ours, "baseline": base, "ratio_per_core": ratio,
    });
    if json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "{:<10} {:>10} {:>14} {:>10} {:>10}",
        "", "img/s", "img/s/core", "p50 ms", "p99 ms"
    );
    for (name, r) in [("slotcon", &out["slotcon"]), ("baseline", &out["baseline"])] {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "{name:<10} {:>10.1} {:>14.1} {:>10.1} {:>10.1}",
            f("img_per_sec"),
            f("img_per_sec_per_core"),
            f("p50_batch_ms"),
            f("p99_batch_ms")
        );
    }
    println!(
        "ratio_per_core: {ratio:.2}  ({} worker(s), batch {}, store {})",
        run.workers, run.batch_size, ours.store
    );
    Ok(())
}

fn ops(image: &std::path::Path, seconds: f64, no_python: bool, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let jpeg = std::fs::read(image).with_context(|| format!("{}", image.display()))?;
    let ours = slotcon_bench::ops::time_ops(slotcon_bench::ops::op_benches(&jpeg)?, seconds);
    let pillow: Vec<slotcon_bench::ops::OpTiming> = if no_python {
        Vec::new()
    } else {
        let args = [image.display().to_string(), seconds.to_string()];
        let rows = slotcon_bench::run_python("pil_ops.py", &args)?;
        rows.as_array()
            .into_iter()
            .flatten()
            .map(|r| slotcon_bench::ops::OpTiming {
                op: r["op"].as_str().unwrap_or("").into(),
                us: r["us"].as_f64().unwrap_or(0.0),
            })
            .collect()
    };
    let rows: Vec<serde_json::Value> = ours
        .iter()
        .map(|o| {
            let p = pillow.iter().find(|p| p.op == o.op).map(|p| p.us);
            serde_json::json!({"op": o.op, "slotcon_us": o.us, "pillow_us": p, "speedup": p.map(|p| p / o.us)})
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"bench": "ops", "image": image, "size": 224, "ops": rows})
        );
        return Ok(());
    }
    println!(
        "{:<12} {:>12} {:>12} {:>9}",
        "op", "slotcon µs", "Pillow µs", "speed-up"
    );
    for r in rows {
        let f = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{:<12} {:>12} {:>12} {:>9}",
            r["op"].as_str().unwrap_or(""),
            f("slotcon_us"),
            f("pillow_us"),
            f("speedup")
        );
    }
    Ok(())
}
