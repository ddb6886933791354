//! The process group of `native/dist.cpp`, behind a safe type.

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use tch::Tensor as TchTensor;

use super::{DistBackend, Launch};
use crate::error::{Error, Result};
use crate::model::torch_ops::take_message;

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn slotcon_dist_init(
        backend: *const c_char,
        host: *const c_char,
        port: i32,
        rank: i32,
        world: i32,
        agent_store: bool,
        prefix: *const c_char,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn slotcon_dist_all_reduce(g: *const c_void, input: *const c_void, out: *mut *mut c_void) -> *mut c_char;
    fn slotcon_dist_all_gather(g: *const c_void, input: *const c_void, out: *mut *mut c_void) -> *mut c_char;
    fn slotcon_dist_broadcast(g: *const c_void, input: *const c_void, root: i32, out: *mut *mut c_void) -> *mut c_char;
    fn slotcon_dist_barrier(g: *const c_void) -> *mut c_char;
    fn slotcon_dist_beat(g: *const c_void) -> *mut c_char;
    fn slotcon_dist_beats(g: *const c_void, counts: *mut i64) -> *mut c_char;
    #[allow(clippy::too_many_arguments)]
    fn slotcon_sync_batch_norm_forward(
        g: *const c_void,
        x: *const c_void,
        weight: *const c_void,
        bias: *const c_void,
        eps: f64,
        output: *mut *mut c_void,
        mean: *mut *mut c_void,
        invstd: *mut *mut c_void,
        count: *mut i64,
    ) -> *mut c_char;
    #[allow(clippy::too_many_arguments)]
    fn slotcon_sync_batch_norm_backward(
        g: *const c_void,
        grad: *const c_void,
        x: *const c_void,
        weight: *const c_void,
        mean: *const c_void,
        invstd: *const c_void,
        count: i64,
        grad_input: *mut *mut c_void,
        grad_weight: *mut *mut c_void,
        grad_bias: *mut *mut c_void,
    ) -> *mut c_char;
}

/// Takes ownership of a tensor the shim allocated with `new at::Tensor`.
fn adopt(ptr: *mut c_void) -> TchTensor {
    assert!(!ptr.is_null(), "the shim returns its tensors on success");
    // SAFETY: a fresh `new at::Tensor` is what tch's `C_tensor` is; tch frees it on drop.
    unsafe { TchTensor::from_ptr(ptr.cast()) }
}

/// The c10d process group this process joined (`native/dist.cpp`'s `SlotconGroup`).
pub(crate) struct Group {
    ptr: *mut c_void,
    world: usize,
    endpoint: String,
    agent_store: bool,
}

// SAFETY: c10d's process groups and stores are used from several threads in PyTorch itself
// (DDP's reducer, the heartbeat here); the group is never freed while the process runs.
unsafe impl Send for Group {}
// SAFETY: as above.
unsafe impl Sync for Group {}

impl Group {
    /// Joins the world of `launch` with `backend`.
    pub(crate) fn join(launch: &Launch, backend: DistBackend, timeout: Duration) -> Result<Group> {
        let endpoint = launch.endpoint();
        let cstr = |s: &str| CString::new(s).map_err(|_| Error::Distributed(format!("{s:?}: contains a NUL byte")));
        let (name, host, prefix) = (
            cstr(backend.name())?,
            cstr(&launch.master_addr)?,
            cstr(&launch.store_prefix())?,
        );
        let mut ptr = std::ptr::null_mut();
        // SAFETY: the strings live through the call; `ptr` is valid for a write. The shim
        // catches every C++ exception.
        let message = unsafe {
            slotcon_dist_init(
                name.as_ptr(),
                host.as_ptr(),
                i32::from(launch.master_port),
                launch.rank as i32,
                launch.world_size as i32,
                launch.agent_store,
                prefix.as_ptr(),
                timeout.as_millis().min(i64::MAX as u128) as i64,
                &mut ptr,
            )
        };
        if let Some(text) = take_message(message) {
            return Err(Error::Distributed(format!(
                "{endpoint}: rank {} of {} could not join the {backend} process group within {} s: {}",
                launch.rank,
                launch.world_size,
                timeout.as_secs(),
                text.trim()
            )));
        }
        Ok(Group {
            ptr,
            world: launch.world_size,
            endpoint,
            agent_store: launch.agent_store,
        })
    }

    /// Runs one collective that returns a tensor; a failure ends the process.
    fn tensor_op(&self, what: &str, call: impl FnOnce(*mut *mut c_void) -> *mut c_char) -> TchTensor {
        let mut out = std::ptr::null_mut();
        if let Some(text) = take_message(call(&mut out)) {
            super::fatal(what, &text);
        }
        adopt(out)
    }

    /// The sum over ranks of `x`.
    pub(crate) fn all_reduce(&self, x: &TchTensor) -> TchTensor {
        // SAFETY: the group and `x` are live for the call; `out` is valid for a write.
        self.tensor_op("all_reduce", |out| unsafe {
            slotcon_dist_all_reduce(self.ptr, x.as_ptr().cast(), out)
        })
    }

