//! A loader worker: takes (batch buffer, position) tasks, renders that sample's two
//! views straight into the buffer, and reports when it finished a batch's last one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::batch::{Outcome, Slot};
use super::Shared;
use crate::error::SampleFailure;
use crate::rng::SampleKey;
use crate::view::{render_sample, RenderError, SampleBuffers, StageTimes, TwoViewMeta};

/// One sample to render: position `pos` of batch buffer `slot`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Task {
    pub(crate) slot: usize,
    pub(crate) pos: usize,
}

/// Buffers a worker reuses from sample to sample.
#[derive(Default)]
struct WorkerState {
    bufs: SampleBuffers,
}

pub(crate) fn run(shared: Arc<Shared>, tasks: Receiver<Task>, done: Sender<(u64, usize)>) {
    let mut ws = WorkerState::default();
    while let Ok(task) = tasks.recv() {
        let slot = &shared.slots[task.slot];
        let step = slot.step.load(Ordering::Acquire);
        let id = shared.share[step as usize * shared.batch + task.pos];
        let result = if shared.stop.load(Ordering::Relaxed) {
            Err(Outcome::Failed {
                path: String::new(),
                cause: SampleFailure::Stopped,
            })
        } else {
            catch_unwind(AssertUnwindSafe(|| fill(&shared, slot, task.pos, id, &mut ws))).unwrap_or_else(|panic| {
                ws = WorkerState::default();
                Err(Outcome::Failed {
                    path: path_of(&shared, id),
                    cause: SampleFailure::Panic(panic_text(&*panic)),
                })
            })
        };
        // SAFETY: the loader sends each position of a scheduled slot as exactly one task,
        // so this worker is the one task of `task.pos`; the batch is still being filled, as
        // `remaining` is decremented only below, after this call. `fill`'s view borrows
        // ended when it returned.
        unsafe { slot.finish(task.pos, id, result) };
        shared.rendered.fetch_add(1, Ordering::Relaxed);
        if slot.remaining.fetch_sub(1, Ordering::AcqRel) == 1 && done.send((step, task.slot)).is_err() {
            return;
        }
    }
}

fn path_of(shared: &Shared, id: u64) -> String {
    shared.reader.path(id).map(str::to_string).unwrap_or_default()
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "unknown panic".into(),
    }
}

/// Reads, decodes and augments sample `id` into position `pos` of `slot`
/// ([`render_sample`]: a JPEG is decoded only where the two crops lie).
fn fill(shared: &Shared, slot: &Slot, pos: usize, id: u64, ws: &mut WorkerState) -> Result<TwoViewMeta, Outcome> {
    let failed = |cause: SampleFailure| Outcome::Failed {
        path: path_of(shared, id),
        cause,
    };
    let sample = shared.reader.get(id).map_err(|e| failed(SampleFailure::Store(e)))?;
    let key = SampleKey::new(shared.seed, shared.epoch, id);
    let store = shared.reader.store();
    // SAFETY: `fill` runs only from `run`, for the task of `(slot, pos)` this worker
    // received, while the batch is being filled; `views` is dropped when `fill` returns
    // (or unwinds), before `run` records the outcome and decrements `remaining`.
    let views = unsafe { slot.views_mut(pos) };
    let times = &mut StageTimes::default();
    match render_sample(store, &sample, &shared.cfg, key, views, &mut ws.bufs, times) {
        Ok(meta) => Ok(meta),
        Err(RenderError::Decode(e)) => Err(Outcome::Skipped {
            path: sample.path.to_string(),
            reason: e.to_string(),
        }),
        Err(RenderError::Render(e)) => Err(failed(SampleFailure::Image(Box::new(e)))),
    }
}
