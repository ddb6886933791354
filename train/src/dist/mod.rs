//! Several processes training one model, on PyTorch's c10d (DESIGN §10).
//!
//! A process learns its place from torchrun's environment ([`Launch::from_env`]: `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`); with none of them set it is a
//! world of one and nothing here does anything. [`init`] joins c10d's process group
//! (`native/dist.cpp`: a TCPStore rendezvous, Gloo for CPU tensors, NCCL for CUDA ones)
//! and keeps it for the life of the process, as `torch.distributed.init_process_group`
//! does. On top of it:
//! - [`all_reduce_sum`], [`all_gather`], [`broadcast`] and [`barrier`] on Burn tensors
//!   (identities in a world of one), through the backend extension [`Collective`];
//! - SyncBatchNorm: the model's training-mode batch norm (`model/norm.rs`) takes its
//!   statistics over every rank's batch, forward and backward, whenever a group is set;
//! - [`sum_gradients`] (bucketed) and [`broadcast_module`] (weights from rank 0).
//!
//! A lost rank or a timeout inside a collective ends the process (exit code 1) with a
//! message that names the rank that stopped answering ([`fatal`]); there is no error
//! channel inside a backward pass, and torch's own watchdog does the same.

mod agree;
mod collective;
#[cfg(feature = "tch")]
mod ffi;
mod grads;
mod launch;
pub mod slurm;

use std::sync::OnceLock;
use std::time::Duration;

use burn::prelude::*;

pub use agree::{agree, Setting};
pub use collective::Collective;
pub use grads::{broadcast_module, sum_gradients};
pub use launch::{DistBackend, Launch, JOB_VARIABLES};

use crate::error::{Error, Result};

/// The process group of this process, once [`init`] made one (a world of more than one).
#[cfg(feature = "tch")]
static GROUP: OnceLock<ffi::Group> = OnceLock::new();
/// The launch this process joined with (set by [`init`], also for a world of one).
static LAUNCH: OnceLock<Launch> = OnceLock::new();

/// The group, when this process is one of several.
#[cfg(feature = "tch")]
pub(crate) fn group() -> Option<&'static ffi::Group> {
    GROUP.get()
}

/// Whether collectives reach other processes (a group of more than one was joined).
pub fn is_distributed() -> bool {
    world_size() > 1
}

/// This process's rank (0 in a world of one).
pub fn rank() -> usize {
    LAUNCH.get().map_or(0, |l| l.rank)
}

/// The job this process was launched in ([`Launch::job`]), if its launcher names one.
pub fn job() -> Option<&'static str> {
    LAUNCH.get().and_then(|l| l.job.as_deref())
}

/// The number of processes (1 until [`init`] joined a larger world).
pub fn world_size() -> usize {
    LAUNCH.get().map_or(1, |l| l.world_size)
}

/// Joins the world that `launch` describes with `backend`, waiting at most `timeout` for
/// the rendezvous and for any later collective; a world of one just records itself. Call
/// once per process, before any tensor work.
pub fn init(launch: &Launch, backend: DistBackend, timeout: Duration) -> Result<()> {
    if LAUNCH.get().is_some() {
        return Err(Error::Distributed("the process group is already initialised".into()));
    }
    if launch.world_size > 1 {
        join(launch, backend, timeout)?;
    }
    let _ = LAUNCH.set(launch.clone());
    Ok(())
}

#[cfg(feature = "tch")]
fn join(launch: &Launch, backend: DistBackend, timeout: Duration) -> Result<()> {
    let joined = within(timeout, launch, || ffi::Group::join(launch, backend, timeout))?;
    let _ = GROUP.set(joined);
    std::thread::Builder::new()
        .name("slotcon-heartbeat".into())
        .spawn(|| loop {
            std::thread::sleep(HEARTBEAT);
            if let Some(g) = group() {
                g.beat();
            }
        })
        .map_err(|e| Error::Distributed(format!("cannot start the heartbeat thread: {e}")))?;
    Ok(())
}

/// Runs the rendezvous `f`, ending the process (exit code 1, naming the endpoint) if it
/// has not returned a few seconds after `timeout`: c10d bounds its own waits, but a
/// program that is not c10d listening on the port can hold a client's read forever.
#[cfg(feature = "tch")]
fn within<T>(timeout: Duration, launch: &Launch, f: impl FnOnce() -> T) -> T {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (endpoint, rank) = (launch.endpoint(), launch.rank);
    let grace = timeout + Duration::from_secs(5);
    let watchdog = std::thread::Builder::new()
        .name("slotcon-rendezvous".into())
        .spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(grace) {
                eprintln!(
                    "error: rank {rank}: the rendezvous at {endpoint} did not complete within {} s (--dist-timeout); \
                     is MASTER_PORT another program's, or did a rank not start?",
                    timeout.as_secs()
                );
                std::process::exit(1);
            }
        });
    let out = f();
    drop(done);
    if let Ok(w) = watchdog {
        let _ = w.join();
    }
    out
}

#[cfg(not(feature = "tch"))]
fn join(launch: &Launch, _: DistBackend, _: Duration) -> Result<()> {
    Err(Error::Distributed(format!(
        "a world of {} processes needs LibTorch's c10d; this build has no LibTorch (build with --features tch)",
        launch.world_size
    )))
}

/// How often each rank bumps its heartbeat counter in the rendezvous store.
#[cfg(feature = "tch")]
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The sum over ranks of `x`, on every rank (`x` itself in a world of one). Not
/// differentiable: for detached values and gradients.
pub fn all_reduce_sum<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    collective::run(x, collective::Op::Sum)
}

/// Every rank's `x` (the same shape on every rank) concatenated along dim 0 in rank order.
pub fn all_gather<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    collective::run(x, collective::Op::Gather)
}

/// Rank 0's `x`, on every rank.
pub fn broadcast<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    collective::run(x, collective::Op::Broadcast)
}

/// Waits until every rank has reached this point.
pub fn barrier() {
    #[cfg(feature = "tch")]
    if let Some(g) = group() {
        g.barrier();
    }
}

/// Ends the process after a failed collective: prints `error: rank R: ...` with the ranks
/// whose heartbeats stopped (or rank 0's lost store) and exits with code 1.
pub fn fatal(what: &str, cause: &str) -> ! {
    #[cfg(feature = "tch")]
    let lost = group().map(lost_ranks_within).unwrap_or_default();
    #[cfg(not(feature = "tch"))]
    let lost = String::new();
    eprintln!("error: rank {}: {what} failed{lost}: {}", rank(), cause.trim());
    std::process::exit(1);
}

/// [`ffi::Group::lost_ranks`], given up after its watch and ten seconds more: across a
/// partition the store's socket gets no answer and no reset, and c10d's store client
/// waits on it with no bound, so the diagnosis runs on a thread of its own and the process
/// ends either way.
#[cfg(feature = "tch")]
fn lost_ranks_within(g: &'static ffi::Group) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let watch = std::thread::Builder::new()
        .name("slotcon-lost-ranks".into())
        .spawn(move || tx.send(g.lost_ranks()));
    if watch.is_err() {
        return String::new();
    }
    let limit = HEARTBEAT * 3 + std::time::Duration::from_secs(10);
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        format!(
            " (the rendezvous store at {} does not answer: the network to its host is down, or the host is)",
            g.endpoint()
        )
    })
}