    /// Every rank's `x` concatenated along dim 0.
    pub(crate) fn all_gather(&self, x: &TchTensor) -> TchTensor {
        // SAFETY: as in `all_reduce`.
        self.tensor_op("all_gather", |out| unsafe {
            slotcon_dist_all_gather(self.ptr, x.as_ptr().cast(), out)
        })
    }

    /// Rank 0's `x`.
    pub(crate) fn broadcast(&self, x: &TchTensor) -> TchTensor {
        // SAFETY: as in `all_reduce`.
        self.tensor_op("broadcast", |out| unsafe {
            slotcon_dist_broadcast(self.ptr, x.as_ptr().cast(), 0, out)
        })
    }

    pub(crate) fn barrier(&self) {
        // SAFETY: the group is live.
        if let Some(text) = take_message(unsafe { slotcon_dist_barrier(self.ptr) }) {
            super::fatal("barrier", &text);
        }
    }

    /// `host:port` of the rendezvous store.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One heartbeat; a store that no longer answers is noticed by the collectives instead.
    pub(crate) fn beat(&self) {
        // SAFETY: the group is live.
        let _ = take_message(unsafe { slotcon_dist_beat(self.ptr) });
    }

    fn beats(&self) -> Option<Vec<i64>> {
        let mut counts = vec![0i64; self.world];
        // SAFETY: `counts` holds `world` slots, as the shim writes.
        let message = unsafe { slotcon_dist_beats(self.ptr, counts.as_mut_ptr()) };
        take_message(message).is_none().then_some(counts)
    }

    /// After a failed collective: which ranks' heartbeats stopped, as ` (…)` for the
    /// message (three heartbeat periods of watching), or that the store itself is gone.
    pub(crate) fn lost_ranks(&self) -> String {
        let watch = super::HEARTBEAT * 3;
        let before = self.beats();
        std::thread::sleep(watch);
        let (Some(before), Some(after)) = (before, self.beats()) else {
            return if self.agent_store {
                format!(" (torchrun's rendezvous store at {} is gone)", self.endpoint)
            } else {
                format!(
                    " (lost rank 0: the rendezvous store it hosts at {} is gone)",
                    self.endpoint
                )
            };
        };
        let me = super::rank();
        let lost: Vec<String> = (0..self.world)
            .filter(|&r| r != me && before[r] == after[r])
            .map(|r| r.to_string())
            .collect();
        match lost.as_slice() {
            [] => " (every other rank still has a heartbeat: one is stuck, or the network dropped)".into(),
            [one] => format!(" (lost rank {one}: no heartbeat for {} s)", watch.as_secs()),
            many => format!(
                " (lost ranks {}: no heartbeat for {} s)",
                many.join(", "),
                watch.as_secs()
            ),
        }
    }

    /// SyncBatchNorm forward: `(output, mean, invstd, count)` over every rank's batch.
    pub(crate) fn sync_bn_forward(
        &self,
        x: &TchTensor,
        weight: &TchTensor,
        bias: &TchTensor,
        eps: f64,
    ) -> (TchTensor, TchTensor, TchTensor, i64) {
        let mut out: [*mut c_void; 3] = [std::ptr::null_mut(); 3];
        let mut count = 0i64;
        let [o, m, s] = &mut out;
        // SAFETY: the tensors are live for the call; the four out-pointers are valid.
        let message = unsafe {
            slotcon_sync_batch_norm_forward(
                self.ptr,
                x.as_ptr().cast(),
                weight.as_ptr().cast(),
                bias.as_ptr().cast(),
                eps,
                o,
                m,
                s,
                &mut count,
            )
        };
        if let Some(text) = take_message(message) {
            super::fatal("SyncBatchNorm forward", &text);
        }
        let [o, m, s] = out.map(adopt);
        (o, m, s, count)
    }

    /// SyncBatchNorm backward: `[d x, d weight, d bias]` (the last two this rank's share).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sync_bn_backward(
        &self,
        grad: &TchTensor,
        x: &TchTensor,
        weight: &TchTensor,
        mean: &TchTensor,
        invstd: &TchTensor,
        count: i64,
    ) -> [TchTensor; 3] {
        let mut out: [*mut c_void; 3] = [std::ptr::null_mut(); 3];
        let [gi, gw, gb] = &mut out;
        // SAFETY: the tensors are live for the call; the three out-pointers are valid.
        let message = unsafe {
            slotcon_sync_batch_norm_backward(
                self.ptr,
                grad.as_ptr().cast(),
                x.as_ptr().cast(),
                weight.as_ptr().cast(),
                mean.as_ptr().cast(),
                invstd.as_ptr().cast(),
                count,
                gi,
                gw,
                gb,
            )
        };
        if let Some(text) = take_message(message) {
            super::fatal("SyncBatchNorm backward", &text);
        }
        out.map(adopt)
    }
}
