//! What a PyTorch reference needs to replay a training step of a [`Trainer`]: its
//! weights as safetensors, the batch's u8 views, and a `case.json` with the geometry and
//! the hyper-parameters (read by `bench/python/train_step.py`).

use std::path::Path;

use serde_json::json;
use slotcon_augment::TwoViewBatch;
use slotcon_shards::io_err;

use crate::data::plans;
use crate::error::Result;
use crate::trainer::Trainer;

/// Writes `dir/weights.safetensors`, `dir/views.u8` (`[2, n, s, s, 3]`) and
/// `dir/case.json` for `trainer`'s current weights and `batch`.
pub fn dump_case(trainer: &Trainer, batch: &TwoViewBatch, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    trainer.net().save_safetensors(&dir.join("weights.safetensors"))?;
    let views = [batch.views()[0], batch.views()[1]].concat();
    std::fs::write(dir.join("views.u8"), views).map_err(io_err(&dir.join("views.u8")))?;
    let cfg = &trainer.cfg;
    let [p1, p2] = plans(batch, (cfg.image_size / 32) as usize);
    let valid: Vec<bool> = p1.valid.iter().zip(&p2.valid).map(|(a, b)| *a && *b).collect();
    let case = json!({
        "arch": cfg.arch.name(), "channels": cfg.arch.channels(), "dim_hidden": cfg.dim_hidden,
        "dim_out": cfg.dim_out, "num_prototypes": cfg.num_prototypes, "teacher_temp": cfg.teacher_temp,
        "student_temp": cfg.student_temp, "contrast_temp": cfg.contrast_temp,
        "group_loss_weight": cfg.group_loss_weight, "center_momentum": cfg.center_momentum,
        "n": batch.len(), "size": batch.size(), "boxes": batch.boxes(), "flips": batch.flips(), "valid": valid,
        "lr": cfg.lr(), "weight_decay": cfg.weight_decay, "eta": cfg.lars_eta, "momentum": cfg.momentum,
        "ema": cfg.teacher_momentum,
    });
    let path = dir.join("case.json");
    Ok(std::fs::write(&path, case.to_string()).map_err(io_err(&path))?)
}
