//! `slotcon-ingest`: the command line over the `slotcon_ingest` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use slotcon_cli::flags;
use slotcon_ingest::{default_staging, ingest, ingest_to_url, verify, IngestConfig, IngestReport, VerifyReport};
use slotcon_shards::StoreKind;

/// Turn a folder of images into a sharded, memory-mapped Parquet store.
///
/// Finds every .jpg/.jpeg/.png under SRC (recursively, any case), validates each by
/// decoding it, and writes shard-NNNNN.parquet files plus manifest.json to --out.
/// Bad files are skipped and listed in OUT/ingest-report.json. Rerunning the same
/// command after an interruption resumes where it stopped. One ingest at a time writes
/// an output folder: a second is refused while the first runs.
///
/// Numeric flags are checked before anything starts; a bad value exits with code 2.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    ingest: IngestArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check every checksum in a store and decode every image; exit 1 on any problem.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
struct IngestArgs {
    /// The folder of images (COCO train2017/, ImageNet train/, any tree).
    #[arg(required = true)]
    src: Option<PathBuf>,
    /// The store to create or complete: a folder, or a URL (s3://bucket/prefix/, gs://,
    /// az://, https://) that each shard is uploaded to once written (the manifest last).
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// With a URL --out: the local folder the store is written in first, which holds the
    /// journal that a killed ingest resumes from. [default: CACHE/ingest/<hash of the URL>]
    #[arg(long, value_name = "DIR")]
    staging: Option<PathBuf>,
    #[command(flatten)]
    remote: slotcon_cli::StoreArgs,
    /// With a URL --out: a file larger than this is sent as a multipart upload of parts
    /// this size, 4 at a time (memory holds those, not the file); 5MiB to 5GiB.
    /// [default: 32MiB]
    #[arg(long, value_name = "SIZE", value_parser = part_size)]
    part_size: Option<u64>,
    /// What to store: the image files, or decoded RGB pixels (no decoding when loading).
    #[arg(long, value_enum, default_value_t = Store::Encoded)]
    store: Store,
    /// Downscale images whose longer side exceeds N pixels (Pillow bicubic, antialiased)
    /// and re-encode them as JPEG at --quality. Smaller images keep their bytes.
    #[arg(long, value_name = "N", value_parser = flags::at_least(1u32))]
    max_side: Option<u32>,
    /// JPEG quality for re-encoded images, 1 to 100.
    #[arg(long, default_value_t = 90, value_parser = flags::int(1..=100u8))]
    quality: u8,
    /// Skip images with more pixels than this, at least 1 (default: Pillow's
    /// decompression-bomb limit).
    #[arg(long, default_value_t = slotcon_augment::decode::PIL_MAX_IMAGE_PIXELS, value_parser = flags::at_least(1u64))]
    max_pixels: u64,
    /// Target shard size, e.g. 256MiB, 1GB, 500000 (bytes); at most 16GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    shard_size: u64,
    /// Decoding threads (default 0: every core; at most 4 per core).
    #[arg(long, default_value_t = 0, value_parser = flags::threads_or_all)]
    threads: usize,
    /// Discard an existing store or partial run in --out and start over.
    #[arg(long)]
    force: bool,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The store: a folder, or a URL (s3://bucket/prefix/, gs://, az://, https://).
    dir: PathBuf,
    #[command(flatten)]
    store: slotcon_cli::StoreArgs,
    /// Decoding threads (default 0: every core; at most 4 per core).
    #[arg(long, default_value_t = 0, value_parser = flags::threads_or_all)]
    threads: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Store {
    /// Keep the image files (original bytes unless --max-side resizes them).
    Encoded,
    /// Store decoded RGB pixels, FFCV's raw mode.
    Raw,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Verify(args)) => run_verify(args),
        None => run_ingest(cli.ingest),
    };
    slotcon_cli::exit(result)
}

