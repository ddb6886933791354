//! Batch buffers: preallocated once, filled in place by the workers, lent to the
//! consumer as a [`TwoViewBatch`], and recycled when it is dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use serde::Serialize;

use super::column::Column;
use super::Shared;
use crate::crop::{Crop, NormBox};
use crate::error::SampleFailure;
use crate::view::TwoViewMeta;

/// What happened to one position of a batch.
#[derive(Debug, Default)]
pub(crate) enum Outcome {
    /// Filled.
    #[default]
    Ok,
    /// The image does not decode: left out of the batch and reported.
    Skipped { path: String, reason: String },
    /// A broken store or a worker panic: the batch is an error.
    Failed { path: String, cause: SampleFailure },
}

/// A sample that was left out of its batch because its image does not decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedSample {
    /// The sample id.
    pub id: u64,
    /// Its source path.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// One preallocated batch buffer.
pub(crate) struct Slot {
    pub(crate) step: AtomicU64,
    pub(crate) remaining: AtomicUsize,
    views: [Column<u8>; 2],
    ids: Column<u64>,
    boxes: Column<[NormBox; 2]>,
    crops: Column<[Crop; 2]>,
    flips: Column<[bool; 2]>,
    outcomes: Column<Outcome>,
    view_len: usize,
}

impl Slot {
    /// Bytes one position takes in a buffer of `size × size` views, `None` on overflow.
    pub(crate) fn bytes_per_sample(size: usize) -> Option<usize> {
        let views = size.checked_mul(size)?.checked_mul(3 * 2)?;
        let meta = std::mem::size_of::<u64>()
            + std::mem::size_of::<[NormBox; 2]>()
            + std::mem::size_of::<[Crop; 2]>()
            + std::mem::size_of::<[bool; 2]>()
            + std::mem::size_of::<Outcome>();
        views.checked_add(meta)
    }

    /// Whether this buffer holds `batch` positions of `size × size` views.
    pub(crate) fn fits(&self, batch: usize, size: usize) -> bool {
        self.view_len == size * size * 3 && self.ids.len() == batch
    }

    /// A buffer of `batch` positions; the caller has checked that its size fits
    /// ([`Slot::bytes_per_sample`]), an allocation failure is returned, not an abort.
    pub(crate) fn new(batch: usize, size: usize) -> Result<Self, std::collections::TryReserveError> {
        let view_len = size * size * 3;
        Ok(Slot {
            step: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            views: [Column::try_new(batch * view_len)?, Column::try_new(batch * view_len)?],
            ids: Column::try_new(batch)?,
            boxes: Column::try_new(batch)?,
            crops: Column::try_new(batch)?,
            flips: Column::try_new(batch)?,
            outcomes: Column::try_new(batch)?,
            view_len,
        })
    }

    /// The two view buffers of position `pos`.
    ///
    /// # Safety
    /// Only the task of `pos` may call this, while the batch is being filled, and the
    /// returned slices must be dropped before that task reports it finished (before it
    /// decrements `remaining`).
    #[allow(clippy::mut_from_ref)] // disjoint positions, see `Column`
    pub(crate) unsafe fn views_mut(&self, pos: usize) -> [&mut [u8]; 2] {
        let r = pos * self.view_len..(pos + 1) * self.view_len;
        // SAFETY: `r` is exactly position `pos`'s part of each view column. By this
        // function's contract the caller is the one task of `pos`, so no other task
        // borrows these bytes, and the consumer reads them only after the task has
        // finished, when these borrows are gone. The two borrows are of distinct columns.
        unsafe { [self.views[0].slice_mut(r.clone()), self.views[1].slice_mut(r)] }
    }

    /// Records position `pos`'s id and either its geometry or what went wrong.
    ///
    /// # Safety
    /// Only the task of `pos` may call this, while the batch is being filled.
    pub(crate) unsafe fn finish(&self, pos: usize, id: u64, result: Result<TwoViewMeta, Outcome>) {
        let one = pos..pos + 1;
        // SAFETY: by this function's contract the caller is the one task of `pos`, so no
        // other thread borrows element `pos` of any column while the batch is being
        // filled; this `&mut`, like those below, lasts for its assignment only.
        unsafe { self.ids.slice_mut(one.clone())[0] = id };
        let outcome = match result {
            Ok(meta) => {
                // SAFETY: as above.
                unsafe { self.boxes.slice_mut(one.clone())[0] = meta.boxes };
                // SAFETY: as above.
                unsafe { self.crops.slice_mut(one.clone())[0] = meta.crops() };
                // SAFETY: as above.
                unsafe { self.flips.slice_mut(one.clone())[0] = meta.flips() };
                Outcome::Ok
            }
            Err(o) => o,
        };
        // SAFETY: as above.
        unsafe { self.outcomes.slice_mut(one)[0] = outcome };
    }

