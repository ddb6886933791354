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
    }
    Ok(())
}
