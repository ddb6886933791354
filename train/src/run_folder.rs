//! Run folders: what makes a folder a slotcon run, who may write it, and what `--force`
//! deletes.
//!
//! - **Ownership.** The writer that makes a run folder (`slotcon-train`, `slotcon-import`)
//!   writes [`OWNER_FILE`] into it first. `--force` deletes only a folder that holds it,
//!   and then only the entries slotcon writes there ([`RUN_ENTRIES`]); a folder with a
//!   `config.json` but no marker (a model folder, a project, a run of a slotcon from before
//!   the marker) is refused, to be deleted by hand.
//! - **One writer.** The writer holds [`RUN_LOCK`] (`RUN/.train.lock`, an OS lock with its
//!   PID) for as long as it writes; a second writer is refused with that PID, and a lock
//!   file left by a killed process blocks nothing.
//! - **A run killed before its first checkpoint** holds a config and perhaps some metrics
//!   but nothing to resume from: starting it again replaces it, without `--force`.

use std::path::{Path, PathBuf};

use slotcon_shards::{io_err, FolderLock, LockKind};

use crate::checkpoint;
use crate::error::{Error, Result};

/// The marker a run folder's maker writes first; `--force` deletes only folders that hold it.
pub const OWNER_FILE: &str = ".slotcon-run";

/// The lock a writer holds on a run folder.
pub const RUN_LOCK: LockKind = LockKind {
    file: ".train.lock",
    tool: "slotcon process",
    what: "run",
};

/// Everything slotcon writes in a run folder; `--force` deletes these and nothing else.
pub const RUN_ENTRIES: [&str; 5] = [
    "config.json",
    "metrics.jsonl",
    crate::tensorboard::TB_DIR,
    "checkpoints",
    OWNER_FILE,
];

/// How a writer means to use the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A new run: the folder must be new, empty, or a run with nothing to resume.
    Start,
    /// Continue the run in the folder.
    Resume,
    /// A new run, replacing a run slotcon made there (`--force`).
    Replace,
}

/// A run folder made ready for one writer, locked until this is dropped.
#[derive(Debug)]
pub struct RunFolder {
    path: PathBuf,
    /// Whether [`open`] made the folder (then [`RunFolder::discard`] removes it).
    created: bool,
    _lock: FolderLock,
}

impl RunFolder {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Undoes a writer that failed: deletes what slotcon wrote ([`RUN_ENTRIES`], the marker
    /// too) and the folder itself if [`open`] made it and nothing else is in it. Best effort: the error
    /// that led here is the one to report.
    pub fn discard(self) {
        let _ = delete_run(&self.path);
        let _ = std::fs::remove_file(self.path.join(OWNER_FILE));
        let (path, created) = (self.path.clone(), self.created);
        drop(self);
        if created {
            let _ = std::fs::remove_dir(path);
        }
    }
}

/// Whether `out` holds a run: its config, metrics or checkpoints.
pub fn holds_run(out: &Path) -> bool {
    ["config.json", "metrics.jsonl", "checkpoints"]
        .iter()
        .any(|f| out.join(f).exists())
}

/// Whether slotcon made the folder `out` (it holds [`OWNER_FILE`]).
pub fn is_owned(out: &Path) -> bool {
    out.join(OWNER_FILE).is_file()
}

/// Takes `out` for one writer and makes it ready for `intent` (`can_resume`: the writer
/// has a `--resume`, for the messages); `notes` hears what was done beyond the obvious. Never writes over a run that has a
/// checkpoint unless asked, never deletes what slotcon did not make, and never writes into
/// a folder of other files.
pub fn open(out: &Path, intent: Intent, can_resume: bool, notes: &mut dyn FnMut(&str)) -> Result<RunFolder> {
    let created = !out.exists();
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let lock = FolderLock::acquire(out, RUN_LOCK)?;
    let refuse = |reason: String| Error::Checkpoint {
        path: out.to_path_buf(),
        reason,
    };
    let is_run = holds_run(out);
    match intent {
        Intent::Resume if !is_run => {
            return Err(refuse("holds no run to resume; leave out --resume to start one".into()));
        }
        Intent::Resume => {}
        Intent::Start if is_run && checkpoint::exists(out) => {
            let resume = if can_resume { "--resume to continue it, or " } else { "" };
            return Err(refuse(format!(
                "already holds a run; pass {resume}--force to start over (deleting it)"
            )));
        }
        Intent::Start | Intent::Replace if is_run => {
            if !is_owned(out) {
                return Err(refuse(format!(
                    "holds a config.json but no {OWNER_FILE} marker, so slotcon did not make it (or a slotcon \
                     from before the marker did): it is left as it is; delete it by hand, or choose another folder"
                )));
            }
            if intent == Intent::Start {
                notes(&format!(
                    "{}: the run there was stopped before its first checkpoint; starting it over",
                    out.display()
                ));
            }
            delete_run(out)?;
        }
        Intent::Start | Intent::Replace => {}
    }
    if !is_run && !only_ours(out)? {
        return Err(refuse(
            "is not empty and holds no run; choose a new or empty folder".into(),
        ));
    }
    if !is_owned(out) {
        slotcon_shards::format::write_atomic(&out.join(OWNER_FILE), b"a slotcon run folder\n")?;
    }
    Ok(RunFolder {
        path: out.to_path_buf(),
        created,
        _lock: lock,
    })
}

/// Whether `out` holds nothing but slotcon's marker and lock.
fn only_ours(out: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(out).map_err(io_err(out))? {
        let name = entry.map_err(io_err(out))?.file_name();
        if name != OWNER_FILE && name != RUN_LOCK.file {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Deletes slotcon's entries of the run in `out` ([`RUN_ENTRIES`] but the marker).
fn delete_run(out: &Path) -> Result<()> {
    for name in RUN_ENTRIES.iter().filter(|n| **n != OWNER_FILE) {
        let path = out.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_err(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_(out: &Path, intent: Intent) -> Result<RunFolder> {
        open(out, intent, true, &mut |_| {})
    }

    #[test]
    fn force_deletes_only_a_marked_run_and_only_its_own_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        drop(open_(&out, Intent::Start).unwrap());
        std::fs::write(out.join("config.json"), "{}").unwrap();
        std::fs::create_dir_all(out.join("checkpoints/current")).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        drop(open_(&out, Intent::Replace).unwrap());
        assert!(!out.join("config.json").exists() && !out.join("checkpoints").exists());
        assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");

        let project = tmp.path().join("project");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join("config.json"), "{}").unwrap();
        std::fs::write(project.join("model.bin"), "weights").unwrap();
        let e = open_(&project, Intent::Replace).unwrap_err().to_string();
        assert!(e.contains("no .slotcon-run marker"), "{e}");
        assert!(project.join("config.json").exists() && project.join("model.bin").exists());
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let held = open_(tmp.path(), Intent::Start).unwrap();
        let e = open_(tmp.path(), Intent::Resume).unwrap_err().to_string();
        assert!(
            e.contains(&format!("(pid {}) is writing this run", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(!tmp.path().join(RUN_LOCK.file).exists());
    }
}