fn run_ingest(a: IngestArgs) -> anyhow::Result<ExitCode> {
    let (src, out) = (a.src.expect("required by clap"), a.out.expect("required by clap"));
    let cfg = IngestConfig {
        store: match a.store {
            Store::Encoded => StoreKind::Encoded,
            Store::Raw => StoreKind::Raw,
        },
        max_side: a.max_side,
        quality: a.quality,
        max_pixels: a.max_pixels,
        shard_size: a.shard_size,
        threads: a.threads,
    };
    if let Err(msg) = cfg.validate() {
        eprintln!("error: {msg}");
        return Ok(ExitCode::from(2));
    }
    let bar = slotcon_cli::bar(0, "ingest", a.quiet);
    let progress = |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    };
    if let slotcon_shards::Location::Remote(url) = slotcon_shards::Location::parse(&out)? {
        let mut settings = a.remote.settings();
        if let Some(n) = a.part_size {
            settings.part_bytes = n;
        }
        let staging = a.staging.clone().unwrap_or_else(|| default_staging(&url, &settings));
        let result = ingest_to_url(&src, &url, &staging, &cfg, &settings, a.force, &progress);
        bar.finish_and_clear();
        let (report, upload) = result.with_context(|| format!("ingesting {} into {url}", src.display()))?;
        if a.json {
            let mut v = serde_json::to_value(&report)?;
            v["upload"] = serde_json::to_value(&upload)?;
            println!("{v}");
        } else {
            print_report(&report, &staging);
            println!(
                "uploaded {} object(s), {:.1} MiB, to {url} ({} already there); staged in {}",
                upload.uploaded,
                upload.bytes as f64 / 1048576.0,
                upload.kept,
                staging.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let result = ingest(&src, &out, &cfg, a.force, &progress);
    bar.finish_and_clear();
    if let (true, Err(slotcon_ingest::Error::NothingWritten { report, .. })) = (a.json, &result) {
        println!("{}", serde_json::to_string(report)?);
    }
    let report = result.with_context(|| format!("ingesting {}", src.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report, &out);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &IngestReport, out: &std::path::Path) {
    if r.already_complete {
        println!(
            "{} already holds a complete store of {} images; nothing to do (use --force to rebuild)",
            out.display(),
            r.written
        );
        return;
    }
    for s in &r.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    let rate = r.written as f64 / r.seconds.max(1e-9);
    println!(
        "wrote {} images into {} shard(s), {:.1} MiB -> {:.1} MiB, in {:.2} s ({rate:.0} img/s); skipped {}",
        r.written,
        r.shards,
        r.bytes_in as f64 / 1048576.0,
        r.bytes_out as f64 / 1048576.0,
        r.seconds,
        r.skipped.len()
    );
    println!("report: {}", out.join(slotcon_ingest::REPORT_FILE).display());
}

fn run_verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let bar = slotcon_cli::bar(0, "verify", a.quiet);
    let r: VerifyReport = verify(&a.dir, &a.store.settings(), a.threads, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("verifying {}", a.dir.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for p in &r.problems {
            eprintln!("problem: {p}");
        }
        let verdict = if r.problems.is_empty() {
            "OK".to_string()
        } else {
            format!("{} problem(s)", r.problems.len())
        };
        println!(
            "{}: {} images in {} shard(s): {verdict}",
            a.dir.display(),
            r.images,
            r.shards
        );
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A size flag (`256MiB`, `1GB`, `64k`, `1000`: binary units for both spellings) that
/// must lie in `range`.
fn size_within(s: &str, range: std::ops::RangeInclusive<u64>, what: &str) -> Result<u64, String> {
    let bytes = slotcon_shards::remote::parse_size(s)?;
    if !range.contains(&bytes) {
        return Err(format!("{s:?} is outside {what}"));
    }
    Ok(bytes)
}

/// `--shard-size`: 1 byte to 16 GiB.
fn parse_size(s: &str) -> Result<u64, String> {
    size_within(s, 1..=slotcon_ingest::MAX_SHARD_SIZE, "1 byte..=16GiB")
}

/// `--part-size`: S3's part sizes, 5 MiB to 5 GiB.
fn part_size(s: &str) -> Result<u64, String> {
    size_within(s, 5 << 20..=5 << 30, "5MiB..=5GiB, S3's part sizes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        for huge in ["99999999999999999999", "17GiB", "1e400", "0.1"] {
            assert!(parse_size(huge).is_err(), "{huge}");
        }
        assert_eq!(part_size("8MiB"), Ok(8 << 20));
        assert!(part_size("4MiB").unwrap_err().contains("5MiB..=5GiB"));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
