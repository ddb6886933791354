//! Where a process stands in its world: torchrun's environment, read and checked.

use crate::error::{Error, ParseError, Result};

/// The most processes one run may have (a bound for the checks, far above any machine).
const MAX_WORLD: usize = 1 << 16;

/// One process's place in a distributed launch, from the variables torchrun sets, or
/// Slurm's when those are unset ([`super::slurm`]: `srun` sets them for every task).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// `RANK`: this process, 0 to `world_size - 1`.
    pub rank: usize,
    /// `WORLD_SIZE`: the number of processes.
    pub world_size: usize,
    /// `LOCAL_RANK`: this process on its node (its CUDA device); 0 when unset.
    pub local_rank: usize,
    /// `MASTER_ADDR`: the host of the rendezvous store.
    pub master_addr: String,
    /// `MASTER_PORT`: its port.
    pub master_port: u16,
    /// `TORCHELASTIC_USE_AGENT_STORE=True`: torchrun's agent hosts the store (no rank does).
    pub agent_store: bool,
    /// `TORCHELASTIC_RESTART_COUNT`: torchrun's restart, which keeps each attempt's keys
    /// apart in the agent's store.
    pub restart: u64,
    /// The job this process belongs to, as its launcher names it ([`JOB_VARIABLES`]);
    /// `None` when no launcher does. The ranks compare it at the rendezvous, so a rank of
    /// another job that reaches the same port is refused even with identical settings.
    pub job: Option<String>,
}

/// The variables that name a job, first found wins: `SLOTCON_JOB_ID` (set by hand),
/// torchrun's `TORCHELASTIC_RUN_ID` (its `--rdzv-id`; unless `none`, its default with a
/// static rendezvous) and Slurm's `SLURM_JOB_ID`.
pub const JOB_VARIABLES: [&str; 3] = ["SLOTCON_JOB_ID", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"];

impl Launch {
    /// A world of one: no launcher.
    pub fn single() -> Self {
        Launch {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: String::new(),
            master_port: 0,
            agent_store: false,
            restart: 0,
            job: None,
        }
    }

    /// From this process's environment (see [`Launch::from_vars`]).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From the variables `get` returns: torchrun's, or when neither `RANK` nor
    /// `WORLD_SIZE` is set, Slurm's read as torchrun's ([`super::slurm::torchrun_equivalent`]:
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the first host of
    /// `SLURM_JOB_NODELIST`, port [`super::slurm::DEFAULT_MASTER_PORT`]); a world of one
    /// when neither launcher's are set. `RANK` and `WORLD_SIZE`, and for more than one
    /// process `MASTER_ADDR` and `MASTER_PORT`, must then be valid (the error names the
    /// variable and its value).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if get("RANK").is_none() && get("WORLD_SIZE").is_none() {
            return match super::slurm::torchrun_equivalent(&get)? {
                Some(slurm) => Self::from_torchrun_vars(|name| slurm.get(name).or_else(|| get(name))).map_err(as_slurm),
                None => Ok(Self::single()),
            };
        }
        Self::from_torchrun_vars(get)
    }

    /// [`Launch::from_vars`] for torchrun's variables, `RANK` or `WORLD_SIZE` being set.
    fn from_torchrun_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let world_size = number(&get, "WORLD_SIZE", 1, MAX_WORLD)?;
        let rank = number(&get, "RANK", 0, world_size - 1)?;
        let local_rank = match get("LOCAL_RANK") {
            None => 0,
            Some(_) => number(&get, "LOCAL_RANK", 0, MAX_WORLD - 1)?,
        };
        let mut launch = Launch {
            rank,
            world_size,
            local_rank,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
            restart: get("TORCHELASTIC_RESTART_COUNT")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            job: JOB_VARIABLES
                .iter()
                .filter_map(|v| get(v).map(|id| format!("{v}={}", id.trim())))
                .find(|id| !id.ends_with('=') && !id.ends_with("=none")),
            ..Self::single()
        };
        if world_size > 1 {
            launch.master_addr = get("MASTER_ADDR")
                .filter(|a| !a.trim().is_empty())
                .ok_or_else(|| bad("MASTER_ADDR", "not set; it names the host of rank 0 (the rendezvous)"))?;
            launch.master_port = number(&get, "MASTER_PORT", 1, u16::MAX as usize)? as u16;
        }
        Ok(launch)
    }

    /// `host:port` of the rendezvous store.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }

    /// The prefix of this run's keys in the store.
    pub fn store_prefix(&self) -> String {
        format!("slotcon/{}", self.restart)
    }
}

