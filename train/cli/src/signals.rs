//! `slotcon-train`'s stop signals: the first one asks the run to stop (every rank
//! finishes its step, rank 0 writes a checkpoint there, the process exits with
//! [`EXIT_STOPPED`]); a second one exits at once, with `128 + the signal's number` as a
//! shell reports a process killed by it. The checkpoint folder is swapped atomically, so
//! even that exit leaves the last complete checkpoint.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// The exit code of a run stopped by a signal after its checkpoint: `EX_TEMPFAIL` of
/// `sysexits.h` ("try again later"). A wrapper requeues the job on it, and
/// `--auto-resume` continues the run exactly.
pub const EXIT_STOPPED: u8 = 75;

/// The signals that stop a run by default: SIGTERM (Slurm's and torchrun's, a
/// preemption), SIGINT (Ctrl-C) and SIGUSR1 (Slurm's `--signal=USR1@120`).
pub const DEFAULT_STOP_SIGNALS: &str = "TERM,INT,USR1";

/// The signals that can be chosen, by name without `SIG`.
const NAMES: [(&str, i32); 5] = [
    ("TERM", SIGTERM),
    ("INT", SIGINT),
    ("USR1", SIGUSR1),
    ("USR2", SIGUSR2),
    ("HUP", SIGHUP),
];

/// A set of stop signals, as `--stop-signals` takes it: names with or without `SIG`, in
/// any case, separated by commas (`TERM,USR1`), or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopSignalSet(Vec<i32>);

/// A `--stop-signals` value that names no signal this handles.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a stop signal; accepted: none, or a comma list of TERM, INT, USR1, USR2, HUP")]
pub struct UnknownSignal(String);

impl FromStr for StopSignalSet {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(StopSignalSet(Vec::new()));
        }
        let mut set = Vec::new();
        for part in s.split(',') {
            let name = part.trim().to_ascii_uppercase();
            let name = name.strip_prefix("SIG").unwrap_or(&name);
            let (_, number) = (NAMES.iter())
                .find(|(n, _)| *n == name)
                .ok_or_else(|| UnknownSignal(part.trim().to_string()))?;
            if !set.contains(number) {
                set.push(*number);
            }
        }
        Ok(StopSignalSet(set))
    }
}

impl fmt::Display for StopSignalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.0.iter().map(|&s| signal_name(s)).collect();
        f.write_str(&names.join(","))
    }
}

/// `SIGTERM` for 15, and so on; the number for a signal without a name here.
pub fn signal_name(signal: i32) -> String {
    match NAMES.iter().find(|(_, n)| *n == signal) {
        Some((name, _)) => format!("SIG{name}"),
        None => format!("signal {signal}"),
    }
}

/// The stop signals, once installed: the run's stop flag and the signal that set it.
pub struct StopSignals {
    /// Set by the first stop signal; the run reads it before every step.
    pub flag: Arc<AtomicBool>,
    got: Arc<AtomicI32>,
}

impl StopSignals {
    /// Replaces the default action (termination) of every signal in `set` with a stop:
    /// the first sets [`StopSignals::flag`], a second exits at once.
    pub fn install(set: &StopSignalSet) -> std::io::Result<Self> {
        let (flag, got) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicI32::new(0)));
        for &signal in &set.0 {
            let (flag, got) = (Arc::clone(&flag), Arc::clone(&got));
            let action = move || {
                if flag.swap(true, Ordering::SeqCst) {
                    signal_hook::low_level::exit(128 + signal);
                }
                got.store(signal, Ordering::SeqCst);
            };
            // SAFETY: the action only loads and stores atomics and calls `_exit`, all
            // async-signal-safe; it allocates nothing and takes no lock.
            unsafe { signal_hook::low_level::register(signal, action) }?;
        }
        Ok(StopSignals { flag, got })
    }

    /// The signal this process received, if any (a stopped run may have been asked by
    /// another rank).
    pub fn received(&self) -> Option<i32> {
        Some(self.got.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_by_name_and_an_unknown_name_lists_the_accepted() {
        let set: StopSignalSet = "term, SIGusr1,TERM".parse().unwrap();
        assert_eq!(set, StopSignalSet(vec![SIGTERM, SIGUSR1]));
        assert_eq!(set.to_string(), "SIGTERM,SIGUSR1");
        let default: StopSignalSet = DEFAULT_STOP_SIGNALS.parse().unwrap();
        assert_eq!(default.to_string(), "SIGTERM,SIGINT,SIGUSR1");
        assert_eq!("None".parse::<StopSignalSet>().unwrap().to_string(), "none");
        for bad in ["KILL", "TERM,", "", "15"] {
            let e = bad.parse::<StopSignalSet>().unwrap_err().to_string();
            assert!(e.contains("accepted: none, or a comma list of TERM"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_signal_sets_the_flag_and_names_itself() {
        let stop = StopSignals::install(&"USR2".parse().unwrap()).unwrap();
        assert!(!stop.flag.load(Ordering::SeqCst) && stop.received().is_none());
        signal_hook::low_level::raise(SIGUSR2).unwrap();
        assert!(stop.flag.load(Ordering::SeqCst));
        assert_eq!(stop.received().map(signal_name).as_deref(), Some("SIGUSR2"));
    }
}
