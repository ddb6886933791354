//! The ingest driver: scan, prepare in parallel, write shards in order, commit, resume.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use slotcon_shards::format::write_atomic;
use slotcon_shards::{Manifest, NewSample, ShardWriter};

use crate::config::IngestConfig;
use slotcon_shards::io_err;

use crate::error::{Error, Result};
use crate::prepare::{prepare, Prepared, Scratch};
use crate::resume::{remove_leftovers, Committed, Journal, RunKey, PARTIAL_DIR};
use crate::scan::{scan, Skipped, SourceFile};
use crate::Progress;

/// The report's file name inside the store.
pub const REPORT_FILE: &str = "ingest-report.json";
/// Files decoded in parallel between two ordered writes.
const CHUNK: usize = 64;

/// What an ingest did; saved as `OUT/ingest-report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Images in the store.
    pub written: u64,
    /// Files left out, with the reason, sorted by path.
    pub skipped: Vec<Skipped>,
    /// Total size of the source files that were stored.
    pub bytes_in: u64,
    /// Total size of the store's shard and index files.
    pub bytes_out: u64,
    /// Wall time of this run (a resumed run counts only its own part).
    pub seconds: f64,
    /// Number of shards.
    pub shards: usize,
    /// True when this run found the store already complete and did nothing.
    #[serde(default)]
    pub already_complete: bool,
    /// What the source folder held (the files' paths and sizes, as a checksum): a rerun
    /// on a complete store compares it with the folder now. Absent in older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceKey>,
}

/// The source listing a store was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceKey {
    /// Candidate files found.
    pub files: usize,
    /// CRC-32C over the sorted relative paths and sizes.
    pub listing: String,
}

/// The lock an ingest holds on its output folder (`OUT/.ingest.lock`).
pub const STORE_LOCK: slotcon_shards::LockKind = slotcon_shards::LockKind {
    file: ".ingest.lock",
    tool: "slotcon-ingest",
    what: "store",
};

/// What [`ingest_with`] calls with each shard it commits (an upload, say); an error
/// stops the run, which resumes from that shard.
pub type OnShard<'a> = &'a mut (dyn FnMut(&slotcon_shards::ShardInfo) -> Result<()> + Send);

/// Ingests every image under `src` into the store `out`, resuming a partial run.
///
/// `force` discards an existing store or partial run in `out` first. The folder is
/// locked for the whole run ([`STORE_LOCK`]): a second ingest into it fails with
/// [`slotcon_shards::Error::Locked`].
pub fn ingest(src: &Path, out: &Path, cfg: &IngestConfig, force: bool, progress: Progress<'_>) -> Result<IngestReport> {
    ingest_with(src, out, cfg, force, progress, &mut |_| Ok(()))
}

/// [`ingest`], calling `on_shard` with each shard as soon as it is committed (its files
/// are in `out` under their final names), before the next one is written.
pub fn ingest_with(
    src: &Path,
    out: &Path,
    cfg: &IngestConfig,
    force: bool,
    progress: Progress<'_>,
    on_shard: OnShard<'_>,
) -> Result<IngestReport> {
    let start = Instant::now();
    check_source(src)?;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let _lock = slotcon_shards::FolderLock::acquire(out, STORE_LOCK)?;
    if force {
        check_owned(out)?;
        clear(out)?;
    } else if out.join(slotcon_shards::format::MANIFEST_FILE).exists() {
        return already_complete(src, out, cfg);
    }
    let marker = out.join(slotcon_shards::format::STORE_MARKER);
    if !marker.exists() {
        write_atomic(&marker, b"a slotcon shard store\n")?;
    }
    let (files, scan_skipped) = scan(src);
    let key = RunKey::new(cfg.to_json(), &files);
    let (journal, committed) = Journal::open(out, &key)?;
    let mut run = Run::new(out, cfg, &journal, committed, on_shard);
    run.write_all(&files, progress)?;
    let mut report = run.report(scan_skipped);
    report.seconds = start.elapsed().as_secs_f64();
    report.source = Some(SourceKey {
        files: key.files,
        listing: key.listing.clone(),
    });
    let text = serde_json::to_vec_pretty(&report).expect("json");
    write_atomic(&out.join(REPORT_FILE), &text)?;
    if report.written == 0 {
        journal.remove()?;
        return Err(nothing_written(out, files.len(), report));
    }
    run.save_manifest()?;
    journal.remove()?;
    Ok(report)
}