/// An error about a torchrun variable that Slurm's stood for, naming Slurm's as the
/// user's environment holds it (`SLURM_PROCID="x": ... (read as RANK)`).
fn as_slurm(e: Error) -> Error {
    let Error::Distributed(message) = e else {
        return e;
    };
    let names = [
        ("RANK", "SLURM_PROCID"),
        ("WORLD_SIZE", "SLURM_NTASKS"),
        ("LOCAL_RANK", "SLURM_LOCALID"),
    ];
    for (torchrun, slurm) in names {
        if let Some(rest) = message.strip_prefix(torchrun).filter(|r| r.starts_with(['=', ':'])) {
            return Error::Distributed(format!("{slurm}{rest} (read as {torchrun})"));
        }
    }
    Error::Distributed(message)
}

fn bad(var: &str, reason: &str) -> Error {
    Error::Distributed(format!("{var}: {reason}"))
}

/// `name`'s value as a whole number in `lo..=hi`.
fn number(get: &impl Fn(&str) -> Option<String>, name: &str, lo: usize, hi: usize) -> Result<usize> {
    let value = get(name).ok_or_else(|| bad(name, "not set (a distributed launch sets RANK and WORLD_SIZE)"))?;
    match value.trim().parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(Error::Distributed(format!(
            "{name}={value:?}: expected a whole number from {lo} to {hi}"
        ))),
    }
}

/// Which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistBackend {
    /// Gloo: CPU tensors (CUDA tensors go through host memory).
    Gloo,
    /// NCCL: CUDA tensors, GPU to GPU.
    Nccl,
}

impl DistBackend {
    /// NCCL for CUDA devices, Gloo otherwise (as `torch.distributed`'s defaults).
    pub fn default_for(cuda: bool) -> Self {
        if cuda {
            DistBackend::Nccl
        } else {
            DistBackend::Gloo
        }
    }

    /// Whether this build has the backend (NCCL needs a CUDA PyTorch at build time).
    pub fn available(self) -> bool {
        match self {
            DistBackend::Gloo => cfg!(feature = "tch"),
            DistBackend::Nccl => option_env!("SLOTCON_NCCL") == Some("true"),
        }
    }

    /// c10d's name for it.
    pub fn name(self) -> &'static str {
        match self {
            DistBackend::Gloo => "gloo",
            DistBackend::Nccl => "nccl",
        }
    }
}

impl std::str::FromStr for DistBackend {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<Self, ParseError> {
        match s {
            "gloo" => Ok(DistBackend::Gloo),
            "nccl" => Ok(DistBackend::Nccl),
            _ => Err(ParseError::Unknown {
                what: "backend",
                name: s.to_string(),
                accepted: "gloo, nccl",
            }),
        }
    }
}

impl std::fmt::Display for DistBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        Launch::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn backends_parse_and_an_unknown_one_lists_the_accepted() {
        assert_eq!("nccl".parse::<DistBackend>(), Ok(DistBackend::Nccl));
        let e = "mpi".parse::<DistBackend>().unwrap_err();
        assert_eq!(e.to_string(), r#"unknown backend "mpi" (gloo, nccl)"#);
    }

