//! Two hosts, for real: two network namespaces made by the test, joined by a veth pair,
//! each with an address of a private range that exists only inside them, Gloo bound to
//! its side of the link (`GLOO_SOCKET_IFNAME`). Launched by `torchrun --nnodes 2
//! --rdzv-backend c10d` on each, the run equals the one-host run with two ranks. Launched as
//! `srun` starts tasks (Slurm's variables, the rendezvous host from the node list), a
//! partition (the link set down mid-run) ends both ranks within the timeout, and
//! `--auto-resume` after the link is back continues exactly. Every namespace and link is
//! removed, even on failure.

#![cfg(feature = "tch")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::distributed::{
    assert_losses_close, assert_same_run, assert_within_noise, finish, runs, tensor_gap, train, wait_for_step, STEPS,
    TOLERANCE,
};

/// Host `i`'s address; the peer is the other one of the /30.
const ADDRESS: [&str; 2] = ["10.231.7.1", "10.231.7.2"];
/// How the two hosts' processes are started.
#[derive(Clone, Copy)]
enum Launcher {
    /// torchrun on each host, `--nnodes 2`, no restart.
    Torchrun,
    /// torchrun on each host, `--nnodes 1:2`, one restart: the run goes on with the hosts
    /// that are left.
    Elastic,
    /// The ranks themselves, with Slurm's variables, as `srun` starts its tasks.
    Slurm,
}

/// The rendezvous port on host 0.
const PORT: &str = "29431";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip(8) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and the veth pair between them, named after this process and `tag` so
/// that tests running at once never meet; dropped (namespaces, and with them the link),
/// even when the test panics.
struct Hosts {
    ns: [String; 2],
    link: [String; 2],
}

impl Hosts {
    fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let hosts = Hosts {
            ns: [0, 1].map(|i| format!("slotcon-{id}-{tag}{i}")),
            link: [0, 1].map(|i| format!("sc{id}{tag}{i}")),
        };
        for ns in &hosts.ns {
            ip(&["netns", "add", ns]);
        }
        let [a, b] = &hosts.link;
        let [na, nb] = &hosts.ns;
        ip(&[
            "link", "add", a, "netns", na, "type", "veth", "peer", "name", b, "netns", nb,
        ]);
        for ((ns, link), address) in hosts.ns.iter().zip(&hosts.link).zip(ADDRESS) {
            ip(&["-n", ns, "addr", "add", &format!("{address}/30"), "dev", link]);
            ip(&["-n", ns, "link", "set", link, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// Sets host `i`'s side of the link up or down.
    fn link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.ns[i],
            "link",
            "set",
            &self.link[i],
            if up { "up" } else { "down" },
        ]);
    }

