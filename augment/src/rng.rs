//! Randomness that depends only on (seed, epoch, sample index, view).
//!
//! [`SampleRng`] is SplitMix64 started from a hash of the four numbers, so a sample's
//! draws never depend on thread scheduling or on which samples came before it.
//! Everything that samples goes through the [`Draws`] trait, so tests can replay
//! injected draws through the very same code ([`Replay`]).

/// SplitMix64's output function: a strong 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The sample a view's draws belong to: the run's seed, the epoch and the sample's index
/// in the store. With the view (0 or 1) it is everything the draws derive from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The run's seed.
    pub seed: u64,
    /// The epoch.
    pub epoch: u64,
    /// The sample's index (its id in the store).
    pub index: u64,
}

impl SampleKey {
    /// Sample `index` of `epoch` in the run seeded `seed`.
    pub fn new(seed: u64, epoch: u64, index: u64) -> Self {
        SampleKey { seed, epoch, index }
    }

    /// The draws of view `view` (0 or 1) of this sample.
    pub fn rng(self, view: u64) -> SampleRng {
        SampleRng::new(self.seed, self.epoch, self.index, view)
    }
}

/// The random source of one view of one sample in one epoch.
#[derive(Clone, Debug)]
pub struct SampleRng {
    state: u64,
}

impl SampleRng {
    /// The generator for `(seed, epoch, index, view)`.
    pub fn new(seed: u64, epoch: u64, index: u64, view: u64) -> Self {
        let mut s = mix64(seed ^ GOLDEN);
        for part in [epoch, index, view] {
            s = mix64(s.wrapping_add(GOLDEN) ^ mix64(part.wrapping_add(GOLDEN)));
        }
        SampleRng { state: s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }
}

/// The random decisions an augmentation makes, with Python's semantics.
pub trait Draws {
    /// A double in `[0, 1)` (Python's `random.random()`).
    fn random(&mut self) -> f64;
    /// An integer in `lo..=hi` (Python's `random.randint(lo, hi)`).
    fn randint(&mut self, lo: u32, hi: u32) -> u32;

    /// `lo + (hi - lo) * random()` (Python's `random.uniform`).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.random()
    }

    /// True with probability `p` (`random() < p`).
    fn chance(&mut self, p: f64) -> bool {
        self.random() < p
    }

    /// A uniformly random permutation of `0..4` (Fisher-Yates).
    fn permutation4(&mut self) -> [u8; 4] {
        let mut p = [0u8, 1, 2, 3];
        for i in (1..4u32).rev() {
            let j = self.randint(0, i) as usize;
            p.swap(i as usize, j);
        }
        p
    }
}

impl Draws for SampleRng {
    fn random(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn randint(&mut self, lo: u32, hi: u32) -> u32 {
        assert!(lo <= hi, "randint({lo}, {hi})");
        let span = (hi - lo) as u64 + 1;
        // Lemire's unbiased multiply-and-reject.
        loop {
            let m = (self.next_u64() as u128) * span as u128;
            let low = m as u64;
            if low >= span.wrapping_neg() % span {
                return lo + (m >> 64) as u32;
            }
        }
    }
}

/// Replays injected draws: `random()` values and `randint` results, in order.
///
/// Used by the parity tests to drive the real samplers with the draws a Python
/// reference also receives. Running out of draws panics.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    randoms: std::collections::VecDeque<f64>,
    ints: std::collections::VecDeque<u32>,
}

impl Replay {
    /// Draws to replay.
    pub fn new(randoms: Vec<f64>, ints: Vec<u32>) -> Self {
        Replay {
            randoms: randoms.into(),
            ints: ints.into(),
        }
    }

    /// How many (randoms, ints) were not used.
    pub fn remaining(&self) -> (usize, usize) {
        (self.randoms.len(), self.ints.len())
    }
}

impl Draws for Replay {
    fn random(&mut self) -> f64 {
        self.randoms.pop_front().expect("replay ran out of random() draws")
    }

    fn randint(&mut self, lo: u32, hi: u32) -> u32 {
        let v = self.ints.pop_front().expect("replay ran out of randint() draws");
        assert!((lo..=hi).contains(&v), "injected randint {v} outside {lo}..={hi}");
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_stream_and_keys_differ() {
        let a: Vec<u64> = (0..4).map(|_| SampleRng::new(1, 2, 3, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let keys = [(1, 2, 3, 0), (1, 2, 3, 1), (1, 2, 4, 0), (1, 3, 3, 0), (2, 2, 3, 0)];
        let firsts: std::collections::HashSet<u64> = keys
            .iter()
            .map(|&(s, e, i, v)| SampleRng::new(s, e, i, v).next_u64())
            .collect();
        assert_eq!(firsts.len(), keys.len());
    }

    #[test]
    fn randint_is_inclusive_and_roughly_uniform() {
        let mut r = SampleRng::new(7, 0, 0, 0);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[r.randint(3, 6) as usize - 3] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn random_is_in_unit_interval_with_mean_one_half() {
        let mut r = SampleRng::new(9, 1, 2, 3);
        let xs: Vec<f64> = (0..100_000).map(|_| r.random()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
    }

    #[test]
    fn permutations_cover_all_24() {
        let mut r = SampleRng::new(0, 0, 0, 0);
        let seen: std::collections::HashSet<[u8; 4]> = (0..2000).map(|_| r.permutation4()).collect();
        assert_eq!(seen.len(), 24);
    }
}
