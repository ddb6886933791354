//! Which samples a rank sees in an epoch, in which order, and how they form batches.

use crate::rng::{Draws, SampleRng};

/// The view number reserved for the epoch shuffle (sample views are 0 and 1).
const SHUFFLE_VIEW: u64 = u64::MAX;

/// The epoch's permutation of `0..len`: Fisher-Yates driven by `(seed, epoch)` only.
pub fn epoch_order(len: u64, seed: u64, epoch: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..len).collect();
    shuffle(&mut order, &mut SampleRng::new(seed, epoch, u64::MAX, SHUFFLE_VIEW));
    order
}

/// How an epoch's samples are ordered (before the ranks take their shares).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// A uniform permutation of the whole store ([`epoch_order`]).
    #[default]
    Global,
    /// Locality-aware ([`block_order`]): runs of `samples` consecutive ids of one shard,
    /// shuffled, then permuted within windows of `window` runs.
    Block {
        /// Ids per run.
        samples: u64,
        /// Runs per window.
        window: u64,
    },
}

impl Order {
    /// The epoch's order of the store whose shards hold `shards` (`(first_id, rows)`,
    /// consecutive from 0).
    pub fn epoch(&self, shards: &[(u64, u64)], seed: u64, epoch: u64) -> Vec<u64> {
        match *self {
            Order::Global => epoch_order(shards.iter().map(|s| s.1).sum(), seed, epoch),
            Order::Block { samples, window } => block_order(shards, samples, window, seed, epoch),
        }
    }
}

/// The view numbers reserved for the block order's two shuffles.
const BLOCKS_VIEW: u64 = u64::MAX - 1;
const WINDOW_VIEW: u64 = u64::MAX - 2;

/// The block order, FFCV's quasi-random order and Mosaic's py1e in spirit: each shard's
/// ids are cut into runs of `samples` consecutive ids (a shard's last run may be
/// shorter), the runs are shuffled, and the ids of each window of `window` consecutive
/// runs (in the shuffled order) are shuffled among themselves. A reader then needs at
/// most the bytes of one window's runs at a time, and each run's bytes are contiguous
/// in its shard. A pure function of `(shards, samples, window, seed, epoch)`.
pub fn block_order(shards: &[(u64, u64)], samples: u64, window: u64, seed: u64, epoch: u64) -> Vec<u64> {
    let (samples, window) = (samples.max(1), window.max(1) as usize);
    let mut runs: Vec<(u64, u64)> = shards
        .iter()
        .flat_map(|&(first, rows)| {
            (0..rows.div_ceil(samples)).map(move |k| (first + k * samples, (rows - k * samples).min(samples)))
        })
        .collect();
    shuffle(&mut runs, &mut SampleRng::new(seed, epoch, u64::MAX, BLOCKS_VIEW));
    let mut order = Vec::with_capacity(shards.iter().map(|s| s.1 as usize).sum());
    for (w, group) in runs.chunks(window).enumerate() {
        let start = order.len();
        order.extend(group.iter().flat_map(|&(first, n)| first..first + n));
        shuffle(
            &mut order[start..],
            &mut SampleRng::new(seed, epoch, w as u64, WINDOW_VIEW),
        );
    }
    order
}

/// Fisher-Yates with `rng`.
fn shuffle<T>(xs: &mut [T], rng: &mut SampleRng) {
    for i in (1..xs.len()).rev() {
        let j = rng.randint(0, i as u32) as usize;
        xs.swap(i, j);
    }
}

/// This rank's share of the epoch order, like PyTorch's `DistributedSampler` with
/// `drop_last=True`: the order is cut to a multiple of `world`, and rank `r` takes
/// positions `r, r + world, r + 2·world, ...`.
pub fn rank_share(order: &[u64], rank: usize, world: usize) -> Vec<u64> {
    let per_rank = order.len() / world;
    order[..per_rank * world]
        .iter()
        .skip(rank)
        .step_by(world)
        .copied()
        .collect()
}

