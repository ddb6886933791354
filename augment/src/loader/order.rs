//! Which samples a rank sees in an epoch, in which order, and how they form batches.

use crate::rng::{Draws, SampleRng};

/// The view number reserved for the epoch shuffle (sample views are 0 and 1).
const SHUFFLE_VIEW: u64 = u64::MAX;

/// The epoch's permutation of `0..len`: Fisher-Yates driven by `(seed, epoch)` only.
pub fn epoch_order(len: u64, seed: u64, epoch: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..len).collect();
    let mut rng = SampleRng::new(seed, epoch, u64::MAX, SHUFFLE_VIEW);
    for i in (1..order.len()).rev() {
        let j = rng.randint(0, i as u32) as usize;
        order.swap(i, j);
    }
    order
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
