//! A fixed-size array that several workers fill at disjoint positions.

use std::ops::Range;

/// An owned, fixed-length buffer accessed through a raw pointer, so that workers can
/// write disjoint ranges concurrently without aliasing `&mut` borrows of the whole.
///
/// The loader's protocol makes the unsafe accessors sound: a position is written by
/// exactly one worker task, and the buffer is read (or compacted) only by the consumer
/// after every task of the batch has finished (an `AcqRel` counter orders the two).
pub(crate) struct Column<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Column` owns its `len` elements exactly like the `Box<[T]>` it was made from
// (no other pointer to them exists), so sending it to another thread moves the elements
// there, which `T: Send` allows; the raw pointer is the only reason this is not derived.
unsafe impl<T: Send> Send for Column<T> {}
// SAFETY: through `&Column<T>`, `slice_mut` lets any thread write elements (moving `T`
// values into the buffer and dropping the old ones there), which needs `T: Send`, and
// `slice` lets several threads hold `&T` to the same elements at once, which needs
// `T: Sync`. The accessors' own contracts (no overlapping live `&mut`) rule out data
// races between threads.
unsafe impl<T: Send + Sync> Sync for Column<T> {}

impl<T: Default> Column<T> {
    #[cfg(test)]
    pub(crate) fn new(len: usize) -> Self {
        Self::try_new(len).expect("test columns fit in memory")
    }

    /// `len` default values, or the allocation error (instead of aborting the process).
    pub(crate) fn try_new(len: usize) -> Result<Self, std::collections::TryReserveError> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)?;
        v.resize_with(len, T::default);
        let boxed: Box<[T]> = v.into_boxed_slice();
        Ok(Column {
            ptr: Box::into_raw(boxed) as *mut T,
            len,
        })
    }
}

impl<T> Column<T> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A mutable view of `range`.
    ///
    /// # Safety
    /// No other live reference may overlap `range`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: `ptr` points to `len` initialised elements that live as long as `self`,
        // and the assert keeps `range` inside them, so the pointer arithmetic stays in the
        // allocation and the slice is valid for `&self`'s lifetime. Exclusivity of the
        // returned `&mut` is the caller's contract: no other live reference overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start) }
    }

    /// A shared view of `range`.
    ///
    /// # Safety
    /// No live mutable reference may overlap `range`.
    pub(crate) unsafe fn slice(&self, range: Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: as in `slice_mut`, `range` lies inside the `len` initialised elements that
        // live as long as `self`; the caller guarantees that no `&mut` overlapping `range`
        // is live while the returned slice is, so nothing mutates it meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.end - range.start) }
    }
}

impl<T> Drop for Column<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` come from `Box::into_raw` of a boxed slice of `len`
        // elements in `new`, and are turned back into that box exactly once, here; `&mut
        // self` means no slice handed out by the accessors is still alive.
        unsafe { drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_writes_from_threads() {
        let c = Column::<u32>::new(1000);
        std::thread::scope(|s| {
            for t in 0..4 {
                let c = &c;
                s.spawn(move || {
                    // SAFETY: each thread borrows its own quarter, disjoint from the others,
                    // and nothing reads the column until the scope has joined every thread.
                    let part = unsafe { c.slice_mut(t * 250..(t + 1) * 250) };
                    part.iter_mut().enumerate().for_each(|(i, v)| *v = (t * 250 + i) as u32);
                });
            }
        });
        // SAFETY: the scope has joined every writer, so no `&mut` into the column is live.
        let all = unsafe { c.slice(0..1000) };
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as u32));
    }
}
