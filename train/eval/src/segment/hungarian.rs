//! The assignment problem (Hungarian / Kuhn-Munkres, O(n³)), for matching clusters to
//! classes as PiCIE's evaluation does.

/// For a square `n × n` cost matrix (row-major), the column assigned to each row such
/// that the total cost is minimal.
pub fn min_cost_assignment(cost: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(cost.len(), n * n, "cost matrix must be n x n");
    // Potentials u (rows) and v (columns), 1-based with a virtual column 0.
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let mut owner = vec![0usize; n + 1]; // owner[col] = row (1-based), 0 = free
    let mut way = vec![0usize; n + 1];
    for row in 1..=n {
        owner[0] = row;
        let mut col0 = 0;
        let mut minv = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[col0] = true;
            let (r, mut delta, mut col1) = (owner[col0], f64::INFINITY, 0);
            for col in 1..=n {
                if used[col] {
                    continue;
                }
                let reduced = cost[(r - 1) * n + col - 1] - u[r] - v[col];
                if reduced < minv[col] {
                    minv[col] = reduced;
                    way[col] = col0;
                }
                if minv[col] < delta {
                    delta = minv[col];
                    col1 = col;
                }
            }
            for col in 0..=n {
                if used[col] {
                    u[owner[col]] += delta;
                    v[col] -= delta;
                } else {
                    minv[col] -= delta;
                }
            }
            col0 = col1;
            if owner[col0] == 0 {
                break;
            }
        }
        loop {
            let prev = way[col0];
            owner[col0] = owner[prev];
            col0 = prev;
            if col0 == 0 {
                break;
            }
        }
    }
    let mut assignment = vec![0; n];
    for col in 1..=n {
        if owner[col] > 0 {
            assignment[owner[col] - 1] = col - 1;
        }
    }
    assignment
}

/// The assignment maximising the total of `score` (`n × n`).
pub fn max_score_assignment(score: &[f64], n: usize) -> Vec<usize> {
    let top = score.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let cost: Vec<f64> = score.iter().map(|s| top - s).collect();
    min_cost_assignment(&cost, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(cost: &[f64], n: usize, a: &[usize]) -> f64 {
        (0..n).map(|r| cost[r * n + a[r]]).sum()
    }

    #[test]
    fn matches_brute_force_on_small_matrices() {
        let mut seed = 17u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for n in 1..=6 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n).map(|_| (next() * 100.0).round()).collect();
                let a = min_cost_assignment(&cost, n);
                let mut cols = a.clone();
                cols.sort();
                assert_eq!(cols, (0..n).collect::<Vec<_>>());
                let best = permutations(n)
                    .iter()
                    .map(|p| total(&cost, n, p))
                    .fold(f64::INFINITY, f64::min);
                assert_eq!(total(&cost, n, &a), best);
            }
        }
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for i in 0..=p.len() {
                let mut q = p.clone();
                q.insert(i, n - 1);
                out.push(q);
            }
        }
        out
    }
}
