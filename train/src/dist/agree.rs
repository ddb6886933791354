//! The ranks agree on what they run before anything else goes between them.
//!
//! Ranks started with different settings would otherwise fail far from the cause: a
//! different batch size makes collectives of different sizes (Gloo aborts the process),
//! a different seed trains silently on other data orders, and a rank of another job that
//! reaches the same `MASTER_PORT` joins the wrong run. So every rank hashes each of its
//! settings (every field of the resolved config, the store's manifest, the run folder,
//! the flags that change what is run, the job its launcher names) and the ranks
//! all-gather the hashes, in one collective whose size never depends on them. A disagreement is an error on every rank
//! that names the setting and which ranks hold which value.

use burn::prelude::*;

use crate::error::{Error, Result};

/// Settings per handshake: the collective's size is fixed, so no mismatch can change it.
const SLOTS: usize = 64;

/// One setting: its name and the value every rank must share.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The name that a disagreement reports (`batch_size`, `store`).
    pub name: String,
    /// The value, as text (hashed; its length does not matter).
    pub value: String,
}

/// FNV-1a, 64 bits: stable across builds and machines, unlike `DefaultHasher`.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash as four 16-bit pieces, each exact in an f32 (the collectives move floats).
fn pieces(h: u64) -> [f32; 4] {
    [0, 16, 32, 48].map(|s| ((h >> s) & 0xFFFF) as f32)
}

fn unpieces(p: &[f32]) -> u64 {
    p.iter().enumerate().fold(0, |h, (i, v)| h | ((*v as u64) << (16 * i)))
}

/// Checks that every rank holds the same `settings` (a no-op in a world of one). The first
/// slot is the number of settings, so ranks of different builds disagree there.
pub fn agree(settings: &[Setting], device: &Device) -> Result<()> {
    if !super::is_distributed() {
        return Ok(());
    }
    if settings.len() >= SLOTS {
        return Err(Error::Distributed(format!(
            "{} settings to compare; the handshake holds {}",
            settings.len(),
            SLOTS - 1
        )));
    }
    let mut mine = vec![0f32; SLOTS * 4];
    mine[..4].copy_from_slice(&pieces(settings.len() as u64));
    for (i, s) in settings.iter().enumerate() {
        mine[(i + 1) * 4..(i + 2) * 4].copy_from_slice(&pieces(hash(&format!("{}={}", s.name, s.value))));
    }
    let local = Tensor::<1>::from_data(TensorData::new(mine, [SLOTS * 4]), device);
    let all = super::all_gather(local)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Distributed(format!("reading the handshake: {e:?}")))?;
    let world = all.len() / (SLOTS * 4);
    let slot = |rank: usize, i: usize| unpieces(&all[rank * SLOTS * 4 + i * 4..][..4]);
    if let Some(message) = disagreement(world, &slot, settings) {
        return Err(Error::Distributed(format!(
            "the ranks were started with different settings: {message}; start every rank with the same \
             flags, store and run folder"
        )));
    }
    Ok(())
}

/// The first disagreement among `world` ranks' slots, in words.
fn disagreement(world: usize, slot: &dyn Fn(usize, usize) -> u64, settings: &[Setting]) -> Option<String> {
    let names: Vec<&str> = std::iter::once("the slotcon build")
        .chain(settings.iter().map(|s| s.name.as_str()))
        .collect();
    (0..names.len()).find_map(|i| {
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for rank in 0..world {
            let v = slot(rank, i);
            match groups.iter_mut().find(|g| g.0 == v) {
                Some(g) => g.1.push(rank),
                None => groups.push((v, vec![rank])),
            }
        }
        (groups.len() > 1).then(|| {
            let mine = settings.get(i.wrapping_sub(1)).map(|s| short(&s.value));
            let who: Vec<String> = groups.iter().map(|(_, ranks)| format!("ranks {ranks:?}")).collect();
            let here = mine
                .map(|v| format!(" (rank {}'s is {v})", super::rank()))
                .unwrap_or_default();
            format!("{} differs between {}{here}", names[i], who.join(" and "))
        })
    })
}

/// `text`, cut to 80 characters (a manifest is long).
fn short(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_travel_exactly_as_floats() {
        for h in [0, 1, u64::MAX, hash("batch_size=16"), 0x8000_0000_0000_0001] {
            assert_eq!(unpieces(&pieces(h)), h);
        }
    }

    #[test]
    fn a_disagreement_names_the_setting_and_the_ranks() {
        let settings = vec![
            Setting {
                name: "seed".into(),
                value: "0".into(),
            },
            Setting {
                name: "batch_size".into(),
                value: "16".into(),
            },
        ];
        // Rank 1 has another batch size.
        let slot = |rank: usize, i: usize| if i == 2 && rank == 1 { 7 } else { i as u64 };
        let m = disagreement(3, &slot, &settings).unwrap();
        assert!(
            m.starts_with("batch_size differs between ranks [0, 2] and ranks [1]"),
            "{m}"
        );
        assert!(disagreement(3, &|_, i| i as u64, &settings).is_none());
    }
}
