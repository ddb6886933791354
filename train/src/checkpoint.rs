//! Checkpoint folders that survive a kill at any moment and prove their own integrity.
//!
//! A run keeps `RUN/checkpoints/current` and, at milestones, `epoch-NNNN`. Each folder
//! holds the trainer's files ([`Trainer::save`]), `config.json` and, written last,
//! `checkpoint.json`: every file's size and CRC-32C. A folder without it is unfinished;
//! [`verify`] checks every file against it before anything is loaded.
//!
//! The swap of a new checkpoint into place ([`save`]):
//! 1. write everything into `.tmp-current`, seal it (the manifest last);
//! 2. at a milestone, copy it to `.tmp-epoch-NNNN` and rename that to `epoch-NNNN`;
//! 3. rename `current` to `.old-current`;
//! 4. rename `.tmp-current` to `current`;
//! 5. remove `.old-current`.
//!
//! [`recover`] finishes or rolls back whatever a kill left between these steps.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use slotcon_shards::format::{read_json, write_atomic};
use slotcon_shards::{crc32c, format_checksum, io_err};

use crate::error::{Error, Result};
use crate::trainer::Trainer;

/// The manifest of a checkpoint folder, written last.
pub const MANIFEST: &str = "checkpoint.json";
const TMP: &str = ".tmp-current";
const OLD: &str = ".old-current";
const TMP_MILESTONE: &str = ".tmp-epoch-";

/// Environment variable that aborts the process at a named point of the swap
/// (`written`, `milestone`, `retired`, `swapped`): the crash tests' hook.
pub const CRASH_AT: &str = "SLOTCON_CRASH_AT";

/// One file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// File name inside the folder.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// `crc32c:xxxxxxxx`.
    pub checksum: String,
}

/// `checkpoint.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The step the checkpoint was taken after.
    pub step: u64,
    /// Every other file of the folder.
    pub files: Vec<FileSum>,
}

/// The checkpoint folder of a run, `out/checkpoints`.
pub fn checkpoints(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn crash_point(name: &str) {
    if std::env::var(CRASH_AT).is_ok_and(|v| v == name) {
        eprintln!("{CRASH_AT}={name}: aborting here");
        std::process::abort();
    }
}

fn sum(path: &Path) -> Result<FileSum> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    Ok(FileSum {
        name: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        bytes: bytes.len() as u64,
        checksum: format_checksum(crc32c(&bytes)),
    })
}

/// Writes `dir/checkpoint.json` over every other file in `dir`.
pub fn seal(dir: &Path, step: u64) -> Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.ends_with(MANIFEST))
        .collect();
    names.sort();
    let files = names.iter().map(|p| sum(p)).collect::<Result<Vec<_>>>()?;
    let text = serde_json::to_vec_pretty(&Manifest { step, files }).expect("json");
    Ok(write_atomic(&dir.join(MANIFEST), &text)?)
}

/// Checks every file of the checkpoint `dir` against its manifest; the manifest.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path,
            reason: "missing: the checkpoint is unfinished or was written by an older slotcon".into(),
        });
    }
    let manifest: Manifest = read_json(&path)?;
    for want in &manifest.files {
        let file = dir.join(&want.name);
        let have = sum(&file)?;
        if have != *want {
            return Err(Error::Checkpoint {
                path: file,
                reason: format!(
                    "corrupt: {MANIFEST} says {} bytes {}, the file has {} bytes {}",
                    want.bytes, want.checksum, have.bytes, have.checksum
                ),
            });
        }
    }
    Ok(manifest)
}

/// The first tensor of `module` with a NaN or infinite element, by path; one read from
/// the device for the whole module.
pub fn first_non_finite<M: Module>(module: &M) -> Option<String> {
    let (mut names, mut flags) = (Vec::new(), Vec::new());
    crate::model::each_float(module, |path, t| {
        names.push(path.to_string());
        flags.push(t.is_finite().all().int());
    });
    if flags.is_empty() {
        return None;
    }
    let flags: Vec<i64> = Tensor::cat(flags, 0)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .ok()?;
    let bad = flags.iter().position(|&f| f == 0)?;
    Some(names.swap_remove(bad))
}

/// Writes `checkpoints/current` (and `epoch-NNNN` when `milestone`) so that a kill at
/// any point leaves a run that [`recover`] puts right. Weights with a NaN or an
/// infinity are never written: that is [`Error::Diverged`], and the previous
/// checkpoint stays.
pub fn save(trainer: &Trainer, out: &Path, milestone: bool) -> Result<()> {
    if let Some(name) = first_non_finite(trainer.net()) {
        return Err(Error::NonFinite {
            step: trainer.step,
            tensor: name,
        });
    }
    let dir = checkpoints(out);
    let tmp = dir.join(TMP);
    remove_dir(&tmp)?;
    trainer.save(&tmp)?;
    trainer.cfg.save(&tmp.join("config.json"))?;
    seal(&tmp, trainer.step)?;
    crash_point("written");
    if milestone {
        let epoch = trainer.step / trainer.steps_per_epoch().max(1);
        copy_milestone(&tmp, &dir, &format!("epoch-{epoch:04}"))?;
    }
    let (current, old) = (dir.join("current"), dir.join(OLD));
    if current.exists() {
        rename(&current, &old)?;
    }
    crash_point("retired");
    rename(&tmp, &current)?;
    crash_point("swapped");
    remove_dir(&old)
}