    /// torchrun on host `i` (node `i` of 2, one rank), training `out` with `extra`;
    /// `elastic`: `--nnodes 1:2` and one restart.
    fn torchrun(&self, i: usize, out: &Path, extra: &[&str], log: &Path, elastic: bool) -> Child {
        let python = slotcon_cli::python(None).unwrap();
        let (nodes, restarts, last_call) = if elastic { ("1:2", "1", 5) } else { ("2", "0", 30) };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns[i]])
            .arg(python.parent().unwrap().join("torchrun"))
            .args([
                "--nnodes",
                nodes,
                "--node-rank",
                &i.to_string(),
                "--nproc-per-node",
                "1",
            ])
            .args([
                "--rdzv-backend",
                "c10d",
                "--rdzv-id",
                "two-hosts",
                "--max-restarts",
                restarts,
            ])
            .arg(format!("--rdzv-endpoint={}:{PORT}", ADDRESS[0]))
            .arg(format!("--local-addr={}", ADDRESS[i]))
            // Host 0 serves the rendezvous store: torchrun cannot tell from the hostname,
            // which is the machine's, not the namespace's address. The agents' own store
            // reads and their closing give up after 10 s (torchrun's defaults are 60 and
            // 30), so an agent cut off from the store ends within the test's bound; an
            // elastic rendezvous waits 5 s for more nodes once it has enough.
            .arg(format!(
                "--rdzv-conf=is_host={},read_timeout=10,close_timeout=10,last_call_timeout={last_call}",
                i == 0
            ))
            .arg("--no-python")
            .arg(slotcon_tests::bin("slotcon-train").get_program())
            .args(train(out, STEPS).get_args())
            .args(["--dist-timeout", "30"])
            .args(extra)
            .env("GLOO_SOCKET_IFNAME", &self.link[i])
            .env("TMPDIR", out.parent().unwrap());
        let file = std::fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        cmd.spawn().expect("ip netns exec torchrun")
    }

    /// Task `i` of 2 on host `i`, as `srun` starts it: Slurm's variables only (the
    /// node list names both hosts by address; `MASTER_PORT` is left to its default).
    fn slurm_task(&self, i: usize, out: &Path, extra: &[&str], log: &Path) -> Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns[i]])
            .arg(slotcon_tests::bin("slotcon-train").get_program())
            .args(train(out, STEPS).get_args())
            .args(["--dist-timeout", "30"])
            .args(extra)
            .env("SLURM_PROCID", i.to_string())
            .env("SLURM_NTASKS", "2")
            .env("SLURM_LOCALID", "0")
            .env("SLURM_JOB_NODELIST", "10.231.7.[1-2]")
            .env("SLURM_JOB_ID", "4242")
            .env("GLOO_SOCKET_IFNAME", &self.link[i]);
        for var in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"] {
            cmd.env_remove(var);
        }
        let file = std::fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        cmd.spawn().expect("ip netns exec slotcon-train")
    }

    /// Both hosts' processes, started by `launcher`; their logs beside `out`.
    fn launch(&self, out: &Path, extra: &[&str], launcher: Launcher) -> Vec<(Child, PathBuf)> {
        (0..2)
            .map(|i| {
                let log = out.with_extension(format!("host{i}.log"));
                let child = match launcher {
                    Launcher::Torchrun => self.torchrun(i, out, extra, &log, false),
                    Launcher::Elastic => self.torchrun(i, out, extra, &log, true),
                    Launcher::Slurm => self.slurm_task(i, out, extra, &log),
                };
                (child, log)
            })
            .collect()
    }

    /// Kills every process in host `i`'s namespace: the host is lost.
    fn kill_all(&self, i: usize) {
        let pids = Command::new("ip").args(["netns", "pids", &self.ns[i]]).output();
        let pids = pids
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) of a process inside a namespace this test made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Hosts {
    /// Kills whatever still runs in the namespaces (a torchrun's workers after a failed
    /// test), then deletes them, which deletes the link.
    fn drop(&mut self) {
        for (i, ns) in self.ns.iter().enumerate() {
            self.kill_all(i);
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn two_hosts_train_as_two_ranks_on_one_host() {
    let hosts = Hosts::new("e");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let ends = finish(hosts.launch(&out, &[], Launcher::Torchrun), Duration::from_secs(300));
    for (code, _, log) in &ends {
        assert_eq!(*code, 0, "{log}");
    }
    let want = &runs().two;
    assert_losses_close(&out, want, TOLERANCE);
    let (gap, tensor) = tensor_gap(&out, want);
    eprintln!("two hosts vs one host, two ranks each: {tensor} {gap:.2e}");
}

#[test]
fn a_partition_ends_both_hosts_within_the_timeout_and_auto_resume_continues_exactly() {
    let hosts = Hosts::new("p");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let running = hosts.launch(&out, &["--auto-resume"], Launcher::Slurm);
    // After the checkpoint at the end of the first epoch (step 8).
    wait_for_step(&out, 8);
    hosts.link(1, false);
    let ends = finish(running, Duration::from_secs(120));
    // Each side within --dist-timeout (30 s) and the diagnosis (13 s at most), plus a step:
    // the side of the store names the rank it lost, the other the store it cannot reach.
    let (mut lost, mut unreachable) = (false, false);
    for (code, took, log) in &ends {
        assert_eq!(*code, 1, "across a partition:\n{log}");
        assert!(*took < Duration::from_secs(75), "{took:?}:\n{log}");
        lost |= log.contains("(lost rank 1: no heartbeat");
        unreachable |= log.contains("the rendezvous store at 10.231.7.1:29500 does not answer");
    }
    assert!(lost && unreachable, "{ends:?}");
    hosts.link(1, true);
    let ends = finish(
        hosts.launch(&out, &["--auto-resume"], Launcher::Slurm),
        Duration::from_secs(300),
    );
    for (code, _, log) in &ends {
        assert_eq!(*code, 0, "{log}");
    }
    let want = &runs().two;
    assert_same_run(&out, want, "partitioned and resumed vs one host");
}

/// torchrun's elastic launch (`--nnodes 1:2`): host 1 lost mid-run (every process on it
/// killed, after the checkpoint at step 8), host 0's torchrun restarts the group with the
/// one node left, which resumes from that checkpoint as one rank. The loader's position is
/// in samples, so the run sees the images of the one-host, one-rank run, and ends as that
/// run does up to round-off: its losses within 1e-4 per step, its tensors within 4x the
/// noise floor (as a resume on another number of ranks in `distributed.rs`).
#[test]
fn an_elastic_run_that_loses_a_host_goes_on_with_the_one_left() {
    let hosts = Hosts::new("l");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut running = hosts.launch(&out, &["--auto-resume"], Launcher::Elastic);
    wait_for_step(&out, 8);
    hosts.kill_all(1);
    let (mut lost, _) = running.remove(1);
    let _ = lost.wait();
    let ends = finish(running, Duration::from_secs(300));
    assert_eq!(ends[0].0, 0, "{}", ends[0].2);
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let worlds: Vec<u64> = (text.lines())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["world_size"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(worlds, [[2; 8].as_slice(), &[1; 4]].concat(), "world size per step");
    let want = &runs().one;
    assert_losses_close(&out, want, TOLERANCE);
    assert_within_noise(&out, want);
}
