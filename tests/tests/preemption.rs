//! Preemption: stop signals at random steps, with one rank and with two (the signal sent
//! to every rank, as Slurm does, or to one alone), each followed by `--auto-resume`, end
//! bit-identical to an uninterrupted run; a second signal exits at once on every rank;
//! `--save-every-minutes` checkpoints mid-epoch at a step the ranks agree on, and a kill
//! after one resumes exactly; `torchrun --max-restarts` after a killed worker ends equal
//! to an uninterrupted run.

#![cfg(feature = "tch")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::distributed::{assert_same_run, finish, launch, wait_for_step};

/// Steps of the runs compared: three epochs of 8 (the COCO sample at a global batch of
/// 16), room for five stops of up to four steps each.
const STEPS: &str = "24";
/// The exit code of a run stopped by a signal after its checkpoint.
const STOPPED: i32 = 75;

/// `slotcon-train` towards `steps` in `out`, on one LibTorch thread per rank: what
/// torchrun sets for each of several ranks per node, so that a launch by hand and one by
/// torchrun sum in the same order.
fn train(out: &Path, steps: &str) -> Command {
    let mut cmd = crate::distributed::train(out, steps);
    cmd.env("OMP_NUM_THREADS", "1");
    cmd
}

/// Uninterrupted runs of [`STEPS`]: one rank, and two.
fn reference(world: usize) -> &'static Path {
    static RUNS: OnceLock<[PathBuf; 2]> = OnceLock::new();
    let runs = RUNS.get_or_init(|| {
        let tmp = slotcon_tests::process_tempdir();
        let (one, two) = (tmp.join("preempt-one"), tmp.join("preempt-two"));
        slotcon_tests::run_ok(&mut train(&one, STEPS));
        crate::distributed::join_ok(launch(2, &two, || train(&two, STEPS)));
        [one, two]
    });
    &runs[world - 1]
}

/// `world` ranks of `slotcon-train --auto-resume` towards [`STEPS`] in `out`, with `extra`.
fn start(world: usize, out: &Path, extra: &'static [&'static str]) -> Vec<(Child, PathBuf)> {
    let make = || {
        let mut cmd = train(out, STEPS);
        cmd.arg("--auto-resume").args(extra);
        cmd
    };
    launch(world, out, make)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill {sig} {}", child.id());
}

/// The step of `out`'s current checkpoint.
fn checkpoint_step(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out.join("checkpoints/current/progress.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["step"]
        .as_u64()
        .unwrap()
}

/// A small generator for the stop points, seeded from the clock (the seed is in every
/// failure message, to replay it).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Five SIGTERMs at random steps, then a run to the end: every stop exits 75 on every
/// rank at the step its checkpoint holds, and the run ends bit-identical (every loss,
/// every tensor) to the uninterrupted one.
fn stop_five_times(world: usize) {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut at = 0;
    for round in 0..5 {
        let ranks = start(world, &out, &[]);
        // A line for step `at + k` is logged once step `at + k + 1` is done, and the stop
        // comes one or two steps later: at most 5 steps a round, 23 in all.
        let wait = at + if round < 3 { rng.below(2) } else { 0 };
        wait_for_step(&out, wait);
        // Every rank, as Slurm signals a job; or, in a pair, rank 1 alone (the ranks agree).
        let alone = world == 2 && round % 2 == 1;
        for (r, (child, _)) in ranks.iter().enumerate() {
            if !alone || r == 1 {
                signal(child, libc::SIGTERM);
            }
        }
        let ends = finish(ranks, Duration::from_secs(120));
        let step = checkpoint_step(&out);
        for (rank, (code, _, log)) in ends.iter().enumerate() {
            let context = format!("seed {seed}, round {round}, rank {rank}, waited for step {wait}:\n{log}");
            assert_eq!(*code, STOPPED, "{context}");
            if rank == 0 {
                let by = if alone { "a signal to another rank" } else { "SIGTERM" };
                let said = format!("stopped by {by} after step {step}, with a checkpoint");
                assert!(log.contains(&said), "wanted {said:?}; {context}");
            }
        }
        assert!(
            step > at && step < 24,
            "seed {seed}, round {round}: stopped at {step} after {at}"
        );
        at = step;
    }
    let ends = finish(start(world, &out, &[]), Duration::from_secs(300));
    assert!(ends.iter().all(|(code, ..)| *code == 0), "seed {seed}: {ends:?}");
    let want = reference(world);
    assert_same_run(&out, want, &format!("seed {seed}: the stopped and resumed run differs"));
}

#[test]
fn sigterm_at_random_steps_then_auto_resume_is_bit_identical_with_one_rank() {
    stop_five_times(1);
}

#[test]
fn sigterm_at_random_steps_then_auto_resume_is_bit_identical_with_two_ranks() {
    stop_five_times(2);
}

/// A second signal (SIGINT after SIGTERM) ends both ranks at once with 128 + 2, while
/// they finish the step; the run folder is left resumable.
#[test]
fn a_second_signal_exits_at_once_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let ranks = start(2, &out, &[]);
    wait_for_step(&out, 1);
    for (child, _) in &ranks {
        signal(child, libc::SIGTERM);
    }
    // Delivered before the second (two pending signals would arrive in number order).
    std::thread::sleep(Duration::from_millis(20));
    for (child, _) in &ranks {
        signal(child, libc::SIGINT);
    }
    let ends = finish(ranks, Duration::from_secs(30));
    for (rank, (code, _, log)) in ends.iter().enumerate() {
        assert_eq!(*code, 128 + libc::SIGINT, "rank {rank}:\n{log}");
    }
    // Nothing half-written: the run (no checkpoint yet, or a whole one) goes on to its end.
    let ends = finish(start(2, &out, &[]), Duration::from_secs(300));
    assert!(ends.iter().all(|(code, ..)| *code == 0), "{ends:?}");
    assert_same_run(&out, reference(2), "stopped twice, then run to its end");
}