fn nothing_written(out: &Path, found: usize, report: IngestReport) -> Error {
    Error::NothingWritten {
        path: out.to_path_buf(),
        found,
        report: Box::new(report),
    }
}

fn check_source(src: &Path) -> Result<()> {
    match std::fs::read_dir(src) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Source {
            path: src.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Removes a previous store or partial run from `out` (only files we own).
/// `--force` clears only a store slotcon made: one with the marker, or a slotcon manifest
/// (a store from before the marker), or a folder with nothing in it but our lock.
fn check_owned(out: &Path) -> Result<()> {
    let marked = out.join(slotcon_shards::format::STORE_MARKER).is_file();
    if marked || Manifest::load(out).is_ok() {
        return Ok(());
    }
    let others = std::fs::read_dir(out)
        .map_err(io_err(out))?
        .flatten()
        .any(|e| e.file_name() != STORE_LOCK.file);
    if !others {
        return Ok(());
    }
    Err(Error::Conflict {
        path: out.to_path_buf(),
        reason: format!(
            "holds files but no {} marker or slotcon manifest, so slotcon did not make it; --force deletes \
             only a store slotcon made: choose another folder, or empty it by hand",
            slotcon_shards::format::STORE_MARKER
        ),
    })
}

fn clear(out: &Path) -> Result<()> {
    remove_leftovers(out, 0)?;
    for name in [slotcon_shards::format::MANIFEST_FILE, REPORT_FILE] {
        let p = out.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    let partial = out.join(PARTIAL_DIR);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    Ok(())
}

/// A rerun on a finished store: check the settings, the files and the source folder
/// (its listing of paths and sizes against the one the store was made from), tidy up,
/// and return its report.
fn already_complete(src: &Path, out: &Path, cfg: &IngestConfig) -> Result<IngestReport> {
    let manifest = Manifest::load(out)?;
    if manifest.ingest != cfg.to_json() {
        let reason = format!(
            "already holds a store made with other settings ({}); pass --force to rebuild it",
            manifest.ingest
        );
        return Err(Error::Conflict {
            path: out.to_path_buf(),
            reason,
        });
    }
    let problems = slotcon_shards::check_files(out, &manifest);
    if !problems.is_empty() {
        return Err(Error::Incomplete {
            path: out.to_path_buf(),
            problems,
        });
    }
    let report = saved_report(out)?;
    if let Some(then) = &report.source {
        let now = RunKey::new(cfg.to_json(), &scan(src).0);
        if (now.files, &now.listing) != (then.files, &then.listing) {
            let reason = format!(
                "holds a store made from other source files ({} then, {} in {} now, or their names or \
                 sizes changed); pass --force to rebuild it",
                then.files,
                now.files,
                src.display()
            );
            return Err(Error::Conflict {
                path: out.to_path_buf(),
                reason,
            });
        }
    }
    let partial = out.join(PARTIAL_DIR);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    Ok(report)
}

fn saved_report(out: &Path) -> Result<IngestReport> {
    let report_path = out.join(REPORT_FILE);
    let text = std::fs::read(&report_path).map_err(io_err(&report_path))?;
    let mut report: IngestReport = serde_json::from_slice(&text).map_err(|e| Error::Conflict {
        path: report_path.clone(),
        reason: format!("unreadable report: {e}"),
    })?;
    report.already_complete = true;
    Ok(report)
}

/// The state of one run over the sorted listing.
struct Run<'a> {
    out: &'a Path,
    cfg: &'a IngestConfig,
    journal: &'a Journal,
    on_shard: OnShard<'a>,
    committed: Vec<Committed>,
    writer: Option<ShardWriter>,
    next_source: usize,
    pending_skipped: Vec<Skipped>,
    pending_bytes_in: u64,
}

impl<'a> Run<'a> {
    fn new(
        out: &'a Path,
        cfg: &'a IngestConfig,
        journal: &'a Journal,
        committed: Vec<Committed>,
        on_shard: OnShard<'a>,
    ) -> Self {
        let next_source = committed.last().map_or(0, |c| c.next_source);
        Run {
            out,
            cfg,
            journal,
            on_shard,
            committed,
            writer: None,
            next_source,
            pending_skipped: Vec::new(),
            pending_bytes_in: 0,
        }
    }

    fn next_id(&self) -> u64 {
        self.committed.last().map_or(0, |c| c.shard.first_id + c.shard.rows)
    }

    /// Writes every file not yet committed, decoding on `cfg.threads` threads.
    fn write_all(&mut self, files: &[SourceFile], progress: Progress<'_>) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.cfg.threads)
            .build()
            .map_err(|e| Error::Threads(e.to_string()))?;
        progress(self.next_source as u64, files.len() as u64);
        pool.install(|| self.write_chunks(files, progress))
    }

    fn write_chunks(&mut self, files: &[SourceFile], progress: Progress<'_>) -> Result<()> {
        for chunk in files[self.next_source..].chunks(CHUNK) {
            let prepared: Vec<_> = chunk
                .par_iter()
                .map_init(Scratch::default, |s, f| prepare(f, self.cfg, s))
                .collect();
            for (file, result) in chunk.iter().zip(prepared) {
                self.next_source += 1;
                match result {
                    Ok(p) => self.push(file, p)?,
                    Err(skip) => self.pending_skipped.push(Skipped {
                        path: file.rel.clone(),
                        reason: skip.to_string(),
                    }),
                }
                progress(self.next_source as u64, files.len() as u64);
            }
        }
        if self.writer.is_some() {
            self.commit()?;
        }
        Ok(())
    }

    fn push(&mut self, file: &SourceFile, p: Prepared) -> Result<()> {
        if self.writer.is_none() {
            let w = ShardWriter::create(self.out, self.committed.len(), self.next_id(), self.cfg.store)?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("writer just created");
        w.push(NewSample {
            bytes: &p.bytes,
            path: &file.rel,
            width: p.width,
            height: p.height,
        })?;
        self.pending_bytes_in += p.bytes_in;
        if w.image_bytes() >= self.cfg.shard_size {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let shard = self.writer.take().expect("an open shard").finish()?;
        let c = Committed {
            shard,
            next_source: self.next_source,
            skipped: std::mem::take(&mut self.pending_skipped),
            bytes_in: std::mem::take(&mut self.pending_bytes_in),
        };
        self.journal.commit(self.committed.len(), &c)?;
        (self.on_shard)(&c.shard)?;
        self.committed.push(c);
        Ok(())
    }

    /// What the run did; `seconds` is left for the caller. The skipped files are
    /// `skipped` (the scan's), those of the committed shards and those of the tail.
    fn report(&mut self, mut skipped: Vec<Skipped>) -> IngestReport {
        skipped.extend(self.committed.iter().flat_map(|c| c.skipped.iter().cloned()));
        skipped.append(&mut self.pending_skipped);
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        IngestReport {
            written: self.committed.iter().map(|c| c.shard.rows).sum(),
            skipped,
            bytes_in: self.committed.iter().map(|c| c.bytes_in).sum(),
            bytes_out: self.committed.iter().map(|c| c.shard.bytes + c.shard.index_bytes).sum(),
            seconds: 0.0,
            shards: self.committed.len(),
            already_complete: false,
            source: None,
        }
    }

    fn save_manifest(&self) -> Result<()> {
        let shards = self.committed.iter().map(|c| c.shard.clone()).collect();
        Ok(Manifest::new(self.cfg.store, self.cfg.to_json(), shards).save(self.out)?)
    }
}