fn copy_milestone(from: &Path, dir: &Path, name: &str) -> Result<()> {
    let staged = dir.join(format!("{TMP_MILESTONE}{}", name.trim_start_matches("epoch-")));
    remove_dir(&staged)?;
    std::fs::create_dir_all(&staged).map_err(io_err(&staged))?;
    for entry in std::fs::read_dir(from).map_err(io_err(from))?.flatten() {
        let to = staged.join(entry.file_name());
        std::fs::copy(entry.path(), &to).map_err(io_err(&to))?;
    }
    crash_point("milestone");
    let target = dir.join(name);
    remove_dir(&target)?;
    rename(&staged, &target)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    Ok(slotcon_shards::format::rename_durable(from, to)?)
}

fn remove_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Whether the run in `out` has a checkpoint to resume from: `current`, or one that
/// [`recover`] makes current (a sealed new one, or the previous one, of a cut-short swap).
pub fn exists(out: &Path) -> bool {
    let dir = checkpoints(out);
    dir.join("current").exists() || dir.join(OLD).exists() || verify(&dir.join(TMP)).is_ok()
}

/// The folder that holds checkpoint `name` of the run in `out` for a reader (export,
/// evaluation), changing nothing: `checkpoints/NAME`, except that while a swap is under
/// way (between steps 3 and 4 of [`save`], when there is no `current`) `current` is the
/// sealed new checkpoint, or else the previous one.
pub fn resolve(out: &Path, name: &str) -> PathBuf {
    let dir = checkpoints(out);
    let (named, tmp, old) = (dir.join(name), dir.join(TMP), dir.join(OLD));
    if name != "current" || named.exists() {
        return named;
    }
    if verify(&tmp).is_ok() {
        return tmp;
    }
    if old.exists() {
        return old;
    }
    named
}

/// Puts right what a kill during [`save`] left in `out/checkpoints`, and says what it
/// did: an unfinished new checkpoint is removed, a sealed one whose swap was cut short
/// becomes `current`, and without one the previous checkpoint is restored.
pub fn recover(out: &Path) -> Result<Vec<String>> {
    let dir = checkpoints(out);
    let mut said = remove_unfinished_milestones(&dir)?;
    let (tmp, old, current) = (dir.join(TMP), dir.join(OLD), dir.join("current"));
    let tmp_sealed = tmp.exists() && verify(&tmp).is_ok();
    if !current.exists() && tmp_sealed {
        rename(&tmp, &current)?;
        said.push(format!(
            "{}: completed an interrupted checkpoint swap (the new checkpoint is current)",
            dir.display()
        ));
    } else if !current.exists() && old.exists() {
        rename(&old, &current)?;
        said.push(format!(
            "{}: rolled back an interrupted checkpoint swap (the previous checkpoint is current)",
            dir.display()
        ));
    }
    for (leftover, what) in [
        (&tmp, "an unfinished checkpoint"),
        (&old, "the checkpoint a finished swap replaced"),
    ] {
        if leftover.exists() {
            remove_dir(leftover)?;
            said.push(format!("{}: removed {what}", leftover.display()));
        }
    }
    Ok(said)
}

fn remove_unfinished_milestones(dir: &Path) -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut said = Vec::new();
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_MILESTONE) {
            remove_dir(&entry.path())?;
            said.push(format!(
                "{}: removed an unfinished milestone copy",
                entry.path().display()
            ));
        }
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_during_a_swap_finds_current_in_the_new_or_the_previous_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = checkpoints(tmp.path());
        let (new, old) = (dir.join(TMP), dir.join(OLD));
        for d in [&new, &old] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("model.bpk"), b"weights").unwrap();
        }
        // Between steps 3 and 4 of the swap: no `current`, a sealed new one, the old one.
        seal(&new, 8).unwrap();
        assert_eq!(resolve(tmp.path(), "current"), new);
        assert!(exists(tmp.path()));
        // The new one unsealed (a kill while writing it): the previous one.
        std::fs::remove_file(new.join(MANIFEST)).unwrap();
        assert_eq!(resolve(tmp.path(), "current"), old);
        // Once swapped, `current` itself; other names are never redirected.
        std::fs::rename(&old, dir.join("current")).unwrap();
        assert_eq!(resolve(tmp.path(), "current"), dir.join("current"));
        assert_eq!(resolve(tmp.path(), "epoch-0001"), dir.join("epoch-0001"));
    }

    #[test]
    fn a_flipped_byte_is_found_and_named() {
        let dir = std::env::temp_dir().join(format!("slotcon-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.bpk"), [1u8, 2, 3, 4]).unwrap();
        seal(&dir, 7).unwrap();
        assert_eq!(verify(&dir).unwrap().step, 7);
        std::fs::write(dir.join("model.bpk"), [1u8, 2, 3, 5]).unwrap();
        let e = verify(&dir).unwrap_err().to_string();
        assert!(e.contains("model.bpk: corrupt: checkpoint.json says 4 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