/// `--save-every-minutes` writes `current` between epoch ends, at a step both ranks agree
/// on (they flush together there, or the collectives would not match); killed right after
/// such a checkpoint, the run resumes from it exactly.
#[test]
fn save_every_minutes_checkpoints_mid_epoch_and_a_kill_after_one_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut ranks = start(2, &out, &["--save-every-minutes", "0.005"]);
    let begin = Instant::now();
    let mid = loop {
        let step = std::fs::read_to_string(out.join("checkpoints/current/progress.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["step"].as_u64());
        if let Some(step) = step.filter(|s| s % 8 != 0 && *s < 20) {
            break step;
        }
        assert!(begin.elapsed() < Duration::from_secs(180), "no mid-epoch checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    };
    for (child, _) in &mut ranks {
        let _ = child.kill();
        let _ = child.wait();
    }
    // A kill during a swap leaves it for the resume to finish.
    eprintln!("killed after the checkpoint at step {mid}");
    let ends = finish(
        start(2, &out, &["--save-every-minutes", "0.005"]),
        Duration::from_secs(300),
    );
    assert!(ends.iter().all(|(code, ..)| *code == 0), "{ends:?}");
    let want = reference(2);
    assert_same_run(&out, want, "resumed from a --save-every-minutes checkpoint");
    // The checkpoints are whole and the run's own: checkpoint.json lists every file.
    assert!(out.join("checkpoints/current/checkpoint.json").is_file());
}

/// The children of process `parent` whose command line runs `slotcon-train`, with their
/// `RANK`.
fn workers_of(parent: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the fields after the last ')'.
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid != Some(&parent.to_string()) || !String::from_utf8_lossy(&cmdline).contains("slotcon-train") {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = (environ.split(|&b| b == 0))
            .find_map(|v| v.strip_prefix(b"RANK="))
            .map(|r| String::from_utf8_lossy(r).to_string())
            .unwrap_or_default();
        out.push((pid, rank));
    }
    out
}

/// torchrun's elastic restart: one of two workers killed mid-run (after the checkpoint
/// at the end of the first epoch), torchrun restarts the group, the ranks resume with
/// `--auto-resume`, and the run ends with every loss and tensor equal to an uninterrupted
/// two-rank run's.
#[test]
fn torchrun_max_restarts_after_a_killed_worker_ends_equal_to_an_uninterrupted_run() {
    let python = slotcon_cli::python(None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(python.parent().unwrap().join("torchrun"));
    // torchrun keeps its per-rank log folders (torchelastic_*) in TMPDIR: ours, removed.
    cmd.env("TMPDIR", tmp.path())
        .env("OMP_NUM_THREADS", "1")
        .args([
            "--no-python",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "3",
            "--master-port",
        ])
        .arg(port.to_string())
        .arg(slotcon_tests::bin("slotcon-train").get_program())
        .args(train(&out, STEPS).get_args())
        .arg("--auto-resume");
    let log = tmp.path().join("torchrun.log");
    let file = std::fs::File::create(&log).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    let torchrun = cmd.spawn().unwrap();
    wait_for_step(&out, 9);
    let workers = workers_of(torchrun.id());
    let victim = workers.iter().find(|(_, rank)| rank == "1").map(|(pid, _)| *pid);
    let victim = victim.unwrap_or_else(|| panic!("no rank 1 among torchrun's children: {workers:?}"));
    // SAFETY: kill(2) of a process this test's torchrun started.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let ends = finish(vec![(torchrun, log)], Duration::from_secs(300));
    let (code, _, text) = &ends[0];
    assert_eq!(*code, 0, "{text}");
    assert!(checkpoint_step(&out) == 24, "{text}");
    let want = reference(2);
    assert_same_run(&out, want, "the restarted run differs from the uninterrupted one");
}

/// A bad `--stop-signals` or `--save-every-minutes` is a usage error naming the flag.
#[test]
fn bad_stop_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (flag, value, says) in [
        ("--stop-signals", "KILL", "accepted: none, or a comma list"),
        ("--stop-signals", "TERM,,INT", "accepted: none, or a comma list"),
        ("--save-every-minutes", "0", "--save-every-minutes"),
        ("--save-every-minutes", "nan", "--save-every-minutes"),
    ] {
        let mut cmd: Command = train(&out, "1");
        cmd.args([flag, value]);
        let (code, _, err) = slotcon_tests::run(&mut cmd);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    assert!(!out.exists(), "a refused flag made the run folder");
}
