//! `ToTensor()` then `Normalize(mean, std)`: u8 HWC to float32 CHW.

/// ImageNet mean, as SlotCon uses it.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Writes `(v / 255 - mean[c]) / std[c]` in float32, channel-major (`[3, h, w]`), into
/// `out` (`rgb.len()` floats). The trainer does this on the device; this is the
/// reference and the CPU fallback.
pub fn normalize(rgb: &[u8], out: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    let plane = rgb.len() / 3;
    assert_eq!(
        out.len(),
        rgb.len(),
        "output holds {} floats, need {}",
        out.len(),
        rgb.len()
    );
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_values() {
        let rgb = [0u8, 128, 255, 255, 0, 0];
        let mut out = [0f32; 6];
        normalize(&rgb, &mut out, MEAN, STD);
        assert!((out[0] - (-MEAN[0] / STD[0])).abs() < 1e-6);
        assert!((out[1] - (1.0 - MEAN[0]) / STD[0]).abs() < 1e-6);
        assert!((out[4] - (1.0 - MEAN[2]) / STD[2]).abs() < 1e-6);
    }
}