    #[test]
    fn no_variables_is_a_world_of_one() {
        assert_eq!(launch(&[]).unwrap(), Launch::single());
        let one = launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap();
        assert_eq!(one.world_size, 1);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let l = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (3, 8, 1));
        assert_eq!(l.endpoint(), "node0:29500");
        assert!(l.agent_store);
        assert_eq!(l.store_prefix(), "slotcon/2");
        assert_eq!(l.job, None);
    }

    #[test]
    fn slurm_variables_stand_in_for_torchruns_when_those_are_unset() {
        let slurm = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[007-008,012],login1"),
            ("SLURM_JOB_ID", "4242"),
        ];
        let l = launch(&slurm).unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (5, 8, 1));
        assert_eq!(
            l.endpoint(),
            format!("gpu007:{}", super::super::slurm::DEFAULT_MASTER_PORT)
        );
        assert_eq!(l.job.as_deref(), Some("SLURM_JOB_ID=4242"));
        // MASTER_ADDR and MASTER_PORT given by hand win over the node list and the default.
        let mut given = slurm.to_vec();
        given.extend([("MASTER_ADDR", "10.0.0.9"), ("MASTER_PORT", "31000")]);
        assert_eq!(launch(&given).unwrap().endpoint(), "10.0.0.9:31000");
        // torchrun's variables, when set, win over Slurm's (torchrun inside an allocation).
        let mut torchrun = slurm.to_vec();
        torchrun.extend([("RANK", "0"), ("WORLD_SIZE", "1")]);
        assert_eq!(launch(&torchrun).unwrap().world_size, 1);
        // One task is a world of one; a bad host list is an error naming the variable.
        assert_eq!(
            launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")])
                .unwrap()
                .world_size,
            1
        );
        let bad = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "n[3-1]"),
        ];
        let e = launch(&bad).unwrap_err().to_string();
        assert!(e.starts_with("SLURM_JOB_NODELIST: ") && e.contains("n[3-1]"), "{e}");
        let e = launch(&[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SLURM_PROCID=\"2\"") && e.contains("from 0 to 1"), "{e}");
        assert!(e.ends_with("(read as RANK)"), "{e}");
        let ntasks = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "x")];
        let localid = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1"), ("SLURM_LOCALID", "-1")];
        for (env, want) in [
            (&ntasks[..], "SLURM_NTASKS=\"x\""),
            (&localid[..], "SLURM_LOCALID=\"-1\""),
        ] {
            let e = launch(env).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn the_job_is_named_by_the_first_launcher_variable_that_names_one() {
        let world = [("RANK", "0"), ("WORLD_SIZE", "1")];
        let job = |extra: &[(&str, &str)]| launch(&[&world[..], extra].concat()).unwrap().job;
        assert_eq!(job(&[("TORCHELASTIC_RUN_ID", "none")]), None);
        assert_eq!(job(&[("SLURM_JOB_ID", " ")]), None);
        let slurm = job(&[("TORCHELASTIC_RUN_ID", "none"), ("SLURM_JOB_ID", "4711")]);
        assert_eq!(slurm.as_deref(), Some("SLURM_JOB_ID=4711"));
        let own = job(&[
            ("SLOTCON_JOB_ID", "a"),
            ("TORCHELASTIC_RUN_ID", "b"),
            ("SLURM_JOB_ID", "c"),
        ]);
        assert_eq!(own.as_deref(), Some("SLOTCON_JOB_ID=a"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WORLD_SIZE", "2")], "RANK: not set"),
            (&[("RANK", "2"), ("WORLD_SIZE", "2")], "RANK=\"2\""),
            (&[("RANK", "0"), ("WORLD_SIZE", "0")], "WORLD_SIZE=\"0\""),
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
            (&[("RANK", "0"), ("WORLD_SIZE", "2")], "MASTER_ADDR: not set"),
            (
                &[
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT=\"70000\"",
            ),
        ];
        for (vars, want) in cases {
            let e = launch(vars).unwrap_err().to_string();
            assert!(e.contains(want), "{vars:?}: {e}");
        }
    }
}
