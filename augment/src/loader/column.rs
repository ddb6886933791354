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

// SAFETY: `Column` owns its elements like a `Box<[T]>`; cross-thread access follows the
// protocol above.
unsafe impl<T: Send> Send for Column<T> {}
unsafe impl<T: Send> Sync for Column<T> {}

impl<T: Clone> Column<T> {
    pub(crate) fn new(len: usize, fill: T) -> Self {
        let boxed: Box<[T]> = vec![fill; len].into_boxed_slice();
        Column {
            ptr: Box::into_raw(boxed) as *mut T,
            len,
        }
    }
}

impl<T> Column<T> {
    /// A mutable view of `range`.
    ///
    /// # Safety
    /// No other live reference may overlap `range`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start)
    }

    /// A shared view of `range`.
    ///
    /// # Safety
    /// No live mutable reference may overlap `range`.
    pub(crate) unsafe fn slice(&self, range: Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        std::slice::from_raw_parts(self.ptr.add(range.start), range.end - range.start)
    }
}

impl<T> Drop for Column<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` come from `Box::into_raw` of a boxed slice of `len`.
        unsafe { drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_writes_from_threads() {
        let c = Column::new(1000, 0u32);
        std::thread::scope(|s| {
            for t in 0..4 {
                let c = &c;
                s.spawn(move || {
                    // SAFETY: each thread writes its own quarter.
                    let part = unsafe { c.slice_mut(t * 250..(t + 1) * 250) };
                    part.iter_mut().enumerate().for_each(|(i, v)| *v = (t * 250 + i) as u32);
                });
            }
        });
        // SAFETY: the threads have finished.
        let all = unsafe { c.slice(0..1000) };
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as u32));
    }
}
