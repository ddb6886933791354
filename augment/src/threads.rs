//! How many threads a worker or thread count may ask for: one bound for the loader, the
//! ingest pool, every binary's `--workers`/`--threads` flag and the Python package.

/// No thread or worker count above this is accepted, however many cores there are.
pub const THREADS_CAP: usize = 256;

/// The largest thread or worker count accepted: 4 × the available cores, at most
/// [`THREADS_CAP`]. More threads than that only add start-up time and memory (10000
/// threads took a minute to start), never speed.
pub fn max_threads() -> usize {
    cores().saturating_mul(4).min(THREADS_CAP)
}

/// The cores this process may run on (1 when the system does not say).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_four_per_core_and_capped() {
        assert!((4..=THREADS_CAP).contains(&max_threads()));
        assert_eq!(max_threads(), (cores() * 4).min(THREADS_CAP));
    }
}
