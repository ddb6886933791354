//! `slotcon-bench profile`: where one core's time goes per two-view sample, stage by
//! stage, on real shards (the loader's own code path, single-threaded).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use slotcon_augment::{render_sample, AugmentConfig, SampleBuffers, SampleKey, StageTimes};
use slotcon_shards::{RemoteSettings, ShardReader};

use crate::error::{Error, Result};

/// One stage's share of a sample's time.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// The stage.
    pub stage: &'static str,
    /// Mean microseconds per two-view sample.
    pub us_per_sample: f64,
    /// Fraction of the total.
    pub share: f64,
}

/// The profile of `n` samples.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    /// Samples profiled.
    pub samples: u64,
    /// `encoded` or `raw`.
    pub store: String,
    /// Per-stage times.
    pub stages: Vec<Stage>,
    /// Mean microseconds per sample, all stages.
    pub us_per_sample: f64,
    /// What one core can deliver at that cost.
    pub img_per_sec_per_core: f64,
}

/// Profiles samples `0..n` (cycling over the store) of epoch 0 with `seed`.
pub fn profile(shards: &Path, store: &RemoteSettings, n: u64, seed: u64) -> Result<Profile> {
    let reader = ShardReader::open_with(shards, store)?;
    if n == 0 || reader.is_empty() {
        return Err(Error::Data(format!(
            "{}: nothing to profile ({n} samples asked of {} images)",
            shards.display(),
            reader.len()
        )));
    }
    let cfg = AugmentConfig::slotcon();
    let size = cfg.size as usize;
    let (mut bufs, mut times, mut read) = (SampleBuffers::default(), StageTimes::default(), Duration::ZERO);
    let mut outs = [vec![0u8; size * size * 3], vec![0u8; size * size * 3]];
    for k in 0..n {
        let id = k % reader.len();
        let t = Instant::now();
        let s = reader.get(id)?;
        read += t.elapsed();
        let [a, b] = &mut outs;
        let key = SampleKey::new(seed, 0, id);
        render_sample(reader.store(), &s, &cfg, key, [a, b], &mut bufs, &mut times)
            .map_err(slotcon_augment::Error::from)?;
    }
    let stages = [
        ("read + CRC", read),
        ("decode", times.decode),
        ("draw parameters", times.draw),
        ("resize", times.resize),
        ("flip", times.flip),
        ("colour jitter", times.jitter),
        ("grayscale", times.grayscale),
        ("blur", times.blur),
        ("solarize", times.solarize),
    ];
    let total: f64 = stages.iter().map(|(_, d)| d.as_secs_f64()).sum();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let stages = stages
        .iter()
        .map(|&(stage, d)| Stage {
            stage,
            us_per_sample: per(d),
            share: d.as_secs_f64() / total,
        })
        .collect();
    let us = total * 1e6 / n as f64;
    let store = format!("{:?}", reader.store()).to_lowercase();
    Ok(Profile {
        samples: n,
        store,
        stages,
        us_per_sample: us,
        img_per_sec_per_core: 1e6 / us,
    })
}