/// Full batches of `batch` in `share` (the last, incomplete batch is dropped).
pub fn steps_per_epoch(share: usize, batch: usize) -> u64 {
    (share / batch) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_that_changes_with_epoch_and_seed() {
        let a = epoch_order(1000, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1000, 1, 0));
        assert_ne!(a, epoch_order(1000, 1, 1));
        assert_ne!(a, epoch_order(1000, 2, 0));
    }

    #[test]
    fn the_block_order_is_a_permutation_whose_windows_hold_whole_runs() {
        let shards = [(0, 100), (100, 37), (137, 250)];
        let (samples, window) = (16, 4);
        let a = block_order(&shards, samples, window, 3, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..387).collect::<Vec<u64>>());
        assert_eq!(a, block_order(&shards, samples, window, 3, 0));
        assert_ne!(a, block_order(&shards, samples, window, 3, 1));
        assert_ne!(a, block_order(&shards, samples, window, 4, 0));
        // The run of an id: its shard and its 16-id slice of it.
        let run = |id: u64| {
            let (s, &(first, _)) = shards
                .iter()
                .enumerate()
                .find(|(_, &(f, n))| (f..f + n).contains(&id))
                .unwrap();
            (s, (id - first) / samples)
        };
        // Every window (at most 4 runs' worth of ids) touches at most 4 runs, and each
        // run lies in one window.
        let mut seen = std::collections::HashMap::new();
        let mut at = 0;
        let mut w = 0;
        while at < a.len() {
            let mut runs = std::collections::HashSet::new();
            let mut n = 0;
            while at + n < a.len() && (runs.len() < window as usize || runs.contains(&run(a[at + n]))) {
                runs.insert(run(a[at + n]));
                n += 1;
            }
            for r in &runs {
                assert_eq!(*seen.entry(*r).or_insert(w), w, "run {r:?} in two windows");
            }
            at += n;
            w += 1;
        }
        // Not the identity within a window: ids are mixed across the window's runs.
        assert_ne!(
            &a[..64],
            &{
                let mut x = a[..64].to_vec();
                x.sort();
                x
            }[..]
        );
        assert_eq!(Order::Global.epoch(&shards, 3, 0), epoch_order(387, 3, 0));
    }

    /// What the block order gives up (printed for docs/remote.md with `--nocapture`): on
    /// 100 shards of 1000 samples, the shards a batch of 256 draws from, and how far
    /// apart in the epoch two samples of one shard fall.
    #[test]
    fn the_block_order_mixes_fewer_shards_per_batch_than_the_global_order() {
        let shards: Vec<(u64, u64)> = (0..100).map(|s| (s * 1000, 1000)).collect();
        let stats = |order: &[u64]| {
            let per_batch: Vec<usize> = order
                .chunks(256)
                .map(|b| {
                    b.iter()
                        .map(|id| id / 1000)
                        .collect::<std::collections::HashSet<_>>()
                        .len()
                })
                .collect();
            let mut pos = vec![0usize; order.len()];
            for (p, &id) in order.iter().enumerate() {
                pos[id as usize] = p;
            }
            // Neighbouring ids (one shard, adjacent rows): how far apart in the epoch.
            let mut gaps: Vec<usize> = (0..order.len() - 1)
                .filter(|i| (i + 1) % 1000 != 0)
                .map(|i| pos[i].abs_diff(pos[i + 1]))
                .collect();
            gaps.sort();
            let mean = per_batch.iter().sum::<usize>() as f64 / per_batch.len() as f64;
            (mean, gaps[gaps.len() / 2], gaps[gaps.len() / 10])
        };
        let global = stats(&Order::Global.epoch(&shards, 0, 0));
        let block = stats(
            &Order::Block {
                samples: 64,
                window: 16,
            }
            .epoch(&shards, 0, 0),
        );
        eprintln!("shards per batch of 256, median and 10th-percentile gap between neighbouring ids: global {global:?}, block(64, 16) {block:?}");
        assert!(block.0 < global.0 && block.1 < global.1, "{block:?} {global:?}");
        // A window mixes 1024 samples: neighbours land within a window of each other.
        assert!(block.1 < 1024, "{block:?}");
    }

    #[test]
    fn ranks_are_disjoint_equal_and_cover_all_but_the_remainder() {
        let order = epoch_order(103, 0, 0);
        let shares: Vec<Vec<u64>> = (0..4).map(|r| rank_share(&order, r, 4)).collect();
        assert!(shares.iter().all(|s| s.len() == 25));
        let mut all: Vec<u64> = shares.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
        assert_eq!(steps_per_epoch(25, 8), 3);
    }
}
