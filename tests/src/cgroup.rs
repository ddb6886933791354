//! A memory cgroup of the tests' own, for "larger than memory" runs: cgroup v2
//! (`memory.max`) where the memory controller is there, else v1
//! (`memory.limit_in_bytes`). The page cache of what a process in it reads counts
//! against the limit, so a store larger than it cannot stay cached. Removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A memory cgroup with a limit.
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// A new cgroup limited to `bytes`, or `None` (with the reason) where none can be
    /// made (no memory controller, or no right to write it).
    pub fn new(name: &str, bytes: u64) -> Result<MemoryCgroup, String> {
        let name = format!("{name}-{}", std::process::id());
        let v2_root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|r| {
                std::fs::read_to_string(r.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
            });
        let (dir, v2, limit_file) = match v2_root {
            Some(root) => (root.join(&name), true, "memory.max"),
            None if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() => (
                Path::new("/sys/fs/cgroup/memory").join(&name),
                false,
                "memory.limit_in_bytes",
            ),
            None => return Err("no cgroup memory controller (v2 or v1) is mounted".into()),
        };
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2 };
        let limit = cg.dir.join(limit_file);
        std::fs::write(&limit, bytes.to_string()).map_err(|e| format!("{}: {e}", limit.display()))?;
        if !v2 {
            // No swap either (where the kernel accounts it).
            let _ = std::fs::write(cg.dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
        }
        Ok(cg)
    }

    /// `cmd` run inside the cgroup (through `sh`, which joins it and then execs).
    pub fn wrap(&self, cmd: &Command) -> Command {
        let procs = self.dir.join("cgroup.procs");
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            sh.current_dir(d);
        }
        sh
    }

    /// How many times a process in it was killed for memory.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most memory it held (v1 records it; v2 from 5.19, `memory.peak`).
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()
    }
}

/// Drops the files under `dir` from the page cache (`fdatasync`, then
/// `POSIX_FADV_DONTNEED`), so that a cgroup's process reads them from the disk, charged
/// to it, instead of finding the pages their writer left.
pub fn evict_from_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if !e.path().is_file() {
            continue;
        }
        let f = std::fs::File::open(e.path()).unwrap();
        f.sync_data().unwrap();
        // SAFETY: a valid descriptor for the call; the advice changes no memory of ours.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise {}", e.path().display());
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes have exited; an empty cgroup is removed with rmdir.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