    /// After every task of the batch has finished: moves skipped positions out, returns
    /// the number of samples kept, the skipped samples and the first failure.
    ///
    /// # Safety
    /// Only the consumer may call this, after `remaining` reached zero (with the last
    /// task's writes visible to it), and while the slot is neither lent as a batch nor
    /// scheduled again, so that it has the whole slot to itself.
    pub(crate) unsafe fn settle(
        &self,
        batch: usize,
    ) -> (usize, Vec<SkippedSample>, Option<(u64, String, SampleFailure)>) {
        let (mut kept, mut skipped, mut failed) = (0, Vec::new(), None);
        for pos in 0..batch {
            // SAFETY: by the contract, nothing else references the slot; both borrows end
            // with this statement, so none is live when `move_position` borrows again.
            let (id, outcome) = unsafe {
                (
                    self.ids.slice(pos..pos + 1)[0],
                    std::mem::take(&mut self.outcomes.slice_mut(pos..pos + 1)[0]),
                )
            };
            match outcome {
                Outcome::Ok => {
                    if kept != pos {
                        // SAFETY: the consumer has the slot to itself (this function's
                        // contract) and holds no reference into its columns here.
                        unsafe { self.move_position(pos, kept) };
                    }
                    kept += 1;
                }
                Outcome::Skipped { path, reason } => skipped.push(SkippedSample { id, path, reason }),
                Outcome::Failed { path, cause } => {
                    failed.get_or_insert((id, path, cause));
                }
            }
        }
        (kept, skipped, failed)
    }

    /// Copies position `from`'s views, id and geometry to position `to`.
    ///
    /// # Safety
    /// The caller must have the slot to itself (as in [`Slot::settle`]) and hold no
    /// reference into its columns.
    unsafe fn move_position(&self, from: usize, to: usize) {
        let n = self.view_len;
        // SAFETY: by the contract no other reference into the slot is live, and each
        // `&mut` below is dropped at the end of its statement, so none overlaps another.
        unsafe {
            for v in &self.views {
                v.slice_mut(0..(from + 1) * n)
                    .copy_within(from * n..(from + 1) * n, to * n);
            }
            self.ids.slice_mut(0..from + 1).copy_within(from..from + 1, to);
            self.boxes.slice_mut(0..from + 1).copy_within(from..from + 1, to);
            self.crops.slice_mut(0..from + 1).copy_within(from..from + 1, to);
            self.flips.slice_mut(0..from + 1).copy_within(from..from + 1, to);
        }
    }
}

/// One batch of two-view samples, lent by the [`Loader`](super::Loader); dropping it
/// returns its buffer to the loader.
///
/// Views are **NHWC u8**: `views()[v]` holds `len() × size × size × 3` bytes, sample-major,
/// row-major, RGB interleaved (normalise on the device). Boxes are `[x1, y1, x2, y2]` in
/// each view's normalised frame, after flips (x2 < x1 when the crops do not overlap).
pub struct TwoViewBatch {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: usize,
    pub(crate) len: usize,
    pub(crate) epoch: u64,
    pub(crate) step: u64,
    pub(crate) skipped: Vec<SkippedSample>,
}

impl TwoViewBatch {
    fn slot(&self) -> &Slot {
        &self.shared.slots[self.slot]
    }

    /// Samples in the batch (the batch size, less any skipped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when every sample of the batch was skipped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The step within the epoch (resume from `step + 1`).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Side of the square views.
    pub fn size(&self) -> usize {
        self.shared.cfg.size as usize
    }

    /// Sample ids, `[N]`.
    pub fn ids(&self) -> &[u64] {
        // SAFETY: the loader settled this slot and lent it to this batch alone: no worker
        // writes to it until `drop` returns it to the free list (the loader schedules only
        // free slots), and nothing else takes a `&mut` into it, so the shared borrow, tied
        // to `&self`, overlaps no `&mut`. `len` is at most the batch size.
        unsafe { self.slot().ids.slice(0..self.len) }
    }

    /// Both views, each `[N, size, size, 3]` u8.
    pub fn views(&self) -> [&[u8]; 2] {
        let n = self.len * self.slot().view_len;
        // SAFETY: as in `ids`; `n` covers the `len` kept positions of each view column.
        unsafe { [self.slot().views[0].slice(0..n), self.slot().views[1].slice(0..n)] }
    }

    /// Overlap boxes, `[N, 2, 4]`.
    pub fn boxes(&self) -> &[[NormBox; 2]] {
        // SAFETY: as in `ids`.
        unsafe { self.slot().boxes.slice(0..self.len) }
    }

    /// Horizontal flips, `[N, 2]`.
    pub fn flips(&self) -> &[[bool; 2]] {
        // SAFETY: as in `ids`.
        unsafe { self.slot().flips.slice(0..self.len) }
    }

    /// Crops in source pixels, `[N, 2]`.
    pub fn crops(&self) -> &[[Crop; 2]] {
        // SAFETY: as in `ids`.
        unsafe { self.slot().crops.slice(0..self.len) }
    }

    /// Samples of this batch left out because their image does not decode.
    pub fn skipped(&self) -> &[SkippedSample] {
        &self.skipped
    }
}

impl Drop for TwoViewBatch {
    fn drop(&mut self) {
        // The loader may be gone already; then the buffer is simply freed with it.
        let _ = self.shared.free.0.send(self.slot);
    }
}

impl std::fmt::Debug for TwoViewBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoViewBatch")
            .field("epoch", &self.epoch)
            .field("step", &self.step)
            .field("len", &self.len)
            .finish()
    }
}
