//! Plain image buffers: interleaved 8-bit RGB, row-major, no padding.

/// A borrowed RGB image: `data.len() == width * height * 3`.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    /// Pixels, `[height][width][3]`.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl<'a> ImageRef<'a> {
    /// Wraps `data`; panics if its length is not `width * height * 3`.
    pub fn new(data: &'a [u8], width: usize, height: usize) -> Self {
        assert_eq!(data.len(), width * height * 3, "RGB buffer size");
        ImageRef { data, width, height }
    }

    /// Row `y` as `width * 3` bytes.
    pub fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.width * 3..(y + 1) * self.width * 3]
    }
}

/// Sets `buf`'s length to `len` (new bytes zero) with no spare capacity when it must
/// grow: a reused buffer holds the largest image it has met, not up to twice that as
/// `Vec`'s amortised growth would leave it. The old contents are not copied when it
/// grows (every caller overwrites the buffer whole).
pub(crate) fn resize_exact(buf: &mut Vec<u8>, len: usize) {
    if buf.capacity() < len {
        *buf = Vec::new();
        buf.reserve_exact(len);
    }
    buf.resize(len, 0);
}

#[cfg(test)]
mod tests {
    use super::resize_exact;

    #[test]
    fn a_grown_buffer_has_no_spare_capacity() {
        let mut buf = vec![1u8; 1000];
        resize_exact(&mut buf, 1500);
        assert_eq!((buf.len(), buf.capacity()), (1500, 1500));
        resize_exact(&mut buf, 10);
        assert_eq!((buf.len(), buf.capacity()), (10, 1500));
        resize_exact(&mut buf, 1200);
        assert_eq!((buf.len(), buf.capacity()), (1200, 1500));
    }
}
