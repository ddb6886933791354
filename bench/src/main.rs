//! `slotcon-bench`: throughput benchmarks, reported against a baseline from the same run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Measure slotcon's throughput. Each command prints a table, or one JSON object with --json.
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
        /// How many times to rebuild the store; the median run is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Worker threads (default: every core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Per-op timings of the augmentation on one image, against the same ops in Pillow.
    Ops {
        /// A JPEG to cut the 224x224 view from (e.g. a COCO image).
        #[arg(long)]
        image: PathBuf,
        /// Seconds spent on each op (per side).
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
        /// Skip the Pillow side.
        #[arg(long)]
        no_python: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
                println!(
                    "  img/s/core:    {:.1}  (target >= 150)",
                    r.img_per_sec_per_core
                );
                println!("  MB/s:          {:.1}", r.mb_per_sec);
            }
        }
        Command::Ops {
            image,
            seconds,
            no_python,
            json,
        } => ops(&image, seconds, no_python, json)?,
    }
    Ok(())
}

fn ops(image: &std::path::Path, seconds: f64, no_python: bool, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let jpeg = std::fs::read(image).with_context(|| format!("{}", image.display()))?;
    let ours = slotcon_bench::ops::time_ops(slotcon_bench::ops::op_benches(&jpeg)?, seconds);
    let pillow: Vec<slotcon_bench::ops::OpTiming> = if no_python {
        Vec::new()
    } else {
        let py = slotcon_bench::python()?;
        let out = std::process::Command::new(&py)
            .arg(slotcon_bench::python_script("pil_ops.py"))
            .arg(image)
            .arg(seconds.to_string())
            .output()
            .with_context(|| format!("running {}", py.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "pil_ops.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        rows.iter()
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
