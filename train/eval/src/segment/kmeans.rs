//! K-means (k-means++ seeding, Lloyd iterations) on dense features, as PiCIE clusters
//! them for the Hungarian evaluation. Deterministic for a seed.

use slotcon_augment::{Draws, SampleRng};

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest of `centroids` (`[k, dim]`) to `x`.
pub fn nearest(x: &[f32], centroids: &[f32], dim: usize) -> usize {
    let mut best = (f32::INFINITY, 0);
    for (c, centre) in centroids.chunks_exact(dim).enumerate() {
        let d = dist2(x, centre);
        if d < best.0 {
            best = (d, c);
        }
    }
    best.1
}

/// k-means++: the first centre uniformly, each next one with probability ∝ distance².
fn seed_centroids(data: &[f32], dim: usize, k: usize, rng: &mut SampleRng) -> Vec<f32> {
    let n = data.len() / dim;
    let first = rng.randint(0, n as u32 - 1) as usize;
    let mut centroids = data[first * dim..][..dim].to_vec();
    let mut d2: Vec<f32> = data.chunks_exact(dim).map(|x| dist2(x, &centroids)).collect();
    while centroids.len() < k * dim {
        let total: f64 = d2.iter().map(|&v| v as f64).sum();
        let mut target = rng.random() * total;
        let mut pick = n - 1;
        for (i, &v) in d2.iter().enumerate() {
            target -= v as f64;
            if target < 0.0 {
                pick = i;
                break;
            }
        }
        let centre = data[pick * dim..][..dim].to_vec();
        for (v, x) in d2.iter_mut().zip(data.chunks_exact(dim)) {
            *v = v.min(dist2(x, &centre));
        }
        centroids.extend_from_slice(&centre);
    }
    centroids
}

/// `k` centroids (`[k, dim]`) of the rows of `data` (`[n, dim]`, `n >= k`).
pub fn kmeans(data: &[f32], dim: usize, k: usize, iterations: usize, seed: u64) -> Vec<f32> {
    let n = data.len() / dim;
    assert!(n >= k && k > 0, "k-means needs at least k = {k} points, got {n}");
    let mut rng = SampleRng::new(seed, 0, 0, 0);
    let mut centroids = seed_centroids(data, dim, k, &mut rng);
    let mut assign = vec![usize::MAX; n];
    for _ in 0..iterations {
        let mut changed = false;
        for (a, x) in assign.iter_mut().zip(data.chunks_exact(dim)) {
            let c = nearest(x, &centroids, dim);
            changed |= *a != c;
            *a = c;
        }
        if !changed {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (&a, x) in assign.iter().zip(data.chunks_exact(dim)) {
            counts[a] += 1;
            for (s, v) in sums[a * dim..][..dim].iter_mut().zip(x) {
                *s += *v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for (dst, s) in centroids[c * dim..][..dim].iter_mut().zip(&sums[c * dim..][..dim]) {
                    *dst = (*s / counts[c] as f64) as f32;
                }
            }
        }
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_blobs_are_found() {
        let centres = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mut rng = SampleRng::new(1, 2, 3, 4);
        let mut data = Vec::new();
        for i in 0..300 {
            let c = centres[i % 3];
            data.push(c[0] + rng.uniform(-1.0, 1.0) as f32);
            data.push(c[1] + rng.uniform(-1.0, 1.0) as f32);
        }
        let found = kmeans(&data, 2, 3, 50, 7);
        for c in centres {
            let i = nearest(&c, &found, 2);
            assert!(
                dist2(&c, &found[i * 2..i * 2 + 2]) < 0.1,
                "{c:?} not found in {found:?}"
            );
        }
        assert_eq!(found, kmeans(&data, 2, 3, 50, 7), "deterministic for a seed");
    }
}
